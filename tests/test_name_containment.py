"""A name that holds a label's own (`doorbell` for `bell`, `red circle` for `circle`) is no rival when
images corroborate the label, and an image it names counts for the label: adding `doorbell` to a vocabulary with `bell` made `bell` vanish, because
a text tower that reads the new word by its pieces names the bell's images `doorbell` more often."""
from __future__ import annotations

import numpy as np

from tagger.method.decisions import TextAnchors, fit_anchored
from tagger.method.names import name_counts, name_words


def _bells(seed: int = 3):
    rng = np.random.default_rng(seed)
    n = 1200
    y = rng.random(n) < 0.2
    bell = rng.normal(0.0, 0.3, n) + 1.2 * y
    s = np.c_[bell, bell + rng.normal(0.0, 0.05, n), rng.normal(0.0, 0.3, n), bell + rng.normal(0.0, 0.05, n)]
    u = rng.random(n)
    top1 = np.where(y, np.where(u < 0.6, 1, np.where(u < 0.8, 0, 3)), 2)  # doorbell 60 %, bell 20 %, echo 20 %
    return s, y, top1


def test_a_name_holding_the_label_is_no_rival():
    s, y, top1 = _bells()
    labels = ["bell", "doorbell", "star", "echo"]
    thr = np.array([0.6, 0.6, 0.6, 0.6])
    m, own, other, rival, held, _ = name_counts(s, thr, top1)
    assert held[0] == 0 and labels[rival[0]] == "doorbell" and own[0] < 0.5 * other[0]
    before = own[0]
    m, own, other, rival, held, holder = name_counts(s, thr, top1, labels)
    assert labels[rival[0]] == "echo" and own[0] >= 0.5 * other[0]  # the next name is the rival
    assert labels[holder[0]] == "doorbell" and held[0] == own[0] - before
    assert own[0] > before  # and the images named `doorbell` count for `bell`: a doorbell names a bell too
    assert labels[rival[1]] in ("bell", "echo") and other[1] > 0  # `bell` holds no `doorbell`: a rival still
    folded = name_counts(s, thr, top1, ["BELL", "Ｄｏｏｒｂｅｌｌ", "star", "echo"])
    assert folded.rival[0] == 3  # compared case- and width-folded
    short = name_counts(s, thr, top1, ["el", "doorbell", "star", "echo"])
    assert short.rival[0] == 1 and short.held[0] == 0  # a name under three letters is held by too many words: no rule


def test_the_label_a_new_word_contains_keeps_its_images():
    s, y, top1 = _bells()
    labels = ["bell", "doorbell", "star", "echo"]
    anchors = TextAnchors(np.zeros(4), np.full(4, 1.2), np.full(4, 0.2), np.full(4, 0.2))
    d = fit_anchored(s, labels, anchors, zeroshot_top1=top1)
    assert d.present[0], d.reason(0)
    assert (d.positive(s)[:, 0] & y).sum() >= 0.8 * y.sum()
    assert not d.present[3] and "'doorbell' of" in d.reason(3)  # an echo holding no name is still refused


def test_the_reason_says_when_a_name_holding_the_label_named_its_images():
    s, y, top1 = _bells()
    labels = ["bell", "doorbell", "star", "echo"]
    names = name_counts(s, np.full(4, 0.6), top1, labels)
    words = name_words(names, labels, names.own / np.maximum(names.rival_count, 1.0), 0.5)
    own, held = int(names.own[0]), int(names.held[0])
    assert 0 < held < own
    assert words[0].startswith(f"its name, or one holding it, is the best match of {own} of its ")
    assert f"({held} by a name holding it, most often 'doorbell')" in words[0]
    assert words[1].startswith("its name is the best match of")  # `bell` holds no `doorbell`


def test_a_new_labels_rivals_include_the_kept_labels_names():
    """An incremental run decides its new labels only, but the kept labels' names are their rivals
    (`crescent` added beside `moon`: moon's images, named 'moon', tagged crescent on 58 images where a
    full run judged it absent). Names are read in the model's whole label space."""
    from tagger.method.names import ZeroShotNames
    rng = np.random.default_rng(0)
    n = 600
    moon = rng.random(n) < 0.2
    s = np.c_[rng.normal(0, 0.3, n) + 1.2 * moon]  # the new label's scores: high on moon's images
    top1 = np.where(moon, 1, 0)  # kept labels: circle (0), moon (1); the new label is 2
    space = ZeroShotNames(top1, ["circle", "moon", "crescent"], np.array([2]), ["circle", "moon", "crescent"])
    thr = np.array([0.6])
    counts = name_counts(s, thr, space, ["crescent"])
    assert counts.own[0] == 0 and space.names[counts.rival[0]] == "moon" and counts.rival_count[0] > 50
    words = name_words(counts, ["crescent"], np.array([0.0]), 0.5, space.names)
    assert "'moon' of" in words[0]
    named = ZeroShotNames(np.where(moon, 2, 0), space.names, space.own, space.keys)  # its images named crescent
    assert name_counts(s, thr, named, ["crescent"]).own[0] == counts.rival_count[0]
    alike = ZeroShotNames(top1, space.names, space.own, ["circle", "moon", "moon"])  # crescent alike moon
    assert name_counts(s, thr, alike, ["crescent"]).own[0] == counts.rival_count[0]
    legacy = name_counts(s, thr, np.full(n, -1), ["crescent"])  # kept names dropped, as runs did: no rival
    assert legacy.own[0] == 0 and legacy.rival_count[0] == 0
