"""The anchored rule's placement of the positives, fitted to the corpus (tagger.method.placement)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from tagger.method.decisions import DecisionConfig, Decisions, TextAnchors, fit_anchored
from tagger.method.placement import placement_grid

GAP = 4.0


def vocabulary(placement: float, n: int = 4000, seed: int = 0):
    """Eight labels on text scales 0 -> GAP whose images place their positives at ``placement`` of
    the scale: five plain ones (10 % of the images, bulk well below), two weak ones (positives
    spread wider, negatives with a long upper tail: a confusable twin) and one absent from the
    corpus. Returns scores, truth and the text anchors."""
    rng = np.random.default_rng(seed)
    L = 8
    prev = np.array([0.1] * 5 + [0.12, 0.12, 0.0])
    y = rng.random((n, L)) < prev
    s = rng.normal(0.2 * GAP, 0.45, (n, L))
    twin = rng.random((n, 2)) < 0.15  # the weak labels' confusable images
    s[:, 5:7] += twin * rng.normal(1.1, 0.4, (n, 2))
    pos_sd = np.array([0.35] * 5 + [0.6, 0.6, 0.35])
    s = np.where(y, placement * GAP + pos_sd * rng.normal(size=(n, L)), s)
    anchors = TextAnchors(np.zeros(L), np.full(L, GAP), np.full(L, 0.5), np.full(L, 0.5))
    return s, y, anchors, [f"l{j}" for j in range(L)]


def recall(d: Decisions, s: np.ndarray, y: np.ndarray) -> np.ndarray:
    pred = d.positive(s)
    return (pred & y).sum(0) / np.maximum(y.sum(0), 1)


def f1(d: Decisions, s: np.ndarray, y: np.ndarray) -> np.ndarray:
    pred = d.positive(s)
    return 2 * (pred & y).sum(0) / np.maximum(pred.sum(0) + y.sum(0), 1)


def test_low_placement_is_fitted_and_lifts_the_labels_the_fixed_anchor_under_tags():
    s, y, anchors, labels = vocabulary(0.75)
    fixed = fit_anchored(s, labels, anchors, replace(DecisionConfig(), placement_margin=None))
    fitted = fit_anchored(s, labels, anchors, DecisionConfig())
    assert fixed.placement == DecisionConfig().pos_anchor
    assert 0.7 <= fitted.placement <= 0.95  # the positives' own placement, plus the margin
    assert recall(fixed, s, y)[5:7].max() <= 0.4  # the weak labels kept only their surest images
    assert recall(fitted, s, y)[5:7].min() >= 0.85
    assert (f1(fitted, s, y)[5:7] >= f1(fixed, s, y)[5:7] + 0.2).all()
    assert (f1(fitted, s, y)[:5] >= 0.95).all()  # the plain labels stay clean
    assert not fitted.present[7] and not fitted.positive(s)[:, 7].any()  # the absent label stays absent


def test_placement_at_the_anchor_changes_nothing():
    s, y, anchors, labels = vocabulary(1.15)
    fixed = fit_anchored(s, labels, anchors, replace(DecisionConfig(), placement_margin=None))
    fitted = fit_anchored(s, labels, anchors, DecisionConfig())
    assert fitted.placement == DecisionConfig().pos_anchor
    np.testing.assert_array_equal(fitted.thresholds(), fixed.thresholds())
    np.testing.assert_array_equal(fitted.present, fixed.present)


def test_too_few_present_labels_keep_the_anchor_and_the_margin_bounds_it():
    s, y, anchors, labels = vocabulary(0.75)
    cols = [0, 1, 7]  # two present labels: fewer than placement_min_labels
    few = fit_anchored(s[:, cols], [labels[j] for j in cols],
                       TextAnchors(*(a[cols] for a in (anchors.neg_mean, anchors.pos_mean, anchors.neg_sd,
                                                       anchors.pos_sd))), DecisionConfig())
    assert few.placement == DecisionConfig().pos_anchor
    wide = fit_anchored(s, labels, anchors, replace(DecisionConfig(), placement_margin=0.3))
    narrow = fit_anchored(s, labels, anchors, replace(DecisionConfig(), placement_margin=0.0))
    assert narrow.placement < wide.placement <= DecisionConfig().pos_anchor


def test_placement_travels_with_the_decisions():
    s, y, anchors, labels = vocabulary(0.75)
    d = fit_anchored(s, labels, anchors, DecisionConfig())
    back = Decisions.from_dict(d.to_dict())
    assert back.placement == d.placement
    np.testing.assert_allclose(back.thresholds(), d.thresholds(), atol=1e-5)
    assert Decisions.from_dict({**d.to_dict(), "placement": None}).placement is None


def test_placement_grid():
    np.testing.assert_allclose(placement_grid(0.5, 1.15, 0.05), np.round(np.arange(0.5, 1.151, 0.05), 6))
    assert placement_grid(0.5, 0.5, 0.05).tolist() == [0.5]
    assert placement_grid(0.8, 0.5, 0.05).tolist() == [0.5]


def test_placement_settings_are_checked():
    for bad in ({"placement_step": 0.0}, {"placement_min_labels": 0}, {"min_placement": 1.2}):
        with pytest.raises(ValueError):
            DecisionConfig(**bad)


def test_a_fit_placement_is_read_back_from_its_components_and_can_be_given():
    from tagger.method.placement import placement_of

    s, y, anchors, labels = vocabulary(0.75)
    fitted = fit_anchored(s, labels, anchors, DecisionConfig())
    present = np.flatnonzero(fitted.present)
    assert placement_of(fitted.mu1[present], anchors.take(present), DecisionConfig()) == \
        pytest.approx(fitted.placement, abs=1e-9)
    scaled = anchors.rescaled(np.full(8, 0.5), np.full(8, 2.0))  # the same fit in other units
    assert placement_of((fitted.mu1[present] - 0.5) / 2.0, scaled.take(present), DecisionConfig()) == \
        pytest.approx(fitted.placement, abs=1e-9)
    # two labels only (too few to fit a placement): the given one is taken, else the fixed anchor
    cols = np.array([5, 6])
    few = fit_anchored(s[:, cols], [labels[j] for j in cols], anchors.take(cols), DecisionConfig())
    given = fit_anchored(s[:, cols], [labels[j] for j in cols], anchors.take(cols), DecisionConfig(),
                         placement=fitted.placement)
    assert few.placement == DecisionConfig().pos_anchor and given.placement == fitted.placement
    assert (recall(given, s[:, cols], y[:, cols]) >= 0.85).all() and (recall(few, s[:, cols], y[:, cols]) <= 0.4).all()
    off = fit_anchored(s[:, cols], [labels[j] for j in cols], anchors.take(cols),
                       replace(DecisionConfig(), placement_margin=None), placement=fitted.placement)
    assert off.placement == DecisionConfig().pos_anchor  # placement fitting switched off: fixed


def test_text_scale_of_anchors_with_unlearnt_labels_and_unknown_sds():
    """base, gap and spread as the rule uses them: labels outside the mask get (0, 1, 0), a
    non-finite sd counts as no spread."""
    a = TextAnchors(np.array([1.0, -2.0, 0.5]), np.array([3.0, 1.0, 0.5]), np.array([0.4, np.nan, 0.2]),
                    np.array([0.3, 0.3, 0.3]))
    base, gap, spread = a.scale()
    assert base.tolist() == [1.0, -2.0, 0.5] and gap.tolist() == [2.0, 3.0, 0.0]
    assert spread.tolist() == [0.4, 0.0, 0.2]
    base, gap, spread = a.scale(np.array([True, True, False]))
    assert base.tolist() == [1.0, -2.0, 0.0] and gap.tolist() == [2.0, 3.0, 1.0] and spread.tolist() == [0.4, 0.0, 0.0]
