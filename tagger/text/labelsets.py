"""Random label sets as in CoMC: k ~ Uniform{1..max_labels}, then k distinct labels uniformly."""
from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from ..errors import ConfigError

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
    # A uniform random permutation per row; its first k entries are a uniform k-subset.
    order = np.argsort(rng.random((n, len(labs))), axis=1)[:, :top]
    return [tuple(labs[j] for j in row[:k]) for row, k in zip(order.tolist(), ks.tolist())]


def label_matrix(label_sets: Sequence[Sequence[str]], class_names: Sequence[str]) -> np.ndarray:
    """Multi-hot ``(n, C)`` uint8 matrix of label sets over ``class_names``."""
    index = {c: i for i, c in enumerate(class_names)}
    out = np.zeros((len(label_sets), len(index)), dtype=np.uint8)
    for row, labs in enumerate(label_sets):
        for lab in labs:
            try:
                out[row, index[lab]] = 1
            except KeyError as e:
                raise ConfigError(f"label {lab!r} is not a class name") from e
    return out
