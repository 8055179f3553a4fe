"""Twins: labels whose class prompts the text tower reads as one name (`bell` and `doorbell` to a tower
that never saw the longer word) count as one name when images corroborate a label, so adding one
cannot make the other vanish."""
from __future__ import annotations

import numpy as np

from tagger.method.names import name_counts, name_groups


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_groups_link_near_identical_prompts_transitively():
    rng = np.random.default_rng(0)
    base = _unit(rng.normal(size=(3, 64)))
    twin = _unit(base[0] + 0.015 * rng.normal(size=64)[None])     # one name to the tower
    twin2 = _unit(twin + 0.015 * rng.normal(size=64)[None])       # alike to the twin, through it to base[0]
    near = _unit(base[1] + 0.9 * rng.normal(size=64)[None] / 8)    # related, not the same name
    prompts = np.vstack([base, twin, twin2, near])
    cos = prompts @ prompts.T
    assert cos[0, 3] > 0.93 and cos[1, 5] < 0.93
    g = name_groups(prompts, 0.93)
    assert g.tolist() == [0, 1, 2, 0, 0, 5]
    assert name_groups(prompts, 0.93, chunk=2).tolist() == g.tolist()  # the same in chunks


def test_twins_do_not_outvote_each_other():
    # 30 images of a bell, named 'doorbell' 20 times and 'bell' 10; both labels score them over threshold
    n, labels = 40, ["bell", "doorbell", "star"]
    s = np.zeros((n, 3))
    s[:30, :2] = 1.0
    s[30:, 2] = 1.0
    top1 = np.array([1] * 20 + [0] * 10 + [2] * 10)
    thr = np.full(3, 0.5)
    m, own, other, rival = name_counts(s, thr, top1)
    assert own[0] / other[0] == 0.5 and labels[rival[0]] == "doorbell"  # alone, the bell's name is outvoted 2:1
    m, own, other, rival = name_counts(s, thr, top1, np.array([0, 0, 2]))
    assert own.tolist() == [30, 30, 10] and other.tolist() == [0, 0, 0] and rival.tolist() == [-1, -1, -1]
    # a rival group's counts add up, and the rival named is its most frequent member
    s2 = np.zeros((n, 3))
    s2[:, 2] = 1.0
    m, own, other, rival = name_counts(s2, thr, top1, np.array([0, 0, 2]))
    assert own[2] == 10 and other[2] == 30 and labels[rival[2]] == "doorbell"


def test_of_twins_the_label_listed_first_is_tagged_and_the_other_says_why():
    """A later label the tower reads as the same name (`doorbell` after `bell`) drew most of the bell's
    images' names and made `bell` vanish; now the bell keeps its images and the doorbell says why."""
    from tagger.method.decisions import TextAnchors, fit_anchored
    rng = np.random.default_rng(3)
    n = 1200
    y = rng.random(n) < 0.2
    bell = rng.normal(0.0, 0.3, n) + 1.2 * y
    s = np.c_[bell, bell + rng.normal(0.0, 0.05, n), rng.normal(0.0, 0.3, n)]
    top1 = np.where(y, np.where(rng.random(n) < 0.7, 1, 0), 2)  # the images name the doorbell more often
    labels = ["bell", "doorbell", "star"]
    anchors = TextAnchors(np.zeros(3), np.full(3, 1.2), np.full(3, 0.2), np.full(3, 0.2))
    alone = fit_anchored(s, labels, anchors, zeroshot_top1=top1)
    assert not alone.present[0] and alone.present[1]  # the vanishing label
    d = fit_anchored(s, labels, anchors, zeroshot_top1=top1, name_groups=np.array([0, 0, 2]))
    assert d.present[0] and not d.present[1]
    assert "twin 'doorbell'" in d.reason(0) and "one name with 'bell'" in d.reason(1)
    assert (d.positive(s)[:, 0] & y).sum() >= 0.8 * y.sum()
