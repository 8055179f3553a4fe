"""Single-file format of a patch store.

Layout (little endian), version 2::

    8 bytes   magic b"TGPATCH2"
    8 bytes   header length H (uint64)
    H bytes   header, UTF-8 JSON (dim, patches_per_image, n_images, code_size, config, codes_offset)
    8*n bytes image ids (int64, storage order)
    padding   zeros up to ``codes_offset`` (a multiple of 64)
    n*P*c     the codes, one row of ``code_size`` bytes per patch, image-major
    rest      the FAISS flat-codes index *without* its codes (the trained codec), in FAISS's own
              serialisation

The codes sit in the file as one plain array, so a reader that only decodes (the tag stage)
memory-maps them and keeps just the codec in memory, whatever the corpus size; a full load
appends them to a copy of the codec. Version 1 files (``TGPATCH1``: ids, then the FAISS index with
its codes) are still read. The file is written to a temp name and renamed into place, so a crash
never leaves a partial file.
"""
from __future__ import annotations

import json
import logging
import os
import struct
from collections.abc import Iterable, Iterator
from typing import Any

import faiss
import numpy as np

from tagger.errors import StoreError
from tagger.atomic import atomic_open
from tagger.store.vectors import as_ids, as_matrix

logger = logging.getLogger(__name__)

MAGIC = b"TGPATCH2"
MAGIC_V1 = b"TGPATCH1"
ALIGN = 64
WRITE_CHUNK = 64 << 20  # bytes of codes per write
ENCODE_IMAGES = 32  # images encoded at a time when a saved store is extended


def _codes_offset(head_len: int, n_images: int) -> int:
    end = len(MAGIC) + 8 + head_len + 8 * n_images
    return -(-end // ALIGN) * ALIGN


def write_patch_file(path: str | os.PathLike[str], header: dict[str, Any], image_ids: np.ndarray,
                     codec: faiss.Index, codes: np.ndarray) -> None:
    """Write header, ids, ``codes`` (uint8 [rows, code_size]) and the code-less ``codec`` atomically."""
    _write(path, header, image_ids, codec, [codes])


def _write(path: str | os.PathLike[str], header: dict[str, Any], image_ids: np.ndarray, codec: faiss.Index,
           code_parts: Iterable[np.ndarray]) -> None:
    """:func:`write_patch_file` with the codes given as consecutive row blocks (written as they come)."""
    ids = np.ascontiguousarray(image_ids, dtype="<i8")
    head = dict(header, codes_offset=0)
    # the offset depends on the header's length, which depends on the offset's digits: iterate
    for _ in range(3):
        blob = json.dumps(head, sort_keys=True).encode()
        head["codes_offset"] = _codes_offset(len(blob), ids.size)
    blob = json.dumps(head, sort_keys=True).encode()
    if _codes_offset(len(blob), ids.size) != head["codes_offset"]:
        raise StoreError("could not settle the patch file header")  # pragma: no cover
    with atomic_open(path) as fh:
        fh.write(MAGIC)
        fh.write(struct.pack("<Q", len(blob)))
        fh.write(blob)
        fh.write(ids.tobytes())
        fh.write(b"\0" * (head["codes_offset"] - (len(MAGIC) + 8 + len(blob) + 8 * ids.size)))
        for codes in code_parts:
            _write_rows(fh, codes)
        faiss.write_index(codec, faiss.PyCallbackIOWriter(fh.write))


def extend_patch_file(path: str | os.PathLike[str], batches: Iterable[tuple[np.ndarray, np.ndarray]],
                      normalize: bool) -> int:
    """Add images to a saved store without loading it: each ``(image_ids, patches [n, P, d])`` batch
    is encoded with the file's codec; ids already stored are replaced in place, new ones appended in
    order of first appearance (a later batch wins), as :meth:`PatchStore.add` does in memory.

    The old codes are streamed from a memory map into the new file, so memory grows with the batches
    added, not with the store. Returns the number of images in the new file."""
    header, old_ids, codec, codes = read_patch_file(path, mmap=True)
    if codes is None:
        raise StoreError(f"{path}: a version-1 patch file cannot be extended on disk")
    pp, dim = int(header["patches_per_image"]), int(header["dim"])
    order = np.argsort(old_ids, kind="stable")
    sorted_ids = old_ids[order]
    replaced: dict[int, np.ndarray] = {}  # storage position -> codes [P, code_size]
    added: dict[int, np.ndarray] = {}  # new id -> codes, in order of first appearance
    for ids, patches in batches:
        ids = as_ids(ids)
        if np.shape(patches) != (ids.size, pp, dim):
            raise StoreError(f"patches must be [{ids.size}, {pp}, {dim}], got {np.shape(patches)}")
        enc = np.concatenate([_encode(codec, patches[i:i + ENCODE_IMAGES], dim, normalize)
                              for i in range(0, ids.size, ENCODE_IMAGES)]).reshape(ids.size, pp, -1)
        at = np.minimum(np.searchsorted(sorted_ids, ids), max(old_ids.size - 1, 0))
        known = (sorted_ids[at] == ids) if old_ids.size else np.zeros(ids.size, bool)
        for k, i in enumerate(ids.tolist()):
            if known[k]:
                replaced[int(order[at[k]])] = enc[k]
            else:
                added[i] = enc[k]
    new_ids = np.fromiter(added, np.int64, len(added))
    header = dict(header, n_images=int(old_ids.size + new_ids.size))  # _write sets codes_offset anew
    _write(path, header, np.concatenate([old_ids, new_ids]), codec,
           _with_replacements(codes, replaced, pp, list(added.values())))
    return int(header["n_images"])


def _encode(codec: faiss.Index, patches: np.ndarray, dim: int, normalize: bool) -> np.ndarray:
    """Codes of a block of images' patches (encoding a block at a time bounds FAISS's work buffers)."""
    return codec.sa_encode(as_matrix(np.asarray(patches).reshape(-1, dim), dim, normalize, name="patch vectors"))


def _with_replacements(codes: np.ndarray, replaced: dict[int, np.ndarray], pp: int,
                       appended: list[np.ndarray]) -> Iterator[np.ndarray]:
    """The stored codes in row blocks with ``replaced`` images' rows swapped in, then ``appended``."""
    rows = max(pp, (WRITE_CHUNK // max(1, codes.shape[1])) // pp * pp)
    hits = np.array(sorted(replaced), np.int64)
    for start in range(0, len(codes), rows):
        block = codes[start:start + rows]
        first, last = start // pp, (start + len(block)) // pp
        inside = hits[(hits >= first) & (hits < last)]
        if inside.size:
            block = np.array(block)
            for pos in inside.tolist():
                block[(pos - first) * pp:(pos - first + 1) * pp] = replaced[pos]
        yield block
    if appended:
        yield np.concatenate(appended).reshape(-1, codes.shape[1])


def _write_rows(fh, codes: np.ndarray) -> None:
    """Write ``codes`` (uint8 rows, possibly memory-mapped) in slices of about WRITE_CHUNK bytes, so
    that saving a large store never holds a second copy of all its codes."""
    rows = max(1, WRITE_CHUNK // max(1, int(np.prod(codes.shape[1:], dtype=np.int64))))
    for start in range(0, len(codes), rows):
        fh.write(np.ascontiguousarray(codes[start:start + rows], dtype=np.uint8).reshape(-1))


def read_patch_file(path: str | os.PathLike[str], *, mmap: bool = False
                    ) -> tuple[dict[str, Any], np.ndarray, faiss.Index, np.ndarray | None]:
    """Read ``(header, image_ids, index, codes)`` from a patch store file.

    Version 2: ``index`` is the codec alone and ``codes`` the codes, a read-only memory map with
    ``mmap``, else read into memory. Version 1: ``index`` holds the codes and ``codes`` is None.
    """
    try:
        with open(path, "rb") as fh:
            magic = fh.read(len(MAGIC))
            if magic not in (MAGIC, MAGIC_V1):
                raise StoreError(f"{path} is not a patch store file")
            (head_len,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(head_len))
            n = int(header["n_images"])
            raw = fh.read(8 * n)
            if len(raw) != 8 * n:
                raise StoreError(f"{path} is truncated")
            ids = np.frombuffer(raw, dtype="<i8").astype(np.int64)
            if magic == MAGIC_V1:
                return header, ids, faiss.read_index(faiss.PyCallbackIOReader(fh.read)), None
            rows, size = n * int(header["patches_per_image"]), int(header["code_size"])
            offset = int(header["codes_offset"])
            fh.seek(offset + rows * size)
            codec = faiss.read_index(faiss.PyCallbackIOReader(fh.read))
        if rows and os.path.getsize(path) < offset + rows * size:
            raise StoreError(f"{path} is truncated")
        codes = np.memmap(path, np.uint8, "r", offset, (rows, size)) if rows else np.empty((0, size), np.uint8)
        if not mmap:
            codes = np.array(codes)
    except (OSError, ValueError, KeyError, struct.error, RuntimeError) as exc:
        raise StoreError(f"cannot read patch store {path}: {exc}") from exc
    return header, ids, codec, codes
