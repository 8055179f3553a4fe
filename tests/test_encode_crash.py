"""Kill the encode job part-way, rerun it, and compare with an uninterrupted run."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from raytools import ENV, stop_orphaned_ray

from tagger.catalog import Catalog
from tagger.store import index_paths, list_done_shards

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def checkpoint(random_checkpoint) -> str:
    return str(random_checkpoint("toy-vit"))


def encode(ws: Path, folder: Path, ckpt: str, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "jobs.encode", "--workspace", str(ws), "--source", str(folder),
           "--model", "toy-vit", "--pretrained", ckpt, "--partition-size", "8", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=ENV)


def snapshot(ws: Path) -> dict:
    """Everything an encode run leaves behind, minus timestamps."""
    with Catalog.open(ws / "catalog.duckdb", read_only=True) as cat:
        images = cat.query("SELECT image_id, uri, content_hash, status, error, width, height FROM images "
                           "ORDER BY image_id")
        encodings = cat.query("SELECT image_id, model_id, content_hash, shard FROM encodings ORDER BY image_id")
        model_id = encodings[0][1]
    g, p = index_paths(ws, model_id)
    return {"images": images, "encodings": encodings, "shards": list_done_shards(ws, model_id),
            "global": g.read_bytes(), "patches": p.read_bytes()}


def test_killed_encode_rerun_equals_clean_run(toy_folder, tmp_path, checkpoint):
    folder, truth = toy_folder
    clean = encode(tmp_path / "clean", folder, checkpoint)
    assert clean.returncode == 0, clean.stderr[-2000:]
    summary = json.loads(clean.stdout.strip().splitlines()[-1])
    assert summary["encoded"] == len(truth) and summary["errors"] == 2

    crashed = encode(tmp_path / "crash", folder, checkpoint, "--crash-after", "2")
    stop_orphaned_ray()
    assert crashed.returncode != 0  # the driver died part-way
    with Catalog.open(tmp_path / "crash" / "catalog.duckdb", read_only=True) as cat:
        done_before = cat.query("SELECT count(*) FROM encodings")[0][0]
    assert 0 < done_before < len(truth)
    rerun = encode(tmp_path / "crash", folder, checkpoint)
    assert rerun.returncode == 0, rerun.stderr[-2000:]

    a, b = snapshot(tmp_path / "clean"), snapshot(tmp_path / "crash")
    assert a["images"] == b["images"]
    assert a["encodings"] == b["encodings"]
    assert a["shards"] == b["shards"]
    assert a["global"] == b["global"] and a["patches"] == b["patches"]
    # a third run finds nothing to do and changes nothing
    again = encode(tmp_path / "crash", folder, checkpoint)
    assert json.loads(again.stdout.strip().splitlines()[-1])["partitions"] == 0
    assert snapshot(tmp_path / "crash")["encodings"] == a["encodings"]
