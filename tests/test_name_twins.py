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
