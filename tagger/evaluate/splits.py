"""Seen/unseen label splits and zero-shot (ZSL) / generalized zero-shot (GZSL) metrics.

ZSL scores only the unseen classes, over the images that carry at least one unseen label.
GZSL scores seen and unseen classes together over all images.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from .metrics import summarize

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabelSplit:
    """Seen and unseen class indices (sorted, disjoint) into a dataset's class list."""

    seen: tuple[int, ...]
    unseen: tuple[int, ...]

    def __post_init__(self) -> None:
        seen = tuple(sorted(int(c) for c in self.seen))
        unseen = tuple(sorted(int(c) for c in self.unseen))
        if len(set(seen)) != len(seen) or len(set(unseen)) != len(unseen):
            raise ConfigError("a label split lists a class index twice")
        both = set(seen) & set(unseen)
        if both:
            raise ConfigError(f"classes {sorted(both)} are both seen and unseen")
        if any(c < 0 for c in seen + unseen):
            raise ConfigError("class indices must be non-negative")
        object.__setattr__(self, "seen", seen)
        object.__setattr__(self, "unseen", unseen)

    @property
    def all(self) -> tuple[int, ...]:
        """Seen and unseen indices together, sorted."""
        return tuple(sorted(self.seen + self.unseen))


def make_split(class_names: Sequence[str], n_unseen: int, seed: int = 0) -> LabelSplit:
    """Pick ``n_unseen`` classes at random (deterministic for ``seed``); the rest are seen."""
    n = len(class_names)
    if not 0 < n_unseen < n:
        raise ConfigError(f"n_unseen must be in 1..{n - 1} for {n} classes, got {n_unseen}")
    perm = np.random.default_rng(seed).permutation(n)
    return LabelSplit(seen=tuple(perm[n_unseen:].tolist()), unseen=tuple(perm[:n_unseen].tolist()))


def split_from_names(
    class_names: Sequence[str], unseen_names: Sequence[str], seen_names: Sequence[str] | None = None
) -> LabelSplit:
    """Build a split from explicit class names; ``seen_names`` defaults to every other class."""
    index = {name: i for i, name in enumerate(class_names)}
    missing = [n for n in list(unseen_names) + list(seen_names or []) if n not in index]
    if missing:
        raise ConfigError(f"unknown class names in split: {missing[:10]}")
    unseen = [index[n] for n in unseen_names]
    if seen_names is None:
        unseen_set = set(unseen)
        seen = [i for i in range(len(class_names)) if i not in unseen_set]
    else:
        seen = [index[n] for n in seen_names]
    return LabelSplit(seen=tuple(seen), unseen=tuple(unseen))


def zsl_gzsl_metrics(
    scores: np.ndarray, targets: np.ndarray, split: LabelSplit, ks: tuple[int, ...] = (3, 5)
) -> dict[str, dict[str, float]]:
    """``{"zsl": summarize(...), "gzsl": summarize(...)}`` for ``split``.

    ZSL: columns of the unseen classes, rows with at least one unseen positive.
    GZSL: columns of seen + unseen classes, all rows.
    """
    scores, targets = np.asarray(scores), np.asarray(targets)
    if scores.shape != targets.shape or scores.ndim != 2:
        raise ValueError(f"scores {scores.shape} and targets {targets.shape} must be equal 2-D shapes")
    if split.all and max(split.all) >= scores.shape[1]:
        raise ConfigError(f"split refers to class {max(split.all)} but there are {scores.shape[1]} classes")
    unseen = list(split.unseen)
    rows = (targets[:, unseen] == 1).any(axis=1)
    if not rows.any():
        logger.warning("no image carries an unseen label: ZSL metrics are undefined")
    zsl = summarize(scores[rows][:, unseen], targets[rows][:, unseen], ks)
    cols = list(split.all)
    gzsl = summarize(scores[:, cols], targets[:, cols], ks)
    return {"zsl": zsl, "gzsl": gzsl}
