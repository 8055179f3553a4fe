"""The approximate global index against exact search: recall target, incremental adds, rebuild after
the layout is outgrown, a kill during a build, and the search path's choice between the two."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import faiss
import numpy as np
import pytest

from tagger.atomic import TMP_PREFIX
from tagger.store import GlobalIndex, IndexConfig, index_paths, write_shards
from tagger.store.ann import AnnConfig, AnnIndex, ann_path, choose_layout, read_meta, recall_at
from tagger.store.annsync import load_ann, sync_ann
from tagger.store.updates import update_indexes

D, P, MODEL = 32, 2, "m@test"
ANN = AnnConfig(exact_upto=1000, min_lists=8, tune_queries=200, lists_per_sqrt=1.0)

pytestmark = pytest.mark.usefixtures("one_faiss_thread")


def clustered(n: int, seed: int, centers: int = 60, latent: int = 6) -> np.ndarray:
    """Unit vectors of low intrinsic dimension in clusters (seeded; the basis is shared by all seeds)."""
    basis = np.random.default_rng(99).standard_normal((latent, D))
    mid = np.random.default_rng(98).standard_normal((centers, latent)) * 2.0
    rng = np.random.default_rng(seed)
    z = mid[rng.integers(0, centers, n)] + 0.5 * rng.standard_normal((n, latent))
    x = z @ basis + 0.1 * rng.standard_normal((n, D))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def exact_top(db: np.ndarray, ids: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    return ids[np.argsort(-(q @ db.T), axis=1, kind="stable")[:, :k]]


def add_shards(root: Path, start: int, n: int, seed: int, size: int = 1000) -> np.ndarray:
    x = clustered(n, seed)
    ids = np.arange(start, start + n, dtype=np.int64)
    patches = np.repeat(x[:, None, :], P, axis=1).astype(np.float16)
    write_shards(root, MODEL, [(ids[i:i + size], x[i:i + size], patches[i:i + size]) for i in range(0, n, size)])
    return x


def corpus(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """Every stored (id, vector), read back from the exact index."""
    gi = GlobalIndex.load(index_paths(root, MODEL)[0])
    ids = gi.ids()
    return ids, gi.reconstruct(ids)


def test_layout_grows_from_exact_to_ivf_and_fits_the_budget() -> None:
    cfg = AnnConfig()
    assert choose_layout(10_000, 512, cfg).exact
    small, big = choose_layout(10**5, 512, cfg), choose_layout(10**6, 512, cfg)
    assert not small.exact and small.nlist < big.nlist and big.factory.startswith(f"IVF{big.nlist},")
    tight = choose_layout(10**8, 512, AnnConfig(memory_budget=8 << 30))
    assert tight.est_bytes <= 8 << 30 and "PQ" in tight.factory and "HNSW" in tight.factory


def test_approximate_meets_the_recall_target_against_exact(tmp_path: Path) -> None:
    add_shards(tmp_path, 0, 4000, seed=1)
    out = update_indexes(tmp_path, MODEL, ann=ANN)
    assert out["ann_mode"] == "rebuild" and out["ann_factory"].startswith("IVF")
    ann = load_ann(index_paths(tmp_path, MODEL)[0])
    assert ann is not None and ann.ntotal == 4000 and 1 <= ann.nprobe < ann.meta["nlist"]
    ids, db = corpus(tmp_path)
    q = clustered(300, seed=50)  # held out: never stored, never used to tune
    recall = recall_at(ann.search(q, 10, use_gpu=False)[1], exact_top(db, ids, q, 10))
    assert recall >= ANN.recall_target
    ann.index.nprobe = 1  # the tuning matters: one list is not enough
    assert recall_at(ann.search(q, 10, use_gpu=False)[1], exact_top(db, ids, q, 10)) < recall


def test_incremental_add_is_searchable_at_once(tmp_path: Path) -> None:
    add_shards(tmp_path, 0, 3000, seed=2)
    update_indexes(tmp_path, MODEL, ann=ANN)
    before = read_meta(ann_path(index_paths(tmp_path, MODEL)[0]))
    new = add_shards(tmp_path, 10_000, 40, seed=3)
    out = update_indexes(tmp_path, MODEL, ann=ANN)
    assert out["mode"] == "incremental" and out["ann_mode"] == "incremental"
    ann = load_ann(index_paths(tmp_path, MODEL)[0])
    assert ann is not None and ann.ntotal == 3040 and ann.meta["factory"] == before["factory"]
    _, got = ann.search(new, 1, use_gpu=False)
    assert (got[:, 0] == np.arange(10_000, 10_040)).all()


def test_rebuild_after_layout_growth_matches_exact(tmp_path: Path) -> None:
    add_shards(tmp_path, 0, 2000, seed=4)
    first = update_indexes(tmp_path, MODEL, ann=ANN)
    add_shards(tmp_path, 100_000, 8000, seed=5)
    out = update_indexes(tmp_path, MODEL, ann=ANN)
    assert out["ann_mode"] == "rebuild" and out["ann_factory"] != first["ann_factory"]
    ann = load_ann(index_paths(tmp_path, MODEL)[0])
    assert ann is not None and ann.ntotal == 10_000 and ann.meta["built_for"] == 10_000
    ids, db = corpus(tmp_path)
    q = clustered(300, seed=51)
    assert recall_at(ann.search(q, 10, use_gpu=False)[1], exact_top(db, ids, q, 10)) >= ANN.recall_target


def test_small_corpus_is_searched_exactly_and_out_of_step_index_is_not_used(tmp_path: Path) -> None:
    add_shards(tmp_path, 0, 3000, seed=6)
    g_path = index_paths(tmp_path, MODEL)[0]
    assert update_indexes(tmp_path, MODEL, ann=AnnConfig(exact_upto=5000))["ann_mode"] == "exact"
    assert not ann_path(g_path).exists()
    update_indexes(tmp_path, MODEL, ann=ANN, rebuild=True)
    gi = GlobalIndex.load(g_path)
    gi.add(np.array([77_777]), clustered(1, seed=7))
    gi.save(g_path)  # the exact index moved on without the approximate one (a kill between the saves)
    assert load_ann(g_path) is None
    assert sync_ann(g_path, None, ANN)["ann_mode"] == "rebuild" and load_ann(g_path).ntotal == 3001


KILLED_BUILD = textwrap.dedent("""
    import contextlib, sys, time
    from tagger.store import ann as ann_mod
    from tagger.store.ann import AnnConfig
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
    update_indexes(sys.argv[1], "m@test", ann=AnnConfig(exact_upto=1000, min_lists=8, tune_queries=200,
                                                        lists_per_sqrt=1.0), rebuild=True)
""")


def test_kill_during_a_build_leaves_the_old_index_usable(tmp_path: Path) -> None:
    add_shards(tmp_path, 0, 3000, seed=8)
    update_indexes(tmp_path, MODEL, ann=ANN)
    g_path = index_paths(tmp_path, MODEL)[0]
    old = ann_path(g_path).read_bytes()
    q = clustered(5, seed=9)
    want = load_ann(g_path).search(q, 10, use_gpu=False)[1]
    proc = subprocess.Popen([sys.executable, "-c", KILLED_BUILD, str(tmp_path)], stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        assert proc.stdout.readline().strip() == "writing"
        assert any(p.name.startswith(TMP_PREFIX + "global.ann") for p in g_path.parent.iterdir())
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert ann_path(g_path).read_bytes() == old
    ann = load_ann(g_path)
    assert ann is not None
    np.testing.assert_array_equal(ann.search(q, 10, use_gpu=False)[1], want)
    assert update_indexes(tmp_path, MODEL, ann=ANN)["ann_mode"] == "unchanged"


def test_search_vector_uses_the_approximate_index_unless_exact(tmp_path: Path, monkeypatch) -> None:
    from tagger.pipeline import search as search_mod
    from tagger.workspace import Workspace
    add_shards(tmp_path, 0, 3000, seed=10)
    update_indexes(tmp_path, MODEL, ann=ANN)
    ws = Workspace.at(tmp_path)
    q = clustered(1, seed=11)[0]
    calls = []
    real = AnnIndex.search
    monkeypatch.setattr(AnnIndex, "search", lambda self, *a, **kw: calls.append(1) or real(self, *a, **kw))
    approx = search_mod.search_vector(ws, MODEL, q, 10, with_uris=False)
    assert calls == [1]
    exact = search_mod.search_vector(ws, MODEL, q, 10, with_uris=False, exact=True)
    assert calls == [1]
    ids, db = corpus(tmp_path)
    assert [h.image_id for h in exact] == exact_top(db, ids, q[None], 10)[0].tolist()
    assert len({h.image_id for h in approx} & {h.image_id for h in exact}) >= 8
    # a k far beyond the corpus is capped at it (uncapped, 10^12 result slots would not fit in memory)
    assert len(search_mod.search_vector(ws, MODEL, q, 10**12, with_uris=False, exact=True)) == 3000
    assert 10 < len(search_mod.search_vector(ws, MODEL, q, 10**12, with_uris=False)) <= 3000



def test_unreadable_images_crowding_the_top_are_left_out_in_a_few_rounds(tmp_path: Path, monkeypatch) -> None:
    """150 of the best 160 images deleted: the search asks for k + 64 first, then more, and returns ranks
    151-160 of the exact search; asking k plus every unreadable image at once could mean k times the corpus."""
    from tagger.pipeline import search as search_mod
    from tagger.workspace import Workspace
    add_shards(tmp_path, 0, 3000, seed=10)
    update_indexes(tmp_path, MODEL, ann=ANN)
    ws = Workspace.at(tmp_path)
    q = clustered(1, seed=11)[0]
    ids, db = corpus(tmp_path)
    top = exact_top(db, ids, q[None], 160)[0].tolist()

    class Gone:  # the catalog, as search reads it
        def unreadable_ids(self):
            return top[:150] + list(range(10**6, 10**6 + 2000))  # and 2,000 gone ones far down

        def uris_of(self, image_ids):
            return {i: f"/p/{i}.jpg" for i in image_ids}
    asked = []
    real = search_mod._raw_search
    monkeypatch.setattr(search_mod, "_raw_search", lambda *a: asked.append(a[3]) or real(*a))
    hits = search_mod.search_vector(ws, MODEL, q, 10, catalog=Gone(), exact=True)
    assert [h.image_id for h in hits] == top[150:] and [h.rank for h in hits] == list(range(1, 11))
    assert hits[0].uri == f"/p/{top[150]}.jpg" and asked == [74, 296]
