"""The guard every head goes through, on arrays: the seeded stratified split of the annotations, the
guarded model (the head's columns only where held-out images can decide them, the text head's
columns and anchors elsewhere), its save/load, and the validation table and verdict."""
from __future__ import annotations

import numpy as np
import pytest

from tagger.method.classifier import TextClassifier
from tagger.method.comc import ComcModel
from tagger.method.decisions import text_anchors
from tagger.method.heads import FitConfig, OvmlConfig, fit_fewshot, fit_head
from tagger.method.heads.guarded import (GuardConfig, GuardedModel, head_columns, heldout_split, image_columns,
                                         load_guarded, roc_auc)
from tagger.method.mapping import MemoryBank
from tagger.method.scoring import ScoreConfig
from tagger.pipeline.guard import decide_like_tag, format_table, validate, verdict
from tagger.pipeline.tag import apply_statistics

D, L = 16, 6


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def world(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images that are the sum of their labels' directions plus noise: (g, y, label directions)."""
    rng = np.random.default_rng(seed)
    t = unit(rng.normal(size=(L, D)))
    y = rng.random((n, L)) < np.array([0.4, 0.3, 0.3, 0.2, 0.02, 0.0])  # label 5 occurs nowhere
    g = unit(y.astype(np.float32) @ t + 0.3 * rng.normal(size=(n, D)))
    return g, y, t


def text_model(t: np.ndarray, truth: np.ndarray | None = None) -> ComcModel:
    """A text classifier whose rows are the label directions ``t``; its anchors come from "sentences"
    that are the true directions of random label sets (``truth``, as in :func:`world`)."""
    rng = np.random.default_rng(7)
    y = rng.random((2000, L)) < 0.3
    x = unit(y.astype(np.float32) @ (t if truth is None else truth) + 0.1 * rng.normal(size=(2000, D)))
    clf = TextClassifier(t.copy(), [f"l{j}" for j in range(L)], "m", "c", anchors=text_anchors(x, t, y))
    score = ScoreConfig(memory="none", use_local=False, standardize=False)
    return ComcModel(clf, {"prompts": MemoryBank(t.copy(), "prompts")}, score)


def test_the_split_is_seeded_stratified_and_covers_every_image() -> None:
    _, y, _ = world(400)
    train, held = heldout_split(y, 0.25, seed=3)
    assert np.array_equal(np.sort(np.concatenate([train, held])), np.arange(len(y)))
    again = heldout_split(y, 0.25, seed=3)
    assert np.array_equal(again[1], held) and not np.array_equal(heldout_split(y, 0.25, seed=4)[1], held)
    for j in range(L):
        n = int(y[:, j].sum())
        if n:  # each label sends about a quarter of its images to the held-out part
            assert abs(int(y[held, j].sum()) - 0.25 * n) <= max(2, 0.1 * n), (j, n)
    assert abs(len(held) - 100) <= 10


def test_image_columns_need_held_out_positives_and_negatives() -> None:
    y_tr = np.array([[1, 1, 0, 1]] * 5 + [[0, 0, 0, 1]] * 5, bool)
    y_he = np.array([[1, 0, 1, 1]] * 3 + [[0, 0, 1, 1]] * 3, bool)
    # label 0: seen, 3 held-out positives and 3 negatives; 1: no held-out positive; 2: not seen in
    # training; 3: no held-out negative
    assert image_columns(y_tr, y_he, 3).tolist() == [0]


def test_roc_auc_and_the_columns_a_head_may_score() -> None:
    y = np.array([[1, 1], [1, 0], [0, 1], [0, 0], [1, 1], [0, 0]], bool)
    s = np.array([[0.9, 0.5], [0.8, 0.5], [0.1, 0.5], [0.2, 0.5], [0.7, 0.5], [0.3, 0.5]])
    assert np.allclose(roc_auc(s, y), [1.0, 0.5])  # ties count half
    rng = np.random.default_rng(0)
    y = rng.random((60, 3)) < 0.4
    good, text = y + 0.1 * rng.normal(size=y.shape), y + 0.8 * rng.normal(size=y.shape)
    head = np.stack([good[:, 0], rng.normal(size=60), text[:, 2] - 2 * y[:, 2]], 1)  # ranks well, random, worse
    assert head_columns(head, text, y, np.arange(3), GuardConfig()).tolist() == [0]
    assert head_columns(head, text, y, np.asarray([1, 2]), GuardConfig()).tolist() == []


@pytest.mark.parametrize("kind", ["ovml", "comc-fewshot"])
def test_guarded_scores_mix_columns_and_round_trip(kind: str, tmp_path) -> None:
    g, y, t = world(120)
    text = text_model(t)
    if kind == "comc-fewshot":
        head = fit_fewshot(text, g, y)
    else:
        cfg = OvmlConfig(fit=FitConfig(epochs=2))
        head = fit_head(kind, g, None, y[:, :4], t, seen=[0, 1, 2, 3], labels=text.labels, cfg=cfg)
    m = GuardedModel(kind, text, head, ["l1", "l3"], {7: ["l1", "l0"], 9: []})
    s, ts, hs = m.scores(g, None), text.scores(g, None), head.scores(g, None)
    assert np.allclose(s[:, [0, 2, 4, 5]], ts[:, [0, 2, 4, 5]]) and np.allclose(s[:, [1, 3]], hs[:, [1, 3]], atol=1e-5)
    a = m.anchors
    assert np.isnan(a.pos_mean[[1, 3]]).all() and np.isfinite(a.pos_mean[[0, 2, 4, 5]]).all()
    assert m.decision_labelled() == {7: ["l1"], 9: []}
    m.save(tmp_path / "g", "text-id")
    back = load_guarded(tmp_path / "g", lambda ref: text if ref == "text-id" else None)
    assert back.image_labels == ["l1", "l3"] and back.heldout == m.heldout and back.kind == kind
    assert np.allclose(back.scores(g, None), s, atol=1e-5)


def _table(head: np.ndarray, text: ComcModel, g, y, corpus, held) -> dict:
    """Validation of a "head" whose columns 0-3 are ``head`` (rows: corpus, then held-out images)."""
    cols = np.asarray([0, 1, 2, 3])
    ts = text.scores(g, None)
    hs = ts.copy()
    hs[:, cols] = head[:, cols]
    return validate(text.labels, y[held], np.flatnonzero(y.any(0)), (ts[corpus], ts[held], text.classifier.anchors),
                    (hs[corpus], hs[held]), cols, ("text", "head"), cfg=GuardConfig())


def test_validation_keeps_a_better_head_and_refuses_a_worse_one() -> None:
    g, y, t = world(600, seed=1)
    rng = np.random.default_rng(0)
    text = text_model(unit(t + 0.3 * rng.normal(size=t.shape)), t)  # a weak text head
    corpus, held = np.arange(400), np.arange(400, 600)
    good = y.astype(np.float32) + 0.05 * rng.normal(size=y.shape)  # a head that sees the truth
    table = _table(good, text, g, y, corpus, held)
    assert table["rows"][1]["F1"] > table["rows"][0]["F1"] and table["images"] == 200
    assert table["head_labels"] == [0, 1, 2, 3] and verdict(table, False, 10)[0]
    noise = rng.normal(size=y.shape).astype(np.float32)  # a head that learnt nothing
    table = _table(noise, text, g, y, corpus, held)
    keep, why = verdict(table, False, 10)
    assert not keep and "text-only head kept" in why and table["head_labels"] == []
    assert "would score no label" in why and len(table["fold_head_labels"]) == GuardConfig().folds
    assert "the new head scores 0 of them" in format_table(table)[0]
    assert verdict(table, True, 10)[0]
    assert not verdict(None, False, 10)[0] and verdict(None, True, 10)[0]


def test_labels_the_head_does_not_score_are_decided_exactly_as_under_the_text_head() -> None:
    """So a label with no annotated image (here l5, which no image shows) keeps the text-only head's
    absent-label protection under every head."""
    g, y, t = world(500, seed=2)
    text = text_model(t)
    head = fit_head("ovml", g[:300], None, y[:300, :4], t, seen=[0, 1, 2, 3], labels=text.labels,
                    cfg=OvmlConfig(fit=FitConfig(epochs=3)))
    m = GuardedModel("ovml", text, head, ["l0", "l2"])
    corpus, held = g[300:], g[:100]
    stats_t, d_t = decide_like_tag(text.scores(corpus, None), text.labels, text.classifier.anchors)
    truth = np.zeros((100, L), bool)
    truth[:, [0, 2]] = y[:100, [0, 2]]
    s = m.scores(corpus, None)
    stats_g, d_g = decide_like_tag(s, text.labels, m.anchors, labelled=(m.scores(held, None), truth))
    pred_t = d_t.positive(apply_statistics(text.scores(corpus, None), stats_t))
    pred_g = d_g.positive(apply_statistics(s, stats_g))
    others = [1, 3, 4, 5]
    assert np.array_equal(pred_t[:, others], pred_g[:, others])
    assert not pred_g[:, 5].any() and pred_g[:, [0, 2]].any()
