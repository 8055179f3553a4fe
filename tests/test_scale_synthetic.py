"""A synthetic workspace (bench/synthetic.py) is a real one: its shards, catalog, indexes and
classifier are what the encode and train stages would leave, so the tag stage runs on it (local Ray)."""
from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tagger.catalog import Catalog
from tagger.store import PatchStore, index_paths, list_done_shards, load_shard, model_dir
from tagger.store.updates import update_indexes

pytestmark = pytest.mark.ray
N, PARTITION = 300, 64


def _synthetic():
    path = Path(__file__).resolve().parents[1] / "bench" / "synthetic.py"
    spec = importlib.util.spec_from_file_location("bench_synthetic", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def built(tmp_path_factory, one_faiss_thread) -> dict:
    syn = _synthetic()
    cfg = syn.SyntheticConfig(N, labels=6, reserve=1, partition_size=PARTITION, n_sentences=120)
    return syn.build_workspace(tmp_path_factory.mktemp("synthetic") / "ws", cfg)


def test_the_synthetic_workspace_holds_what_encode_would_write(built) -> None:
    from tagger.workspace import Workspace
    ws, model_id = Workspace.at(built["workspace"]), built["model_id"]
    shards = list_done_shards(ws.root, model_id)
    assert model_id == "ViT-B-16@random" and len(shards) == built["shards"] == math.ceil(N / PARTITION)
    ids = np.concatenate([np.asarray(load_shard(model_dir(ws.root, model_id) / s).ids) for s in shards])
    first = load_shard(model_dir(ws.root, model_id) / shards[0])
    assert first.dim == 512 and first.patches is None and ids.size == np.unique(ids).size == N
    with Catalog.open(ws.catalog, read_only=True) as cat:
        assert cat.encoded_shards(model_id) == set(shards)
        assert cat.pending_images(model_id) == []
        assert sorted(i for i, _ in cat.shards_of(model_id, ids.tolist())) == sorted(ids.tolist())
        assert cat.active_labels() == built["labels"] and cat.latest_classifier(model_id)["labels"] == built["labels"]
    patches = PatchStore.load(index_paths(ws.root, model_id)[1], mmap=True)
    assert (patches.n_images, patches.patches_per_image, patches.code_size) == (N, 196, 16)
    assert np.array_equal(np.sort(patches.image_ids), np.sort(ids))
    assert patches.decode(ids[:2]).shape == (2, 196, 512)
    again = update_indexes(ws.root, model_id)  # what encode and nightly call: nothing to add or rebuild
    assert (again["mode"], again["indexed"]) == ("unchanged", N)


def test_the_tag_stage_tags_every_synthetic_image(built, local_ray) -> None:
    from tagger.pipeline.tag import TagConfig, run_tag
    from tagger.workspace import Workspace
    ws, model_id = Workspace.at(built["workspace"]), built["model_id"]
    out = run_tag(ws, model_id, TagConfig(top_k=3))
    assert out["n_images"] == N
    files = sorted(ws.run_dir(str(out["run_id"])).glob("tags-*.parquet"))
    assert [f.name[len("tags-"):-len(".parquet")] for f in files] == list_done_shards(ws.root, model_id)
    assert sum(pq.ParquetFile(f).metadata.num_rows for f in files) == out["n_tags"]
    with Catalog.open(ws.catalog, read_only=True) as cat:
        per_image = dict(cat.query("SELECT image_id, count(*) FROM current_tags GROUP BY image_id"))
        labels = {lab for (lab,) in cat.query("SELECT DISTINCT label FROM current_tags")}
    assert len(per_image) == N and min(per_image.values()) >= 3
    assert labels <= set(built["labels"]) and len(labels) > 1
