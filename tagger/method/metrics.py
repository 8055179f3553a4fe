"""Multi-label metrics: non-interpolated mAP and precision/recall/F1 at top-k (pure math over arrays,
so the toy world's training, the guard and the evaluation harness all score the same way)."""
from __future__ import annotations

import numpy as np

__all__ = ["average_precision", "mean_average_precision", "per_class_ap", "summarize", "topk_prf"]


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


def topk_prf(scores: np.ndarray, targets: np.ndarray, k: int) -> dict[str, float]:
    """Overall (micro) precision, recall and F1 in percent when every image predicts its top-k classes.

    P = TP / (k * n_images), R = TP / #positives, F1 = 2PR / (P + R). Ties follow a stable
    descending sort (lower class index first). ``k`` is capped at the number of classes.
    Recall is NaN when there is no positive at all; F1 is 0 when P + R is 0.
    """
    scores = np.asarray(scores, dtype=np.float64)
    targets = np.asarray(targets)
    if scores.shape != targets.shape or scores.ndim != 2:
        raise ValueError(f"scores {scores.shape} and targets {targets.shape} must be equal 2-D shapes")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    n, n_classes = scores.shape
    k = min(int(k), n_classes)
    pos = targets == 1
    n_pos = int(pos.sum())
    if n == 0 or n_classes == 0:
        return {"precision": float("nan"), "recall": float("nan"), "f1": float("nan")}
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    tp = int(np.take_along_axis(pos, top, axis=1).sum())
    precision = 100.0 * tp / (k * n)
    recall = 100.0 * tp / n_pos if n_pos else float("nan")
    if np.isnan(recall) or precision + recall == 0:
        f1 = 0.0 if not np.isnan(recall) else float("nan")
    else:
        f1 = 2 * precision * recall / (precision + recall)
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1)}


def summarize(scores: np.ndarray, targets: np.ndarray, ks: tuple[int, ...] = (3, 5)) -> dict[str, float]:
    """mAP plus P@k / R@k / F1@k for each ``k`` in ``ks`` (all in percent) and the matrix size.

    Classes without a positive are left out of mAP (their AP is NaN); ``n_classes`` counts all
    columns and ``n_classes_with_positives`` the ones that entered mAP.
    """
    scores, targets = np.asarray(scores), np.asarray(targets)
    if scores.shape != targets.shape or scores.ndim != 2:
        raise ValueError(f"scores {scores.shape} and targets {targets.shape} must be equal 2-D shapes")
    out: dict[str, float] = {"mAP": mean_average_precision(scores, targets)}
    for k in ks:
        prf = topk_prf(scores, targets, k)
        out[f"P@{k}"] = prf["precision"]
        out[f"R@{k}"] = prf["recall"]
        out[f"F1@{k}"] = prf["f1"]
    out["n_images"] = int(scores.shape[0])
    out["n_classes"] = int(scores.shape[1])
    out["n_classes_with_positives"] = int((targets == 1).any(axis=0).sum()) if scores.shape[0] else 0
    return out
