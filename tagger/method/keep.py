"""A label renamed or given more synonyms keeps its images: the floor on its positives in an incremental fit.

An incremental nightly trains a new row for a label whose synonyms were added to, and for one renamed
(retired, then added under a name that names the same thing: ``star`` and ``stars``), and decides it at
the base run's placement of the positives. Such a row can rank the label's images as well as before
and still hold them lower on its text scale: decided there, ``heart`` with the added synonym ``love
heart`` kept 50 of its 87 positives (toy world, 500 images; 71 truly show a heart, and the new row's
scores reach their best F1 at 71 positives). A new name or one more synonym names the same thing, so
the label's images are the ones it had: when its new decision tags more than 1/``KEEP`` of the
positives the base run gave it (as a share of the images), its threshold is put where its former
count puts it (below); when it keeps fewer than ``KEEP`` of them, it is decided again at the
placement, from the one used down to ``min_placement``, whose positives come nearest the count it
had without leaving the band (``KEEP`` of it to 1/``KEEP``: more are not the images it had). Asked
to ``revive`` (the runs do), a label the new fit judges absent is tried too, and one that no placement
brings back is decided where its former count of positives puts its threshold, as long as it is
learnt from text and its images' names corroborate it there; otherwise it stays as the fit decided
(its reason says why).

A full tag run (a retrain, or `tagger tag`) holds the same way, ``revive`` included, every label the
current run had present that no edit changed (:func:`tagger.pipeline.tag` ``_hold_unchanged``): an
unrelated edit's retrain moved ``arrow``'s fitted prior from 0.09 to 0.02 and judged it absent (40
positives -> 0, AP unchanged at 0.73).
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace

import numpy as np

from .anchors import TextAnchors
from .binned import log_normal
from .decisions import DecisionConfig, Decisions, anchored_at
from .names import ZeroShotNames, name_counts
from .placement import placement_grid

__all__ = ["KEEP", "band", "keep_positives"]

logger = logging.getLogger(__name__)

#: The share of its former positives a held label keeps at least; 1/KEEP of them is the most it tags.
#: Chosen on val (``bench/changes.py``'s edits): at 2/3 (the flip list's band) each retrain could
#: take a third of a label's images unreported, and two in a row 0.25 of its true positives.
KEEP = 0.9

#: Slack in images around a small count (4 positives: 2 to 6), where KEEP of it is under one image.
SLACK = 2


def band(target: float) -> tuple[float, float]:
    """The fewest and the most positives a label held to ``target`` may keep: ``KEEP`` of it to
    1/``KEEP`` of it, and at least ``SLACK`` images either side."""
    return min(KEEP * target, target - SLACK), max(target / KEEP, target + SLACK)


#: How far the crossing a held count's prior gives may land from that count (2/3 of it to 1.5 times):
#: a prior near 1 is stored to 6 decimals, and where the fit put its positives far above the label's
#: images that moves the crossing (80 positives asked, 54 given); held there beats judged absent.
LANDS = 2.0 / 3.0


def keep_positives(d: Decisions, scores: np.ndarray, anchors: TextAnchors, cfg: DecisionConfig,
                   targets: Mapping[int, float], zeroshot_top1: np.ndarray | ZeroShotNames | None = None,
                   revive: bool = False, why: str = "renamed or given more synonyms", grow: bool = True) -> Decisions:
    """A copy of ``d`` with each label ``j`` of ``targets`` (its former positives expected on these
    ``scores``) decided again lower, nearest their count, where it kept fewer than its :func:`band`
    allows, and held to their count where it tags more (module docstring).
    ``revive``: a label the new fit judges absent is tried too (every gate still applies at the lower
    placement); ``grow`` (False where the sample holds images the former count never saw: they may
    show the label more) holds growth too; ``why`` says in its reason why it keeps its images. Each
    lower placement is fitted once and thresholds are read once per change: a run holding 10^4 labels
    stays one pass."""
    s = np.asarray(scores, np.float64)
    d = replace(d, mu0=np.array(d.mu0), sd0=np.array(d.sd0), mu1=np.array(d.mu1), sd1=np.array(d.sd1),
                prior=np.array(d.prior), present=np.array(d.present), reasons=list(d.reasons),
                label_cutoffs=None if d.label_cutoffs is None else np.array(d.label_cutoffs))
    used = d.placement if d.placement is not None else cfg.pos_anchor
    lower_first = [float(p) for p in placement_grid(cfg.min_placement, used, cfg.placement_step)[::-1] if p < used]
    fits: dict[float, tuple[Decisions, np.ndarray]] = {}

    def at(p: float) -> tuple[Decisions, np.ndarray]:
        if p not in fits:
            lower = anchored_at(p, s, d.labels, anchors, cfg, d.overrides, zeroshot_top1)
            fits[p] = (lower, lower.thresholds())
        return fits[p]

    t, keys = d.thresholds(), anchors.name_keys(list(d.labels))
    for j, target in targets.items():
        if (not d.present[j] and not revive) or d.labels[j] in d.overrides:
            continue
        before = int((s[:, j] >= t[j]).sum()) if d.present[j] else 0
        low, high = band(target)
        if grow and before > high:  # far more than it had: held back to its former count where names agree
            if _hold_count(d, s, j, target, cfg, zeroshot_top1, keys, why, before):
                t = d.thresholds()
            continue
        if before >= low:
            continue
        best = _nearest(lower_first, at, s[:, j], j, target)
        if best is not None:
            p, kept = best
            lower, _ = at(p)
            _take(d, lower, j, f"; positives placed at {p:.2f} of its text scale (not {used:.2f}): {why}, "
                               f"it keeps its images ({kept} of the {target:.0f} it had in this sample; {before} "
                               f"at {used:.2f})")
            logger.info("%s kept its images: placed at %.2f (%d positives on the sample, %.0f before)",
                        d.labels[j], p, kept, target)
            t = d.thresholds()
        if revive and (s[:, j] >= t[j]).sum() < low:
            if _hold_count(d, s, j, target, cfg, zeroshot_top1, keys, why, before):
                t = d.thresholds()
    return d


def _nearest(placements: list[float], at, col: np.ndarray, j: int, target: float) -> tuple[float, int] | None:
    """Of ``placements`` (highest first; ``at(p)`` fits one), the one whose positives of label ``j``
    (its scores ``col``) come nearest ``target`` without leaving its :func:`band`, and their count; None
    where none stays in it."""
    best: tuple[float, int] | None = None
    low, high = band(target)
    for p in placements:
        lower, lt = at(p)
        kept = int((col >= lt[j]).sum()) if lower.present[j] else 0
        if kept > high:  # lower still would tag far more than it had: not its images alone
            break
        if kept >= low and (best is None or abs(kept - target) < abs(best[1] - target)):
            best = (p, kept)
        if kept >= target:  # a lower placement only tags more
            break
    return best


def _hold_count(d: Decisions, s: np.ndarray, j: int, target: float, cfg: DecisionConfig,
                zeroshot_top1: np.ndarray | ZeroShotNames | None, keys: list[str], why: str,
                before: int) -> bool:
    """Label ``j`` decided at the threshold its former number of positives gives on ``s``: its prior
    set so its posterior there is 1/2, where no placement keeps them without tagging far more (a fit
    whose prior collapsed), or where the fit tags far more than it had (a retrain's drift upwards).
    Only a label learnt from text, with enough positives, whose images' names corroborate it there
    (without zero-shot names: never). Whether it was held."""
    n = int(round(target))
    col = np.sort(s[:, j])[::-1]
    sep = np.nan if d.text_separation is None else float(d.text_separation[j])
    if (zeroshot_top1 is None or n < max(1, cfg.min_positives) or n > len(col) or not np.isfinite(sep)
            or sep < cfg.min_text_separation):  # NaN separation: an image head scores it
        return False
    t = float(col[n - 1])
    only = np.full(s.shape[1], np.inf)
    only[j] = t
    names = name_counts(s, only, zeroshot_top1, list(d.labels), keys)  # its images' names there
    if names is None or names.own[j] < cfg.min_name_ratio * max(names.rival_count[j], 1.0):
        return False
    gap = float(log_normal(t, d.mu0[j], d.sd0[j]) - log_normal(t, d.mu1[j], d.sd1[j]))
    prior = round(1.0 / (1.0 + np.exp(-np.clip(gap, -30, 30))), 6)  # in the precision a run stores it
    if d.label_cutoffs is None:
        d.label_cutoffs = np.array(d.cutoffs())
    old = (d.prior[j], d.present[j], d.label_cutoffs[j])
    d.prior[j], d.present[j], d.label_cutoffs[j] = prior, True, 0.5
    kept = int((s[:, j] >= d.thresholds()[j]).sum())
    if not LANDS * target <= kept <= target / LANDS:  # the crossing is not where the count put it
        d.prior[j], d.present[j], d.label_cutoffs[j] = old
        return False
    d.reasons[j] = (f"text separation {sep:.2f}: present, held to the positives it had: {why}, "
                    f"it is tagged where its former {target:.0f} positives on this sample put its threshold "
                    f"({kept}; {before} as fitted: {d.reason(j) or 'no reason'})")
    logger.info("%s held to its positives: %d on the sample (%.0f before, %d as fitted)", d.labels[j], kept,
                target, before)
    return True


def _take(d: Decisions, other: Decisions, j: int, note: str) -> None:
    d.take_fit(j, other, j)
    if j < len(d.reasons):
        d.reasons[j] = other.reason(j) + note
