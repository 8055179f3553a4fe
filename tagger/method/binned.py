"""Per-label histograms and the EM steps the decision rules run on them.

Every decision rule fits each label's scores over a corpus sample. The sample is binned per label
first (:func:`histogram`), so an EM step costs O(bins x labels) whatever the number of images, and
all labels are fitted at once on ``(bins, L)`` arrays. Pure numpy.
"""
from __future__ import annotations

import numpy as np

__all__ = ["fit_bulk", "histogram", "log_normal", "log_ratio", "mad", "moments", "quantile", "two_groups"]

_LOG_SQRT_2PI = 0.5 * np.log(2 * np.pi)
_SD_FLOOR = 1e-6
_PRIOR_FLOOR = 1e-12


def histogram(s: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-label histograms of a ``(n, L)`` sample: bin centres and counts ``(bins, L)``, bin widths ``(L,)``."""
    n, L = s.shape
    lo, hi = s.min(0), s.max(0)
    width = np.maximum(hi - lo, 1e-9) / bins
    idx = np.clip(((s - lo) / width).astype(np.int64), 0, bins - 1)
    counts = np.bincount((idx * L + np.arange(L)).ravel(), minlength=bins * L).reshape(bins, L).astype(np.float64)
    return lo + (np.arange(bins)[:, None] + 0.5) * width, counts, width


def quantile(x: np.ndarray, w: np.ndarray, q: float) -> np.ndarray:
    """Per column, the bin centre ``x`` where the weights ``w`` reach the share ``q``."""
    cdf = np.cumsum(w, 0) / np.maximum(w.sum(0), 1e-12)
    return x[np.argmax(cdf >= q, axis=0), np.arange(x.shape[1])]


def moments(x: np.ndarray, w: np.ndarray, floor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column, the weighted mean and sd (at least ``floor``) of the bin centres."""
    tot = np.maximum(w.sum(0), 1e-12)
    mu = (w * x).sum(0) / tot
    return mu, np.maximum(np.sqrt((w * (x - mu) ** 2).sum(0) / tot), floor)


def log_normal(x, m, sd):
    """The log density of N(m, sd) at ``x``."""
    return -np.log(sd) - 0.5 * ((x - m) / sd) ** 2 - _LOG_SQRT_2PI


def log_ratio(s, mu0, sd0, mu1, sd1, prior):
    """log P(pos, s) - log P(neg, s) for Gaussian components (broadcast over labels), made
    non-decreasing in ``s``: beyond the vertex of the quadratic (unequal sds) it stays flat, so a
    higher score never lowers the confidence."""
    # a degenerate fit (a spread of 0 or a prior of 0 or 1, e.g. from one image) stays finite
    sd0, sd1 = np.maximum(sd0, _SD_FLOOR), np.maximum(sd1, _SD_FLOOR)
    prior = np.clip(prior, _PRIOR_FLOOR, 1.0 - _PRIOR_FLOOR)
    with np.errstate(divide="ignore", invalid="ignore"):
        a1, a0 = 1.0 / sd1 ** 2, 1.0 / sd0 ** 2
        vertex = (mu1 * a1 - mu0 * a0) / (a1 - a0)
    s = np.where((sd1 < sd0) & (s > vertex), vertex, s)
    s = np.where((sd1 > sd0) & (s < vertex), vertex, s)
    l1 = np.log(prior) - np.log(sd1) - 0.5 * ((s - mu1) / sd1) ** 2
    l0 = np.log1p(-prior) - np.log(sd0) - 0.5 * ((s - mu0) / sd0) ** 2
    return l1 - l0


def mad(x: np.ndarray, c: np.ndarray, med: np.ndarray) -> np.ndarray:
    """Per column, the median absolute deviation from ``med`` of binned scores."""
    dev = np.abs(x - med)
    order = np.argsort(dev, axis=0, kind="stable")
    cols = np.arange(x.shape[1])
    return quantile(dev[order, cols], c[order, cols], 0.5)


def fit_bulk(x, c, n, width, mu0, sd0, mu1, sd1, iterations: int):
    """EM on binned scores with the positive component held at ``mu1, sd1``: the prior and the
    negative component (mean, sd with the bins' own width added back) follow the corpus. Returns
    ``(mu0, sd0, prior)``."""
    prior = np.full(x.shape[1], 0.1)
    for _ in range(iterations):
        r = 1.0 / (1.0 + np.exp(-np.clip(log_ratio(x, mu0, sd0, mu1, sd1, prior), -60, 60)))
        prior = np.clip((r * c).sum(0) / n, 1e-6, 1 - 1e-6)  # any share is allowed
        mu0, sd0 = moments(x, (1.0 - r) * c, np.maximum(width, 1e-9))
        sd0 = np.sqrt(sd0 ** 2 + width ** 2 / 12)
    return mu0, sd0, prior


def two_groups(x, c, n, floor, iterations: int, max_prior: float):
    """Two-component EM on binned scores (centres ``x``, counts ``c``), both components free,
    started from a robust bulk and its upper tail: ``(mu0, sd0, mu1, sd1, prior)``."""
    med = quantile(x, c, 0.5)
    mu0, sd0 = med, np.maximum(1.4826 * mad(x, c, med), floor)
    mu1, sd1 = np.maximum(quantile(x, c, 0.98), mu0 + sd0), sd0.copy()
    prior = np.full(x.shape[1], 0.05)
    for _ in range(iterations):
        l1 = np.log(prior) + log_normal(x, mu1, sd1)
        l0 = np.log1p(-prior) + log_normal(x, mu0, sd0)
        r = 1.0 / (1.0 + np.exp(np.clip(l0 - l1, -60, 60)))
        prior = np.clip((r * c).sum(0) / n, 1.0 / (n + 1), max_prior)
        mu1, sd1 = moments(x, r * c, floor)
        mu0, sd0 = moments(x, (1.0 - r) * c, floor)
        mu1 = np.maximum(mu1, mu0)
    return mu0, sd0, mu1, sd1, prior
