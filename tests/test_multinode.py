"""Two Ray nodes on one machine: a head, then a worker node offering a custom resource. Encode and
tag jobs submitted with ``--node-resource`` must run their model actors on the worker node only,
and write the same shards and tags as the same jobs on the head alone."""
from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from raytools import ENV, RAY, RayNode, free_port, job_server_ready, submit

from tagger.catalog import Catalog
from tagger.cli import main as cli_main
from tagger.toyworld import LABEL_SYNONYMS, LABELS
from tagger.toyworld.export import export_scenes

pytestmark = pytest.mark.ray
NODE_RESOURCE = "worker_node"
N_IMAGES = 40
ENCODER, TAGGER = "MapWorker(MapBatches(EncodePartitions))", "MapWorker(MapBatches(TagShards))"


def started(args: list[str], ready: Callable[[], bool], attempts: int = 3, timeout_s: float = 180) -> RayNode:
    """A node started with ``args``, once ``ready()``. A start that fails (Ray gives a node 30 s to
    register, which a busy machine can miss) is cleaned up and tried again."""
    log = ""
    for _ in range(attempts):
        node = RayNode(*args)
        deadline = time.time() + timeout_s
        while node.running() and time.time() < deadline:
            if ready():
                return node
            time.sleep(2)
        log = node.log_tail()
        node.stop()
    raise RuntimeError(f"ray start {' '.join(args)} failed {attempts} times: {log}")


@dataclass
class Cluster:
    """A head started by the test, and the worker nodes it adds."""

    gcs: str
    address: str  # the job server (dashboard)
    nodes: list[RayNode] = field(default_factory=list)

    def state(self, what: str) -> list[dict]:
        """`ray list <what>` of the cluster, every row in detail."""
        out = subprocess.run([RAY, "list", what, "--address", self.address, "--format", "json", "--detail",
                              "--limit", "10000"], capture_output=True, text=True, timeout=120, env=ENV)
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(out.stdout)

    def node_with(self, resource: str) -> str | None:
        """The id of an alive node offering ``resource`` (None if none)."""
        alive = [n["node_id"] for n in self.state("nodes")
                 if n["state"] == "ALIVE" and resource in (n.get("resources_total") or {})]
        return alive[0] if alive else None

    def add_worker(self, resource: str) -> str:
        """Start a worker node offering ``resource``; its node id once it is alive."""
        args = ["--address", self.gcs, "--num-cpus", "2", "--resources", json.dumps({resource: 1})]
        self.nodes.append(started(args, lambda: self.node_with(resource) is not None))
        return str(self.node_with(resource))


@pytest.fixture(scope="module")
def cluster():
    """A head on 127.0.0.1 with ports and a temp dir of its own; every node stopped afterwards."""
    gcs, dash = free_port(), free_port()
    c = Cluster(gcs=f"127.0.0.1:{gcs}", address=f"http://127.0.0.1:{dash}")
    head = ["--head", "--port", str(gcs), "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash),
            "--ray-client-server-port", str(free_port()), "--num-cpus", "2"]
    c.nodes.append(started(head, lambda: job_server_ready(c.address)))
    try:
        yield c
    finally:
        for node in reversed(c.nodes):
            node.stop()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, random_checkpoint) -> tuple[Path, Path, Path]:
    """The image folder, a checkpoint, and a workspace with labels, a corpus and a classifier but no image.

    Seeded random weights: the shipped ones may be retrained while the test runs. The corpus and
    the classifier are made here, with no Ray: neither stage has actors."""
    root = tmp_path_factory.mktemp("multinode")
    export_scenes(root / "images", N_IMAGES)
    ckpt = random_checkpoint("toy-vit")
    ws = root / "ws"
    ws.mkdir()
    with Catalog.open(ws / "catalog.duckdb") as cat:
        cat.add_labels(list(LABELS), {k: list(v) for k, v in LABEL_SYNONYMS.items()})
    cli_main(["generate-text", "--workspace", str(ws), "--n-sentences", "400", "--json"])
    cli_main(["train", "--workspace", str(ws), "--model", "toy-vit", "--pretrained", str(ckpt), "--json"])
    return root / "images", ckpt, ws


def encode_and_tag(address: str, ws: Path, images: Path, ckpt: Path, *placement: str) -> tuple[dict, dict]:
    enc = submit(address, "jobs.encode", "--workspace", str(ws), "--source", str(images), "--model", "toy-vit",
                 "--pretrained", str(ckpt), "--partition-size", "16", *placement)
    tag = submit(address, "jobs.tag", "--workspace", str(ws), *placement)
    return enc, tag


def outcome(ws: Path) -> tuple[list[tuple], list[tuple]]:
    """The current run's thresholds (with the fitted components) and its tags by image URI."""
    with Catalog.open(ws / "catalog.duckdb", read_only=True) as cat:
        run = cat.current_run()
        thr = cat.query("SELECT label, threshold, present, source, mu0, sd0, mu1, sd1, prior FROM run_thresholds "
                        "WHERE run_id = ? ORDER BY label", [run])
        tags = cat.query("SELECT uri, label, score, confidence, rank, positive FROM current_tags "
                         "ORDER BY uri, label")
    return thr, tags


def shard_bytes(ws: Path) -> dict[str, bytes]:
    return {str(p.relative_to(ws)): p.read_bytes() for p in sorted((ws / "embeddings").rglob("*")) if p.is_file()}


def nodes_of(actors: list[dict], class_name: str) -> list[str]:
    return [a["node_id"] for a in actors if a["class_name"] == class_name]


def test_pinned_actors_run_on_the_worker_node_and_tag_as_one_node(cluster, prepared, tmp_path):
    images, ckpt, base = prepared
    one, two = tmp_path / "one", tmp_path / "two"
    shutil.copytree(base, one)
    shutil.copytree(base, two)

    # the head alone
    enc1, tag1 = encode_and_tag(cluster.address, one, images, ckpt)
    first = cluster.state("actors")

    # a worker node joins; the model actors are pinned to it
    worker = cluster.add_worker(NODE_RESOURCE)
    (head,) = [n["node_id"] for n in cluster.state("nodes") if n["is_head_node"] and n["state"] == "ALIVE"]
    enc2, tag2 = encode_and_tag(cluster.address, two, images, ckpt, "--node-resource", NODE_RESOURCE)

    assert worker != head and set(nodes_of(first, ENCODER) + nodes_of(first, TAGGER)) == {head}
    before = {a["actor_id"] for a in first}
    new = [a for a in cluster.state("actors") if a["actor_id"] not in before]
    for name in (ENCODER, TAGGER):
        assert nodes_of(new, name) and set(nodes_of(new, name)) == {worker}, (name, head, worker, new)

    assert enc1["encoded"] == enc2["encoded"] == N_IMAGES and enc1["errors"] == enc2["errors"] == 0
    assert tag1["n_images"] == tag2["n_images"] == N_IMAGES
    assert shard_bytes(one) and shard_bytes(one) == shard_bytes(two)
    (thr1, tags1), (thr2, tags2) = outcome(one), outcome(two)
    assert thr1 and thr1 == thr2  # every label's threshold and mixture parameters
    assert len({t[0] for t in tags1}) == N_IMAGES and tags1 == tags2  # every tag, score and confidence
