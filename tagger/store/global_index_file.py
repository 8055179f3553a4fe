"""Extend a saved exact global index on disk, without loading it.

The default global index (``IDMap2,Flat``) is saved in FAISS's own serialisation: a header, the
vectors as one float32 array (preceded by its element count) and then the ids (preceded by theirs).
:func:`extend_global_file` rewrites such a file with new rows, streaming the old vectors from a
memory map, so an incremental update holds the new rows and the ids, never the stored vectors
(2 KB per image at 512-d: 2 GB at a million images).

The header is not written by hand: FAISS serialises an empty index of the same kind whose counts
say ``n`` vectors, and the bytes before its two (empty) arrays are the header of an ``n``-vector
file. A file whose bytes do not match that layout (another index type, another FAISS layout) is left
alone and :func:`extend_global_file` returns None, so the caller falls back to loading the index.
The result is byte for byte what :meth:`GlobalIndex.add` followed by :meth:`GlobalIndex.save` writes
(tested), and it is written to a temp name and renamed into place.
"""
from __future__ import annotations

import logging
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass

import faiss
import numpy as np

from tagger.errors import StoreError
from tagger.atomic import atomic_open
from tagger.store.vectors import as_ids, as_matrix

__all__ = ["extend_global_file", "mapped_rows"]

logger = logging.getLogger(__name__)

WRITE_ROWS = 32768  # vectors copied per write (64 MB at 512-d)


@dataclass(frozen=True)
class _Layout:
    dim: int
    metric: int
    n: int
    vectors_at: int  # byte offset of the first vector
    ids_at: int  # byte offset of the first id


def _header(dim: int, metric: int, n: int) -> bytes:
    """FAISS's own header of an ``IDMap2,Flat`` file holding ``n`` vectors (up to the vectors' count)."""
    empty = faiss.IndexIDMap2(faiss.IndexFlat(dim, metric))
    empty.ntotal = n
    faiss.downcast_index(empty.index).ntotal = n
    blob = faiss.serialize_index(empty).tobytes()
    return blob[:-16]  # the empty vector and id arrays: a zero count each


def _layout(path: str) -> _Layout | None:
    """Where the vectors and ids of a saved ``IDMap2,Flat`` file lie, or None when it is another kind."""
    index = faiss.read_index(path, faiss.IO_FLAG_MMAP_IFC)
    if not isinstance(index, faiss.IndexIDMap2) or type(faiss.downcast_index(index.index)) not in (
            faiss.IndexFlat, faiss.IndexFlatIP, faiss.IndexFlatL2):
        return None
    dim, n, metric = int(index.d), int(index.ntotal), int(index.metric_type)
    head = _header(dim, metric, n)
    vectors_at = len(head) + 8
    ids_at = vectors_at + 4 * n * dim + 8
    with open(path, "rb") as fh:
        ok = fh.read(len(head)) == head and struct.unpack("<Q", fh.read(8))[0] == n * dim
        fh.seek(ids_at - 8)
        ok = ok and struct.unpack("<Q", fh.read(8))[0] == n
    if not ok or os.path.getsize(path) != ids_at + 8 * n:
        logger.info("%s: not the expected IDMap2,Flat layout; it will be loaded to be extended", path)
        return None
    return _Layout(dim, metric, n, vectors_at, ids_at)


def extend_global_file(path: str | os.PathLike[str], batches: Iterable[tuple[np.ndarray, np.ndarray]],
                       normalize: bool) -> int | None:
    """Add ``(ids, vectors)`` batches to the saved index at ``path`` as successive
    :meth:`GlobalIndex.add` calls would (an id already stored is removed and the batch appended),
    streaming the stored vectors. Returns the new vector count, or None (file untouched) when the
    file is not an ``IDMap2,Flat`` index in the expected layout."""
    path = os.fspath(path)
    layout = _layout(path)
    if layout is None:
        return None
    old_ids = np.fromfile(path, dtype="<i8", count=layout.n, offset=layout.ids_at).astype(np.int64)
    added: dict[int, np.ndarray] = {}  # id -> vector, in the order the adds leave them
    for ids, vecs in batches:
        ids = as_ids(ids)
        x = as_matrix(vecs, layout.dim, normalize)
        if x.shape[0] != ids.size:
            raise StoreError(f"{ids.size} ids for {x.shape[0]} vectors")
        for k, i in enumerate(ids.tolist()):
            added.pop(i, None)
            added[i] = x[k]
    added_ids = np.fromiter(added, np.int64, len(added))
    keep = ~np.isin(old_ids, added_ids)
    new_ids = np.concatenate([old_ids[keep], added_ids])
    total = int(new_ids.size)
    old = np.memmap(path, np.float32, "r", layout.vectors_at, (layout.n, layout.dim)) if layout.n else None
    with atomic_open(path) as fh:
        fh.write(_header(layout.dim, layout.metric, total))
        fh.write(struct.pack("<Q", total * layout.dim))
        for start in range(0, layout.n, WRITE_ROWS):
            block = np.asarray(old[start:start + WRITE_ROWS])  # type: ignore[index]
            fh.write(np.ascontiguousarray(block[keep[start:start + WRITE_ROWS]], dtype="<f4").tobytes())
        if added:
            fh.write(np.ascontiguousarray(np.stack(list(added.values())), dtype="<f4").tobytes())
        fh.write(struct.pack("<Q", total))
        fh.write(new_ids.astype("<i8").tobytes())
    del old
    return total


def mapped_rows(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray, int] | None:
    """(ids, vectors as a read-only memory map [n, d], FAISS metric) of a saved ``IDMap2,Flat`` file,
    or None when the file is another kind: what approximate builds and near-duplicate scans read."""
    path = os.fspath(path)
    layout = _layout(path)
    if layout is None:
        return None
    ids = np.fromfile(path, dtype="<i8", count=layout.n, offset=layout.ids_at).astype(np.int64)
    if layout.n == 0:
        return ids, np.empty((0, layout.dim), np.float32), layout.metric
    vecs = np.memmap(path, np.float32, "r", layout.vectors_at, (layout.n, layout.dim))
    return ids, vecs, layout.metric
