"""`tagger search --shards N`: the approximate global or patch index split in N shards and searched by one Ray
actor each, from the real command line (a subprocess starting its own local Ray)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from test_search_ann import ANN, clustered
from tagger.catalog import Catalog
from tagger.models.registry import model_id_for
from tagger.store import index_paths, write_shards
from tagger.store.ann import ann_path
from tagger.store.annshards import shard_paths, shards_in_step
from tagger.store.patchann import PatchAnnConfig
from tagger.store.patchannsync import patch_ann_path
from tagger.store.updates import update_indexes
from tagger.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_faiss_thread")


def tagger(ws: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a local Ray, never a stray cluster
    env.update(RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "tagger.cli", *args, "--workspace", str(ws)], capture_output=True,
                          text=True, timeout=600, cwd=ROOT, env=env)


def test_search_shards_from_the_command_line(tmp_path: Path) -> None:
    ws = Workspace.at(tmp_path)
    paths = [str(tmp_path / "photos" / f"img{i:05d}.jpg") for i in range(3000)]
    with Catalog.open(ws.catalog) as cat:
        ids = cat.register_images(paths)
    model_id = model_id_for(*ws.model())  # embeddings of the workspace's model, as encode writes them
    x = clustered(3000, seed=21)
    patches = np.stack([x, clustered(3000, seed=22)], axis=1).astype(np.float16)
    write_shards(tmp_path, model_id, [(ids[i:i + 1000], x[i:i + 1000], patches[i:i + 1000])
                                      for i in range(0, 3000, 1000)])
    update_indexes(tmp_path, model_id, ann=ANN, patch_ann=PatchAnnConfig(exact_upto=500, min_lists=8, nested_from=128))
    g_path, p_path = index_paths(tmp_path, model_id)
    assert not shard_paths(ann_path(g_path))
    whole = tagger(tmp_path, "search", "--like", paths[7], "-k", "5", "--json")
    sharded = tagger(tmp_path, "search", "--like", paths[7], "-k", "5", "--shards", "2", "--json")
    assert whole.returncode == 0 and sharded.returncode == 0, sharded.stderr
    got, want = json.loads(sharded.stdout), json.loads(whole.stdout)
    assert got[0]["image_id"] == int(ids[7]) and got[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert len({h["image_id"] for h in got} & {h["image_id"] for h in want}) >= 4
    assert len(shard_paths(ann_path(g_path))) == 2 and shards_in_step(ann_path(g_path))  # split first
    whole = tagger(tmp_path, "search", "--like", paths[9], "-k", "5", "--level", "patch", "--json")
    sharded = tagger(tmp_path, "search", "--like", paths[9], "-k", "5", "--level", "patch", "--shards", "3", "--json")
    assert whole.returncode == 0 and sharded.returncode == 0, sharded.stderr
    got, want = json.loads(sharded.stdout), json.loads(whole.stdout)
    assert [(h["image_id"], h["patch"]) for h in got] == [(h["image_id"], h["patch"]) for h in want]
    assert len(got) == 5 and [h["score"] for h in got] == pytest.approx([h["score"] for h in want], abs=1e-5)
    assert len(shard_paths(patch_ann_path(p_path))) == 3 and shards_in_step(patch_ann_path(p_path))
    bad = tagger(tmp_path, "search", "--like", paths[7], "--shards", "2", "--exact")
    assert bad.returncode != 0 and bad.stderr.count("error:") == 1, bad.stderr
