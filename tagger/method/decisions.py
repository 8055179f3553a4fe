"""Per-label tag decisions fitted without labelled images.

The default rule (:func:`fit_anchored`) anchors each label on its text side. The text classifier
knows, for every label, how it scores the sentences of its own corpus that are about the label and
those that are not (:class:`TextAnchors`). Image scores of the label are modelled as two Gaussian
components: the positives held at ``pos_anchor`` of the way from the text negatives' mean to the
text positives' mean, with sd ``anchor_sd`` of that gap (the constants absorb the image-text
modality gap and are chosen on the toy validation split; a larger vocabulary's classifier places
its images lower, so each fit lowers ``pos_anchor`` to a placement fitted to the corpus,
:mod:`tagger.method.placement`), and the negatives -- the bulk, which
every corpus has plenty of -- fitted to the corpus by EM together with the label's prior, its share
of positive images (the negatives start at ``neg_anchor`` on the same scale). A label absent
from the corpus gets a prior near zero, so (almost) no positives; a label whose sentences the
classifier cannot tell apart from the rest (``min_text_separation``) carries no signal and is never
tagged. Every label must be corroborated by the images: given each sample image's best zero-shot
match, its name must be the best match of its positive images at least ``min_name_ratio`` times as
often as the most frequent other name. Without zero-shot matches, a label the text side separates
only weakly (below ``corroborate_below``) must pass the tail test: the share of images at or above
its threshold that its bulk's Gaussian tail alone would put there (the bulk read robustly from the
median and the 10th percentile of its image scores) may be at most ``max_tail_share``. A word the text tower half knows, absent from the
corpus, whose image scores merely spread wider than its text scale fails that test and is not
tagged; a label learnt well from text is trusted on its anchors. Each label is tagged where its
posterior reaches half the best F1 its fit expects (:mod:`tagger.method.cutoffs`): the threshold that
maximises its expected F1, so labels the classifier confuses with others (lower, overlapping scores)
are not under-tagged; the confidence column stays the posterior.

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

from .anchors import TextAnchors, text_anchors
from .binned import fit_bulk, histogram, log_normal, log_ratio, quantile, two_groups
from .cutoffs import rule_cutoffs
from .names import ZeroShotNames, name_counts, name_words
from .placement import corpus_placement
from .refit import fit_from_labels

__all__ = ["DecisionConfig", "Decisions", "TextAnchors", "anchored_at", "fit_anchored", "fit_decisions", "fit_from_labels",
           "text_anchors"]

logger = logging.getLogger(__name__)

_Z90 = 1.2815516  # the 90th percentile of a standard normal: (median - 10th percentile) / sd


@dataclass(frozen=True)
class DecisionConfig:
    """How thresholds are fitted (defaults chosen on the toy validation split)."""

    cutoff: float = 0.5  # posterior P(positive | score) at which a tag becomes positive (rule "posterior")
    # the anchored rule's cutoffs -- "f1": each label's cutoff is half the best F1 its fit expects (the
    # expected-F1-optimal threshold, :mod:`tagger.method.cutoffs`), at least ``min_cutoff``;
    # "posterior": every label at ``cutoff`` (the mixture rule always uses ``cutoff``)
    cutoff_rule: str = "f1"
    min_cutoff: float = 0.25
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
    pos_anchor: float = 1.15
    anchor_sd: float = 0.2
    neg_sd_shift: float = 0.3  # positives lowered by this many text-negative sds (confusable labels)
    # pos_anchor is where the positives sit for the world's own 20-label classifier; a larger
    # vocabulary's classifier places its images lower on the text scales. Each fit estimates the
    # placement from the labels present at pos_anchor (at least placement_min_labels of them): the
    # median of their likelihood-best placements on a grid from min_placement in steps of
    # placement_step, plus placement_margin, never above pos_anchor (:mod:`.placement`; the margin
    # chosen on val: 220-label vocabularies, both models; docs/decisions.md). None: always pos_anchor
    placement_margin: float | None = 0.125
    placement_min_labels: int = 3
    placement_step: float = 0.05
    min_placement: float = 0.5
    min_text_separation: float = 2.0  # (text pos mean - text neg mean) / pooled sd: below, the images decide
    min_text_signal: float = 1.0  # below this separation the text carries no signal: never tagged
    max_tail_share: float = 0.8  # share of the images above threshold the bulk's own tail may explain ...
    corroborate_below: float = 3.0  # ... checked for labels whose text separation is below this
    # with the sample's zero-shot matches, a label's name (CLIP's prompt of the label ranks first among
    # the labels) must be the best match of its positive images at least this many times as often as
    # the most frequent other name among them (on val: world labels at least 0.77, drawn nouns at most
    # 0.31; 0.5 is the gap's geometric middle)
    min_name_ratio: float = 0.5

    def __post_init__(self) -> None:
        if not (self.placement_step > 0 and self.placement_min_labels >= 1 and
                0 < self.min_placement <= self.pos_anchor):
            raise ValueError("placement_step must be > 0, placement_min_labels >= 1 and "
                             "0 < min_placement <= pos_anchor")

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
    reasons: list[str] = field(default_factory=list)  # per label, in words: why present or absent
    text_separation: np.ndarray | None = None  # per label, when the rule read the text side
    cutoff_rule: str = "posterior"  # "f1": per-label cutoffs from the fit (see DecisionConfig)
    min_cutoff: float = 0.0
    label_cutoffs: np.ndarray | None = None  # per label, as the fit computed them or a run stored them
    placement: float | None = None  # the anchored rule's placement of the positives on the text scales

    def cutoffs(self) -> np.ndarray:
        """Each label's posterior cutoff: as fitted or stored (``label_cutoffs``), else by the rule."""
        if self.label_cutoffs is not None:
            return np.asarray(self.label_cutoffs, np.float64)
        return rule_cutoffs(self.cutoff_rule, self.cutoff, self.min_cutoff, self.mu0, self.sd0, self.mu1, self.sd1,
                             self.prior)

    def take_fit(self, j: int, other: "Decisions", k: int) -> None:
        """Label ``j``'s fitted components, prior, presence and cutoff set to ``other``'s label ``k``
        (the cutoff where both carry per-label cutoffs)."""
        for name in ("mu0", "sd0", "mu1", "sd1", "prior", "present"):
            getattr(self, name)[j] = getattr(other, name)[k]
        if self.label_cutoffs is not None and other.label_cutoffs is not None:
            self.label_cutoffs[j] = other.label_cutoffs[k]

    def reason(self, j: int) -> str:
        """Why label ``j`` is decided as it is (empty when the rule gave no reason)."""
        return self.reasons[j] if j < len(self.reasons) else ""

    def confidence(self, scores: np.ndarray) -> np.ndarray:
        """P(positive | score) per (image, label), in [0, 1]; ~0 for labels judged absent."""
        s = np.asarray(scores, np.float64)
        logit = log_ratio(s, self.mu0, self.sd0, self.mu1, self.sd1, self.prior)
        conf = 1.0 / (1.0 + np.exp(-np.clip(logit, -60, 60)))
        conf[:, ~self.present] = np.minimum(conf[:, ~self.present], 1e-3)
        return conf.astype(np.float32)

    def thresholds(self) -> np.ndarray:
        """Each label's threshold on the raw score (+inf where absent), overrides applied."""
        mu0, sd0, mu1, sd1, prior = (np.asarray(a, np.float64) for a in (self.mu0, self.sd0, self.mu1, self.sd1,
                                                                         self.prior))
        t = _crossings(mu0, sd0, mu1, sd1, prior, self.cutoffs())
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
        return {"labels": list(self.labels), "cutoff": self.cutoff, "cutoff_rule": self.cutoff_rule,
                "min_cutoff": self.min_cutoff, "overrides": dict(self.overrides),
                "label_cutoffs": None if self.label_cutoffs is None else
                [round(float(x), 6) for x in self.label_cutoffs],
                **{k: np.asarray(getattr(self, k), np.float64).round(6).tolist()
                   for k in ("mu0", "sd0", "mu1", "sd1", "prior")},
                "present": [bool(x) for x in self.present], "reasons": list(self.reasons),
                "text_separation": None if self.text_separation is None else
                [round(float(x), 4) for x in self.text_separation],
                "thresholds": [None if not np.isfinite(x) else round(float(x), 6) for x in t],
                "placement": self.placement}

    @classmethod
    def from_dict(cls, d: dict) -> "Decisions":
        arr = {k: np.asarray(d[k], np.float64) for k in ("mu0", "sd0", "mu1", "sd1", "prior")}
        sep = d.get("text_separation")
        return cls(list(d["labels"]), present=np.asarray(d["present"], bool), cutoff=float(d["cutoff"]),
                   cutoff_rule=str(d.get("cutoff_rule", "posterior")), min_cutoff=float(d.get("min_cutoff", 0.0)),
                   label_cutoffs=None if d.get("label_cutoffs") is None else np.asarray(d["label_cutoffs"], np.float64),
                   overrides={k: float(v) for k, v in d.get("overrides", {}).items()},
                   reasons=list(d.get("reasons") or []),
                   text_separation=None if sep is None else np.asarray(sep, np.float64),
                   placement=None if d.get("placement") is None else float(d["placement"]), **arr)


def fit_anchored(scores: np.ndarray, labels: list[str], anchors: TextAnchors, cfg: DecisionConfig | None = None,
                 overrides: dict[str, float] | None = None, zeroshot_top1: np.ndarray | ZeroShotNames | None = None,
                 placement: float | None = None) -> Decisions:
    """Each label's decision from its text anchors, with its prior fitted to a ``(n, L)`` corpus
    sample by EM (components held fixed; binned, so the cost does not grow with the sample).

    A label must be corroborated by the images: with ``zeroshot_top1`` (per sample image, the label
    whose CLIP prompt matches it best) by its name: among its positive images, its name must be the
    best match at least ``min_name_ratio`` times as often as the most frequent other name (a word
    that merely echoes another label's scores is named after that label on its images; a label
    confused with another, pentagon with hexagon, shares its images' names with it, but holds its
    own); without them, a label the text side separates only
    weakly by the bulk's tail test. A label the text side separates too weakly to anchor (below
    ``min_text_separation``, e.g. after synonyms the text tower does not know) is decided by its
    images instead: present when the mixture rule finds a second group in its scores that its name
    matches (``zeroshot_top1`` needed). Each label gets a reason. The positives are placed at
    ``pos_anchor`` first; the labels that fit finds present then give the corpus's own placement
    (:func:`~tagger.method.placement.corpus_placement`), and every label is fitted again there when
    it is lower (``Decisions.placement`` says where). With too few such labels, ``placement`` (e.g.
    the base run's, for the few labels an incremental nightly adds) is taken instead, when given."""
    cfg = cfg or DecisionConfig()
    s = np.asarray(scores, np.float64)
    if s.ndim != 2 or s.shape[1] != len(labels) or len(anchors.neg_mean) != len(labels):
        raise ValueError(f"scores must be (n_images, {len(labels)}) with anchors for each label, got {s.shape}")
    binned = histogram(s, cfg.bins)
    d = _anchored_at(cfg.pos_anchor, s, binned, labels, anchors, cfg, overrides, zeroshot_top1)
    given, placement = placement, cfg.pos_anchor
    firm = d.present & (anchors.separation() >= cfg.min_text_separation) & (anchors.pos_mean > anchors.neg_mean)
    if isinstance(zeroshot_top1, ZeroShotNames) and zeroshot_top1.family:  # a parent, named with its family,
        firm[list(zeroshot_top1.family)] = False  # does not set the corpus's placement
    fitted = cfg.placement_margin is not None and firm.sum() >= cfg.placement_min_labels
    if fitted:
        x, c, width = (a[..., firm] for a in binned)
        base, gap, spread = (a[firm] for a in anchors.scale())
        placement = corpus_placement(x, c, s.shape[0], width, base, gap, spread, cfg)
    elif cfg.placement_margin is not None and given is not None:
        placement = float(np.clip(given, cfg.min_placement, cfg.pos_anchor))
    if placement < cfg.pos_anchor:
        d = _anchored_at(placement, s, binned, labels, anchors, cfg, overrides, zeroshot_top1)
    d.placement = placement
    how = f"fitted to {int(firm.sum())} labels" if fitted else "given" if placement != cfg.pos_anchor else "fixed"
    logger.info("decisions: %d of %d labels present in a sample of %d images, positives placed at %.2f of "
                "the text scale (%s)", int(d.present.sum()), len(labels), s.shape[0], placement, how)
    return d


def anchored_at(placement: float, scores: np.ndarray, labels: list[str], anchors: TextAnchors,
                cfg: DecisionConfig | None = None, overrides: dict[str, float] | None = None,
                zeroshot_top1: np.ndarray | ZeroShotNames | None = None) -> Decisions:
    """The anchored fit (:func:`fit_anchored`) with every label's positives held at ``placement``."""
    cfg = cfg or DecisionConfig()
    s = np.asarray(scores, np.float64)
    d = _anchored_at(placement, s, histogram(s, cfg.bins), labels, anchors, cfg, overrides, zeroshot_top1)
    d.placement = placement
    return d


def _anchored_at(placement: float, s: np.ndarray, binned, labels: list[str], anchors: TextAnchors,
                 cfg: DecisionConfig, overrides, zeroshot_top1) -> Decisions:
    """The anchored fit with the positives held at ``placement`` of each label's text scale."""
    n = s.shape[0]
    separation = anchors.separation()
    learned = separation >= cfg.min_text_separation
    base, gap, spread = anchors.scale(learned)
    mu0, mu1 = base + cfg.neg_anchor * gap, base + placement * gap - cfg.neg_sd_shift * spread
    sd1 = np.full(len(labels), cfg.anchor_sd) * gap
    x, c, width = binned
    mu0, sd0, prior = fit_bulk(x, c, n, width, mu0, sd1.copy(), mu1, sd1, cfg.iterations)
    weak = ~learned & (separation >= cfg.min_text_signal) & (zeroshot_top1 is not None)
    image_sep = np.zeros(len(labels))
    if weak.any():  # the images decide where the text is weak: the mixture rule on those columns
        floor = np.maximum(cfg.sd_floor * np.maximum(s[:, weak].std(0), 1e-9), width[weak])
        comps, image_sep[weak], grouped = _mixture(x[:, weak], c[:, weak], s[:, weak], floor, cfg)
        for arr, value in zip((mu0, sd0, mu1, sd1, prior), comps):
            arr[weak] = value
        learned = learned | (weak & _scatter(weak, grouped))
    cut = rule_cutoffs(cfg.cutoff_rule, cfg.cutoff, cfg.min_cutoff, mu0, sd0, mu1, sd1, prior)  # once per fit
    threshold = _crossings(mu0, sd0, mu1, sd1, prior, cut)
    names = name_counts(s, threshold, zeroshot_top1, list(labels), anchors.name_keys(list(labels)))
    if names is None:
        tail = _tail_share(x, c, threshold)
        stands_out = (tail <= cfg.max_tail_share) | (separation >= cfg.corroborate_below)
    else:  # its name against the most frequent other name among its images
        tail = names[1] / np.maximum(names[2], 1.0)
        stands_out = tail >= cfg.min_name_ratio
    enough = prior * n >= cfg.min_positives
    present = learned & stands_out & enough
    reasons = _reasons(separation, image_sep, weak, learned, stands_out, enough, prior * n, tail, cfg,
                       name_words(names, labels, tail, cfg.min_name_ratio,
                                  zeroshot_top1.names if isinstance(zeroshot_top1, ZeroShotNames) else None))
    logger.debug("placement %.2f: %d present (%d not learned from text, %d of them shown by the images; %d not "
                 "corroborated by the images)", placement, int(present.sum()),
                 int((separation < cfg.min_text_separation).sum()), int((weak & present).sum()),
                 int((learned & ~stands_out).sum()))
    return Decisions(list(labels), mu0, sd0, mu1, sd1, prior, present, cfg.cutoff, dict(overrides or {}),
                     reasons, separation, cfg.cutoff_rule, cfg.min_cutoff, cut)


def _scatter(mask: np.ndarray, values: np.ndarray) -> np.ndarray:
    out = np.zeros(mask.shape, bool)
    out[mask] = values
    return out


def _reasons(separation, image_sep, weak, learned, stands_out, enough, expected, tail,
             cfg: DecisionConfig, named: list[str] | None = None) -> list[str]:
    """Each label's decision in words (the first gate it fails, or what made it present)."""
    out = []
    for j in range(len(separation)):
        text = f"text separation {separation[j]:.2f}"
        if separation[j] < cfg.min_text_separation and not weak[j]:
            out.append(f"{text} < {cfg.min_text_separation:g}: the classifier did not learn it from text")
        elif weak[j] and not learned[j]:
            out.append(f"{text} < {cfg.min_text_separation:g} and the images show no second group")
        elif not enough[j]:
            out.append(f"about {expected[j]:.1f} positive images < {cfg.min_positives:g}: not in the corpus")
        elif not stands_out[j] and named is not None:
            out.append(f"{named[j]}: the images do not corroborate it")
        elif not stands_out[j]:
            out.append(f"positives do not stand out from the bulk's tail (tail share {tail[j]:.2f} > "
                       f"{cfg.max_tail_share:g})")
        elif weak[j]:
            out.append(f"{text} < {cfg.min_text_separation:g}, but the images show a second group "
                       f"(separation {image_sep[j]:.1f}) that its name matches: present")
        else:
            out.append(f"{text}: present, about {expected[j]:.0f} positive images")
    return out


def _tail_share(x: np.ndarray, c: np.ndarray, threshold: np.ndarray) -> np.ndarray:
    """Per label, (share of the bulk's Gaussian above ``threshold``) / (share of the sample there),
    from binned scores; the bulk's centre is the median and its sd (median - 10th percentile) / z90.
    Above 1 the tail alone explains every image over the threshold; inf when none is over it."""
    med = quantile(x, c, 0.5)
    sd = np.maximum((med - quantile(x, c, 0.1)) / _Z90, 1e-12)
    z = (threshold - med) / sd
    expected = 0.5 * np.vectorize(math.erfc, otypes=[np.float64])(z / math.sqrt(2.0))
    observed = (c * (x >= threshold)).sum(0) / np.maximum(c.sum(0), 1e-12)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(observed > 0, expected / observed, np.inf)


def _crossings(mu0, sd0, mu1, sd1, prior, cutoff: float | np.ndarray) -> np.ndarray:
    """Per label, the lowest score where P(positive | s) reaches ``cutoff`` (vectorised bisection on
    the monotone log ratio; -inf when every score qualifies, +inf when none does)."""
    target = np.log(cutoff / (1 - cutoff))
    wide = 10 * np.maximum(sd0, sd1)
    lo, hi = np.minimum(mu0, mu1) - wide, np.maximum(mu0, mu1) + wide
    f = lambda x: log_ratio(x, mu0, sd0, mu1, sd1, prior) - target  # noqa: E731
    all_in, none_in = f(lo) >= 0, f(hi) < 0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        up = f(mid) >= 0
        hi, lo = np.where(up, mid, hi), np.where(up, lo, mid)
    return np.where(all_in, -np.inf, np.where(none_in, np.inf, hi))


def _mixture(x: np.ndarray, c: np.ndarray, s: np.ndarray, floor: np.ndarray, cfg: DecisionConfig):
    """Two-component EM on binned columns: ``((mu0, sd0, mu1, sd1, prior), separation, present)``,
    present where the second group is separated, populated and better than one Gaussian."""
    n = s.shape[0]
    mu0, sd0, mu1, sd1, prior = two_groups(x, c, n, floor, cfg.iterations, cfg.max_prior)
    sep = (mu1 - mu0) / np.sqrt(0.5 * (sd0 ** 2 + sd1 ** 2))
    mix = np.logaddexp(np.log1p(-prior) + log_normal(x, mu0, sd0), np.log(prior) + log_normal(x, mu1, sd1))
    gain = (c * mix).sum(0) - (c * log_normal(x, s.mean(0), np.maximum(s.std(0), 1e-12))).sum(0)
    present = (sep >= cfg.min_separation) & (prior * n >= cfg.min_positives) & \
        (gain >= cfg.min_gain * np.log(max(n, 2)))
    return (mu0, sd0, mu1, sd1, prior), sep, present


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
    x, c, width = histogram(s, cfg.bins)
    floor = np.maximum(cfg.sd_floor * np.maximum(s.std(0), 1e-9), width)
    (mu0, sd0, mu1, sd1, prior), sep, present = _mixture(x, c, s, floor, cfg)
    reasons = [f"images: second group separated by {v:.1f}" + (": present" if p else f", not present")
               for v, p in zip(sep, present)]
    logger.info("decisions: %d of %d labels present in a sample of %d images", int(present.sum()), len(labels), n)
    # every label at ``cutoff``: this rule's positive component is fitted to the tail of the scores, and
    # for a rare label it comes out too wide for its expected F1 to be trusted (the F1 cutoff measured
    # worse on such labels); the anchored rule holds its positives at the text side's anchors
    return Decisions(list(labels), mu0, sd0, mu1, sd1, prior, present, cfg.cutoff, dict(overrides or {}), reasons)
