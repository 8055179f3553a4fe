"""Sharded search: an approximate index (global or patch) split by image id, searched by one Ray actor per
shard, merged (a module of its own: it starts a local Ray in the test process)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import test_search_patchann as patches
from test_search_ann import ANN, MODEL, add_shards, clustered, corpus, exact_top
from tagger.store import index_paths
from tagger.store.ann import AnnIndex, ann_path, recall_at
from tagger.store.annshards import merge_topk, shard_paths, shards_in_step, split_ann
from tagger.store.annsync import load_ann
from tagger.store.patchann import PatchAnn
from tagger.store.patchannsync import load_patch_ann, patch_ann_path
from tagger.store.updates import update_indexes

pytestmark = pytest.mark.usefixtures("one_faiss_thread")


def test_shards_searched_by_ray_actors_merge_to_the_whole_index(tmp_path: Path, local_ray) -> None:
    from tagger.pipeline.shardsearch import ShardedSearch
    add_shards(tmp_path, 0, 3000, seed=12)
    update_indexes(tmp_path, MODEL, ann=ANN)
    g_path = index_paths(tmp_path, MODEL)[0]
    paths = split_ann(ann_path(g_path), 3)
    assert len(paths) == 3 and shards_in_step(ann_path(g_path))
    whole = load_ann(g_path)
    q = clustered(50, seed=13)
    sharded = ShardedSearch(ann_path(g_path), g_path)
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
    assert not shards_in_step(ann_path(g_path))  # the index moved on: the split is stale


def test_patch_shards_keep_each_image_whole_and_merge_to_the_whole_index(tmp_path: Path, local_ray) -> None:
    from tagger.pipeline.shardsearch import ShardedSearch
    patches.add_images(tmp_path, 0, 3000, seed=15)
    patches.update(tmp_path)
    p_path = index_paths(tmp_path, MODEL)[1]
    a_path = patch_ann_path(p_path)
    whole = load_patch_ann(p_path)
    assert whole is not None
    paths = split_ann(a_path, 3)
    parts = [PatchAnn.load(p) for p in paths]
    assert sum(p.ntotal for p in parts) == whole.ntotal and all(p.nprobe == whole.nprobe for p in parts)
    for s, part in enumerate(parts):  # every patch of an image in the one shard of that image
        ivf = part.index
        held = np.concatenate([np.asarray([ivf.invlists.get_single_id(lst, j) for j in range(ivf.invlists.list_size(lst))],
                                          np.int64) for lst in range(ivf.nlist)])
        images, counts = np.unique(held // patches.P, return_counts=True)
        assert (images % 3 == s).all() and (counts == patches.P).all()
    q = patches.clustered(40, seed=16)
    want_scores, want, want_patch = whole.search(q, 10)
    sharded = ShardedSearch(a_path)
    try:
        assert sharded.ntotal == whole.ntotal
        scores, got, patch = sharded.search(q, 10)
    finally:
        sharded.close()
    np.testing.assert_array_equal(got, want)  # the same lists probed, an image's best patch in its shard
    np.testing.assert_array_equal(patch, want_patch)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5)
    assert recall_at(got, patches.scan(tmp_path, q)) >= patches.PANN.recall_target


def test_a_split_goes_stale_when_images_are_replaced_without_changing_the_count(tmp_path: Path) -> None:
    patches.add_images(tmp_path, 0, 1500, seed=17)
    patches.update(tmp_path)
    a_path = patch_ann_path(index_paths(tmp_path, MODEL)[1])
    split_ann(a_path, 2)
    assert shards_in_step(a_path) and len(shard_paths(a_path)) == 2
    patches.add_images(tmp_path, 0, 10, seed=18)  # ten images re-encoded: the same ids, new codes
    assert patches.update(tmp_path)["patch_ann_mode"] == "incremental"
    assert load_patch_ann(index_paths(tmp_path, MODEL)[1]).ntotal == 1500 * patches.P
    assert not shards_in_step(a_path)  # the count is the same, the file is not
    split_ann(a_path, 3)  # a split of another count leaves none of the earlier one's files
    assert sorted(p.name for p in shard_paths(a_path)[0].parent.glob("*.ann")) == \
        ["000-of-003.ann", "001-of-003.ann", "002-of-003.ann"]


def test_merge_pads_and_carries_the_best_patch() -> None:
    a = (np.array([[0.9, 0.5]], np.float32), np.array([[4, 8]]), np.array([[1, 2]]))
    b = (np.array([[0.7, np.nan]], np.float32), np.array([[5, -1]]), np.array([[3, -1]]))
    scores, ids, patch = merge_topk([a, b], 5)
    np.testing.assert_array_equal(ids, [[4, 5, 8, -1, -1]])
    np.testing.assert_array_equal(patch, [[1, 3, 2, -1, -1]])
    np.testing.assert_allclose(scores[0, :3], [0.9, 0.7, 0.5])
    _, ids = merge_topk([a[:2], b[:2]], 2, higher_is_better=False)
    np.testing.assert_array_equal(ids, [[8, 5]])
