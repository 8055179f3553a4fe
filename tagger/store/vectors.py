"""Input checks and normalisation shared by the global index and the patch store."""
from __future__ import annotations

import logging

import numpy as np

from tagger.errors import StoreError

logger = logging.getLogger(__name__)


def as_ids(ids: np.ndarray, *, unique: bool = True) -> np.ndarray:
    """A 1-D int64 copy-free view of ``ids``; duplicates are an error when ``unique``."""
    arr = np.asarray(ids)
    if arr.ndim != 1 or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
        raise StoreError(f"ids must be a 1-D integer array, got {arr.dtype}{arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=np.int64)
    if unique and np.unique(arr).size != arr.size:
        raise StoreError("ids contain duplicates")
    return arr


def as_matrix(x: np.ndarray, dim: int, normalize: bool, *, name: str = "vectors") -> np.ndarray:
    """A C-contiguous float32 [n, dim] copy of ``x``, L2-normalised row-wise when asked.

    Rows of zero norm stay zero instead of becoming NaN.
    """
    arr = np.asarray(x)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise StoreError(f"{name} must be [n, {dim}], got {arr.shape}")
    out = np.array(arr, dtype=np.float32, order="C", copy=True)
    if not np.isfinite(out).all():
        raise StoreError(f"{name} contain NaN or infinite values")
    if normalize:
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0)
    return out
