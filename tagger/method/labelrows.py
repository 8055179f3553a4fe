"""Multi-hot label rows held sparsely, made dense a block of rows at a time.

A text corpus at 10,000 labels has hundreds of thousands of sentences with one to five labels
each: its dense ``(n, C)`` matrix runs to gigabytes, its CSR form to a few megabytes. Training and
the text anchors read it through :func:`dense_rows`, so their memory is bounded by a batch
(``rows x C``), not by the corpus. Every function here also takes a dense array (small matrices,
older callers) and gives the same values for it.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import TypeAlias

import numpy as np
import scipy.sparse as sp
from numpy.typing import DTypeLike

__all__ = ["LabelRows", "as_csr", "block_rows", "columns_any", "dense_blocks", "dense_rows", "from_index_sets",
           "is_sparse", "positions"]

logger = logging.getLogger(__name__)

#: Label rows as callers hand them over: a CSR array (a corpus's own) or a dense array.
LabelRows: TypeAlias = "sp.csr_array | np.ndarray"

_BLOCK_CELLS = 1 << 22  # cells of one dense block (4 Mi: 4 MiB of uint8, 16 MiB of float32)


def is_sparse(m: object) -> bool:
    """Whether ``m`` is a scipy sparse matrix or array."""
    return sp.issparse(m)


def block_rows(n_cols: int, cells: int = _BLOCK_CELLS) -> int:
    """Rows per dense block of ``n_cols`` columns so that a block holds about ``cells`` cells."""
    return max(1, cells // max(1, n_cols))


def as_csr(m: LabelRows, dtype: DTypeLike = np.uint8) -> sp.csr_array:
    """``m`` as a canonical CSR array of ``dtype`` (sorted column indices, no stored zeros); a dense
    ``m`` (an ``np.load`` memory map too) is converted a block of rows at a time. A CSR array that is
    already canonical and of ``dtype`` is returned as it is."""
    if sp.issparse(m):
        out = m if isinstance(m, sp.csr_array) and m.dtype == dtype else sp.csr_array(m, dtype=dtype)
    else:
        d = m if isinstance(m, np.ndarray) else np.asarray(m)  # a memory map stays one
        if d.ndim != 2:
            raise ValueError(f"label rows must be 2-D, got shape {d.shape}")
        step = block_rows(d.shape[1])
        parts = [sp.csr_array(np.asarray(d[i:i + step]).astype(dtype, copy=False)) for i in range(0, len(d), step)]
        out = sp.csr_array(sp.vstack(parts, format="csr", dtype=dtype)) if len(parts) > 1 else (
            parts[0] if parts else sp.csr_array((0, d.shape[1]), dtype=dtype))
    if not out.has_canonical_format:
        out = out.copy()
        out.sum_duplicates()
    if out.nnz and not out.data.all():
        out = out.copy()
        out.eliminate_zeros()
    return out


def from_index_sets(index_sets: Sequence[Sequence[int]], n_cols: int, dtype: DTypeLike = np.uint8) -> sp.csr_array:
    """Multi-hot CSR rows from each row's column indices (a repeated index counts once)."""
    lengths = np.fromiter((len(s) for s in index_sets), np.int64, len(index_sets))
    cols = np.fromiter((j for s in index_sets for j in s), np.int64, int(lengths.sum()))
    rows = np.repeat(np.arange(len(index_sets), dtype=np.int64), lengths)
    out = sp.csr_array((np.ones(len(cols), dtype), (rows, cols)), shape=(len(index_sets), n_cols))
    out.sum_duplicates()
    out.data[:] = 1
    return out


def dense_rows(m: LabelRows, rows: slice | np.ndarray, dtype: DTypeLike = np.float32) -> np.ndarray:
    """The rows ``rows`` (a slice or an index array, in that order) of ``m`` as a dense array."""
    if isinstance(m, np.ndarray):
        return np.asarray(m[rows], dtype)
    return m[rows].toarray().astype(dtype, copy=False)


def dense_blocks(m: LabelRows, dtype: DTypeLike = np.uint8,
                 cells: int = _BLOCK_CELLS) -> Iterator[np.ndarray]:
    """``m``'s rows in order as dense blocks of about ``cells`` cells each."""
    step = block_rows(m.shape[1], cells)
    for i in range(0, m.shape[0], step):
        yield dense_rows(m, slice(i, i + step), dtype)


def positions(m: LabelRows, rows: slice) -> tuple[np.ndarray, np.ndarray]:
    """The (row, column) positions of the set cells of ``m[rows]``, rows counted from the slice's
    start, in row-major order."""
    if not sp.issparse(m):
        r, c = np.nonzero(np.asarray(m[rows]))
        return r, c
    part = as_csr(m[rows], m.dtype)
    return np.repeat(np.arange(part.shape[0]), np.diff(part.indptr)), part.indices.astype(np.int64)


def columns_any(m: LabelRows, cols: np.ndarray) -> np.ndarray:
    """Per row, whether any of the columns ``cols`` is set (bool ``(n,)``)."""
    cols = np.asarray(cols, np.int64)
    if not sp.issparse(m):
        return np.asarray(np.asarray(m)[:, cols].any(1)) if len(cols) else np.zeros(len(m), bool)
    c = as_csr(m, m.dtype)
    hit = np.isin(c.indices, cols) & (c.data != 0)
    owner = np.repeat(np.arange(c.shape[0]), np.diff(c.indptr))
    out = np.zeros(c.shape[0], bool)
    out[owner[hit]] = True
    return out
