"""Per-label tag decisions fitted without labelled images.

The default rule (:func:`fit_anchored`) anchors each label on its text side. The text classifier
knows, for every label, how it scores the sentences of its own corpus that are about the label and
those that are not (:class:`TextAnchors`). Image scores of the label are modelled as two Gaussian
components: the positives held at ``pos_anchor`` of the way from the text negatives' mean to the
text positives' mean, with sd ``anchor_sd`` of that gap (the constants absorb the image-text
modality gap and are chosen on the toy validation split), and the negatives -- the bulk, which
every corpus has plenty of -- fitted to the corpus by EM together with the label's prior, its share
of positive images (the negatives start at ``neg_anchor`` on the same scale). A label absent
from the corpus gets a prior near zero, so (almost) no positives; a label whose sentences the
classifier cannot tell apart from the rest (``min_text_separation``) carries no signal and is never
tagged. A label the text side separates only weakly (below ``corroborate_below``) must also be
corroborated by the images: the share of images at or above its threshold that its bulk's Gaussian
tail alone would put there (the bulk read robustly from the median and the 10th percentile of its
image scores) may be at most ``max_tail_share``. A word the text tower half knows, absent from the
corpus, whose image scores merely spread wider than its text scale fails that test and is not
tagged; a label learnt well from text is trusted on its anchors.

The earlier rule (:func:`fit_decisions`, ``--decision mixture``) fits both components to the corpus.
Each label's scores over a corpus sample are modelled as a two-component Gaussian mixture: a
negative bulk (every image that does not show the label) and, when the label occurs, a positive
bump above it. EM runs for all labels at once (one ``(n, L)`` array, fixed iterations, a
deterministic start), so a fit is a pure function of the sample and scales to 10,000 labels.

A label counts as *present* only when its positive component is separated from the bulk
(``min_separation``, in pooled standard deviations), populated (``min_positives`` images) and
explains the sample better than one Gaussian by more than noise would (``min_gain``);
otherwise its threshold is +inf and its confidence is ~0, so a label absent from the corpus is not
tagged. ``confidence`` is the mixture's posterior P(positive | score); a tag is positive when it
reaches ``cutoff`` (0.5: the two weighted densities cross), which gives each label its own threshold
on the raw score. Users may pin thresholds (``overrides``); a small labelled set may replace a
label's fit (:func:`fit_from_labels`).
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field

import numpy as np

__all__ = ["DecisionConfig", "Decisions", "TextAnchors", "fit_anchored", "fit_decisions", "fit_from_labels",
           "text_anchors"]

logger = logging.getLogger(__name__)

_LOG_SQRT_2PI = 0.5 * np.log(2 * np.pi)
_Z90 = 1.2815516  # the 90th percentile of a standard normal: (median - 10th percentile) / sd


@dataclass(frozen=True)
class DecisionConfig:
    """How thresholds are fitted (defaults chosen on the toy validation split)."""

    cutoff: float = 0.5  # posterior P(positive | score) at which a tag becomes positive
    min_separation: float = 2.5  # (mu1 - mu0) / pooled sd for a label to count as present
    min_positives: float = 3.0  # expected positives in the sample for a label to count as present
    min_gain: float = 3.0  # the mixture must beat one Gaussian by this many nats per ln(n): structure, not noise
    max_prior: float = 0.5  # a label's positive share is at most this (the bulk is the negatives)
    iterations: int = 60
    bins: int = 256  # each label's sample is binned: EM cost does not grow with the sample
    sd_floor: float = 0.05  # component sd never below this fraction of the label's overall sd
    # the anchored rule: positives placed on each label's text scale (0 = text negatives' mean,
    # 1 = text positives' mean); the negatives and the prior are fitted to the corpus. These and the
    # gates below are chosen on val scenes (toy-rn and toy-vit: 20 world labels + 200 absent ones,
    # and the world's own 20-label classifier) by bench/decisions.py --tune
    neg_anchor: float = 0.3  # where the negatives' fit starts
    pos_anchor: float = 1.1
    anchor_sd: float = 0.2
    min_text_separation: float = 2.0  # (text pos mean - text neg mean) / pooled sd: below, never tagged
    max_tail_share: float = 0.8  # share of the images above threshold the bulk's own tail may explain ...
    corroborate_below: float = 3.0  # ... checked for labels whose text separation is below this

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Decisions:
    """Fitted per-label mixtures: ``mu0, sd0`` negatives, ``mu1, sd1`` positives, ``prior``, ``present``."""

    labels: list[str]
    mu0: np.ndarray
    sd0: np.ndarray
    mu1: np.ndarray
    sd1: np.ndarray
    prior: np.ndarray
    present: np.ndarray
    cutoff: float = 0.5
    overrides: dict[str, float] = field(default_factory=dict)

    def confidence(self, scores: np.ndarray) -> np.ndarray:
        """P(positive | score) per (image, label), in [0, 1]; ~0 for labels judged absent."""
        s = np.asarray(scores, np.float64)
        logit = _log_ratio(s, self.mu0, self.sd0, self.mu1, self.sd1, self.prior)
        conf = 1.0 / (1.0 + np.exp(-np.clip(logit, -60, 60)))
        conf[:, ~self.present] = np.minimum(conf[:, ~self.present], 1e-3)
        return conf.astype(np.float32)

    def thresholds(self) -> np.ndarray:
        """Each label's threshold on the raw score (+inf where absent), overrides applied."""
        t = _crossings(*(np.asarray(a, np.float64) for a in (self.mu0, self.sd0, self.mu1, self.sd1, self.prior)),
                       self.cutoff)
        t = np.where(self.present, t, np.inf)
        for j, name in enumerate(self.labels):
            if name in self.overrides:
                t[j] = float(self.overrides[name])
        return t

    def positive(self, scores: np.ndarray) -> np.ndarray:
        """Positive tags: a label's raw score reaches its own threshold."""
        return np.asarray(scores, np.float64) >= self.thresholds()[None, :]

    def to_dict(self) -> dict:
        t = self.thresholds()
        return {"labels": list(self.labels), "cutoff": self.cutoff, "overrides": dict(self.overrides),
                **{k: np.asarray(getattr(self, k), np.float64).round(6).tolist()
                   for k in ("mu0", "sd0", "mu1", "sd1", "prior")},
                "present": [bool(x) for x in self.present],
                "thresholds": [None if not np.isfinite(x) else round(float(x), 6) for x in t]}

    @classmethod
    def from_dict(cls, d: dict) -> "Decisions":
        arr = {k: np.asarray(d[k], np.float64) for k in ("mu0", "sd0", "mu1", "sd1", "prior")}
        return cls(list(d["labels"]), present=np.asarray(d["present"], bool), cutoff=float(d["cutoff"]),
                   overrides={k: float(v) for k, v in d.get("overrides", {}).items()}, **arr)


@dataclass(frozen=True)
class TextAnchors:
    """Each label's classifier scores on its own text corpus: the mean and sd over sentences about
    the label (``pos_*``) and over the other sentences (``neg_*``)."""

    neg_mean: np.ndarray
    pos_mean: np.ndarray
    neg_sd: np.ndarray
    pos_sd: np.ndarray

    def separation(self) -> np.ndarray:
        """How far apart the label's text positives and negatives sit, in pooled sds (0 if unknown)."""
        pooled = np.sqrt(0.5 * (self.neg_sd ** 2 + self.pos_sd ** 2))
        with np.errstate(divide="ignore", invalid="ignore"):
            sep = (self.pos_mean - self.neg_mean) / pooled
        return np.where(np.isfinite(sep), sep, 0.0)

    def rescaled(self, mean: np.ndarray, std: np.ndarray) -> "TextAnchors":
        """The anchors in the units of scores calibrated as ``(score - mean) / std``."""
        m, sd = np.asarray(mean, np.float64), np.asarray(std, np.float64)
        return TextAnchors((self.neg_mean - m) / sd, (self.pos_mean - m) / sd, self.neg_sd / sd, self.pos_sd / sd)

    def to_dict(self) -> dict:
        return {k: [None if not np.isfinite(x) else round(float(x), 6) for x in getattr(self, k)]
                for k in ("neg_mean", "pos_mean", "neg_sd", "pos_sd")}

    @classmethod
    def from_dict(cls, d: dict) -> "TextAnchors":
        return cls(*(np.asarray([np.nan if x is None else x for x in d[k]], np.float64)
                     for k in ("neg_mean", "pos_mean", "neg_sd", "pos_sd")))


def text_anchors(embeddings: np.ndarray, weight: np.ndarray, label_matrix: np.ndarray,
                 chunk: int = 4096) -> TextAnchors:
    """:class:`TextAnchors` of a linear classifier ``weight`` ``(L, d)`` from its corpus: sentence
    embeddings ``(n, d)`` and their multi-hot labels ``(n, L)``, scored a chunk of sentences at a time
    (memory stays ``chunk x L`` at any vocabulary size). NaN where a label has no such sentences."""
    x, y = np.asarray(embeddings), np.asarray(label_matrix)
    if len(x) != len(y) or y.shape[1] != len(weight):
        raise ValueError(f"{len(x)} embeddings, label matrix {y.shape}, {len(weight)} classifier rows")
    w = np.asarray(weight, np.float64)
    sums = np.zeros((3, 2, len(w)))  # (count, sum, sum of squares) x (negatives, positives) x labels
    for i in range(0, len(x), chunk):
        s = np.asarray(x[i:i + chunk], np.float64) @ w.T
        pos = np.asarray(y[i:i + chunk], bool)
        for k, mask in enumerate((~pos, pos)):
            sums[0, k] += mask.sum(0)
            sums[1, k] += np.where(mask, s, 0.0).sum(0)
            sums[2, k] += np.where(mask, s * s, 0.0).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sums[1] / sums[0]
        sd = np.sqrt(np.maximum(sums[2] / sums[0] - mean ** 2, 0.0))
    mean, sd = np.where(sums[0] > 0, mean, np.nan), np.where(sums[0] > 1, sd, np.nan)
    return TextAnchors(mean[0], mean[1], sd[0], sd[1])


def fit_anchored(scores: np.ndarray, labels: list[str], anchors: TextAnchors, cfg: DecisionConfig | None = None,
                 overrides: dict[str, float] | None = None) -> Decisions:
    """Each label's decision from its text anchors, with its prior fitted to a ``(n, L)`` corpus
    sample by EM (components held fixed; binned, so the cost does not grow with the sample)."""
    cfg = cfg or DecisionConfig()
    s = np.asarray(scores, np.float64)
    if s.ndim != 2 or s.shape[1] != len(labels) or len(anchors.neg_mean) != len(labels):
        raise ValueError(f"scores must be (n_images, {len(labels)}) with anchors for each label, got {s.shape}")
    n = s.shape[0]
    separation = anchors.separation()
    learned = separation >= cfg.min_text_separation
    gap = np.where(learned, anchors.pos_mean - anchors.neg_mean, 1.0)
    base = np.where(learned, anchors.neg_mean, 0.0)
    mu0, mu1 = base + cfg.neg_anchor * gap, base + cfg.pos_anchor * gap
    sd1 = np.full(len(labels), cfg.anchor_sd) * gap
    x, c, width = _histogram(s, cfg.bins)
    mu0, sd0, prior = _fit_bulk(x, c, n, width, mu0, sd1.copy(), mu1, sd1, cfg.iterations)
    stands_out = _tail_share(x, c, _crossings(mu0, sd0, mu1, sd1, prior, cfg.cutoff)) <= cfg.max_tail_share
    stands_out |= separation >= cfg.corroborate_below
    present = learned & stands_out & (prior * n >= cfg.min_positives)
    logger.info("decisions: %d of %d labels present in a sample of %d images (%d not learned from text, "
                "%d whose positives do not stand out from their bulk)", int(present.sum()), len(labels), n,
                int((~learned).sum()), int((learned & ~stands_out).sum()))
    return Decisions(list(labels), mu0, sd0, mu1, sd1, prior, present, cfg.cutoff, dict(overrides or {}))


def _fit_bulk(x, c, n, width, mu0, sd0, mu1, sd1, iterations: int):
    """EM on binned scores with the positive component held at its anchors: the prior and the
    negative component (mean, sd with the bins' own width added back) follow the corpus."""
    prior = np.full(x.shape[1], 0.1)
    for _ in range(iterations):
        r = 1.0 / (1.0 + np.exp(-np.clip(_log_ratio(x, mu0, sd0, mu1, sd1, prior), -60, 60)))
        prior = np.clip((r * c).sum(0) / n, 1e-6, 1 - 1e-6)  # any share is allowed
        neg = (1.0 - r) * c
        mu0, sd0 = _moments(x, neg, np.maximum(width, 1e-9))
        sd0 = np.sqrt(sd0 ** 2 + width ** 2 / 12)
    return mu0, sd0, prior


def _tail_share(x: np.ndarray, c: np.ndarray, threshold: np.ndarray) -> np.ndarray:
    """Per label, (share of the bulk's Gaussian above ``threshold``) / (share of the sample there),
    from binned scores; the bulk's centre is the median and its sd (median - 10th percentile) / z90.
    Above 1 the tail alone explains every image over the threshold; inf when none is over it."""
    med = _quantile(x, c, 0.5)
    sd = np.maximum((med - _quantile(x, c, 0.1)) / _Z90, 1e-12)
    z = (threshold - med) / sd
    expected = 0.5 * np.vectorize(math.erfc, otypes=[np.float64])(z / math.sqrt(2.0))
    observed = (c * (x >= threshold)).sum(0) / np.maximum(c.sum(0), 1e-12)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(observed > 0, expected / observed, np.inf)


def _log_ratio(s, mu0, sd0, mu1, sd1, prior):
    """log P(pos, s) - log P(neg, s) for Gaussian components (broadcast over labels), made
    non-decreasing in ``s``: beyond the vertex of the quadratic (unequal sds) it stays flat, so a
    higher score never lowers the confidence."""
    with np.errstate(divide="ignore", invalid="ignore"):
        a1, a0 = 1.0 / sd1 ** 2, 1.0 / sd0 ** 2
        vertex = (mu1 * a1 - mu0 * a0) / (a1 - a0)
    s = np.where((sd1 < sd0) & (s > vertex), vertex, s)
    s = np.where((sd1 > sd0) & (s < vertex), vertex, s)
    l1 = np.log(prior) - np.log(sd1) - 0.5 * ((s - mu1) / sd1) ** 2
    l0 = np.log1p(-prior) - np.log(sd0) - 0.5 * ((s - mu0) / sd0) ** 2
    return l1 - l0


def _crossings(mu0, sd0, mu1, sd1, prior, cutoff: float) -> np.ndarray:
    """Per label, the lowest score where P(positive | s) reaches ``cutoff`` (vectorised bisection on
    the monotone log ratio; -inf when every score qualifies, +inf when none does)."""
    target = np.log(cutoff / (1 - cutoff))
    wide = 10 * np.maximum(sd0, sd1)
    lo, hi = np.minimum(mu0, mu1) - wide, np.maximum(mu0, mu1) + wide
    f = lambda x: _log_ratio(x, mu0, sd0, mu1, sd1, prior) - target  # noqa: E731
    all_in, none_in = f(lo) >= 0, f(hi) < 0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        up = f(mid) >= 0
        hi, lo = np.where(up, mid, hi), np.where(up, lo, mid)
    return np.where(all_in, -np.inf, np.where(none_in, np.inf, hi))


def _histogram(s: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-label histograms of a ``(n, L)`` sample: bin centres and counts ``(bins, L)``, bin widths ``(L,)``."""
    n, L = s.shape
    lo, hi = s.min(0), s.max(0)
    width = np.maximum(hi - lo, 1e-9) / bins
    idx = np.clip(((s - lo) / width).astype(np.int64), 0, bins - 1)
    counts = np.bincount((idx * L + np.arange(L)).ravel(), minlength=bins * L).reshape(bins, L).astype(np.float64)
    return lo + (np.arange(bins)[:, None] + 0.5) * width, counts, width


def _quantile(x: np.ndarray, w: np.ndarray, q: float) -> np.ndarray:
    cdf = np.cumsum(w, 0) / np.maximum(w.sum(0), 1e-12)
    return x[np.argmax(cdf >= q, axis=0), np.arange(x.shape[1])]


def _moments(x: np.ndarray, w: np.ndarray, floor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    tot = np.maximum(w.sum(0), 1e-12)
    mu = (w * x).sum(0) / tot
    return mu, np.maximum(np.sqrt((w * (x - mu) ** 2).sum(0) / tot), floor)


def _log_normal(x, m, sd):
    return -np.log(sd) - 0.5 * ((x - m) / sd) ** 2 - _LOG_SQRT_2PI


def _em(x, c, n, floor, cfg: DecisionConfig):
    """EM on binned scores (centres ``x``, counts ``c``), started from a robust bulk and its upper tail."""
    med = _quantile(x, c, 0.5)
    mu0, sd0 = med, np.maximum(1.4826 * _mad(x, c, med), floor)
    mu1, sd1 = np.maximum(_quantile(x, c, 0.98), mu0 + sd0), sd0.copy()
    prior = np.full(x.shape[1], 0.05)
    for _ in range(cfg.iterations):
        l1 = np.log(prior) + _log_normal(x, mu1, sd1)
        l0 = np.log1p(-prior) + _log_normal(x, mu0, sd0)
        r = 1.0 / (1.0 + np.exp(np.clip(l0 - l1, -60, 60)))
        prior = np.clip((r * c).sum(0) / n, 1.0 / (n + 1), cfg.max_prior)
        mu1, sd1 = _moments(x, r * c, floor)
        mu0, sd0 = _moments(x, (1.0 - r) * c, floor)
        mu1 = np.maximum(mu1, mu0)
    return mu0, sd0, mu1, sd1, prior


def _mad(x: np.ndarray, c: np.ndarray, med: np.ndarray) -> np.ndarray:
    dev = np.abs(x - med)
    order = np.argsort(dev, axis=0, kind="stable")
    cols = np.arange(x.shape[1])
    return _quantile(dev[order, cols], c[order, cols], 0.5)


def fit_decisions(scores: np.ndarray, labels: list[str], cfg: DecisionConfig | None = None,
                  overrides: dict[str, float] | None = None) -> Decisions:
    """Fit every label's mixture on a ``(n_images, n_labels)`` score sample (deterministic).

    The sample is binned per label (``cfg.bins``), so each EM step costs O(bins x labels) whatever
    the number of images."""
    cfg = cfg or DecisionConfig()
    s = np.asarray(scores, np.float64)
    if s.ndim != 2 or s.shape[1] != len(labels):
        raise ValueError(f"scores must be (n_images, {len(labels)}), got {s.shape}")
    n = s.shape[0]
    x, c, width = _histogram(s, cfg.bins)
    floor = np.maximum(cfg.sd_floor * np.maximum(s.std(0), 1e-9), width)
    mu0, sd0, mu1, sd1, prior = _em(x, c, n, floor, cfg)
    sep = (mu1 - mu0) / np.sqrt(0.5 * (sd0 ** 2 + sd1 ** 2))
    mix = np.logaddexp(np.log1p(-prior) + _log_normal(x, mu0, sd0), np.log(prior) + _log_normal(x, mu1, sd1))
    gain = (c * mix).sum(0) - (c * _log_normal(x, s.mean(0), np.maximum(s.std(0), 1e-12))).sum(0)
    present = (sep >= cfg.min_separation) & (prior * n >= cfg.min_positives) & \
        (gain >= cfg.min_gain * np.log(max(n, 2)))
    logger.info("decisions: %d of %d labels present in a sample of %d images", int(present.sum()), len(labels), n)
    return Decisions(list(labels), mu0, sd0, mu1, sd1, prior, present, cfg.cutoff, dict(overrides or {}))


def fit_from_labels(decisions: Decisions, scores: np.ndarray, truth: np.ndarray,
                    corpus_scores: np.ndarray | None = None, min_images: int = 2) -> Decisions:
    """Re-fit labels that have labelled images (``truth`` multi-hot over ``decisions.labels``).

    Each such label's two components come from its labelled positives and negatives; its prior is
    re-estimated on ``corpus_scores`` with the components held fixed (a labelled set rarely has the
    corpus's label frequencies), or taken from the labelled set when no corpus sample is given.
    The other labels keep their unsupervised fit."""
    s, y = np.asarray(scores, np.float64), np.asarray(truth, bool)
    out = Decisions(**{**decisions.__dict__, **{k: np.array(getattr(decisions, k), copy=True)
                                               for k in ("mu0", "sd0", "mu1", "sd1", "prior", "present")}})
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
                logit = _log_ratio(c, out.mu0[j], out.sd0[j], out.mu1[j], out.sd1[j], out.prior[j])
                out.prior[j] = np.clip(np.mean(1.0 / (1.0 + np.exp(-np.clip(logit, -60, 60)))), 1e-4, 0.999)
        out.present[j] = True
    return out
