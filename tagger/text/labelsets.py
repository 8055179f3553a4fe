"""Random label sets as in CoMC: k ~ Uniform{1..max_labels}, then k distinct labels uniformly."""
from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from ..errors import ConfigError
from ..method.labelrows import block_rows, from_index_sets

logger = logging.getLogger(__name__)

LabelSet = tuple[str, ...]


def sample_label_sets(labels: Sequence[str], n: int, seed: int, max_labels: int = 5) -> list[LabelSet]:
    """``n`` label sets, deterministic from ``seed``.

    Each set has k ~ Uniform{1..min(max_labels, C)} distinct labels chosen uniformly, with no
    co-occurrence prior; labels keep their (random) draw order.
    """
    if n < 0:
        raise ConfigError(f"n must be >= 0, got {n}")
    if max_labels < 1:
        raise ConfigError(f"max_labels must be >= 1, got {max_labels}")
    labs = list(labels)
    if not labs:
        raise ConfigError("no labels to sample from")
    if len(set(labs)) != len(labs):
        raise ConfigError("duplicate labels")
    top = min(max_labels, len(labs))
    rng = np.random.default_rng(seed)
    ks = rng.integers(1, top + 1, size=n)
    out: list[LabelSet] = []
    step = block_rows(len(labs))  # the draws come a block of rows at a time: the same stream as all at once
    for r0 in range(0, n, step):
        order = _smallest(rng.random((min(step, n - r0), len(labs))), top)
        out.extend(tuple(labs[j] for j in row[:k]) for row, k in zip(order.tolist(), ks[r0:r0 + step].tolist()))
    return out


def _smallest(keys: np.ndarray, top: int) -> np.ndarray:
    """Per row, the columns of the ``top`` smallest keys in increasing order: the first ``top``
    entries of a uniform random permutation (argsort of the keys), without sorting whole rows."""
    if top < keys.shape[1]:
        part = np.argpartition(keys, top - 1, axis=1)[:, :top]
    else:
        part = np.broadcast_to(np.arange(keys.shape[1]), keys.shape)
    inner = np.argsort(np.take_along_axis(keys, part, axis=1), axis=1)
    return np.take_along_axis(part, inner, axis=1)


def label_matrix(label_sets: Sequence[Sequence[str]], class_names: Sequence[str]) -> sp.csr_array:
    """Multi-hot ``(n, C)`` uint8 rows of label sets over ``class_names``, sparse (CSR)."""
    index = {c: i for i, c in enumerate(class_names)}
    try:
        cols = [[index[lab] for lab in labs] for labs in label_sets]
    except KeyError as e:
        raise ConfigError(f"label {e.args[0]!r} is not a class name") from e
    return from_index_sets(cols, len(index))
