"""An approximate index (global or patch) split into shards that are searched apart and merged.

:func:`split_ann` splits an approximate index file (``global.ann`` or ``patches.ann``) by image id
(``image_id % n``; a patch id ``image_id * P + patch`` counts as its image, so an image's patches stay
together) into ``n`` files under ``<file>.shards/``: each is the same trained index (coarse quantizer,
codec, tuned ``nprobe``) holding the inverted-list entries of its images, copied code for code, so
searching every shard with the same ``nprobe`` visits the same lists as the whole index, and merging the
shards' top-k by score (:func:`merge_topk`) gives the whole index's top-k (with re-ranking, each shard
re-ranks its own candidates: at least as many candidates as the whole index; at the patch level an
image's best patch is found in its one shard). Each shard scans about 1/n of the codes the whole index
scans for a query, so n nodes answer in about 1/n of the time. The manifest, written last, records the
file it was split from (its header, size, time of writing and inode: every save replaces the file);
:func:`shards_in_step` says whether the split is still current. Searching the shards in parallel, one
Ray actor each, is :mod:`tagger.pipeline.shardsearch`.

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

from tagger.atomic import atomic_write_bytes
from tagger.errors import StoreError
from tagger.store.ann import AnnIndex, read_meta

__all__ = ["merge_topk", "shard_paths", "shards_dir", "shards_in_step", "split_ann"]

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"


def shards_dir(ann_file: str | os.PathLike[str]) -> Path:
    """The folder of the split of the approximate index file ``ann_file``."""
    path = Path(ann_file)
    return path.with_name(path.name + ".shards")


def _shard_name(s: int, n: int) -> str:
    return f"{s:03d}-of-{n:03d}.ann"


def _empty_template(index: faiss.Index) -> np.ndarray:
    """The serialisation of ``index`` without its list entries (trained quantizer, codec, nprobe): the
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


def _fill(index: faiss.Index, src: faiss.IndexIVF, shard: int, n: int, group: int) -> None:
    """Copy into the empty ``index`` the list entries of ``src`` whose image (id // group) falls in ``shard``."""
    ivf, lists = faiss.extract_index_ivf(index), src.invlists
    for lst in range(src.nlist):
        size = lists.list_size(lst)
        if not size:
            continue
        ids = faiss.rev_swig_ptr(lists.get_ids(lst), size).copy()
        mine = np.flatnonzero((ids // group) % n == shard)
        if mine.size:
            codes = faiss.rev_swig_ptr(lists.get_codes(lst), size * src.code_size).reshape(size, -1)
            # bound to names: a temporary's buffer could be freed before FAISS copies it
            sel_ids, sel_codes = np.ascontiguousarray(ids[mine]), np.ascontiguousarray(codes[mine])
            ivf.invlists.add_entries(lst, mine.size, faiss.swig_ptr(sel_ids), faiss.swig_ptr(sel_codes))
            ivf.ntotal += int(mine.size)
    index.ntotal = ivf.ntotal


def split_ann(ann_file: str | os.PathLike[str], n: int) -> list[Path]:
    """Split the approximate index file ``ann_file`` into ``n`` shard files by image id (atomically each,
    the manifest last); returns their paths."""
    if n < 1:
        raise StoreError(f"shards must be >= 1, got {n}")
    meta = read_meta(ann_file)
    if meta is None:
        raise StoreError(f"no approximate index at {ann_file} to split (the corpus may be searched exactly)")
    origin = _origin(ann_file, meta)
    whole = AnnIndex.load(ann_file)
    src = faiss.extract_index_ivf(whole.index)
    group = int(meta.get("patches_per_image", 1))
    out_dir = shards_dir(ann_file)
    out_dir.mkdir(parents=True, exist_ok=True)
    template = _empty_template(whole.index)
    paths = []
    for s in range(n):
        index = faiss.deserialize_index(template)
        _fill(index, src, s, n, group)
        paths.append(out_dir / _shard_name(s, n))
        AnnIndex(index, dict(meta, shard=s, shards=n)).save(paths[-1])
    atomic_write_bytes(out_dir / MANIFEST, json.dumps({"shards": n, "of": origin}).encode())
    for old in set(out_dir.glob("*-of-*.ann")) - set(paths):  # an earlier split of another count
        old.unlink(missing_ok=True)
    logger.info("split %s (%d vectors) into %d shards", ann_file, whole.ntotal, n)
    return paths


def _origin(ann_file: str | os.PathLike[str], meta: dict[str, Any]) -> dict[str, Any]:
    """What identifies the file a split was made from: its header's build facts, and its size, time of
    writing and inode (an incremental add that replaces images keeps the count, but rewrites the file,
    and every save renames a new file over it)."""
    st = os.stat(ann_file)
    keys = ("factory", "ntotal", "nprobe", "built_for", "train_s", "add_s", "codec")
    return {**{k: meta.get(k) for k in keys}, "bytes": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino}


def shard_paths(ann_file: str | os.PathLike[str]) -> list[Path]:
    """The shard files of the current split of ``ann_file`` (empty when there is none)."""
    directory = shards_dir(ann_file)
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return []
    n = int(manifest["shards"])
    return [directory / _shard_name(s, n) for s in range(n)]


def shards_in_step(ann_file: str | os.PathLike[str]) -> bool:
    """True when the split was made from the approximate index file now at ``ann_file``."""
    meta = read_meta(ann_file)
    try:
        manifest = json.loads((shards_dir(ann_file) / MANIFEST).read_text())
        return meta is not None and manifest.get("of") == _origin(ann_file, meta)
    except (OSError, ValueError):
        return False


def merge_topk(results: list[tuple[np.ndarray, ...]], k: int,
               higher_is_better: bool = True) -> tuple[np.ndarray, ...]:
    """Merge per-shard ``(scores [nq, k'], ids [nq, k'], *more)`` (``more``: arrays aligned with the ids, as
    the patch level's best patch) into the best ``k`` per query; slots without an id (-1) are dropped,
    and the result is padded at the end with id -1 (and -1 in ``more``)."""
    scores = np.concatenate([r[0] for r in results], axis=1)
    ids = np.concatenate([r[1] for r in results], axis=1)
    more = [np.concatenate([r[j] for r in results], axis=1) for j in range(2, len(results[0]))]
    bad = -np.inf if higher_is_better else np.inf
    scores = np.where(ids >= 0, scores, bad)
    order = np.argsort(-scores if higher_is_better else scores, axis=1, kind="stable")[:, :k]
    top_s = np.take_along_axis(scores, order, 1)
    keep = np.isfinite(top_s)
    top = [np.where(keep, np.take_along_axis(a, order, 1), -1) for a in (ids, *more)]
    if top_s.shape[1] < k:
        pad = ((0, 0), (0, k - top_s.shape[1]))
        top_s = np.pad(top_s, pad, constant_values=bad)
        top = [np.pad(a, pad, constant_values=-1) for a in top]
    return (top_s.astype(np.float32), *top)
