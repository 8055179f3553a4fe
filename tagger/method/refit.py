"""Re-fitting decisions from a small labelled set of images.

A label with labelled images gets its two score components from them (positives and negatives) and
its prior re-estimated on the corpus sample with the components held fixed; the other labels keep
their fit. Works on any :class:`~tagger.method.decisions.Decisions` (a copy is returned). Pure numpy.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from .binned import log_ratio
from .cutoffs import rule_cutoffs

if TYPE_CHECKING:
    from .decisions import Decisions

__all__ = ["fit_from_labels"]

logger = logging.getLogger(__name__)


def fit_from_labels(decisions: Decisions, scores: np.ndarray, truth: np.ndarray,
                    corpus_scores: np.ndarray | None = None, min_images: int = 2) -> Decisions:
    """Re-fit labels that have labelled images (``truth`` multi-hot over ``decisions.labels``).

    Each such label's two components come from its labelled positives and negatives; its prior is
    re-estimated on ``corpus_scores`` with the components held fixed (a labelled set rarely has the
    corpus's label frequencies), or taken from the labelled set when no corpus sample is given.
    The other labels keep their unsupervised fit."""
    s, y = np.asarray(scores, np.float64), np.asarray(truth, bool)
    def copied(a: np.ndarray) -> np.ndarray:
        return np.array(a, copy=True)
    out = replace(decisions, reasons=list(decisions.reasons), mu0=copied(decisions.mu0), sd0=copied(decisions.sd0),
                  mu1=copied(decisions.mu1), sd1=copied(decisions.sd1), prior=copied(decisions.prior),
                  present=copied(decisions.present))
    for j in range(len(decisions.labels)):
        pos, neg = s[y[:, j], j], s[~y[:, j], j]
        if len(pos) < min_images or len(neg) < min_images:
            continue
        floor = 1e-3 + 0.05 * s[:, j].std()
        out.mu1[j], out.sd1[j] = pos.mean(), max(pos.std(), floor)
        out.mu0[j], out.sd0[j] = neg.mean(), max(neg.std(), floor)
        out.prior[j] = np.clip(y[:, j].mean(), 1e-3, 0.999)
        if corpus_scores is not None:
            c = np.asarray(corpus_scores, np.float64)[:, j]
            for _ in range(50):
                logit = log_ratio(c, out.mu0[j], out.sd0[j], out.mu1[j], out.sd1[j], out.prior[j])
                out.prior[j] = np.clip(np.mean(1.0 / (1.0 + np.exp(-np.clip(logit, -60, 60)))), 1e-4, 0.999)
        out.present[j] = True
        if len(out.reasons) == len(decisions.labels):
            out.reasons[j] = f"fitted from labelled images ({len(pos)} with the label, {len(neg)} without)"
    if decisions.label_cutoffs is not None and decisions.cutoff_rule == "f1":  # the re-fitted labels' cutoffs too
        out.label_cutoffs = rule_cutoffs(out.cutoff_rule, out.cutoff, out.min_cutoff, out.mu0, out.sd0, out.mu1,
                                          out.sd1, out.prior)
    return out
