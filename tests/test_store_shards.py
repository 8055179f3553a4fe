"""Embedding shards and IndexConfig: atomic writes, done-markers, reruns, crash and resume."""
from __future__ import annotations

import json
import os
from pathlib import Path

import faiss
import numpy as np
import pytest

from tagger.atomic import TMP_PREFIX
from tagger.errors import ConfigError, ShardError
from tagger.store import (
    IndexConfig,
    ShardWriter,
    SimulatedCrash,
    build_global_index,
    build_patch_store,
    exists_done,
    index_paths,
    iter_shards,
    list_done_shards,
    load_shard,
    model_dir,
    remove_stale_temp,
    shard_name_for,
    write_shard,
    write_shards,
)

N, P, D = 120, 4, 16
CFG = IndexConfig(patch_bytes=6, nbits=6, train_size=400, batch_size=50)


pytestmark = pytest.mark.usefixtures("one_faiss_thread")


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(3, D))
    ids = np.sort(rng.choice(10_000, size=N, replace=False)).astype(np.int64)
    g = (rng.normal(size=(N, 3)) @ basis).astype(np.float16)
    p = (rng.normal(size=(N, P, 3)) @ basis + 0.01 * rng.normal(size=(N, P, D))).astype(np.float16)
    return ids, g, p


def _parts(size: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    ids, g, p = _data()
    return [(ids[i:i + size], g[i:i + size], p[i:i + size]) for i in range(0, N, size)]


def test_config_json_round_trip_and_validation() -> None:
    cfg = IndexConfig(patch_bytes=32, nbits=4, patch_factory=None, metric="l2", use_gpu=False)
    assert IndexConfig.from_json(cfg.to_json()) == cfg
    assert cfg.pq_m == 64 and cfg.patch_factory_string == "PQ64x4"
    assert IndexConfig(patch_factory="Flat").patch_factory_string == "Flat"
    with pytest.raises(ConfigError):
        IndexConfig.from_dict({"patch_bytes": 16, "bogus": 1})
    with pytest.raises(ConfigError):
        IndexConfig(patch_bytes=3, nbits=5)
    with pytest.raises(ConfigError):
        IndexConfig(metric="cosine")
    with pytest.raises(ConfigError):
        IndexConfig.from_json("[1, 2]")


def test_shard_name_is_deterministic_and_sorts_by_first_id() -> None:
    a = np.array([5, 9, 2], dtype=np.int64)
    assert shard_name_for(a) == shard_name_for(a.copy())
    assert shard_name_for(a) != shard_name_for(a[::-1].copy())
    names = [shard_name_for(np.array([i, i + 1])) for i in (1000, 7, 123456)]
    assert sorted(names) == [names[1], names[0], names[2]]
    with pytest.raises(ShardError):
        shard_name_for(np.array([], dtype=np.int64))


def test_paths_follow_the_workspace_layout(tmp_path: Path) -> None:
    assert model_dir(tmp_path, "ViT-B-32") == tmp_path / "embeddings" / "ViT-B-32"
    g, p = index_paths(tmp_path, "ViT-B-32")
    assert g == tmp_path / "indexes" / "ViT-B-32" / "global.faiss" and p.parent == g.parent
    for bad in ("../x", "a/b", ".hidden", ""):
        with pytest.raises(ShardError):
            model_dir(tmp_path, bad)


def test_write_and_load_round_trip(tmp_path: Path) -> None:
    ids, g, p = _data()
    path = write_shard(tmp_path, "m", "s0", ids, g, p.astype(np.float32))
    assert exists_done(tmp_path, "m", "s0") and (path / "_DONE").is_file()
    shard = load_shard(path)
    assert isinstance(shard.ids, np.memmap)
    np.testing.assert_array_equal(shard.ids, ids)
    np.testing.assert_array_equal(shard.global_vecs, g)
    assert shard.global_vecs.dtype == np.float16 and shard.patches.dtype == np.float16
    np.testing.assert_array_equal(shard.patches, p)
    assert (shard.n, shard.dim, shard.patches_per_image) == (N, D, P)
    no_patch = write_shard(tmp_path, "m", "s1", ids[:3] + 1, g[:3].astype(np.float64))
    loaded = load_shard(no_patch, mmap=False)
    assert loaded.patches is None and loaded.global_vecs.dtype == np.float32


@pytest.mark.parametrize("bad", ["dup", "neg", "shape", "pshape"])
def test_invalid_shards_are_refused(tmp_path: Path, bad: str) -> None:
    ids, g, p = _data()
    if bad == "dup":
        ids = ids.copy(); ids[1] = ids[0]
    elif bad == "neg":
        ids = ids - ids.max() - 1
    elif bad == "shape":
        g = g[:-1]
    else:
        p = p[:, :, :-1]
    with pytest.raises(ShardError):
        write_shard(tmp_path, "m", "s0", ids, g, p)
    assert list_done_shards(tmp_path, "m") == []
    directory = model_dir(tmp_path, "m")
    assert not directory.exists() or not any(directory.iterdir())  # no temp dir left behind


def test_half_written_directories_are_ignored(tmp_path: Path) -> None:
    ids, g, p = _data()
    write_shard(tmp_path, "m", "b-good", ids[:10], g[:10], p[:10])
    directory = model_dir(tmp_path, "m")
    for name in (".tmp-a-crashed-1234", "a-unmarked", ".trash-c-old"):
        (directory / name).mkdir()
        np.save(directory / name / "ids.npy", ids[10:20])
    (directory / "a-unmarked" / "meta.json").write_text("{}")
    assert [s.name for s in iter_shards(tmp_path, "m")] == ["b-good"]
    with pytest.raises(ShardError):
        load_shard(directory / "a-unmarked")


def test_rerun_skips_or_replaces_never_duplicates(tmp_path: Path) -> None:
    ids, g, p = _data()
    writer = ShardWriter(tmp_path, "m")
    writer.write("s0", ids[:10], g[:10], p[:10])
    writer.write("s0", ids[:10], g[10:20], p[10:20])  # done: skipped
    np.testing.assert_array_equal(load_shard(model_dir(tmp_path, "m") / "s0").global_vecs, g[:10])
    writer.write("s0", ids[:10], g[10:20], p[10:20], overwrite=True)
    np.testing.assert_array_equal(load_shard(model_dir(tmp_path, "m") / "s0").global_vecs, g[10:20])
    assert sorted(os.listdir(model_dir(tmp_path, "m"))) == ["s0"]
    assert sum(s.n for s in iter_shards(tmp_path, "m")) == 10


def test_renamed_but_unmarked_shard_is_rewritten(tmp_path: Path) -> None:
    ids, g, p = _data()
    path = write_shard(tmp_path, "m", "s0", ids[:10], g[:10], p[:10])
    (path / "_DONE").unlink()  # crash between the rename and the marker
    assert list_done_shards(tmp_path, "m") == []
    write_shard(tmp_path, "m", "s0", ids[:10], g[:10], p[:10])
    assert list_done_shards(tmp_path, "m") == ["s0"]
    assert json.loads((path / "meta.json").read_text())["n"] == 10


def test_shards_disagreeing_on_dim_are_refused(tmp_path: Path) -> None:
    ids, g, p = _data()
    write_shard(tmp_path, "m", "s0", ids[:10], g[:10], p[:10])
    write_shard(tmp_path, "m", "s1", ids[10:20], g[10:20, :8], p[10:20, :, :8])
    with pytest.raises(ShardError):
        build_global_index(tmp_path, "m", CFG)


def _built(root: Path) -> tuple[bytes, bytes, bytes]:
    gi = build_global_index(root, "m", CFG)
    ps = build_patch_store(root, "m", CFG)
    return gi.to_bytes(), ps.image_ids.tobytes(), faiss.serialize_index(ps.index).tobytes()


def test_crash_then_resume_equals_clean_run(tmp_path: Path) -> None:
    parts = _parts(30)
    with pytest.raises(SimulatedCrash):
        write_shards(tmp_path / "a", "m", parts, crash_at=2)
    directory = model_dir(tmp_path / "a", "m")
    assert len(list_done_shards(tmp_path / "a", "m")) == 2
    assert any(e.name.startswith(TMP_PREFIX) for e in directory.iterdir())
    assert build_global_index(tmp_path / "a", "m", CFG).ntotal == 60  # half-written not read
    names = write_shards(tmp_path / "a", "m", parts)
    clean = write_shards(tmp_path / "b", "m", parts)
    assert names == clean == list_done_shards(tmp_path / "a", "m")
    assert _built(tmp_path / "a") == _built(tmp_path / "b")
    assert remove_stale_temp(tmp_path / "a", "m", older_than_s=-1) == 1
    assert sorted(os.listdir(directory)) == sorted(names)


def test_build_is_independent_of_write_order_and_partition(tmp_path: Path) -> None:
    write_shards(tmp_path / "a", "m", _parts(30))
    write_shards(tmp_path / "b", "m", _parts(40)[::-1])
    assert _built(tmp_path / "a") == _built(tmp_path / "b")
    write_shards(tmp_path / "c", "m", _parts(30)[:-1])
    assert _built(tmp_path / "c")[0] != _built(tmp_path / "a")[0]


def test_duplicate_ids_across_shards_last_shard_wins(tmp_path: Path) -> None:
    ids, g, p = _data()
    write_shard(tmp_path, "m", "a", ids[:10], g[:10], p[:10])
    write_shard(tmp_path, "m", "b", ids[5:10], g[20:25], p[20:25])
    gi = build_global_index(tmp_path, "m", CFG)
    assert gi.ntotal == 10
    got = gi.reconstruct(ids[5:10])
    want = g[20:25].astype(np.float32)
    np.testing.assert_allclose(got, want / np.linalg.norm(want, axis=1, keepdims=True), atol=1e-6)
