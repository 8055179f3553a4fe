"""Per-label cutoffs that maximise each label's expected F1 under its fitted mixture.

A label's decision is a two-component model of its scores (negatives ``mu0, sd0``, positives ``mu1,
sd1``, positive share ``prior``) whose posterior P(positive | score) is its confidence. Tagging where
that posterior reaches 0.5 maximises accuracy, not F1: for a label the classifier confuses with
another (pentagon with hexagon), whose components overlap, it keeps only the surest images and
misses most of the rest. The threshold that maximises a label's F1 is where its posterior reaches
half of the best F1 it can reach (a known property of F1-optimal thresholds on calibrated scores), so
each label's cutoff is F*/2, with F* its best *expected* F1 computed from the fit alone -- no labelled
image is needed. Well-separated labels (F* near 1) keep a cutoff near 0.5; overlapping ones get a lower
one. The confidence column is unchanged (still the posterior), so calibration is unchanged.
"""
from __future__ import annotations

import numpy as np
import torch
from numpy.typing import ArrayLike

__all__ = ["expected_best_f1", "f1_cutoffs", "rule_cutoffs"]

_GRID = 257  # thresholds tried per label; F* is a smooth maximum, so its error is second order


def _survival(t: torch.Tensor, mu: torch.Tensor, sd: torch.Tensor) -> torch.Tensor:
    return torch.special.ndtr((mu - t) / sd)


def expected_best_f1(mu0: ArrayLike, sd0: ArrayLike, mu1: ArrayLike, sd1: ArrayLike, prior: ArrayLike) -> np.ndarray:
    """Per label, the best F1 a threshold can reach if its scores follow the fitted mixture:
    ``F(t) = 2 pi S1(t) / (pi S1(t) + (1 - pi) S0(t) + pi)``, S the components' survival functions,
    maximised over a grid spanning both components."""
    mu0, sd0, mu1, sd1, pi = (torch.as_tensor(np.asarray(a, np.float64)) for a in (mu0, sd0, mu1, sd1, prior))
    sd0, sd1 = sd0.clamp_min(1e-9), sd1.clamp_min(1e-9)
    pi = pi.clamp(1e-12, 1 - 1e-12)
    if not len(pi):
        return np.zeros(0)
    wide = 5 * torch.maximum(sd0, sd1)
    lo, hi = torch.minimum(mu0, mu1) - wide, torch.maximum(mu0, mu1) + wide
    t = lo[None, :] + (hi - lo)[None, :] * torch.linspace(0.0, 1.0, _GRID, dtype=torch.float64)[:, None]
    s1, s0 = _survival(t, mu1, sd1), _survival(t, mu0, sd0)
    f = 2 * pi * s1 / (pi * s1 + (1 - pi) * s0 + pi)
    return f.max(0).values.numpy()


def f1_cutoffs(mu0: ArrayLike, sd0: ArrayLike, mu1: ArrayLike, sd1: ArrayLike, prior: ArrayLike,
               floor: float = 0.0) -> np.ndarray:
    """Per label, the posterior cutoff that maximises its expected F1: half its best expected F1,
    never below ``floor``."""
    return np.maximum(0.5 * expected_best_f1(mu0, sd0, mu1, sd1, prior), floor)


def rule_cutoffs(rule: str, cutoff: float, floor: float, mu0: ArrayLike, sd0: ArrayLike, mu1: ArrayLike,
                 sd1: ArrayLike, prior: ArrayLike) -> np.ndarray:
    """Per label, the posterior cutoff of ``rule``: "posterior" (``cutoff`` for all) or "f1" (half
    the best F1 its components expect, at least ``floor``)."""
    if rule == "posterior":
        return np.full(len(np.atleast_1d(prior)), float(cutoff))
    if rule != "f1":
        raise ValueError(f"unknown cutoff rule {rule!r} (f1 or posterior)")
    return f1_cutoffs(mu0, sd0, mu1, sd1, prior, floor=floor)
