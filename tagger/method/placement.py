"""Where a vocabulary's image positives sit on its labels' text scales, fitted to the corpus.

The anchored decision rule (:mod:`tagger.method.decisions`) holds each label's positive component at
a placement P on its text scale (0 = the text negatives' mean, 1 = the text positives'). A fixed P,
chosen on the world's own 20-label classifier (1.15), sits too high for classifiers of larger
vocabularies: on val, the images of the 20 world labels sit at a median 1.07-1.09 of the way in the
20-label vocabulary, 0.92-0.99 in vocabularies of 220 labels, and new rows trained into a 1,010-label
classifier place theirs at 0.68-0.84, so weaker labels found no positives near their anchor and were
judged absent. One P per fit is estimated from the labels the fixed placement already finds present:
each one's likelihood-best placement on a grid (the anchored EM run at each point), their median,
plus a margin, never above the fixed P (which stays where the median reaches it). One parameter for
the whole vocabulary: a label's own tail cannot pull it, as a per-label fit by the images would.
"""
from __future__ import annotations

import numpy as np

from .binned import fit_bulk, log_normal

__all__ = ["best_placements", "corpus_placement", "placement_grid", "placement_of"]


def placement_grid(lowest: float, highest: float, step: float) -> np.ndarray:
    """The placements tried, from ``lowest`` to ``highest`` (included) in steps of ``step``."""
    k = int(np.floor((highest - lowest) / step + 1e-9))
    return np.round(lowest + step * np.arange(k + 1), 6) if highest >= lowest else np.array([highest])


def best_placements(x, c, n: int, width, base, gap, spread, grid: np.ndarray, *, neg_anchor: float,
                    anchor_sd: float, neg_sd_shift: float, iterations: int) -> np.ndarray:
    """Per label (binned columns ``x, c, width`` with their text scale ``base, gap, spread``), the
    grid point whose anchored fit explains its scores best (log-likelihood of the two components)."""
    sd1 = anchor_sd * gap
    start = base + neg_anchor * gap
    loglik = []
    for p in grid:
        mu1 = base + p * gap - neg_sd_shift * spread
        mu0, sd0, prior = fit_bulk(x, c, n, width, start, sd1.copy(), mu1, sd1, iterations)
        mix = np.logaddexp(np.log(prior) + log_normal(x, mu1, sd1), np.log1p(-prior) + log_normal(x, mu0, sd0))
        loglik.append((c * mix).sum(0))
    return grid[np.argmax(np.asarray(loglik), axis=0)]


def corpus_placement(x, c, n: int, width, base, gap, spread, cfg) -> float:
    """The placement for one fit: the median of the labels' best placements plus
    ``cfg.placement_margin``, within [``cfg.min_placement``, ``cfg.pos_anchor``]."""
    grid = placement_grid(cfg.min_placement, cfg.pos_anchor, cfg.placement_step)
    best = best_placements(x, c, n, width, base, gap, spread, grid, neg_anchor=cfg.neg_anchor,
                           anchor_sd=cfg.anchor_sd, neg_sd_shift=cfg.neg_sd_shift, iterations=cfg.iterations)
    return float(np.clip(np.median(best) + cfg.placement_margin, cfg.min_placement, cfg.pos_anchor))


def placement_of(mu1: np.ndarray, anchors, cfg) -> float | None:
    """The placement a fit used, read back from its labels' positive means ``mu1`` (in the units of
    ``anchors``): the median over the labels learnt from text; None without any. An incremental
    nightly that adds too few labels to fit one takes its base run's so."""
    mu1 = np.asarray(mu1, np.float64)
    base, gap, spread = anchors.scale()
    ok = np.isfinite(mu1) & (gap > 0) & (anchors.separation() >= cfg.min_text_separation)
    if not ok.any():
        return None
    return float(np.median((mu1[ok] - base[ok] + cfg.neg_sd_shift * spread[ok]) / gap[ok]))
