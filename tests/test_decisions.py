"""Per-label decisions without labels: mixtures over a score sample, absent labels, overrides."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from tagger.method.decisions import (DecisionConfig, Decisions, TextAnchors, fit_anchored, fit_decisions,
                                      fit_from_labels, text_anchors)


def synthetic(n: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Labels with prevalence 30 %, 10 %, 2 % and 0 % (absent), each on its own score scale."""
    rng = np.random.default_rng(seed)
    prev = [0.3, 0.1, 0.02, 0.0, 0.0]
    loc, scale = [0.0, 5.0, -2.0, 1.0, 0.3], [1.0, 0.2, 3.0, 0.5, 1.0]
    y = np.stack([rng.random(n) < p for p in prev], 1)
    s = rng.normal(size=(n, len(prev)))
    s[:, 3] = rng.gumbel(size=n)  # absent label with a skewed, heavy right tail
    s = s + 4.0 * y
    s = np.asarray(loc) + np.asarray(scale) * s
    return s, y, ["a", "b", "c", "d", "e"]


def f1(pred: np.ndarray, truth: np.ndarray) -> float:
    return 2 * (pred & truth).sum() / max(1, pred.sum() + truth.sum())


def oracle_f1(scores: np.ndarray, truth: np.ndarray) -> float:
    """The best F1 any threshold reaches on this label, chosen with the truth."""
    return max(f1(scores >= t, truth) for t in np.unique(scores))


def test_present_labels_get_their_own_threshold_and_absent_ones_none():
    s, y, labels = synthetic()
    d = fit_decisions(s, labels)
    assert d.present.tolist() == [True, True, True, False, False]
    pos = d.positive(s)
    assert pos[:, 3:].sum() == 0  # absent labels: never tagged
    for j in range(3):
        assert f1(pos[:, j], y[:, j]) > 0.95 * oracle_f1(s[:, j], y[:, j]), j
    t = d.thresholds()
    assert np.isinf(t[3:]).all() and np.isfinite(t[:3]).all()
    assert 0.0 < t[0] < 4.0 and 5.0 < t[1] < 5.8  # between each label's own bulk and bump


def test_confidence_is_calibrated_on_a_well_specified_mixture():
    s, y, labels = synthetic(20000, seed=1)
    conf = fit_decisions(s, labels).confidence(s)
    assert conf.min() >= 0 and conf.max() <= 1
    c, t = conf[:, :3].ravel(), y[:, :3].ravel()
    bins = np.minimum((c * 10).astype(int), 9)
    ece = sum(abs(c[bins == b].mean() - t[bins == b].mean()) * (bins == b).mean() for b in range(10) if (bins == b).any())
    assert ece < 0.02
    assert conf[:, 3:].max() <= 1e-3


def test_fit_is_deterministic_and_roundtrips():
    s, _, labels = synthetic()
    a, b = fit_decisions(s, labels), fit_decisions(s.copy(), labels)
    assert a.to_dict() == b.to_dict()
    c = Decisions.from_dict(a.to_dict())
    np.testing.assert_array_equal(c.positive(s), a.positive(s))
    np.testing.assert_allclose(c.confidence(s), a.confidence(s), atol=1e-5)


def test_overrides_pin_a_threshold():
    s, _, labels = synthetic()
    d = fit_decisions(s, labels, overrides={"d": 2.0, "a": 100.0})
    assert d.thresholds()[3] == 2.0 and d.positive(s)[:, 3].sum() == (s[:, 3] >= 2.0).sum() > 0
    assert d.positive(s)[:, 0].sum() == 0


def test_a_few_labelled_images_calibrate_a_label():
    s, y, labels = synthetic()
    d = fit_decisions(s, labels, DecisionConfig(min_separation=100.0))  # nothing counts as present
    assert not d.present.any()
    few = np.r_[np.flatnonzero(y[:, 2])[:8], np.flatnonzero(~y[:, 2])[:40]]
    e = fit_from_labels(d, s[few], y[few], corpus_scores=s)
    assert e.present[2] and not d.present[2]  # the input is left as it was
    assert abs(e.prior[2] - y[:, 2].mean()) < 0.01  # the corpus's share, not the labelled set's 1 in 6
    pos = e.positive(s)[:, 2]
    assert f1(pos, y[:, 2]) > 0.8 * oracle_f1(s[:, 2], y[:, 2])  # 8 positives: noisy components
    assert not e.present[[3, 4]].any()  # labels without labelled positives keep their fit


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="scores must be"):
        fit_decisions(np.zeros((10, 3)), ["a", "b"])


def test_ten_thousand_labels_fit_in_one_pass():
    rng = np.random.default_rng(0)
    s = rng.normal(size=(512, 10_000)).astype(np.float32)
    d = fit_decisions(s, [f"l{i}" for i in range(10_000)], DecisionConfig(iterations=10))
    assert d.present.mean() < 0.01 and len(d.thresholds()) == 10_000


# --- the anchored rule: positives on each label's text scale, negatives and prior fitted ---

def anchored_world(n: int = 6000, seed: int = 0):
    """Scores of four labels on their own text scales (text negatives at ``neg``, positives at
    ``neg + gap``): images of a label at 0.9 of its gap, the rest at 0.4, sd 0.15 of the gap;
    prevalence 25 %, 8 %, 0 % (absent from the corpus) and 20 % for a label the classifier did not
    learn (its text sides overlap)."""
    rng = np.random.default_rng(seed)
    neg, gap = np.array([-1.0, 2.0, 0.5, 0.0]), np.array([3.0, 0.5, 2.0, 0.1])
    prev = [0.25, 0.08, 0.0, 0.2]
    y = np.stack([rng.random(n) < p for p in prev], 1)
    s = neg + gap * (np.where(y, 0.9, 0.4) + 0.15 * rng.normal(size=y.shape))
    text_sd = np.array([0.3, 0.05, 0.2, 0.5])  # separation 10, 10, 10 and 0.2
    anchors = TextAnchors(neg, neg + gap, text_sd, text_sd)
    return s, y, ["a", "b", "c", "d"], anchors


# the rule with its components where anchored_world puts them (the shipped anchors are chosen on val)
WORLD_CFG = DecisionConfig(neg_anchor=0.4, pos_anchor=0.9, anchor_sd=0.15, neg_sd_shift=0.0)


def test_anchored_rule_finds_each_labels_share_and_skips_absent_and_unlearned_labels():
    s, y, labels, anchors = anchored_world()
    d = fit_anchored(s, labels, anchors, WORLD_CFG)
    assert d.present.tolist() == [True, True, False, False]
    np.testing.assert_allclose(d.prior[:2], y[:, :2].mean(0), atol=0.01)
    pos = d.positive(s)
    assert pos[:, 2:].sum() == 0
    for j in range(2):
        assert f1(pos[:, j], y[:, j]) > 0.95 * oracle_f1(s[:, j], y[:, j]), j
    # the decision sits between the two anchors on each label's own scale
    t = d.thresholds()
    lo, hi = anchors.neg_mean + 0.4 * (anchors.pos_mean - anchors.neg_mean), \
        anchors.neg_mean + 0.9 * (anchors.pos_mean - anchors.neg_mean)
    assert np.all((lo[:2] < t[:2]) & (t[:2] < hi[:2])) and np.isinf(t[2:]).all()
    c, truth = d.confidence(s)[:, :2].ravel(), y[:, :2].ravel()
    bins = np.minimum((c * 10).astype(int), 9)
    ece = sum(abs(c[bins == b].mean() - truth[bins == b].mean()) * (bins == b).mean() for b in set(bins))
    assert ece < 0.02


def test_anchored_rule_fits_the_negatives_to_the_corpus():
    """Images without a label need not sit where the start says (``neg_anchor``): here they sit at
    0.1 of the gap with sd 0.25 (the positives at the anchor, 0.9, sd 0.15). The negatives' mean and
    sd are fitted to the corpus, so the prior, the threshold and the confidence follow them."""
    rng = np.random.default_rng(5)
    n, neg, gap = 8000, np.array([-1.0, 2.0]), np.array([3.0, 0.5])
    y = rng.random((n, 2)) < [0.3, 0.1]
    s = neg + gap * np.where(y, 0.9 + 0.15 * rng.normal(size=y.shape), 0.1 + 0.25 * rng.normal(size=y.shape))
    anchors = TextAnchors(neg, neg + gap, np.array([0.3, 0.05]), np.array([0.3, 0.05]))
    d = fit_anchored(s, ["a", "b"], anchors, WORLD_CFG)  # negatives start at 0.4 with sd 0.15
    np.testing.assert_allclose((d.mu0 - neg) / gap, 0.1, atol=0.02)
    np.testing.assert_allclose(d.sd0 / gap, 0.25, atol=0.02)
    np.testing.assert_allclose(d.prior, y.mean(0), atol=0.015)
    c, truth = d.confidence(s).ravel(), y.ravel()
    bins = np.minimum((c * 10).astype(int), 9)
    ece = sum(abs(c[bins == b].mean() - truth[bins == b].mean()) * (bins == b).mean() for b in set(bins))
    assert ece < 0.02


def test_anchored_rule_does_not_tag_a_weakly_learnt_label_whose_positives_are_only_its_bulks_tail():
    """An absent label whose image scores spread far wider than its text gap (sd 0.45 gaps): its
    upper tail passes the anchored crossing. When the text side separates it only weakly (2.5 pooled
    sds, below ``corroborate_below``) the tail-share test holds it back; learnt well, it is trusted."""
    rng = np.random.default_rng(1)
    s, y, labels, anchors = anchored_world()
    wide = anchors.neg_mean[0] + 3.0 * (0.4 + 0.45 * rng.normal(size=len(s)))
    s = np.column_stack([s[:, :2], wide])

    def with_third(text_sd: float) -> TextAnchors:
        return TextAnchors(anchors.neg_mean[[0, 1, 0]], anchors.pos_mean[[0, 1, 0]],
                           np.r_[anchors.neg_sd[:2], text_sd], np.r_[anchors.pos_sd[:2], text_sd])

    weak = with_third(1.2)  # separation 3 / 1.2 = 2.5
    assert weak.separation()[2] == pytest.approx(2.5)
    ungated = fit_anchored(s, labels[:3], weak, replace(WORLD_CFG, max_tail_share=np.inf))
    assert ungated.present[2] and ungated.positive(s)[:, 2].mean() > 0.05
    gated = fit_anchored(s, labels[:3], weak, WORLD_CFG)
    assert gated.present.tolist() == [True, True, False] and gated.positive(s)[:, 2].sum() == 0
    np.testing.assert_array_equal(gated.positive(s)[:, :2], ungated.positive(s)[:, :2])
    trusted = fit_anchored(s, labels[:3], with_third(0.3), WORLD_CFG)  # separation 10
    assert trusted.present.tolist() == [True, True, True]


def test_anchored_rule_is_unchanged_by_calibrating_the_scores():
    s, y, labels, anchors = anchored_world(seed=3)
    mean, std = s.mean(0), s.std(0)
    a = fit_anchored(s, labels, anchors, WORLD_CFG).positive(s)
    b = fit_anchored((s - mean) / std, labels, anchors.rescaled(mean, std), WORLD_CFG).positive((s - mean) / std)
    assert (a == b).mean() > 0.9999


def test_text_anchors_from_a_corpus_and_their_round_trip():
    rng = np.random.default_rng(0)
    x, w = rng.normal(size=(500, 6)), rng.normal(size=(3, 6))
    y = rng.random((500, 3)) < 0.3
    y[:, 2] = False  # no sentence about the third label
    a = text_anchors(x, w, y, chunk=64)
    s = x @ w.T
    np.testing.assert_allclose(a.pos_mean[:2], [s[y[:, j], j].mean() for j in range(2)])
    for j in range(2):  # the separation: the better of mean and sd, and median and upper-half sd
        p, q = s[y[:, j], j], s[~y[:, j], j]
        readings = [(p.mean(), p.std()), (np.median(p), np.quantile(p, 0.8413447) - np.median(p))]
        sep = [(m - q.mean()) / np.sqrt(0.5 * (q.std() ** 2 + v ** 2)) for m, v in readings]
        assert a.separation()[j] == pytest.approx(max(sep))
    assert np.isnan(a.pos_mean[2]) and a.separation()[2] == 0.0
    b = TextAnchors.from_dict(a.to_dict())
    np.testing.assert_allclose(b.neg_mean, a.neg_mean, atol=1e-6)
    assert np.isnan(b.pos_mean[2])


def test_text_positives_are_read_robustly_past_unreadable_sentences():
    """A minority of a label's sentences that score low (a synonym the text tower does not know)
    barely moves its positives' anchor, so its separation stays where the readable ones put it."""
    rng = np.random.default_rng(1)
    n = 4000
    y = np.zeros((n, 1), bool)
    y[: n // 2, 0] = True
    clean = np.where(y[:, 0], 3.0, 0.0) + rng.normal(0, 0.5, n)
    noisy = clean.copy()
    unread = y[:, 0] & (rng.random(n) < 0.2)
    noisy[unread] = rng.normal(0.5, 0.5, unread.sum())
    w = np.ones((1, 1))
    a, b = text_anchors(clean[:, None], w, y), text_anchors(noisy[:, None], w, y)
    assert b.separation()[0] > 0.75 * a.separation()[0]
    mean_sep = (noisy[y[:, 0]].mean() - noisy[~y[:, 0]].mean()) / np.sqrt(
        0.5 * (noisy[y[:, 0]].var() + noisy[~y[:, 0]].var()))
    assert b.separation()[0] > 1.3 * mean_sep  # what mean and sd would have said


def test_a_trained_classifier_carries_its_anchors(tmp_path):
    from tagger.method.classifier import TextClassifier, TrainConfig, train_classifier
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16))
    y = rng.random((600, 3)) < 0.4
    x = y.astype(float) @ centres + 0.1 * rng.normal(size=(600, 16))
    x /= np.linalg.norm(x, axis=1, keepdims=True) + 1e-9
    clf = train_classifier(x.astype(np.float32), y, ["a", "b", "c"], "m", "c", TrainConfig(epochs=10, batch_size=64, lr=1e-2))
    assert (clf.anchors.separation() > 1.5).all()
    assert (clf.anchors.pos_mean > clf.anchors.neg_mean).all()
    clf.save(tmp_path / "clf")
    again = TextClassifier.load(tmp_path / "clf")
    np.testing.assert_allclose(again.anchors.pos_mean, clf.anchors.pos_mean, atol=1e-5)


def _named_corpus(n: int = 1200, seed: int = 3):
    """Scores of a real label (its images form a second group) and of a label whose scores merely echo
    the real one (its 'positives' are the real label's images); each image's best zero-shot name."""
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.2
    real = rng.normal(0.0, 0.3, n) + 1.2 * y
    echo = real + rng.normal(0.0, 0.05, n)
    top1 = np.where(y & (rng.random(n) < 0.6), 0, 2)  # the real label's images mostly match its name
    return np.c_[real, echo, rng.normal(0.0, 0.3, n)], y, top1


def test_zero_shot_names_corroborate_labels_and_refuse_echoes():
    s, y, top1 = _named_corpus()
    anchors = TextAnchors(np.zeros(3), np.full(3, 1.2), np.full(3, 0.2), np.full(3, 0.2))
    without = fit_anchored(s, ["real", "echo", "other"], anchors)
    assert without.present[0] and without.present[1]  # the text side alone cannot tell the echo apart
    d = fit_anchored(s, ["real", "echo", "other"], anchors, zeroshot_top1=top1)
    assert d.present[0] and not d.present[1]
    assert "best match of 0 of its" in d.reason(1) and "'real' of" in d.reason(1)
    with pytest.raises(ValueError, match="one label index per sample image"):
        fit_anchored(s, ["real", "echo", "other"], anchors, zeroshot_top1=top1[:10])


def test_a_label_the_text_barely_learnt_is_kept_when_its_images_and_name_agree():
    s, y, top1 = _named_corpus()
    weak = TextAnchors(np.zeros(3), np.array([0.3, 0.3, 1.2]), np.full(3, 0.2), np.full(3, 0.2))  # separation 1.5
    assert not fit_anchored(s, ["real", "echo", "other"], weak).present[0]  # without names: vetoed by the text
    d = fit_anchored(s, ["real", "echo", "other"], weak, zeroshot_top1=top1)
    assert d.present[0] and "second group" in d.reason(0) and not d.present[1]
    tp = (d.positive(s)[:, 0] & y).sum()
    assert tp >= 0.8 * y.sum()


def test_a_label_confused_with_another_is_kept_when_its_name_holds_its_own():
    """Pentagon's images often match hexagon's name best, and in a scene of several objects any of
    them may: the name is the best match of under 10 % of its images, yet of more of them than any
    name but its twin's (a word echoing another label's images is named after that label)."""
    rng = np.random.default_rng(5)
    n, k = 3000, 12
    y = rng.random(n) < 0.2
    s = rng.normal(0.0, 0.3, (n, k))
    s[:, 0] += 1.2 * y  # the confusable label
    s[:, 1] = s[:, 0] + rng.normal(0.0, 0.05, n)  # a word whose scores echo it
    u = rng.random(n)
    top1 = np.where(u < 0.09, 0, np.where(u < 0.225, 2, rng.integers(3, k, n)))  # 9 % own name, 13.5 % its twin's
    anchors = TextAnchors(np.zeros(k), np.full(k, 1.2), np.full(k, 0.2), np.full(k, 0.2))
    labels = ["pentagon", "echo", "hexagon"] + [f"l{j}" for j in range(3, k)]
    d = fit_anchored(s, labels, anchors, zeroshot_top1=top1)
    above = d.positive(s)[:, 0]
    assert (top1[above] == 0).mean() < 0.10  # a share of the images alone would have judged it absent
    assert d.present[0], d.reason(0)
    assert (d.positive(s)[:, 0] & y).sum() >= 0.8 * y.sum()
    assert not d.present[1] and "best match of 0 of its" in d.reason(1)
