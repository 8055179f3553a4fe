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


def _concrete(n: int = 2000, seed: int = 5):
    """circle, moon and square, each on 20 % of the images, their prompts near their own images
    (cosine 0.5); circle's scores high on circles, moon's on moons."""
    rng = np.random.default_rng(seed)
    d = 16
    basis = np.linalg.qr(rng.normal(size=(d, d)))[0]
    protos, off = basis[:3], basis[3:6]
    which = rng.choice([-1, 0, 1, 2], n, p=[0.4, 0.2, 0.2, 0.2])
    y = which[:, None] == np.arange(3)
    img = rng.normal(0.0, 0.05, (n, d)) + np.where(which[:, None] >= 0, protos[np.maximum(which, 0)], 0.0)
    prompts = 0.5 * protos + np.sqrt(0.75) * off
    s = rng.normal(0.0, 0.3, (n, 3)) + 1.2 * y
    return img, prompts, s, y


def test_a_concrete_label_made_a_parent_keeps_its_own_images():
    """``moon`` put under ``circle``: circle's own row is still read by its own name (among every
    label, moon's name counting as circle's), where leaving parents out of the names left circle's
    images no name of their own and judged its row absent."""
    from tagger.method.names import ZeroShotNames
    from tagger.method.zeroshot import image_names
    img, prompts, s, y = _concrete()
    labels = ["circle", "moon", "square"]
    anchors = TextAnchors(np.zeros(3), np.full(3, 1.2), np.full(3, 0.2), np.full(3, 0.2))
    tree = {"moon": ["circle"]}
    named = image_names(img, prompts, labels, tree)
    assert isinstance(named, ZeroShotNames) and named.family == {0: frozenset({1})}
    assert (named.top1 != 0).all() and (named.wide[y[:, 0]] == 0).mean() > 0.9
    d = fit_anchored(s, labels, anchors, zeroshot_top1=named)
    assert d.present.all(), [d.reason(j) for j in range(3)]
    assert ((d.positive(s) & y).sum(0) >= 0.8 * y.sum(0)).all()
    parents_left_out = fit_anchored(s, labels, anchors, zeroshot_top1=named.top1)
    assert not parents_left_out.present[0] and parents_left_out.present[1:].all()
    # a row passing on moons: moon's name is circle's own there, never its rival
    on_moons = np.c_[s[:, 0] - 1.2 * y[:, 0] + 1.2 * y[:, 1], s[:, 1:]]
    assert fit_anchored(on_moons, labels, anchors, zeroshot_top1=named).present[0]
    assert not fit_anchored(on_moons, labels, anchors, zeroshot_top1=named._replace(family={})).present[0]
    assert image_names(img, prompts, labels, {}).shape == (len(img),)  # no parent: plain best matches
