"""Incremental index updates: only new shards are read, the codec is reused, tiny codecs are
retrained once the corpus doubles, and a run killed between the saves ends like a clean run."""
from __future__ import annotations

import shutil
from pathlib import Path

import faiss
import numpy as np
import pytest

from tagger.store import updates
from tagger.store.updates import STATE_FILE, update_indexes
from tagger.store import IndexConfig, index_paths, model_dir, shard_name_for, write_shard
from tagger.store.global_index import GlobalIndex
from tagger.store.patches import PatchStore
from tagger.workspace import Workspace

pytestmark = pytest.mark.usefixtures("one_faiss_thread")
MODEL, P, D = "m", 4, 16
CFG = IndexConfig(patch_bytes=8, train_size=400, use_gpu=False)


def add_shard(ws: Workspace, first: int, n: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    ids = np.arange(first, first + n, dtype=np.int64)
    name = shard_name_for(ids)
    write_shard(ws.root, MODEL, name, ids, rng.normal(size=(n, D)).astype(np.float32),
                rng.normal(size=(n, P, D)).astype(np.float16))
    return name


def files(ws: Workspace) -> dict[str, bytes]:
    g, p = index_paths(ws.root, MODEL)
    return {f.name: f.read_bytes() for f in (g, p, g.parent / STATE_FILE)}


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    w = Workspace.at(tmp_path / "ws")
    add_shard(w, 1, 100, seed=1)
    assert update_indexes(w.root, MODEL, CFG)["mode"] == "rebuild"
    return w



def update_killed_at(ws, cfg, monkeypatch, owner, name: str) -> None:
    """An index update killed when it reaches ``owner.name`` (a store's save, the state write)."""
    def killed(*args, **kwargs):
        raise KeyboardInterrupt(f"killed at {name}")
    with monkeypatch.context() as m:
        m.setattr(owner, name, killed)
        with pytest.raises(KeyboardInterrupt):
            update_indexes(ws.root, MODEL, cfg)


def test_incremental_update_reuses_the_codec_and_reads_only_new_shards(ws):
    g_path, p_path = index_paths(ws.root, MODEL)
    before = PatchStore.load(p_path)
    old_codes = before.codes.copy()
    add_shard(ws, 101, 50, seed=2)  # 100 images x 4 patches = train_size: the codec is not retrained
    out = update_indexes(ws.root, MODEL, CFG)
    assert out["mode"] == "incremental" and out["new_shards"] == 1 and out["indexed"] == 150
    after = PatchStore.load(p_path)
    assert np.array_equal(after.codes[:len(old_codes)], old_codes)
    new_ids = np.arange(101, 151)
    raw = np.load(model_dir(ws.root, MODEL) / shard_name_for(new_ids) / "patches.npy").astype(np.float32)
    unit = raw.reshape(-1, D) / np.linalg.norm(raw.reshape(-1, D), axis=1, keepdims=True)
    expected = before.index.sa_decode(before.index.sa_encode(unit))  # the old codec
    assert np.allclose(after.decode(new_ids).reshape(-1, D), expected, atol=1e-6)
    gi = GlobalIndex.load(g_path, CFG)
    assert gi.ntotal == 150 and np.isin(np.arange(1, 151), gi.ids()).all()
    snapshot = files(ws)
    assert update_indexes(ws.root, MODEL, CFG)["mode"] == "unchanged"
    assert files(ws) == snapshot


def test_tiny_codec_is_retrained_when_the_corpus_doubles(tmp_path):
    cfg = IndexConfig(patch_bytes=8, train_size=10_000, use_gpu=False)
    ws = Workspace.at(tmp_path / "a")
    add_shard(ws, 1, 100, seed=1)
    assert update_indexes(ws.root, MODEL, cfg)["mode"] == "rebuild"
    add_shard(ws, 101, 60, seed=2)  # 160 < 2 x 100
    assert update_indexes(ws.root, MODEL, cfg)["mode"] == "incremental"
    add_shard(ws, 161, 40, seed=3)  # 200 >= 2 x 100: rebuilt, identical to a fresh full build
    assert update_indexes(ws.root, MODEL, cfg)["mode"] == "rebuild"
    fresh = Workspace.at(tmp_path / "b")
    shutil.copytree(model_dir(ws.root, MODEL), model_dir(fresh.root, MODEL))
    update_indexes(fresh.root, MODEL, cfg)
    assert files(fresh) == files(ws)


def test_config_change_or_removed_shard_rebuilds(ws):
    assert update_indexes(ws.root, MODEL, IndexConfig(patch_bytes=4, train_size=400, use_gpu=False))["mode"] == "rebuild"
    name = add_shard(ws, 101, 50, seed=2)
    update_indexes(ws.root, MODEL, CFG)
    shutil.rmtree(model_dir(ws.root, MODEL) / name)
    out = update_indexes(ws.root, MODEL, CFG)
    assert out["mode"] == "rebuild" and out["indexed"] == 100


# an incremental update extends the global index file first, then the patch file; a rebuild
# saves the global index first; both write the state last
KILL_POINTS = {"incremental": [(updates, "extend_patch_file"), (updates, "atomic_write_bytes")],
               "rebuild": [(PatchStore, "save"), (updates, "atomic_write_bytes")]}


@pytest.mark.parametrize(("n_new", "mode", "kill"), [(50, "incremental", 0), (50, "incremental", 1),
                                                     (150, "rebuild", 0), (150, "rebuild", 1)])
def test_killed_between_saves_then_rerun_equals_a_clean_run(ws, tmp_path, monkeypatch, n_new, mode, kill):
    cfg = IndexConfig(patch_bytes=8, train_size=600, use_gpu=False)  # 100 images: 400 < 600 vectors
    update_indexes(ws.root, MODEL, cfg)
    clean = Workspace.at(tmp_path / "clean")
    shutil.copytree(ws.root, clean.root, dirs_exist_ok=True)
    for w in (ws, clean):
        add_shard(w, 101, n_new, seed=2)
    assert update_indexes(clean.root, MODEL, cfg)["mode"] == mode

    update_killed_at(ws, cfg, monkeypatch, *KILL_POINTS[mode][kill])
    update_indexes(ws.root, MODEL, cfg)
    assert files(ws) == files(clean)


def test_small_corpus_is_kept_exact_until_each_configured_layout_can_train(tmp_path, monkeypatch):
    """5 images: both stores are exact stand-ins (IVF8 needs 8 vectors, PQ8x8 256); each switches
    to its configured layout on the first update with enough vectors, and the switch killed
    between the saves reruns to the files of a fresh build."""
    cfg = IndexConfig(global_factory="IVF8,Flat", patch_bytes=8, train_size=16, use_gpu=False)
    ws = Workspace.at(tmp_path / "a")
    add_shard(ws, 1, 5, seed=1)
    out = update_indexes(ws.root, MODEL, cfg)
    assert out["mode"] == "rebuild" and out["indexed"] == 5 and out["provisional"] == ["global", "patches"]
    g_path, p_path = index_paths(ws.root, MODEL)
    raw = np.load(model_dir(ws.root, MODEL) / shard_name_for(np.arange(1, 6)) / "patches.npy").astype(np.float32)
    store = PatchStore.load(p_path)
    assert store.code_size == 4 * D  # float32, uncompressed
    np.testing.assert_allclose(store.decode(np.arange(1, 6)), raw / np.linalg.norm(raw, axis=2, keepdims=True),
                               atol=1e-6)
    assert store.search(raw[2, :1], 1)[1][0, 0] == 3
    assert GlobalIndex.load(g_path, cfg).search(np.ones((1, D), np.float32), 5)[1].shape == (1, 5)

    add_shard(ws, 6, 4, seed=2)  # 9 images >= nlist: the global index becomes IVF, patches stay exact
    out = update_indexes(ws.root, MODEL, cfg)
    assert out["mode"] == "rebuild" and out["provisional"] == ["patches"]
    assert faiss.extract_index_ivf(GlobalIndex.load(g_path, cfg).index).nlist == 8
    add_shard(ws, 10, 50, seed=3)  # 59 x 4 = 236 < 256 patch vectors: extended, still exact
    out = update_indexes(ws.root, MODEL, cfg)
    assert out["mode"] == "incremental" and out["provisional"] == ["patches"]
    assert PatchStore.load(p_path).code_size == 4 * D

    add_shard(ws, 60, 10, seed=4)  # 69 x 4 = 276: the PQ codec trains now
    update_killed_at(ws, cfg, monkeypatch, PatchStore, "save")
    out = update_indexes(ws.root, MODEL, cfg)
    assert out["mode"] == "rebuild" and out["provisional"] == [] and out["indexed"] == 69
    store = PatchStore.load(p_path)
    assert store.code_size == 8 and isinstance(faiss.downcast_index(store.index), faiss.IndexPQ)
    assert update_indexes(ws.root, MODEL, cfg)["mode"] == "unchanged"
    fresh = Workspace.at(tmp_path / "b")
    shutil.copytree(model_dir(ws.root, MODEL), model_dir(fresh.root, MODEL))
    update_indexes(fresh.root, MODEL, cfg)
    assert files(fresh) == files(ws)
