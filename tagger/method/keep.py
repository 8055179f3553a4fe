"""A label renamed or given more synonyms keeps its images: the floor on its positives in an incremental fit.

An incremental nightly trains a new row for a label whose synonyms were added to, and for one renamed
(retired, then added under a name that names the same thing: ``star`` and ``stars``), and decides it at
the base run's placement of the positives. Such a row can rank the label's images as well as before
and still hold them lower on its text scale: decided there, ``heart`` with the added synonym ``love
heart`` kept 50 of its 87 positives (toy world, 500 images; 71 truly show a heart, and the new row's
scores reach their best F1 at 71 positives). A new name or one more synonym names the same thing, so
the label's images are the ones it had: when its new decision keeps fewer than ``KEEP`` of the
positives the base run gave it (as a share of the images), it is decided again at the highest
placement, from the one used down to ``min_placement``, that keeps them. A label the new fit judges
absent stays absent (its reason says why), and so does one that no placement brings back.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace

import numpy as np

from .anchors import TextAnchors
from .decisions import DecisionConfig, Decisions, anchored_at
from .placement import placement_grid

__all__ = ["KEEP", "keep_positives"]

logger = logging.getLogger(__name__)

#: The share of its former positives a renamed or re-worded label must keep (shrinking to 2/3 is what
#: the flip list reports).
KEEP = 2.0 / 3.0


def _count(d: Decisions, s: np.ndarray, j: int) -> int:
    return int((s[:, j] >= d.thresholds()[j]).sum())


def keep_positives(d: Decisions, scores: np.ndarray, anchors: TextAnchors, cfg: DecisionConfig,
                   targets: Mapping[int, float], zeroshot_top1: np.ndarray | None = None) -> Decisions:
    """A copy of ``d`` with each label ``j`` of ``targets`` (its former positives expected on these
    ``scores``) decided again lower where it kept fewer than ``KEEP`` of them (module docstring)."""
    s = np.asarray(scores, np.float64)
    d = replace(d, mu0=np.array(d.mu0), sd0=np.array(d.sd0), mu1=np.array(d.mu1), sd1=np.array(d.sd1),
                prior=np.array(d.prior), present=np.array(d.present), reasons=list(d.reasons),
                label_cutoffs=None if d.label_cutoffs is None else np.array(d.label_cutoffs))
    used = d.placement if d.placement is not None else cfg.pos_anchor
    lower_first = [float(p) for p in placement_grid(cfg.min_placement, used, cfg.placement_step)[::-1] if p < used]
    for j, target in targets.items():
        if not d.present[j] or d.labels[j] in d.overrides:
            continue
        before = _count(d, s, j)
        if before >= KEEP * target:
            continue
        for p in lower_first:
            lower = anchored_at(p, s, d.labels, anchors, cfg, d.overrides, zeroshot_top1)
            kept = _count(lower, s, j) if lower.present[j] else 0
            if kept >= KEEP * target:
                _take(d, lower, j, f"; positives placed at {p:.2f} of its text scale (not {used:.2f}): renamed or "
                                   f"given more synonyms, it keeps its images ({kept} of the {target:.0f} it had in "
                                   f"this sample; {before} at {used:.2f})")
                logger.info("%s kept its images: placed at %.2f (%d positives on the sample, %.0f before)",
                            d.labels[j], p, kept, target)
                break
    return d


def _take(d: Decisions, other: Decisions, j: int, note: str) -> None:
    for name in ("mu0", "sd0", "mu1", "sd1", "prior", "present"):
        getattr(d, name)[j] = getattr(other, name)[j]
    if d.label_cutoffs is not None and other.label_cutoffs is not None:
        d.label_cutoffs[j] = other.label_cutoffs[j]
    if j < len(d.reasons):
        d.reasons[j] = other.reason(j) + note
