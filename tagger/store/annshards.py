"""The approximate global index split into shards that are searched apart and merged.

:func:`write_shards` splits ``global.ann`` by image id (``id % n``) into ``n`` files under
``global.ann.shards/``: each is the same trained index (coarse centroids, codec, tuned ``nprobe``)
holding the inverted-list entries of its ids, copied code for code, so searching every shard with the
same ``nprobe`` visits the same lists as the whole index, and merging the shards' top-k by score
(:func:`merge_topk`) gives the whole index's top-k (with re-ranking, each shard re-ranks its own
candidates: at least as many candidates as the whole index). The manifest, written last, records the
index it was split from; :func:`shards_in_step` says whether the split is still current. Searching the
shards in parallel, one Ray actor each, is :mod:`tagger.pipeline.shardsearch`.

Where it stands: the split is made from a whole index built on one machine (training needs a sample,
but adding happens in one process), so it spreads search memory and work over nodes, not the build.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from tagger.errors import StoreError
from tagger.store.ann import AnnIndex, ann_path, read_meta
from tagger.atomic import atomic_write_bytes

__all__ = ["merge_topk", "shard_paths", "shards_dir", "shards_in_step", "write_shards"]

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"


def shards_dir(global_path: str | os.PathLike[str]) -> Path:
    return Path(global_path).with_name("global.ann.shards")


def _shard_name(s: int, n: int) -> str:
    return f"{s:03d}-of-{n:03d}.ann"


def _empty_template(index: faiss.Index) -> np.ndarray:
    """The serialisation of ``index`` without its list entries (trained centroids, codec, nprobe): the
    lists are swapped for empty ones while it is written, then put back."""
    ivf = faiss.extract_index_ivf(index)
    lists, ntotal, owned = ivf.invlists, index.ntotal, ivf.own_invlists
    empty = faiss.ArrayInvertedLists(ivf.nlist, ivf.code_size)
    ivf.own_invlists = False  # keep the real lists alive while swapped out
    ivf.replace_invlists(empty, False)
    ivf.ntotal = index.ntotal = 0
    try:
        return faiss.serialize_index(index)
    finally:
        ivf.replace_invlists(lists, owned)
        ivf.ntotal = index.ntotal = ntotal


def write_shards(global_path: str | os.PathLike[str], n: int) -> list[Path]:
    """Split the approximate index beside ``global_path`` into ``n`` shard files (atomically each, the
    manifest last); returns their paths."""
    if n < 1:
        raise StoreError(f"shards must be >= 1, got {n}")
    src_path = ann_path(global_path)
    meta = read_meta(src_path)
    if meta is None:
        raise StoreError(f"no approximate index at {src_path} to split (the corpus may be searched exactly)")
    whole = AnnIndex.load(src_path)
    src = faiss.extract_index_ivf(whole.index)
    lists = src.invlists
    out_dir = shards_dir(global_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    template = _empty_template(whole.index)
    paths = []
    for s in range(n):
        index = faiss.deserialize_index(template)
        ivf = faiss.extract_index_ivf(index)
        for lst in range(src.nlist):
            size = lists.list_size(lst)
            if not size:
                continue
            ids = faiss.rev_swig_ptr(lists.get_ids(lst), size).copy()
            codes = faiss.rev_swig_ptr(lists.get_codes(lst), size * src.code_size).reshape(size, -1)
            mine = np.flatnonzero(ids % n == s)
            if mine.size:
                sel_codes = np.ascontiguousarray(codes[mine])
                ivf.invlists.add_entries(lst, mine.size, faiss.swig_ptr(np.ascontiguousarray(ids[mine])),
                                         faiss.swig_ptr(sel_codes))
                ivf.ntotal += int(mine.size)
        index.ntotal = ivf.ntotal
        part = AnnIndex(index, dict(meta, shard=s, shards=n))
        paths.append(out_dir / _shard_name(s, n))
        part.save(paths[-1])
    atomic_write_bytes(out_dir / MANIFEST, json.dumps({"shards": n, "of": _identity(meta)}).encode())
    logger.info("split %s (%d vectors) into %d shards", src_path, whole.ntotal, n)
    return paths


def _identity(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: meta.get(k) for k in ("factory", "ntotal", "nprobe", "built_for", "train_s", "add_s")}


def shard_paths(global_path: str | os.PathLike[str]) -> list[Path]:
    """The shard files of the current split (empty when there is none)."""
    directory = shards_dir(global_path)
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return []
    n = int(manifest["shards"])
    return [directory / _shard_name(s, n) for s in range(n)]


def shards_in_step(global_path: str | os.PathLike[str]) -> bool:
    """True when the split was made from the approximate index now beside ``global_path``."""
    meta = read_meta(ann_path(global_path))
    try:
        manifest = json.loads((shards_dir(global_path) / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return meta is not None and manifest.get("of") == _identity(meta)


def merge_topk(results: list[tuple[np.ndarray, np.ndarray]], k: int,
               higher_is_better: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-shard ``(scores [nq, k'], ids [nq, k'])`` into the best ``k`` per query (id -1 slots
    dropped, padded at the end with -1)."""
    scores = np.concatenate([r[0] for r in results], axis=1)
    ids = np.concatenate([r[1] for r in results], axis=1)
    bad = -np.inf if higher_is_better else np.inf
    scores = np.where(ids >= 0, scores, bad)
    order = np.argsort(-scores if higher_is_better else scores, axis=1, kind="stable")[:, :k]
    top_s, top_i = np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)
    top_i = np.where(np.isfinite(top_s), top_i, -1)
    if top_i.shape[1] < k:
        pad = ((0, 0), (0, k - top_i.shape[1]))
        top_s, top_i = np.pad(top_s, pad, constant_values=bad), np.pad(top_i, pad, constant_values=-1)
    return top_s.astype(np.float32), top_i
