"""Per-label cutoffs at the expected-F1 optimum: overlapping labels are not under-tagged."""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from tagger.method.cutoffs import expected_best_f1, f1_cutoffs
from tagger.method.decisions import DecisionConfig, Decisions, fit_anchored
from tagger.method.anchors import TextAnchors


def f1(pred: np.ndarray, truth: np.ndarray) -> float:
    return 2 * (pred & truth).sum() / max(1, pred.sum() + truth.sum())


def best_f1_by_threshold(s: np.ndarray, y: np.ndarray) -> float:
    return max(f1(s >= t, y) for t in np.quantile(s, np.linspace(0.5, 0.999, 300)))


def test_expected_best_f1_matches_a_sample_of_the_mixture():
    rng = np.random.default_rng(0)
    n, params = 200_000, [(0.0, 1.0, 3.0, 1.0, 0.2), (0.0, 1.0, 1.2, 0.8, 0.1), (0.0, 0.5, 4.0, 0.5, 0.3)]
    for mu0, sd0, mu1, sd1, pi in params:
        y = rng.random(n) < pi
        s = np.where(y, rng.normal(mu1, sd1, n), rng.normal(mu0, sd0, n))
        got = expected_best_f1([mu0], [sd0], [mu1], [sd1], [pi])[0]
        assert abs(got - best_f1_by_threshold(s, y)) < 0.01, (mu0, sd0, mu1, sd1, pi)


def test_cutoffs_are_half_the_best_f1_and_respect_the_floor():
    cut = f1_cutoffs([0.0, 0.0], [1.0, 1.0], [8.0, 1.0], [1.0, 1.0], [0.2, 0.05])
    assert 0.49 < cut[0] <= 0.5  # separated: F* ~ 1
    assert cut[1] < 0.3  # overlapping: a low cutoff
    assert (f1_cutoffs([0.0, 0.0], [1.0, 1.0], [8.0, 1.0], [1.0, 1.0], [0.2, 0.05], floor=0.3) >= 0.3).all()


def _overlapping(n: int = 6000, seed: int = 1):
    """Two labels: one well separated, one whose positives overlap the bulk (a confused label)."""
    rng = np.random.default_rng(seed)
    y = rng.random((n, 2)) < [0.15, 0.15]
    s = rng.normal(0.0, 0.3, (n, 2)) + np.where(y, [1.0, 0.55], 0.0)
    anchors = TextAnchors(neg_mean=np.zeros(2), neg_sd=np.full(2, 0.3), pos_mean=np.array([1.0, 0.55]) / 1.15,
                          pos_sd=np.full(2, 0.3))
    return s, y, anchors


def test_the_f1_rule_tags_an_overlapping_label_better_and_keeps_the_confidence():
    s, y, anchors = _overlapping()
    cfg = replace(DecisionConfig(), neg_sd_shift=0.0, anchor_sd=0.3 / 0.87, min_text_separation=0.5,
                  min_text_signal=0.1, corroborate_below=0.0)
    post = fit_anchored(s, ["sharp", "confused"], anchors, replace(cfg, cutoff_rule="posterior"))
    best = fit_anchored(s, ["sharp", "confused"], anchors, cfg)
    assert post.present.all() and best.present.all()
    f_post, f_best = (f1(d.positive(s)[:, 1], y[:, 1]) for d in (post, best))
    assert f_best > f_post + 0.03  # the confused label: more of its images found
    assert f_best > 0.95 * best_f1_by_threshold(s[:, 1], y[:, 1])
    assert abs(f1(best.positive(s)[:, 0], y[:, 0]) - f1(post.positive(s)[:, 0], y[:, 0])) < 0.02
    np.testing.assert_allclose(best.confidence(s), post.confidence(s))  # calibration untouched
    assert best.thresholds()[1] < post.thresholds()[1]


def test_the_rule_travels_with_the_saved_decisions():
    s, _, anchors = _overlapping()
    d = fit_anchored(s, ["sharp", "confused"], anchors, replace(DecisionConfig(), min_text_separation=0.5,
                                                                 corroborate_below=0.0))
    back = Decisions.from_dict(d.to_dict())
    assert back.cutoff_rule == "f1" and back.min_cutoff == d.min_cutoff
    np.testing.assert_allclose(back.thresholds(), d.thresholds(), atol=1e-5)  # saved to 6 decimals
    old = {k: v for k, v in d.to_dict().items() if k not in ("cutoff_rule", "min_cutoff")}
    assert Decisions.from_dict(old).cutoff_rule == "posterior"  # saved before the rule existed
