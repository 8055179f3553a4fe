"""Naming images for the names gate leaves parents out: a parent's prompt matches its children's
images too (every shape image is a 'shape'), so counted as a name it would out-vote every child."""
from __future__ import annotations

import numpy as np

from tagger.method.anchors import TextAnchors
from tagger.method.decisions import fit_anchored
from tagger.method.zeroshot import best_matches


def _corpus(n: int = 2000, seed: int = 3):
    """Three children (shown on 20 % of the images each) and their parent, whose prompt sits between
    all of them: each child's own prompt is a poorer match of its images (cosine 0.5, as a text
    tower's prompt often is) than the parent's (0.58)."""
    rng = np.random.default_rng(seed)
    d = 16
    basis = np.linalg.qr(rng.normal(size=(d, d)))[0]
    protos, off = basis[:3], basis[3:6]
    y = rng.random((n, 3)) < 0.2
    which = np.where(y.any(1), np.argmax(y, 1), -1)
    img = rng.normal(0.0, 0.05, (n, d)) + np.where(which[:, None] >= 0, protos[np.maximum(which, 0)], 0.0)
    parent = protos.sum(0) / np.sqrt(3)
    prompts = np.vstack([0.5 * protos + np.sqrt(0.75) * off, parent])
    s = np.c_[rng.normal(0.0, 0.3, (n, 3)) + 1.2 * y, rng.normal(0.0, 0.3, n) + 1.2 * y.any(1)]
    return img, prompts, s, y


def test_best_matches_skip_the_excluded_classes():
    img, prompts, _, y = _corpus()
    shown = y.any(1)
    assert (best_matches(img, prompts)[shown] == 3).mean() > 0.9  # the parent wins nearly every image
    named = best_matches(img, prompts, np.array([False, False, False, True]))
    assert (named != 3).all()
    for j in range(3):
        only = y[:, j] & (y.sum(1) == 1)
        assert (named[only] == j).mean() > 0.9


def test_children_pass_the_names_gate_only_with_the_parent_left_out():
    img, prompts, s, y = _corpus()
    k = s.shape[1]
    anchors = TextAnchors(np.zeros(k), np.full(k, 1.2), np.full(k, 0.2), np.full(k, 0.2))
    labels = ["pentagon", "hexagon", "square", "shape"]
    with_parent = fit_anchored(s, labels, anchors, zeroshot_top1=best_matches(img, prompts))
    assert not with_parent.present[:3].any()  # out-voted by 'shape' on their own images
    left_out = fit_anchored(s, labels, anchors,
                            zeroshot_top1=best_matches(img, prompts, np.array([False, False, False, True])))
    assert left_out.present[:3].all(), [left_out.reason(j) for j in range(3)]
    pred = left_out.positive(s)[:, :3]
    assert ((pred & y).sum(0) >= 0.8 * y.sum(0)).all()
