"""Sharded search: the approximate index split by image id, searched by one Ray actor per shard, merged
(a module of its own: it starts a local Ray in the test process)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from test_search_ann import ANN, MODEL, add_shards, clustered, corpus, exact_top
from tagger.store import index_paths
from tagger.store.ann import AnnIndex, recall_at
from tagger.store.annsync import load_ann
from tagger.store.updates import update_indexes

pytestmark = pytest.mark.usefixtures("one_faiss_thread")


def test_shards_searched_by_ray_actors_merge_to_the_whole_index(tmp_path: Path, local_ray) -> None:
    from tagger.pipeline.shardsearch import ShardedSearch
    from tagger.store.annshards import merge_topk, shards_in_step, write_shards
    add_shards(tmp_path, 0, 3000, seed=12)
    update_indexes(tmp_path, MODEL, ann=ANN)
    g_path = index_paths(tmp_path, MODEL)[0]
    paths = write_shards(g_path, 3)
    assert len(paths) == 3 and shards_in_step(g_path)
    whole = load_ann(g_path)
    q = clustered(50, seed=13)
    sharded = ShardedSearch(g_path)
    try:
        assert sharded.ntotal == whole.ntotal == 3000
        scores, got = sharded.search(q, 10)
    finally:
        sharded.close()
    ids, db = corpus(tmp_path)
    truth = exact_top(db, ids, q, 10)
    want_scores, want = whole.search(q, 10, use_gpu=False)
    assert recall_at(got, truth) >= recall_at(want, truth) >= ANN.recall_target
    agree = np.isclose(scores[:, 0], want_scores[:, 0], atol=1e-5)
    assert agree.mean() >= 0.95 and (np.diff(scores, axis=1) <= 1e-6).all()  # merged best first
    whole.meta["rerank"] = 1  # without re-ranking the shards hold exactly the whole index's candidates
    parts = [AnnIndex.load(p) for p in paths]
    merged = merge_topk([p.search(q, 10, use_gpu=False) for p in parts], 10)[1]
    np.testing.assert_array_equal(np.sort(merged, axis=1), np.sort(whole.index.search(q, 10)[1], axis=1))
    add_shards(tmp_path, 20_000, 10, seed=14)
    update_indexes(tmp_path, MODEL, ann=ANN)
    assert not shards_in_step(g_path)  # the index moved on: the split is stale
