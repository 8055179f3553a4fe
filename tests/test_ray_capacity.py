"""An actor no node of the Ray cluster can hold (`--num-gpus 1` without a GPU, `--encode-cpus 1000`, a
`--node-resource` no node offers) is one error line and exit 2 on the command's own local Ray, before
any work is submitted (it hung silently); on a cluster that may still grow such a node, a warning."""
from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tagger.errors import ClusterError
from tagger.pipeline import capacity
from tagger.pipeline.capacity import ActorAsk, check_fits, encode_asks, shortfall, tag_ask
from tagger.pipeline.encode import EncodeConfig
from tagger.pipeline.tag import TagConfig
from tagger.toyworld.export import export_scenes
from tagger.workspace import CLASSIFIERS_DIR, TEXT_DIR

from raytools import ENV, REPO, session_processes

LAPTOP = {"CPU": 2.0, "memory": 8e9, "object_store_memory": 2e9, "node:10.0.0.1": 1.0, "node:__internal_head__": 1.0}
GPU_NODE = {"CPU": 8.0, "GPU": 1.0, "gpu_node": 1.0}


def test_what_each_stage_asks():
    decode, encoder = encode_asks(EncodeConfig(num_gpus=1.0, encode_cpus=4.0, node_resource="gpu_node"))
    assert decode.bundle() == {"CPU": 1.0} and decode.options["CPU"] == "--decode-cpus"
    assert encoder.bundle() == {"GPU": 1.0, "gpu_node": 0.01}  # a GPU encoder reserves no CPU
    assert encode_asks(EncodeConfig(encode_cpus=4.0))[1].bundle() == {"CPU": 4.0}
    assert tag_ask(TagConfig(node_resource="gpu_node")).bundle() == {"CPU": 1.0, "gpu_node": 0.01}


@pytest.mark.parametrize("cfg, words", [
    (EncodeConfig(num_gpus=1.0), "asks for 1 GPU (--num-gpus): no node has one"),
    (EncodeConfig(encode_cpus=1000.0), "asks for 1000 CPUs (--encode-cpus): the largest node has 2"),
    (EncodeConfig(node_resource="gpu_node"), "asks for resource 'gpu_node' (--node-resource): no node offers it"),
])
def test_the_shortfall_names_the_ask_the_cluster_and_the_option(cfg, words):
    why = shortfall(encode_asks(cfg)[1], [LAPTOP])
    assert why is not None and words in why, why
    assert "the cluster has 1 node: 2 CPUs, no GPU, no custom resource" in why and "; change --" in why
    assert shortfall(encode_asks(cfg)[1], [LAPTOP, {**GPU_NODE, "CPU": 1000.0}]) is None


def test_parts_that_fit_only_apart():
    why = shortfall(tag_ask(TagConfig(node_resource="gpu_node")), [LAPTOP, {"CPU": 0.0, "gpu_node": 1.0}])
    assert why is not None and "no single node has all of it" in why and "custom resources gpu_node" in why


class _Cluster:
    def __init__(self, *nodes: dict) -> None:
        self._nodes = [{"Alive": True, "Resources": n} for n in nodes] + [{"Alive": False, "Resources": GPU_NODE}]

    def nodes(self) -> list[dict]:
        return self._nodes


@pytest.fixture
def cluster(monkeypatch):
    """check_fits against a stand-in cluster: ``cluster(own=..., types=...)``."""
    def make(*nodes: dict, own: bool = False, types: list[dict] | None = None) -> None:
        monkeypatch.setitem(sys.modules, "ray", _Cluster(*nodes))
        monkeypatch.setattr(capacity, "_own_local_ray", lambda: own)
        monkeypatch.setattr(capacity, "_autoscaled_types", lambda ray: types)
    return make


GPU_ASK = encode_asks(EncodeConfig(num_gpus=1.0))


def test_own_local_ray_refuses(cluster):
    cluster(LAPTOP, own=True)
    with pytest.raises(ClusterError, match=r"1 GPU \(--num-gpus\).*or set RAY_ADDRESS"):
        check_fits(GPU_ASK)


def test_an_external_cluster_that_may_still_grow_warns(cluster, caplog):
    cluster(LAPTOP, types=None)  # nothing tells: a node may join by hand, an autoscaler may start one
    with caplog.at_level(logging.WARNING, logger=capacity.__name__):
        check_fits(GPU_ASK)
    assert "the encoder actors wait for such a node to join the cluster" in caplog.text
    cluster(LAPTOP, types=[{"CPU": 2.0}, GPU_NODE])
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=capacity.__name__):
        check_fits(GPU_ASK)
    assert "wait for the autoscaler to start one" in caplog.text


def test_an_autoscaler_without_such_a_node_type_refuses(cluster):
    cluster(LAPTOP, types=[{"CPU": 2.0}, {"CPU": 16.0}])
    with pytest.raises(ClusterError, match="add a node type that has it to the autoscaler"):
        check_fits(GPU_ASK)


def test_what_fits_passes_quietly(cluster, caplog):
    cluster(LAPTOP, GPU_NODE, own=True)
    with caplog.at_level(logging.WARNING):
        check_fits([*GPU_ASK, ActorAsk("search actor", cpus=0.5)])
    assert not caplog.text


def _run(args: list[str], cwd: Path, timeout_s: float = 180) -> subprocess.CompletedProcess:
    """Run the CLI in a session of its own; a run past ``timeout_s`` (the hang this guards against)
    has its processes, its local Ray's included, ended and fails."""
    env = {**ENV, "PYTHONPATH": str(REPO)}  # this checkout's tagger, from any folder
    proc = subprocess.Popen([sys.executable, "-m", "tagger.cli", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        for pid in session_processes(proc.pid):
            subprocess.run(["kill", "-9", str(pid)], check=False)
        proc.communicate(timeout=30)
        pytest.fail(f"tagger {' '.join(args)} still ran after {timeout_s} s")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _one_error(out: subprocess.CompletedProcess) -> str:
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), out.stderr[-3000:]
    return lines[0]


@pytest.mark.ray
def test_encode_asking_for_a_gpu_the_local_ray_lacks(tmp_path):
    export_scenes(tmp_path / "imgs", 2)
    t0 = time.monotonic()
    line = _one_error(_run(["encode", "imgs", "--num-gpus", "1", "-w", "ws"], tmp_path))
    assert "encoder actor, which asks for 1 GPU (--num-gpus): no node has one" in line
    assert "change --num-gpus" in line and time.monotonic() - t0 < 180


@pytest.mark.ray
def test_nightly_refuses_an_unknown_node_resource_before_its_first_stage(tmp_path):
    assert _run(["labels", "add", "star", "moon", "-w", "ws"], tmp_path).returncode == 0
    line = _one_error(_run(["nightly", "--node-resource", "gpu_node", "-w", "ws"], tmp_path))
    assert "asks for resource 'gpu_node' (--node-resource): no node offers it" in line
    assert not (tmp_path / "ws" / TEXT_DIR).exists() and not (tmp_path / "ws" / CLASSIFIERS_DIR).exists()
