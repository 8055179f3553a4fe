"""What the text side says about each label: how the text classifier scores its own corpus.

:class:`TextAnchors` holds, per label, where the sentences about it and the other sentences score
(mean and sd of each). The anchored decision rule (:mod:`tagger.method.decisions`) places each
label's image positives on that scale, and reads the separation of the two as how well the label
was learnt from text.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np

from .labelrows import LabelRows, block_rows, is_sparse, positions

__all__ = ["TextAnchors", "text_anchors"]

logger = logging.getLogger(__name__)

_Q84 = 0.8413447  # a standard normal's share below +1 sd


@dataclass(frozen=True)
class TextAnchors:
    """Each label's classifier scores on its own text corpus: the mean and sd over sentences about
    the label (``pos_*``) and over the other sentences (``neg_*``); ``robust_separation`` the
    separation read from the positives' median and upper-half spread instead (None: not read);
    ``alike`` per label the first label of the group it was found alike with
    (:mod:`tagger.method.alike`; None where none, or not read)."""

    neg_mean: np.ndarray
    pos_mean: np.ndarray
    neg_sd: np.ndarray
    pos_sd: np.ndarray
    robust_separation: np.ndarray | None = None
    alike: tuple[str | None, ...] | None = None

    def with_alike(self, labels: list[str], groups: dict[str, str]) -> "TextAnchors":
        """These anchors with ``groups`` (label -> its alike group's first label) read for ``labels``."""
        return replace(self, alike=tuple(groups.get(n) for n in labels) if groups else self.alike)

    def name_keys(self, labels: list[str]) -> list[str]:
        """Each label's name for corroboration: its alike group's first label, else its own."""
        if self.alike is None:
            return list(labels)
        return [a or n for a, n in zip(self.alike, labels)]

    def separation(self) -> np.ndarray:
        """How far apart the label's text positives and negatives sit, in pooled sds (0 if unknown):
        the better of the plain and the robust reading."""
        pooled = np.sqrt(0.5 * (self.neg_sd ** 2 + self.pos_sd ** 2))
        with np.errstate(divide="ignore", invalid="ignore"):
            sep = (self.pos_mean - self.neg_mean) / pooled
        sep = np.where(np.isfinite(sep), sep, 0.0)
        if self.robust_separation is not None:
            sep = np.maximum(sep, np.where(np.isfinite(self.robust_separation), self.robust_separation, 0.0))
        return sep

    def scale(self, learned: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each label's text scale: ``(base, gap, spread)`` = the negatives' mean, the positives'
        mean above it, the negatives' sd (0 where not finite); labels outside ``learned`` get (0, 1, 0)."""
        base, gap = self.neg_mean, self.pos_mean - self.neg_mean
        spread = np.where(np.isfinite(self.neg_sd), self.neg_sd, 0.0)
        if learned is None:
            return base, gap, spread
        return np.where(learned, base, 0.0), np.where(learned, gap, 1.0), np.where(learned, spread, 0.0)

    def rescaled(self, mean: np.ndarray, std: np.ndarray) -> "TextAnchors":
        """The anchors in the units of scores calibrated as ``(score - mean) / std`` (separations,
        in sds, do not change)."""
        m, sd = np.asarray(mean, np.float64), np.asarray(std, np.float64)
        return TextAnchors((self.neg_mean - m) / sd, (self.pos_mean - m) / sd, self.neg_sd / sd, self.pos_sd / sd,
                           self.robust_separation, self.alike)

    def take(self, cols: np.ndarray) -> "TextAnchors":
        """The anchors of the labels ``cols`` (indices), in that order."""
        c = np.asarray(cols, np.int64)
        return TextAnchors(self.neg_mean[c], self.pos_mean[c], self.neg_sd[c], self.pos_sd[c],
                           None if self.robust_separation is None else self.robust_separation[c],
                           None if self.alike is None else tuple(self.alike[i] for i in c.tolist()))

    def to_dict(self) -> dict:
        keys = ("neg_mean", "pos_mean", "neg_sd", "pos_sd") + (("robust_separation",) if
                                                                self.robust_separation is not None else ())
        out: dict = {k: [None if not np.isfinite(x) else round(float(x), 6) for x in getattr(self, k)] for k in keys}
        if self.alike is not None and any(self.alike):
            out["alike"] = list(self.alike)
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "TextAnchors":
        arr = {k: np.asarray([np.nan if x is None else x for x in d[k]], np.float64)
               for k in ("neg_mean", "pos_mean", "neg_sd", "pos_sd", "robust_separation") if k in d}
        alike = tuple(d["alike"]) if d.get("alike") is not None else None
        return cls(**arr, alike=alike)


def text_anchors(embeddings: np.ndarray, weight: np.ndarray, label_matrix: LabelRows,
                 chunk: int = 4096, implied: LabelRows | None = None) -> TextAnchors:
    """:class:`TextAnchors` of a linear classifier ``weight`` ``(L, d)`` from its corpus: sentence
    embeddings ``(n, d)`` and their multi-hot labels ``(n, L)`` (dense, or sparse as a corpus holds
    them), scored a chunk of sentences at a time (at most ``chunk`` and about 2 Mi scores: memory
    stays bounded whatever L, plus one score per positive sentence); the negatives' sums are the
    chunk's sums less the positives'. The negatives are read by
    mean and sd, and so are the positives; their separation is also read robustly (median,
    upper-half sd), and the gates use the better reading: a minority of sentences the text tower
    cannot read (a synonym it does not know) scores low and would otherwise drag a well-learnt
    label under them. ``implied`` (set cells of ``label_matrix``): positives a hierarchy implies,
    counted neither as positives nor as negatives (as the training counts them, :mod:`.ranking`).
    NaN where a label has no such sentences."""
    x = np.asarray(embeddings)
    y = label_matrix if is_sparse(label_matrix) else np.asarray(label_matrix)
    if len(x) != y.shape[0] or y.shape[1] != len(weight):
        raise ValueError(f"{len(x)} embeddings, label matrix {y.shape}, {len(weight)} classifier rows")
    w = np.asarray(weight, np.float64)
    n_labels = len(w)
    sums = np.zeros((3, 2, n_labels))  # (count, sum, sum of squares) x (negatives, positives) x labels
    pos_label, pos_score = [], []
    chunk = min(chunk, block_rows(n_labels, 1 << 21))  # two float64 temporaries of 16 MiB at most
    for i in range(0, len(x), chunk):
        s = np.asarray(x[i:i + chunk], np.float64) @ w.T
        rows, cols = positions(y, slice(i, i + chunk))
        score = s[rows, cols]
        every = np.stack([np.full(n_labels, float(len(s))), s.sum(0), (s * s).sum(0)])
        sums[:, 0] += every - _moments(cols, score, n_labels)  # negatives: neither positive nor implied
        if implied is not None:
            r, c = positions(implied, slice(i, i + chunk))
            own = ~np.isin(rows * n_labels + cols, r * n_labels + c)
            cols, score = cols[own], score[own]
        sums[:, 1] += _moments(cols, score, n_labels)
        pos_label.append(cols)
        pos_score.append(score)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sums[1] / sums[0]
        sd = np.sqrt(np.maximum(sums[2] / sums[0] - mean ** 2, 0.0))
    mean, sd = np.where(sums[0] > 0, mean, np.nan), np.where(sums[0] > 1, sd, np.nan)
    med, upper = _robust_by_label(np.concatenate(pos_label or [np.zeros(0, int)]),
                                  np.concatenate(pos_score or [np.zeros(0)]), len(w))
    return TextAnchors(mean[0], mean[1], sd[0], sd[1], TextAnchors(mean[0], med, sd[0], upper).separation())


def _moments(cols: np.ndarray, score: np.ndarray, n_labels: int) -> np.ndarray:
    """Per label, the (count, sum, sum of squares) of the scores in its columns ``cols``: ``(3, L)``."""
    return np.stack([np.bincount(cols, minlength=n_labels), np.bincount(cols, score, n_labels),
                     np.bincount(cols, score * score, n_labels)])


def _robust_by_label(label: np.ndarray, score: np.ndarray, n_labels: int) -> tuple[np.ndarray, np.ndarray]:
    """Per label, the median of its scores and the spread of their upper half in sds (84th
    percentile - median): scores the text tower cannot read sit low and move neither (NaN: too few)."""
    mean, sd = np.full(n_labels, np.nan), np.full(n_labels, np.nan)
    order = np.argsort(label, kind="stable")
    label, score = label[order], score[order]
    bounds = np.searchsorted(label, np.arange(n_labels + 1))
    for j in np.flatnonzero(np.diff(bounds) > 0):
        med, upper = np.quantile(score[bounds[j]:bounds[j + 1]], (0.5, _Q84))
        mean[j] = med
        if bounds[j + 1] - bounds[j] > 1:
            sd[j] = upper - med
    return mean, sd


