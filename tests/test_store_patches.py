"""PatchStore against brute-force numpy: decode error, per-image search, sizes, persistence."""
from __future__ import annotations

import os
from pathlib import Path

import faiss
import numpy as np
import pytest

from tagger.errors import ConfigError, StoreError, UnknownIdError
from tagger.store import (
    IndexConfig,
    PatchStore,
    build_patch_store,
    patch_ids,
    split_patch_ids,
    write_shards,
)

N, P, D = 150, 9, 32
PQ = IndexConfig(patch_bytes=8, nbits=8, train_size=N * P)
FLAT = IndexConfig(patch_factory="Flat")


pytestmark = pytest.mark.usefixtures("one_faiss_thread")


def _patches(n: int = N, seed: int = 0) -> np.ndarray:
    """Seeded float16 patches of intrinsic dimension 4 plus a little noise."""
    rng = np.random.default_rng(seed)
    basis = np.random.default_rng(99).normal(size=(4, D))
    x = rng.normal(size=(n, P, 4)) @ basis + 0.02 * rng.normal(size=(n, P, D))
    return x.astype(np.float16)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _store(cfg: IndexConfig, n: int = N) -> tuple[PatchStore, np.ndarray, np.ndarray]:
    ids = np.arange(n, dtype=np.int64) * 7 + 3
    x = _patches(n)
    store = PatchStore(D, P, cfg)
    if not store.is_trained:
        store.train(x.reshape(-1, D))
    store.add(ids, x)
    return store, ids, x


@pytest.fixture(scope="module")
def pq_store() -> tuple[PatchStore, np.ndarray, np.ndarray]:
    return _store(PQ)


def test_decode_error_is_small_against_uncompressed_baseline(pq_store) -> None:
    store, ids, x = pq_store
    flat, _, _ = _store(FLAT)
    exact = flat.decode(ids)
    np.testing.assert_array_equal(exact, _unit(x))  # Flat mode is lossless
    approx = store.decode(ids)
    mse = float(((approx - exact) ** 2).sum(-1).mean())  # vectors have unit norm
    shuffled = float(((approx - exact[::-1]) ** 2).sum(-1).mean())
    assert mse < 0.05 and mse < 0.1 * shuffled
    pq = faiss.downcast_index(store.index).pq
    rows = np.arange(5 * P, 7 * P)
    np.testing.assert_array_equal(pq.decode(store.codes[rows]).reshape(2, P, D), approx[5:7])


def test_search_best_patch_per_image_equals_brute_force(pq_store) -> None:
    """Oracle up to exact ties (PQ maps near vectors to identical codes, hence equal scores)."""
    for store, ids, _ in (pq_store, _store(FLAT)):
        q = _unit(_patches(1, seed=5)[0])  # 9 queries
        k = 12
        scores, got_ids, got_patch = store.search(q, k)
        sims = np.einsum("qd,npd->qnp", q, store.decode(ids))
        best = sims.max(axis=2)
        want = -np.sort(-best, axis=1)[:, :k]
        np.testing.assert_allclose(scores, want, atol=1e-5)
        pos = store.positions(got_ids.ravel()).reshape(got_ids.shape)
        rows = np.arange(q.shape[0])[:, None]
        np.testing.assert_allclose(best[rows, pos], scores, atol=1e-5)  # true max of that image
        np.testing.assert_allclose(sims[rows, pos, got_patch], scores, atol=1e-5)  # its best patch
        assert all(np.unique(r).size == k for r in got_ids)
    exact, ids, _ = _store(FLAT)
    _, got_ids, got_patch = exact.search(q, k)
    sims = np.einsum("qd,npd->qnp", q, _unit(_patches()))
    order = np.argsort(-sims.max(axis=2), axis=1)[:, :k]
    np.testing.assert_array_equal(got_ids, ids[order])
    np.testing.assert_array_equal(got_patch, np.take_along_axis(sims.argmax(axis=2), order, 1))


def test_search_with_k_beyond_images_pads(pq_store) -> None:
    small, ids, _ = _store(FLAT, n=3)
    scores, got, patch = small.search(_unit(_patches(1, seed=6)[0, :2]), 5)
    assert sorted(got[0, :3]) == sorted(ids) and (got[:, 3:] == -1).all()
    assert np.isnan(scores[:, 3:]).all() and (patch[:, 3:] == -1).all()


@pytest.mark.parametrize("cfg,expected", [
    (IndexConfig(patch_bytes=8, nbits=8), 8 * P),
    (IndexConfig(patch_bytes=8, nbits=4), 8 * P),
    (IndexConfig(patch_bytes=16), 16 * P),
    (IndexConfig(patch_factory="Flat"), 4 * D * P),
])
def test_bytes_per_image_matches_config(cfg: IndexConfig, expected: int) -> None:
    store, _, _ = _store(cfg, n=40)
    assert store.bytes_per_image() == expected
    assert store.codes.nbytes == 40 * expected


def test_add_replaces_existing_images_in_place(pq_store) -> None:
    store, ids, x = _store(PQ, n=60)
    new = _patches(10, seed=7)
    store.add(ids[:10], new)
    assert store.n_images == 60 and store.index.ntotal == 60 * P
    err_new = ((store.decode(ids[:10]) - _unit(new)) ** 2).sum(-1).mean()
    assert err_new < 0.05
    store.add(np.array([10_000]), new[:1])
    assert store.n_images == 61
    np.testing.assert_array_equal(store.decode(np.array([10_000])), store.decode(ids[:1]))
    with pytest.raises(UnknownIdError):
        store.decode(np.array([ids[0], 5]))
    with pytest.raises(StoreError):
        store.add(np.array([1, 1]), new[:2])
    with pytest.raises(StoreError):
        store.add(np.array([-1]), new[:1])


def test_iter_decoded_streams_everything_in_order(pq_store) -> None:
    store, ids, _ = pq_store
    chunks = list(store.iter_decoded(batch_images=64))
    assert [c[0].size for c in chunks] == [64, 64, 22]
    np.testing.assert_array_equal(np.concatenate([c[0] for c in chunks]), ids)
    np.testing.assert_array_equal(np.concatenate([c[1] for c in chunks]), store.decode(ids))


def test_save_load_round_trip_and_crash(pq_store, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    store, ids, _ = pq_store
    path = tmp_path / "patches.tgp"
    store.save(path)
    back = PatchStore.load(path)
    assert back.cfg == store.cfg and back.patches_per_image == P
    np.testing.assert_array_equal(back.image_ids, ids)
    np.testing.assert_array_equal(back.codes, store.codes)
    q = _unit(_patches(1, seed=8)[0])
    for a, b in zip(store.search(q, 4), back.search(q, 4)):
        np.testing.assert_array_equal(a, b)
    before = path.read_bytes()
    real_write = faiss.write_index

    def exploding_write(index: faiss.Index, writer: object) -> None:
        real_write(index, writer)
        raise OSError("disk full")

    monkeypatch.setattr(faiss, "write_index", exploding_write)
    with pytest.raises(OSError):
        _store(FLAT, n=5)[0].save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["patches.tgp"]
    (tmp_path / "junk").write_bytes(b"not a store")
    with pytest.raises(StoreError):
        PatchStore.load(tmp_path / "junk")


def test_build_from_shards_is_deterministic(tmp_path: Path) -> None:
    x = _patches(60)
    ids = np.arange(60, dtype=np.int64) * 5
    g = x.mean(axis=1)
    parts = [(ids[i:i + 20], g[i:i + 20], x[i:i + 20]) for i in range(0, 60, 20)]
    cfg = IndexConfig(patch_bytes=6, nbits=6, train_size=300, batch_size=7)
    write_shards(tmp_path / "a", "m", parts)
    write_shards(tmp_path / "b", "m", [(ids[i:i + 15], g[i:i + 15], x[i:i + 15])
                                       for i in range(0, 60, 15)][::-1])
    a, b = build_patch_store(tmp_path / "a", "m", cfg), build_patch_store(tmp_path / "b", "m", cfg)
    np.testing.assert_array_equal(a.image_ids, ids)
    assert faiss.serialize_index(a.index).tobytes() == faiss.serialize_index(b.index).tobytes()
    other = build_patch_store(tmp_path / "a", "m", IndexConfig(patch_bytes=6, nbits=6,
                                                               train_size=300, seed=1))
    assert not np.array_equal(other.codes, a.codes)
    err = ((a.decode(ids) - _unit(x)) ** 2).sum(-1).mean()
    assert err < 0.1


def test_patch_ids_round_trip_and_bad_factory() -> None:
    pids = patch_ids(np.array([0, 5, 2**40]), P)
    assert pids.shape == (3, P) and pids[1, 2] == 5 * P + 2
    img, patch = split_patch_ids(pids, P)
    np.testing.assert_array_equal(img[:, 0], [0, 5, 2**40])
    np.testing.assert_array_equal(patch[2], np.arange(P))
    with pytest.raises(ConfigError):
        PatchStore(D, P, IndexConfig(patch_factory="IVF4,PQ8"))
    with pytest.raises(ConfigError):
        PatchStore(D, P, IndexConfig(patch_bytes=5))  # 5 sub-quantizers do not divide d=32


@pytest.mark.parametrize("cfg", [PQ, FLAT, IndexConfig(patch_factory="OPQ4,PQ8", train_size=N * P)],
                         ids=["pq", "flat", "opq"])
def test_memory_mapped_load_decodes_like_a_full_load(cfg: IndexConfig, tmp_path: Path) -> None:
    store, ids, _ = _store(cfg)
    path = tmp_path / "patches.tgp"
    store.save(path)
    full, mapped = PatchStore.load(path), PatchStore.load(path, mmap=True)
    assert isinstance(mapped.codes, np.memmap) and mapped.index.ntotal == 0  # only the codec in memory
    np.testing.assert_array_equal(full.codes, store.codes)
    some = ids[::-7]
    np.testing.assert_array_equal(mapped.decode(some), store.decode(some))
    np.testing.assert_array_equal(full.decode(some), store.decode(some))
    with pytest.raises(StoreError, match="memory-mapped"):
        mapped.add(ids[:1], _patches(1))
    q = _unit(_patches(1)[0])
    for a, b in zip(mapped.search(q, 4), store.search(q, 4)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    full.add(np.array([10**6]), _patches(1, seed=5))  # a full load stays writable and saves again
    full.save(path)
    assert PatchStore.load(path, mmap=True).n_images == N + 1


@pytest.mark.parametrize("codec", ["pq", "flat"])  # PQ codes read in place; others appended to a copy
def test_a_memory_mapped_store_searches_slice_by_slice_like_a_loaded_one(codec: str, pq_store, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from tagger.store import patches as patches_module

    store, _, x = pq_store if codec == "pq" else _store(FLAT)
    store.save(tmp_path / "patches.tgp")
    mapped = PatchStore.load(tmp_path / "patches.tgp", mmap=True)
    monkeypatch.setattr(patches_module, "SEARCH_SLICE_ROWS", 5 * P + 4)  # slices cut images in two
    q = _unit(x[[3, 70, 140], 2].astype(np.float32))
    for k in (1, 7, N + 5):
        (s1, i1, p1), (s2, i2, p2) = mapped.search(q, k), store.search(q, k)
        np.testing.assert_allclose(s1, s2, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(i1, i2)
        np.testing.assert_array_equal(p1, p2)
    import faiss
    faiss.omp_set_num_threads(2)  # a single query: its slices scanned on two threads, merged in order
    try:
        for i in range(len(q)):
            one = store.search(q[i:i + 1], 7)
            for got, want in zip(mapped.search(q[i:i + 1], 7), one):
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    finally:
        faiss.omp_set_num_threads(1)


def test_version_1_files_still_load(pq_store, tmp_path: Path) -> None:
    import json
    import struct

    store, ids, _ = pq_store
    path = tmp_path / "old.tgp"
    head = json.dumps({"dim": D, "patches_per_image": P, "n_images": N, "code_size": store.code_size,
                       "config": store.cfg.to_dict()}).encode()
    with open(path, "wb") as fh:
        fh.write(b"TGPATCH1" + struct.pack("<Q", len(head)) + head + ids.astype("<i8").tobytes())
        faiss.write_index(store.index, faiss.PyCallbackIOWriter(fh.write))
    for mmap in (False, True):
        back = PatchStore.load(path, mmap=mmap)
        np.testing.assert_array_equal(back.decode(ids[:5]), store.decode(ids[:5]))


def test_too_few_vectors_for_the_codec_give_an_exact_stand_in(tmp_path: Path) -> None:
    """PQ8x8 needs 2**8 training vectors: below that the store keeps its patches uncompressed,
    above it the codec trains (on at least that many, whatever ``train_size`` says)."""
    x, ids = _patches(40), np.arange(40, dtype=np.int64) * 3
    g = x.mean(axis=1)
    cfg = IndexConfig(patch_bytes=8, train_size=64)
    write_shards(tmp_path / "few", "m", [(ids[:20], g[:20], x[:20])])  # 180 patch vectors
    write_shards(tmp_path / "enough", "m", [(ids[:20], g[:20], x[:20]), (ids[20:], g[20:], x[20:])])
    few = build_patch_store(tmp_path / "few", "m", cfg)
    assert few.provisional_until == 256 and few.code_size == 4 * D
    np.testing.assert_array_equal(few.decode(ids[:20]), _unit(x[:20]))
    enough = build_patch_store(tmp_path / "enough", "m", cfg)
    assert enough.provisional_until == 0 and enough.code_size == 8
    assert isinstance(faiss.downcast_index(enough.index), faiss.IndexPQ)
    with pytest.raises(StoreError, match="at least 256 training vectors"):
        PatchStore(D, P, cfg).train(x[:20].reshape(-1, D))


@pytest.mark.parametrize("cfg", [PQ, FLAT], ids=["pq", "flat"])
def test_extending_the_file_on_disk_equals_adding_in_memory_and_saving(cfg: IndexConfig, tmp_path: Path,
                                                                      monkeypatch) -> None:
    """Replaced ids stay in place (a later batch wins), new ids are appended in order of first
    appearance; the old codes are streamed in blocks smaller than one image's rows apart."""
    from tagger.store import patch_store_file as patchfile
    store, ids, _ = _store(cfg, n=60)
    path, ref = tmp_path / "disk.tgp", tmp_path / "memory.tgp"
    store.save(path)
    a_ids = np.concatenate([ids[5:15], [10_001, 10_002, 10_003]])
    b_ids = np.array([10_002, int(ids[40]), 10_004])
    a, b = _patches(len(a_ids), seed=11), _patches(len(b_ids), seed=12)
    memory = PatchStore.load(path)
    memory.add(a_ids, a)
    memory.add(b_ids, b)
    memory.save(ref)
    monkeypatch.setattr(patchfile, "WRITE_CHUNK", 5 * P * store.code_size)  # blocks of 5 images
    assert patchfile.extend_patch_file(path, [(a_ids, a), (b_ids, b)], cfg.normalize) == 64
    assert path.read_bytes() == ref.read_bytes()
    with pytest.raises(StoreError, match="patches must be"):
        patchfile.extend_patch_file(path, [(np.array([1]), _patches(2))], cfg.normalize)
    with pytest.raises(StoreError, match="duplicates"):
        patchfile.extend_patch_file(path, [(np.array([1, 1]), _patches(2))], cfg.normalize)
    assert path.read_bytes() == ref.read_bytes()  # a refused batch leaves the file as it was


def test_a_codec_trained_on_a_small_sample_writes_nothing_to_the_terminal(capfd) -> None:
    """FAISS printed a bare "WARNING clustering 6400 points to 256 centroids" line per sub-quantizer
    (16 in a row on a first encode of a small folder); the codec trains the same without them."""
    from tagger.store.codec import train_checked
    x = np.random.default_rng(0).standard_normal((1000, 64)).astype(np.float32)
    index = faiss.index_factory(64, "PQ16", faiss.METRIC_INNER_PRODUCT)
    train_checked(index, x, "a patch codec")
    assert index.is_trained and "WARNING" not in capfd.readouterr().err
