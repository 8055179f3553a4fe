"""Single-file format of a patch store.

Layout (little endian)::

    8 bytes   magic b"TGPATCH1"
    8 bytes   header length H (uint64)
    H bytes   header, UTF-8 JSON (dim, patches_per_image, n_images, code_size, config)
    8*n bytes image ids (int64, storage order)
    rest      the FAISS flat-codes index with its codes, in FAISS's own serialisation

The FAISS part is a standard serialised index, so the codes are read straight into the
index's buffer (no intermediate copy) and any FAISS tool can read that section. The file is
written to a temp name and renamed into place, so a crash never leaves a partial file.
"""
from __future__ import annotations

import json
import logging
import os
import struct
from typing import Any

import faiss
import numpy as np

from tagger.errors import StoreError
from tagger.store.atomic import atomic_open

logger = logging.getLogger(__name__)

MAGIC = b"TGPATCH1"


def write_patch_file(path: str | os.PathLike[str], header: dict[str, Any],
                     image_ids: np.ndarray, index: faiss.Index) -> None:
    """Write header, ids and index to ``path`` atomically."""
    head = json.dumps(header, sort_keys=True).encode()
    ids = np.ascontiguousarray(image_ids, dtype="<i8")
    with atomic_open(path) as fh:
        fh.write(MAGIC)
        fh.write(struct.pack("<Q", len(head)))
        fh.write(head)
        fh.write(ids.tobytes())
        faiss.write_index(index, faiss.PyCallbackIOWriter(fh.write))


def read_patch_file(path: str | os.PathLike[str]) -> tuple[dict[str, Any], np.ndarray, faiss.Index]:
    """Read ``(header, image_ids, index)`` from a file written by :func:`write_patch_file`."""
    try:
        with open(path, "rb") as fh:
            if fh.read(len(MAGIC)) != MAGIC:
                raise StoreError(f"{path} is not a patch store file")
            (head_len,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(head_len))
            n = int(header["n_images"])
            raw = fh.read(8 * n)
            if len(raw) != 8 * n:
                raise StoreError(f"{path} is truncated")
            ids = np.frombuffer(raw, dtype="<i8").astype(np.int64)
            index = faiss.read_index(faiss.PyCallbackIOReader(fh.read))
    except (OSError, ValueError, KeyError, struct.error, RuntimeError) as exc:
        raise StoreError(f"cannot read patch store {path}: {exc}") from exc
    return header, ids, index
