"""Metrics against scikit-learn and brute-force references; ZSL/GZSL on a hand-built example."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from tagger.errors import ConfigError
from tagger.evaluate.metrics import (
    average_precision, mean_average_precision, per_class_ap, summarize, topk_prf,
)
from tagger.evaluate.splits import LabelSplit, make_split, split_from_names, zsl_gzsl_metrics


def _random_problem(seed: int, n: int = 60, c: int = 7) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    scores = rng.random((n, c))  # continuous: ties have probability zero
    targets = (rng.random((n, c)) < 0.3).astype(np.uint8)
    targets[0] = 1  # every class has at least one positive
    return scores, targets


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_map_matches_sklearn(seed: int) -> None:
    scores, targets = _random_problem(seed)
    ref = 100 * np.mean([average_precision_score(targets[:, c], scores[:, c]) for c in range(scores.shape[1])])
    assert mean_average_precision(scores, targets) == pytest.approx(ref, abs=1e-6)


def test_class_without_positives_is_excluded_from_map() -> None:
    scores, targets = _random_problem(7)
    targets[:, 2] = 0
    ap = per_class_ap(scores, targets)
    assert np.isnan(ap[2]) and np.isfinite(np.delete(ap, 2)).all()
    kept = [c for c in range(scores.shape[1]) if c != 2]
    ref = 100 * np.mean([average_precision_score(targets[:, c], scores[:, c]) for c in kept])
    assert mean_average_precision(scores, targets) == pytest.approx(ref, abs=1e-6)
    assert np.isfinite(summarize(scores, targets)["mAP"])


def test_only_one_is_positive() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.1])
    # a 0 (e.g. VOC difficult) is a negative: ranked first, it halves the precision at the hit
    assert average_precision(scores, np.array([0, 1, -1, -1])) == pytest.approx(0.5)


def test_perfect_ranking_has_ap_100() -> None:
    rng = np.random.default_rng(3)
    targets = (rng.random((40, 5)) < 0.4).astype(np.uint8)
    targets[0] = 1
    scores = targets + 0.1 * rng.random(targets.shape)  # every positive above every negative
    assert mean_average_precision(scores, targets) == pytest.approx(100.0)


def _brute_topk(scores: np.ndarray, targets: np.ndarray, k: int) -> tuple[float, float, float]:
    tp = n_pred = 0
    for s, t in zip(scores, targets):
        ranked = sorted(range(len(s)), key=lambda c: -s[c])
        for c in ranked[:k]:
            n_pred += 1
            tp += int(t[c] == 1)
    n_gt = int((targets == 1).sum())
    p, r = 100 * tp / n_pred, 100 * tp / n_gt
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


@pytest.mark.parametrize("seed,k", [(0, 1), (1, 3), (2, 5), (3, 7)])
def test_topk_matches_brute_force(seed: int, k: int) -> None:
    scores, targets = _random_problem(seed)
    p, r, f = _brute_topk(scores, targets, k)
    got = topk_prf(scores, targets, k)
    assert got["precision"] == pytest.approx(p) and got["recall"] == pytest.approx(r)
    assert got["f1"] == pytest.approx(f)


def test_summarize_keys_and_values() -> None:
    scores, targets = _random_problem(5)
    out = summarize(scores, targets)
    for key in ("mAP", "P@3", "R@3", "F1@3", "P@5", "R@5", "F1@5", "n_images", "n_classes"):
        assert key in out
    assert out["n_images"] == 60 and out["n_classes"] == 7
    assert out["P@5"] == pytest.approx(topk_prf(scores, targets, 5)["precision"])


def test_zsl_gzsl_on_constructed_example() -> None:
    # classes 0,1 seen; 2,3 unseen. Image 1 has no unseen label and is left out of ZSL.
    targets = np.array([[1, 0, 1, 0],
                        [0, 1, 0, 0],
                        [0, 0, 0, 1],
                        [1, 0, 1, 1]], np.uint8)
    scores = np.array([[0.9, 0.1, 0.2, 0.8],
                       [0.2, 0.9, 0.7, 0.1],
                       [0.1, 0.2, 0.6, 0.5],
                       [0.3, 0.4, 0.9, 0.4]])
    split = LabelSplit(seen=(1, 0), unseen=(3, 2))
    out = zsl_gzsl_metrics(scores, targets, split, ks=(1,))
    # ZSL rows 0,2,3; class 2 scores [0.2,0.6,0.9], positives rows 0,3 -> ranks 1,3 -> AP (1+2/3)/2
    # class 3 scores [0.8,0.5,0.4], positives rows 2,3 -> ranks 2,3 -> AP (1/2+2/3)/2
    ap2, ap3 = (1 + 2 / 3) / 2, (1 / 2 + 2 / 3) / 2
    assert out["zsl"]["n_images"] == 3 and out["zsl"]["n_classes"] == 2
    assert out["zsl"]["mAP"] == pytest.approx(100 * (ap2 + ap3) / 2)
    # top-1 among unseen: row0 -> 3 (miss), row2 -> 2 (miss), row3 -> 2 (hit); 4 positives
    assert out["zsl"]["P@1"] == pytest.approx(100 / 3) and out["zsl"]["R@1"] == pytest.approx(25.0)
    assert out["gzsl"]["n_images"] == 4 and out["gzsl"]["n_classes"] == 4
    assert out["gzsl"]["mAP"] == pytest.approx(mean_average_precision(scores, targets))


def test_make_split_is_deterministic_and_disjoint() -> None:
    names = [f"c{i}" for i in range(30)]
    a, b = make_split(names, 8, seed=11), make_split(names, 8, seed=11)
    assert a == b and len(a.unseen) == 8 and len(a.seen) == 22
    assert set(a.seen).isdisjoint(a.unseen) and set(a.all) == set(range(30))
    assert make_split(names, 8, seed=12) != a
    with pytest.raises(ConfigError):
        make_split(names, 30, seed=0)


def test_split_from_names() -> None:
    names = ["cat", "dog", "car", "tree"]
    s = split_from_names(names, unseen_names=["tree", "dog"])
    assert s.unseen == (1, 3) and s.seen == (0, 2)
    s2 = split_from_names(names, unseen_names=["car"], seen_names=["cat"])
    assert s2.all == (0, 2)
    with pytest.raises(ConfigError, match="unknown"):
        split_from_names(names, unseen_names=["zebra"])
    with pytest.raises(ConfigError):
        split_from_names(names, unseen_names=["cat"], seen_names=["cat"])
