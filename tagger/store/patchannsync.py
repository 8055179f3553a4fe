"""Keep the approximate patch index in step with the patch store (called by the index update).

:func:`sync_patch_ann` runs after the patch store is saved and before the index state is, as
:func:`~.annsync.sync_ann` does for the global index: it adds the new images' codes (read back from the
saved store, memory-mapped) to the lists when the layout still fits, and rebuilds the index when the
layout is outgrown, the store was rebuilt (another codec), or the index is missing, unreadable or out
of step. Adding removes the images' patch ids first, so re-applying the same images after a kill gives
the same index; the file is replaced atomically, so a kill at any point leaves the old index usable.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from tagger.errors import StoreError
from tagger.store.ann import read_meta
from tagger.store.patchann import (PatchAnn, PatchAnnConfig, build_patch_ann, choose_patch_layout,
                                   codec_fingerprint, store_pq)
from tagger.store.patches import PatchStore

__all__ = ["load_patch_ann", "patch_ann_in_step", "patch_ann_path", "sync_patch_ann"]

logger = logging.getLogger(__name__)


def patch_ann_path(patch_path: str | os.PathLike[str]) -> Path:
    """Where the approximate index of the patch store at ``patch_path`` is kept."""
    return Path(patch_path).with_name("patches.ann")


def _out_of_step(meta: dict[str, Any] | None, store: PatchStore, codec: str) -> str | None:
    if meta is None:
        return "no readable approximate patch index"
    if meta.get("codec") != codec:
        return "the patch store was rebuilt with another codec"
    if meta.get("ntotal") != store.n_images * store.patches_per_image:
        return f"approximate patch index holds {meta.get('ntotal')} patches, the store {store.codes.shape[0]}"
    return None


def sync_patch_ann(patch_path: str | os.PathLike[str], added: np.ndarray | None, cfg: PatchAnnConfig | None = None,
                   *, rebuild: bool = False) -> dict[str, Any]:
    """Bring ``patches.ann`` beside the saved store ``patch_path`` up to date; ``added``: the image ids
    just added to (or replaced in) the store, None when nothing is new (check only). Returns what was
    done (``patch_ann_mode``: exact, unchanged, incremental or rebuild) with the layout and timings."""
    cfg = cfg or PatchAnnConfig()
    path = patch_ann_path(patch_path)
    store = PatchStore.load(patch_path, mmap=True)
    layout = choose_patch_layout(store.n_images, store.patches_per_image, store.code_size,
                                 store_pq(store.index) is not None, cfg)
    if layout.exact:
        if path.exists():
            path.unlink()
            logger.info("patch store of %d images is scanned exactly (%s); removed %s", store.n_images,
                        layout.reason, path)
        return {"patch_ann_mode": "exact", "patch_ann_layout": "exact"}
    t0 = time.perf_counter()
    codec = codec_fingerprint(store.index)
    meta = read_meta(path)
    why = "forced" if rebuild else None
    if why is None and (meta is None or meta.get("nlist") != layout.nlist or meta.get("codec") != codec):
        why = _out_of_step(meta, store, codec) or f"layout {meta.get('factory')} outgrown: {layout.name} fits now"  # type: ignore[union-attr]
    if why is None and added is None:
        why = _out_of_step(meta, store, codec)
        if why is None:
            return {"patch_ann_mode": "unchanged", "patch_ann_layout": layout.name, "patch_ann_nprobe": meta["nprobe"]}  # type: ignore[index]
    mode = "rebuild"
    if why is None:
        ann = PatchAnn.load(path)
        ids = np.unique(np.asarray(added, np.int64))
        pp = store.patches_per_image
        rows = (store.positions(ids)[:, None] * pp + np.arange(pp)).ravel()
        ann.add_codes(ids, np.asarray(store.codes[rows]))
        mode = "incremental"
        if ann.ntotal != store.codes.shape[0]:
            why = f"after adding, {ann.ntotal} approximate patches for {store.codes.shape[0]} stored"
    if why is not None:
        logger.info("building the approximate patch index %s over %d images: %s", layout.name, store.n_images, why)
        ann = build_patch_ann(store, layout, cfg)
        mode = "rebuild"
    ann.save(path)
    return {"patch_ann_mode": mode, "patch_ann_layout": layout.name, "patch_ann_nprobe": ann.nprobe,
            "patch_ann_s": round(time.perf_counter() - t0, 2)}


def patch_ann_in_step(patch_path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The header of the approximate patch index beside ``patch_path`` when it is in step with the store
    (same codec, as many patches), else None; the index itself is not read."""
    path = patch_ann_path(patch_path)
    meta = read_meta(path) if path.exists() else None
    if meta is None:
        return None
    try:
        store = PatchStore.load(patch_path, mmap=True)
    except StoreError:
        return None
    if _out_of_step(meta, store, codec_fingerprint(store.index)) is not None:
        logger.warning("%s is not in step with the patch store: scanning exactly (run an index update)", path)
        return None
    return meta


def load_patch_ann(patch_path: str | os.PathLike[str]) -> PatchAnn | None:
    """The approximate patch index beside ``patch_path`` when it is in step with the store (same codec,
    as many patches), else None: then the store is scanned exhaustively."""
    return PatchAnn.load(patch_ann_path(patch_path)) if patch_ann_in_step(patch_path) is not None else None
