"""GlobalIndex against brute-force numpy: exact search, reconstruct, replacement, atomic save."""
from __future__ import annotations

import os
from pathlib import Path

import faiss
import numpy as np
import pytest

from tagger.errors import ConfigError, StoreError, UnknownIdError
from tagger.store import GlobalIndex, IndexConfig, build_global_index, write_shards
from tagger.store import gpu

D = 24


pytestmark = pytest.mark.usefixtures("one_faiss_thread")


def _vectors(n: int, seed: int = 0) -> np.ndarray:
    """Seeded vectors of intrinsic dimension 4 plus a little noise."""
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(4, D))
    return (rng.normal(size=(n, 4)) @ basis + 0.05 * rng.normal(size=(n, D))).astype(np.float32)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _brute(db: np.ndarray, ids: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    sims = _unit(q) @ _unit(db).T
    top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, top, axis=1), ids[top]


def test_search_and_reconstruct_equal_brute_force() -> None:
    x = _vectors(300)
    ids = np.random.default_rng(1).choice(10**9, size=300, replace=False).astype(np.int64)
    gi = GlobalIndex(D, IndexConfig())
    gi.add(ids, x)
    q = _vectors(7, seed=2)
    scores, got = gi.search(q, 10)
    want_scores, want_ids = _brute(x, ids, q, 10)
    np.testing.assert_array_equal(got, want_ids)
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)
    pick = ids[[5, 0, 299, 17]]
    np.testing.assert_allclose(gi.reconstruct(pick), _unit(x[[5, 0, 299, 17]]), atol=1e-6)
    with pytest.raises(UnknownIdError):
        gi.reconstruct(np.array([ids[0], -5]))


def test_k_larger_than_ntotal_pads_with_minus_one() -> None:
    gi = GlobalIndex(D)
    gi.add(np.arange(3), _vectors(3))
    _, got = gi.search(_vectors(2, seed=3), 5)
    assert (got[:, 3:] == -1).all() and sorted(got[0, :3]) == [0, 1, 2]


def test_readding_ids_replaces_instead_of_duplicating() -> None:
    old, new = _vectors(100, seed=4), _vectors(100, seed=5)
    gi = GlobalIndex(D)
    gi.add(np.arange(100), old)
    gi.add(np.arange(50, 150), new)
    assert gi.ntotal == 150
    assert sorted(gi.ids().tolist()) == list(range(150))
    np.testing.assert_allclose(gi.reconstruct(np.arange(50, 100)), _unit(new[:50]), atol=1e-6)
    np.testing.assert_allclose(gi.reconstruct(np.arange(50)), _unit(old[:50]), atol=1e-6)
    _, got = gi.search(new[:5], 150)
    assert all(np.unique(row).size == row.size for row in got)
    with pytest.raises(StoreError):
        gi.add(np.array([1, 1]), new[:2])
    assert gi.remove(np.array([0, 1, 10_000])) == 2 and gi.ntotal == 148


def test_ivf_factory_keeps_ids_replacement_and_reconstruct() -> None:
    cfg = IndexConfig(global_factory="IVF4,Flat", nprobe=4, train_size=200)
    x, y = _vectors(200, seed=6), _vectors(20, seed=7)
    gi = GlobalIndex(D, cfg)
    gi.train(x)
    gi.add(np.arange(200) * 3, x)
    gi.add(np.arange(20) * 3, y)
    assert gi.ntotal == 200
    db = np.concatenate([y, x[20:]])
    scores, got = gi.search(x[:6], 8)
    want_scores, want_ids = _brute(db, np.arange(200) * 3, x[:6], 8)
    np.testing.assert_array_equal(got, want_ids)
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)
    np.testing.assert_allclose(gi.reconstruct(np.array([3, 60])), _unit(db[[1, 20]]), atol=1e-6)


def test_unsupported_factories_are_refused() -> None:
    with pytest.raises(ConfigError):
        GlobalIndex(D, IndexConfig(global_factory="HNSW8"))
    with pytest.raises(ConfigError):
        GlobalIndex(D, IndexConfig(global_factory="IDMap,Flat"))


def test_save_load_round_trip(tmp_path: Path) -> None:
    gi = GlobalIndex(D)
    gi.add(np.arange(40) + 7, _vectors(40))
    gi.save(tmp_path / "g.faiss")
    back = GlobalIndex.load(tmp_path / "g.faiss")
    assert back.to_bytes() == gi.to_bytes() and back.cfg.metric == "ip"
    q = _vectors(3, seed=8)
    for a, b in zip(gi.search(q, 5), back.search(q, 5)):
        np.testing.assert_array_equal(a, b)


def test_a_memory_mapped_load_searches_alike_and_refuses_changes(tmp_path: Path) -> None:
    gi = GlobalIndex(D)
    gi.add(np.arange(40) + 7, _vectors(40))
    gi.save(tmp_path / "g.faiss")
    mapped = GlobalIndex.load(tmp_path / "g.faiss", mmap=True)
    q = _vectors(3, seed=8)
    for a, b in zip(gi.search(q, 5), mapped.search(q, 5)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(mapped.reconstruct(np.array([9, 7])), gi.reconstruct(np.array([9, 7])))
    for change in (lambda: mapped.add(np.array([100]), _vectors(1)), lambda: mapped.remove(np.array([7]))):
        with pytest.raises(StoreError, match="memory-mapped"):
            change()
    assert GlobalIndex.load(tmp_path / "g.faiss").ntotal == 40


def test_crash_mid_save_leaves_old_file_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "g.faiss"
    gi = GlobalIndex(D)
    gi.add(np.arange(10), _vectors(10))
    gi.save(path)
    before = path.read_bytes()
    gi.add(np.arange(10, 30), _vectors(20, seed=9))

    real_write = faiss.write_index

    def exploding_write(index: faiss.Index, writer: object) -> None:
        real_write(index, writer)  # every byte of the new index reaches the temp file ...
        raise OSError("disk full")  # ... and then the save dies before the rename

    monkeypatch.setattr(faiss, "write_index", exploding_write)
    with pytest.raises(OSError):
        gi.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["g.faiss"]
    assert GlobalIndex.load(path).ntotal == 10


def test_build_matches_incremental_adds(tmp_path: Path) -> None:
    x = _vectors(90).astype(np.float16)
    ids = np.arange(90, dtype=np.int64) * 11
    parts = [(ids[i:i + 25], x[i:i + 25], None) for i in range(0, 90, 25)]
    write_shards(tmp_path, "m", parts[::-1])
    built = build_global_index(tmp_path, "m", IndexConfig(batch_size=16))
    manual = GlobalIndex(D)
    manual.add(ids, x.astype(np.float32))
    assert built.to_bytes() == manual.to_bytes()


def test_gpu_placement_falls_back_to_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    index = faiss.IndexFlatIP(D)
    assert gpu.to_gpu_if_available(index, use_gpu=True) is index  # faiss-cpu: no GPU
    monkeypatch.setattr(gpu, "num_gpus", lambda: 1)

    def refuse(index: faiss.Index) -> faiss.Index:
        raise RuntimeError("this index type cannot go to GPU")

    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", refuse, raising=False)
    assert gpu.to_gpu_if_available(index, use_gpu=True) is index
    sentinel = faiss.IndexFlatIP(D)
    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", lambda index: sentinel, raising=False)
    assert gpu.to_gpu_if_available(index, use_gpu=True) is sentinel
    assert gpu.to_gpu_if_available(index, use_gpu=False) is index


def test_too_few_vectors_for_an_ivf_give_an_exact_stand_in(tmp_path: Path) -> None:
    x, ids = _vectors(10), np.arange(10, dtype=np.int64) + 100
    cfg = IndexConfig(global_factory="IVF16,Flat")
    write_shards(tmp_path, "m", [(ids, x.astype(np.float16), None)])
    gi = build_global_index(tmp_path, "m", cfg)
    assert gi.provisional_until == 16 and isinstance(gi.index, faiss.IndexIDMap2)
    q = _vectors(3, seed=4)
    scores, got = gi.search(q, 4)
    want_scores, want_ids = _brute(x.astype(np.float16).astype(np.float32), ids, q, 4)
    np.testing.assert_array_equal(got, want_ids)
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)
    with pytest.raises(StoreError, match="at least 16 training vectors"):
        GlobalIndex(D, cfg).train(x)


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_extending_the_file_on_disk_equals_adding_in_memory_and_saving(metric: str, tmp_path: Path,
                                                                      monkeypatch) -> None:
    """Ids already stored (old or added by an earlier batch) are removed and the batch appended, as
    successive adds do; the old vectors are streamed in blocks of a few rows."""
    from tagger.store import global_index_file as globalfile
    cfg = IndexConfig(metric=metric, use_gpu=False)
    x, ids = _vectors(60), np.arange(60, dtype=np.int64) * 3 + 1
    gi = GlobalIndex(D, cfg)
    gi.add(ids, x)
    path, ref = tmp_path / "disk.faiss", tmp_path / "memory.faiss"
    gi.save(path)
    a_ids = np.concatenate([ids[5:9], [10_001, 10_002, 10_003]])
    b_ids = np.array([10_002, int(ids[40]), 10_004])
    a, b = _vectors(len(a_ids), seed=11), _vectors(len(b_ids), seed=12)
    memory = GlobalIndex.load(path, cfg)
    memory.add(a_ids, a)
    memory.add(b_ids, b)
    memory.save(ref)
    monkeypatch.setattr(globalfile, "WRITE_ROWS", 7)
    assert globalfile.extend_global_file(path, [(a_ids, a), (b_ids, b)], cfg.normalize) == 64
    assert path.read_bytes() == ref.read_bytes()
    loaded = GlobalIndex.load(path, cfg)
    assert np.array_equal(loaded.ids()[-3:], b_ids)
    np.testing.assert_allclose(loaded.reconstruct(b_ids), _unit(b) if cfg.normalize else b, atol=1e-6)


def test_extending_an_empty_file_and_refusing_bad_batches(tmp_path: Path) -> None:
    from tagger.store.global_index_file import extend_global_file
    cfg = IndexConfig(use_gpu=False)
    path = tmp_path / "g.faiss"
    GlobalIndex(D, cfg).save(path)
    assert extend_global_file(path, [(np.array([4, 2]), _vectors(2))], cfg.normalize) == 2
    assert np.array_equal(GlobalIndex.load(path, cfg).ids(), [4, 2])
    before = path.read_bytes()
    with pytest.raises(StoreError):
        extend_global_file(path, [(np.array([1, 1]), _vectors(2))], cfg.normalize)
    with pytest.raises(StoreError, match="3 ids for 2 vectors"):
        extend_global_file(path, [(np.array([7, 8, 9]), _vectors(2))], cfg.normalize)
    assert path.read_bytes() == before  # a refused batch leaves the file as it was


def test_a_file_of_another_kind_is_left_to_the_in_memory_path(tmp_path: Path) -> None:
    from tagger.store.global_index_file import extend_global_file
    cfg = IndexConfig(global_factory="IVF4,Flat", use_gpu=False)
    gi = GlobalIndex(D, cfg)
    gi.train(_vectors(200))
    gi.add(np.arange(50), _vectors(50))
    path = tmp_path / "ivf.faiss"
    gi.save(path)
    before = path.read_bytes()
    assert extend_global_file(path, [(np.array([99]), _vectors(1))], cfg.normalize) is None
    assert path.read_bytes() == before
