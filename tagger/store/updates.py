"""Index stage: keep the FAISS global index and the PQ patch store in step with the done shards.

Updates are incremental. ``index_state.json`` (written last, atomically) records the shards both
stores hold, the config they were built with and how many images the codec was trained on. A
later update reads only the shards that are new since then and adds them (ids already stored are
replaced in place), reusing the trained codec, so encoding a few new images costs a few images. Both saved files are
extended on disk, the stored rows streamed from a memory map (the exact global index by
:mod:`.global_index_file`, the patch store by :mod:`.patch_store_file`), so an update's memory grows with the
new shards, not with the corpus.

A full, deterministic rebuild from every done shard (ascending image id, seeded codec training)
happens when there is no state (first build), the config changed, a shard disappeared, the saved
files cannot be read, or the codec was trained on too little data (fewer than ``train_size``
vectors, and the corpus has since at least doubled), so early tiny runs do not freeze a poor codec.
A corpus too small to train a store's configured layout at all (PQ needs ``2**nbits`` patch
vectors, an IVF ``nlist`` vectors) gets an exact, uncompressed stand-in; the state records how many
vectors the configured layout needs (``provisional``) and the first update that reaches that
count rebuilds with it.

The approximate global index (``global.ann``, :mod:`.ann`) follows the exact one: after the stores
are saved and before the state, :func:`~.annsync.sync_ann` adds the new rows to its lists, or
rebuilds it from the exact file when the corpus outgrew its layout (or when the stores were rebuilt).

Crash safety: the decision (extend or rebuild) depends only on the state, the config and the
shard list, and re-applying the same new shards to a store that already holds them gives the same
store, so a run killed between the saves and rerun ends with the same files as a clean run.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from ..atomic import atomic_write_bytes, atomic_write_text
from ..errors import StoreError
from . import IndexConfig, build_global_index, build_patch_store, index_paths, list_done_shards
from .ann import AnnConfig
from .annsync import sync_ann
from .patchann import PatchAnnConfig
from .patchannsync import sync_patch_ann
from .global_index import GlobalIndex
from .global_index_file import extend_global_file
from .patches import PatchStore
from .patch_store_file import extend_patch_file, read_patch_file
from .shards import Shard, load_shard, model_dir

logger = logging.getLogger(__name__)
STATE_FILE = "index_state.json"
STATE_FORMAT = 1


def _read_state(directory: Path) -> dict[str, Any] | None:
    try:
        state = json.loads((directory / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return state if state.get("format") == STATE_FORMAT else None


def _needs_rebuild(state: dict[str, Any] | None, cfg: IndexConfig, shards: list[str], new_rows: int) -> str | None:
    """Why the stores must be rebuilt from every shard, or None when they can be extended."""
    if state is None:
        return "no index state"
    if state.get("config") != cfg.to_dict():
        return "index config changed"
    if set(state["shards"]) - set(shards):
        return "shards were removed"
    trained, pp, n = state["trained_on_images"], state["patches_per_image"], state["n_images"] + new_rows
    for store, need in sorted(state.get("provisional", {}).items()):
        have = n * pp if store == "patches" else n
        if have >= need:
            return f"{have} {store} vectors are enough to train the configured layout (needs {need})"
    if trained * pp < cfg.train_size and n >= 2 * trained:
        return f"codec trained on {trained} images, corpus now up to {n}"
    return None


def _extend_saved(g_path: Path, p_path: Path, cfg: IndexConfig, shards: list[Shard]
                  ) -> tuple[GlobalIndex | None, int, PatchStore, float, float] | None:
    """Add the new shards' rows to the saved stores on disk, streamed, never loaded whole: the
    global index when it is exact (``IDMap2,Flat``; other kinds are loaded and extended in memory,
    returned for saving) and the patch store. Returns ``(index or None, its vector count, patch
    store, seconds global, seconds patches)``; None when either saved file cannot be read (rebuild)."""
    for shard in shards:
        if shard.patches is None:
            raise StoreError(f"shard {shard.name} holds no patch embeddings")
    try:
        faiss.read_index(str(g_path), faiss.IO_FLAG_MMAP_IFC)
        if read_patch_file(p_path, mmap=True)[3] is None:  # readable, and a version extended on disk
            raise StoreError("a version-1 patch file")
    except Exception as e:  # a missing or unreadable file means: rebuild
        logger.warning("cannot reuse the saved indexes (%s); rebuilding", e)
        return None
    t0 = time.time()
    gi, n_global = None, extend_global_file(g_path, ((s.ids, s.global_vecs) for s in shards), cfg.normalize)
    if n_global is None:
        gi = GlobalIndex.load(g_path, cfg)
        for shard in shards:
            gi.add(shard.ids, shard.global_vecs)
        n_global = gi.ntotal
    t1 = time.time()
    extend_patch_file(p_path, (_with_patches(s) for s in shards), cfg.normalize)
    return gi, n_global, PatchStore.load(p_path, mmap=True), t1 - t0, time.time() - t1


def _with_patches(shard: Shard) -> tuple[Any, Any]:
    """A shard's (ids, patches) for the patch store; StoreError for a shard stored without patches."""
    if shard.patches is None:
        raise StoreError(f"shard {shard.name} has no patch vectors: the patch store needs them")
    return shard.ids, shard.patches


def _readable_patch_store(g_path: Path, p_path: Path) -> PatchStore | None:
    """The patch store opened memory-mapped (codec only) when both files read, else None: the
    check of an update with nothing new, without reading every vector and code."""
    try:
        faiss.read_index(str(g_path), faiss.IO_FLAG_MMAP_IFC)
        return PatchStore.load(p_path, mmap=True)
    except Exception as e:  # a missing or unreadable file means: rebuild
        logger.warning("cannot reuse the saved indexes (%s); rebuilding", e)
        return None


def update_indexes(root: str | os.PathLike[str], model_id: str, cfg: IndexConfig | None = None, *,
                   rebuild: bool = False, ann: AnnConfig | None = None,
                   patch_ann: PatchAnnConfig | None = None) -> dict[str, Any]:
    """Bring both stores of ``model_id`` under workspace ``root`` up to date with its done shards,
    and save them atomically; then the approximate global index (:mod:`.annsync`, configured by
    ``ann``), and last the state.

    Returns counts and timings; ``mode`` is ``unchanged``, ``incremental`` or ``rebuild``
    (``rebuild=True`` forces the latter), ``ann_mode`` what was done to the approximate index.
    """
    cfg = cfg or IndexConfig()
    root = str(root)
    shards = list_done_shards(root, model_id)
    if not shards:
        return {"indexed": 0}
    g_path, p_path = index_paths(root, model_id)
    directory = g_path.parent
    directory.mkdir(parents=True, exist_ok=True)
    state = None if rebuild else _read_state(directory)
    known = set(state["shards"]) if state else set()
    new = [load_shard(model_dir(root, model_id) / s) for s in shards if s not in known]  # memory-mapped
    why = "forced" if rebuild else _needs_rebuild(state, cfg, shards, sum(s.n for s in new))
    if why is None and not new:
        mapped = _readable_patch_store(g_path, p_path)
        if mapped is not None:
            approx = sync_ann(g_path, None, ann, normalize=cfg.normalize, use_gpu=cfg.use_gpu)
            approx.update(sync_patch_ann(p_path, None, patch_ann))
            return {"indexed": state["n_images"], "mode": "unchanged", "new_shards": 0,  # type: ignore[index]
                    "provisional": sorted(state.get("provisional", {})),  # type: ignore[union-attr]
                    "global_build_s": 0.0, "patch_build_s": 0.0, "patch_bytes_per_image": mapped.bytes_per_image(),
                    **approx}
    extended = _extend_saved(g_path, p_path, cfg, new) if why is None else None
    if extended is not None:
        gi, n_global, ps, t_global, t_patch = extended
        mode, trained = "incremental", state["trained_on_images"]  # type: ignore[index]
        provisional = dict(state.get("provisional", {}))  # type: ignore[union-attr]
    else:
        logger.info("rebuilding the indexes of %s: %s", model_id, why or "saved files unusable")
        t0 = time.time()
        gi = build_global_index(root, model_id, cfg)
        t1 = time.time()
        ps = build_patch_store(root, model_id, cfg)
        t_global, t_patch = t1 - t0, time.time() - t1
        n_global = gi.ntotal
        mode, trained = "rebuild", gi.ntotal
        provisional = {name: store.provisional_until for name, store in (("global", gi), ("patches", ps))
                       if store.provisional_until}
    t0 = time.time()
    n_global, pp = _save_stores(g_path, p_path, gi, None if mode == "incremental" else ps, n_global,
                                ps.patches_per_image)
    added = ((s.ids, s.global_vecs) for s in new) if mode == "incremental" else None
    approx = sync_ann(g_path, added, ann, normalize=cfg.normalize, use_gpu=cfg.use_gpu, rebuild=mode == "rebuild")
    new_ids = np.concatenate([s.ids for s in new]) if mode == "incremental" and new else None
    approx.update(sync_patch_ann(p_path, new_ids, patch_ann, rebuild=mode == "rebuild"))
    _write_state(directory, cfg, shards, trained_on_images=trained, provisional=provisional, patches_per_image=pp,
                 n_images=n_global)
    logger.info("indexes for %s (%s, %d new shards): %d global, %d images of patches", model_id, mode,
                len(new), n_global, ps.n_images)
    return {"indexed": int(n_global), "mode": mode, "new_shards": len(new), "provisional": sorted(provisional),
            "global_build_s": round(t_global, 2), "patch_build_s": round(t_patch, 2),
            "save_s": round(time.time() - t0, 2), "patch_bytes_per_image": ps.bytes_per_image(), **approx}


def save_indexes(root: str | os.PathLike[str], model_id: str, gi: GlobalIndex | None, ps: PatchStore | None,
                 cfg: IndexConfig, shards: list[str], *, trained_on_images: int,
                 provisional: dict[str, int] | None = None, patches_per_image: int | None = None,
                 n_images: int | None = None) -> None:
    """Save both stores of ``model_id`` (``gi`` or ``ps`` None: that file is already written; then
    ``n_images`` or ``patches_per_image`` say what it holds) and then, last, the index state saying
    they hold ``shards`` (built with ``cfg``, the codec trained on ``trained_on_images`` images), so
    that the next :func:`update_indexes` extends them or finds them unchanged (and builds the
    approximate global index if the corpus calls for one)."""
    g_path, p_path = index_paths(root, model_id)
    n_images, pp = _save_stores(g_path, p_path, gi, ps, n_images, patches_per_image)
    _write_state(g_path.parent, cfg, shards, trained_on_images=trained_on_images, provisional=provisional,
                 patches_per_image=pp, n_images=n_images)


def _save_stores(g_path: Path, p_path: Path, gi: GlobalIndex | None, ps: PatchStore | None,
                 n_images: int | None, patches_per_image: int | None) -> tuple[int, int]:
    g_path.parent.mkdir(parents=True, exist_ok=True)
    if gi is not None:
        gi.save(g_path)
        n_images = gi.ntotal
    if ps is not None:
        ps.save(p_path)
        patches_per_image = ps.patches_per_image
    if n_images is None or patches_per_image is None:
        raise StoreError("save_indexes needs the global index or its vector count, and the patch store or its "
                         "patches per image")
    return int(n_images), int(patches_per_image)


def _write_state(directory: Path, cfg: IndexConfig, shards: list[str], *, trained_on_images: int,
                 provisional: dict[str, int] | None, patches_per_image: int, n_images: int) -> None:
    atomic_write_text(directory / "index_config.json", cfg.to_json())
    atomic_write_bytes(directory / STATE_FILE, json.dumps({
        "format": STATE_FORMAT, "config": cfg.to_dict(), "shards": list(shards), "n_images": int(n_images),
        "patches_per_image": patches_per_image, "trained_on_images": int(trained_on_images),
        "provisional": dict(provisional or {})}).encode())
