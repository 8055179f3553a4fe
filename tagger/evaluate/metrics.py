"""Multi-label metrics: non-interpolated mAP and precision/recall/F1 at top-k."""
from __future__ import annotations

import numpy as np


def average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """Non-interpolated AP of one class: mean of precision@rank over the positive ranks.

    Ties are broken by a stable descending sort. Returns NaN for a class with no positive.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    pos = np.asarray(targets).ravel() == 1
    n_pos = int(pos.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    hits = pos[order]
    ranks = np.flatnonzero(hits) + 1
    precision_at_hits = np.arange(1, n_pos + 1) / ranks
    return float(precision_at_hits.mean())


def per_class_ap(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """AP for every column of an (n_images, n_classes) score matrix."""
    scores, targets = np.asarray(scores), np.asarray(targets)
    if scores.shape != targets.shape:
        raise ValueError(f"scores {scores.shape} and targets {targets.shape} differ in shape")
    return np.array([average_precision(scores[:, c], targets[:, c]) for c in range(scores.shape[1])])


def mean_average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """mAP in percent: mean AP over the classes that have at least one positive."""
    ap = per_class_ap(scores, targets)
    return float(100.0 * np.nanmean(ap)) if np.isfinite(ap).any() else float("nan")
