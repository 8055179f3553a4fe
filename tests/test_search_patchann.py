"""The approximate patch index against the exhaustive scan: recall target, incremental adds, rebuild after
the layout is outgrown, a kill during a build, and the search path's choice between the two."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tagger.atomic import TMP_PREFIX
from tagger.store import PatchStore, index_paths, write_shards
from tagger.store.ann import AnnConfig, recall_at
from tagger.store.patchann import PatchAnn, PatchAnnConfig, choose_patch_layout
from tagger.store.patchannsync import load_patch_ann, patch_ann_path, sync_patch_ann
from tagger.store.updates import update_indexes

D, P, MODEL = 32, 4, "m@test"
NO_GLOBAL_ANN = AnnConfig(exact_upto=10**6)  # the global index stays exact: only the patch index is built
PANN = PatchAnnConfig(exact_upto=500, min_lists=8, tune_queries=100, nested_from=128)

pytestmark = pytest.mark.usefixtures("one_faiss_thread")


def clustered(n: int, seed: int, centers: int = 60, latent: int = 6) -> np.ndarray:
    """Unit vectors of low intrinsic dimension in clusters (seeded; the basis is shared by all seeds)."""
    basis = np.random.default_rng(99).standard_normal((latent, D))
    mid = np.random.default_rng(98).standard_normal((centers, latent)) * 2.0
    rng = np.random.default_rng(seed)
    z = mid[rng.integers(0, centers, n)] + 0.5 * rng.standard_normal((n, latent))
    x = z @ basis + 0.1 * rng.standard_normal((n, D))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def add_images(root: Path, start: int, n: int, seed: int, size: int = 1000, spread: bool = False) -> np.ndarray:
    """``n`` images with distinct patches (``spread``: off the clusters, each alone); returns their
    patches [n, P, D]."""
    patches = clustered(n * P, seed).reshape(n, P, D)
    if spread:
        patches = np.random.default_rng(seed).standard_normal((n, P, D)).astype(np.float32)
        patches /= np.linalg.norm(patches, axis=2, keepdims=True)
    ids = np.arange(start, start + n, dtype=np.int64)
    glob = patches.mean(axis=1)
    write_shards(root, MODEL, [(ids[i:i + size], glob[i:i + size], patches[i:i + size].astype(np.float16))
                               for i in range(0, n, size)])
    return patches


def update(root: Path, **kw) -> dict:
    return update_indexes(root, MODEL, ann=NO_GLOBAL_ANN, patch_ann=PANN, **kw)


def scan(root: Path, q: np.ndarray, k: int = 10) -> np.ndarray:
    """Image ids of the exhaustive scan (what --exact searches)."""
    return PatchStore.load(index_paths(root, MODEL)[1], mmap=True).search(q, k)[1]


def test_layout_is_exact_when_small_or_not_pq_and_lists_grow_with_the_corpus() -> None:
    cfg = PatchAnnConfig()
    assert choose_patch_layout(1000, 196, 16, True, cfg).exact
    assert choose_patch_layout(10**5, 196, 16, False, cfg).exact
    small, big = choose_patch_layout(10**5, 196, 16, True, cfg), choose_patch_layout(10**6, 196, 16, True, cfg)
    assert not small.exact and small.nlist < big.nlist and big.nested
    over = choose_patch_layout(10**6, 196, 16, True, PatchAnnConfig(memory_budget=1 << 30))
    assert over.exact and "budget" in over.reason


def test_approximate_patch_search_meets_the_recall_target_against_the_scan(tmp_path: Path) -> None:
    add_images(tmp_path, 0, 3000, seed=1)
    out = update(tmp_path)
    assert out["patch_ann_mode"] == "rebuild" and out["patch_ann_layout"].startswith("IVF")
    p_path = index_paths(tmp_path, MODEL)[1]
    ann = load_patch_ann(p_path)
    assert ann is not None and ann.ntotal == 3000 * P and 1 <= ann.nprobe < ann.index.nlist
    q = clustered(200, seed=50)  # held out: never stored, never used to tune
    scores, got, patch = ann.search(q, 10)
    truth_scores, truth, truth_patch = PatchStore.load(p_path, mmap=True).search(q, 10)
    recall = recall_at(got, truth)
    assert recall >= PANN.recall_target
    same = got[:, 0] == truth[:, 0]  # the codes are the store's: where the top image agrees, so do score and patch
    np.testing.assert_allclose(scores[same, 0], truth_scores[same, 0], rtol=1e-5)
    assert (patch[same, 0] == truth_patch[same, 0]).all()
    ann.index.nprobe = 1  # the tuning matters: one list is not enough
    assert recall_at(ann.search(q, 10)[1], truth) < recall


def test_incremental_patch_add_is_searchable_at_once(tmp_path: Path) -> None:
    add_images(tmp_path, 0, 3000, seed=2)
    update(tmp_path)
    before = PatchAnn.load(patch_ann_path(index_paths(tmp_path, MODEL)[1])).meta
    new = add_images(tmp_path, 10_000, 40, seed=3, spread=True)
    out = update(tmp_path)
    assert out["mode"] == "incremental" and out["patch_ann_mode"] == "incremental"
    ann = load_patch_ann(index_paths(tmp_path, MODEL)[1])
    assert ann is not None and ann.ntotal == 3040 * P and ann.meta["nlist"] == before["nlist"]
    _, got, patch = ann.search(new[:, 2], 1)  # a new image's third patch finds that image (PQ codes of
    assert (got[:, 0] == np.arange(10_000, 10_040)).mean() >= 0.9  # scattered vectors may confuse a few)
    _, want, want_patch = PatchStore.load(index_paths(tmp_path, MODEL)[1], mmap=True).search(new[:, 2], 1)
    ann.index.nprobe = ann.index.nlist  # every list: exactly what the scan finds, codes and ids added right
    _, got, patch = ann.search(new[:, 2], 1)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(patch, want_patch)


def test_rebuild_after_layout_growth_matches_the_scan(tmp_path: Path) -> None:
    add_images(tmp_path, 0, 1000, seed=4)
    first = update(tmp_path)
    add_images(tmp_path, 100_000, 4000, seed=5)
    out = update(tmp_path)
    assert out["patch_ann_mode"] == "rebuild" and out["patch_ann_layout"] != first["patch_ann_layout"]
    ann = load_patch_ann(index_paths(tmp_path, MODEL)[1])
    assert ann is not None and ann.meta["built_for"] == 5000 and ann.meta["nested"]
    q = clustered(200, seed=51)
    assert recall_at(ann.search(q, 10)[1], scan(tmp_path, q)) >= PANN.recall_target


def test_small_store_is_scanned_and_out_of_step_index_is_not_used(tmp_path: Path) -> None:
    add_images(tmp_path, 0, 400, seed=6)
    p_path = index_paths(tmp_path, MODEL)[1]
    assert update(tmp_path)["patch_ann_mode"] == "exact" and not patch_ann_path(p_path).exists()
    add_images(tmp_path, 1000, 600, seed=7)
    assert update(tmp_path)["patch_ann_mode"] == "rebuild"
    store = PatchStore.load(p_path)
    store.add(np.array([77_777]), clustered(P, seed=8)[None])
    store.save(p_path)  # the store moved on without the approximate index (a kill between the saves)
    assert load_patch_ann(p_path) is None
    assert sync_patch_ann(p_path, None, PANN)["patch_ann_mode"] == "rebuild" and load_patch_ann(p_path).ntotal == 1001 * P


KILLED_BUILD = textwrap.dedent("""
    import contextlib, sys, time
    from tagger.store import ann as ann_mod
    from tagger.store.ann import AnnConfig
    from tagger.store.patchann import PatchAnnConfig
    from tagger.store.updates import update_indexes
    real_open = ann_mod.atomic_open

    @contextlib.contextmanager
    def slow_open(path):  # the real atomic write, hanging after the first 4 KB until killed
        with real_open(path) as fh:
            class Slow:
                written = 0
                def write(self, data):
                    fh.write(data)
                    Slow.written += len(data)
                    if Slow.written > 4096:
                        fh.flush()
                        print("writing", flush=True)
                        time.sleep(600)
            yield Slow()

    ann_mod.atomic_open = slow_open
    update_indexes(sys.argv[1], "m@test", ann=AnnConfig(exact_upto=10**6), rebuild=True,
                   patch_ann=PatchAnnConfig(exact_upto=500, min_lists=8, tune_queries=100, nested_from=128))
""")


def test_kill_during_a_patch_build_leaves_the_old_index_usable(tmp_path: Path) -> None:
    add_images(tmp_path, 0, 2000, seed=9)
    update(tmp_path)
    p_path = index_paths(tmp_path, MODEL)[1]
    old = patch_ann_path(p_path).read_bytes()
    q = clustered(5, seed=10)
    want = load_patch_ann(p_path).search(q, 10)[1]
    proc = subprocess.Popen([sys.executable, "-c", KILLED_BUILD, str(tmp_path)], stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        assert proc.stdout.readline().strip() == "writing"
        assert any(p.name.startswith(TMP_PREFIX + "patches.ann") for p in p_path.parent.iterdir())
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert patch_ann_path(p_path).read_bytes() == old
    ann = load_patch_ann(p_path)
    assert ann is not None
    np.testing.assert_array_equal(ann.search(q, 10)[1], want)
    assert update(tmp_path)["patch_ann_mode"] == "unchanged"


def test_patch_search_uses_the_approximate_index_unless_exact(tmp_path: Path, monkeypatch) -> None:
    from tagger.pipeline import search as search_mod
    from tagger.workspace import Workspace
    add_images(tmp_path, 0, 3000, seed=11)
    update(tmp_path)
    ws = Workspace.at(tmp_path)
    q = clustered(1, seed=12)[0]
    calls = []
    real = PatchAnn.search
    monkeypatch.setattr(PatchAnn, "search", lambda self, *a, **kw: calls.append(1) or real(self, *a, **kw))
    approx = search_mod.search_vector(ws, MODEL, q, 10, level="patch", with_uris=False)
    assert calls == [1]
    exact = search_mod.search_vector(ws, MODEL, q, 10, level="patch", with_uris=False, exact=True)
    assert calls == [1]
    assert [h.image_id for h in exact] == scan(tmp_path, q[None])[0].tolist()
    assert len({h.image_id for h in approx} & {h.image_id for h in exact}) >= 8
    assert len(search_mod.search_vector(ws, MODEL, q, 10**12, level="patch", with_uris=False, exact=True)) == 3000
    assert 10 < len(search_mod.search_vector(ws, MODEL, q, 10**12, level="patch", with_uris=False)) <= 3000


def test_probe_alternates_the_l2_and_the_scaled_lists(tmp_path: Path) -> None:
    add_images(tmp_path, 0, 1500, seed=13)
    update(tmp_path)
    p_path = index_paths(tmp_path, MODEL)[1]
    ann = load_patch_ann(p_path)
    assert ann is not None and ann.meta["config"]["coarse_scale"] == PANN.coarse_scale != 1.0
    q = clustered(30, seed=14)
    lists, _ = ann.probe(q)
    plain = ann.index.quantizer.search(q, ann.nprobe)[1]  # L2 in the PCA space, as FAISS probes
    assert (lists[:, 0] == plain[:, 0]).all()  # a query's nearest list by L2 is always probed
    assert all(len(set(row.tolist())) == ann.nprobe for row in lists)
    ann.meta["config"]["coarse_scale"] = 1.0  # no scale: exactly FAISS's own probe and search
    np.testing.assert_array_equal(ann.probe(q)[0], plain)
    _, ids = ann.index.search(q, 10 * P)
    assert [i for i in ids[0] // P if i >= 0][0] == ann.search(q[:1], 1)[1][0, 0]


def test_a_single_query_spreads_its_lists_over_the_threads_with_the_same_result(tmp_path: Path) -> None:
    import faiss

    add_images(tmp_path, 0, 3000, seed=6)
    update(tmp_path)
    ann = load_patch_ann(index_paths(tmp_path, MODEL)[1])
    q = clustered(20, seed=60)
    batch = ann.search(q, 10)  # 20 queries, one thread
    assert ann.index.parallel_mode == 3
    faiss.omp_set_num_threads(2)
    try:
        single = [ann.search(q[i:i + 1], 10) for i in range(len(q))]
        assert ann.index.parallel_mode == 1  # one query, two threads: its lists split between them
        again = ann.search(q, 10)  # a batch: a query per thread
        assert ann.index.parallel_mode == 3
    finally:
        faiss.omp_set_num_threads(1)
    for i, (scores, ids, _) in enumerate(single):
        np.testing.assert_allclose(scores[0], batch[0][i], rtol=1e-5)
        assert set(ids[0]) == set(batch[1][i])
    np.testing.assert_allclose(again[0], batch[0], rtol=1e-5)
