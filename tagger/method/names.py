"""Corroboration by names: how the images that pass a label's threshold are named by zero-shot CLIP.

Each sample image's best zero-shot match (the label whose class prompt is closest) is counted per
label among the images over its threshold: its own name against the most frequent other one. The
anchored decision rule (:mod:`tagger.method.decisions`) keeps a label only when its own name holds
its own against that rival.
"""
from __future__ import annotations

import numpy as np

__all__ = ["TWIN_COSINE", "name_counts", "name_groups", "name_words"]

TWIN_COSINE = 0.93  # class prompts this close are one name to the text tower (chosen on val: see docs/decisions.md)


def name_groups(prompts: np.ndarray, min_cosine: float = TWIN_COSINE, chunk: int = 2048) -> np.ndarray:
    """Per label, the id of its group of *twins*: labels whose class prompts are at least ``min_cosine``
    alike (linked transitively), which the text tower reads as one name (``bell`` and ``doorbell``
    to a tower that never saw the longer word). Counted as one name, twins cannot outvote each other
    on their images. The group id is its smallest member's index; a label alone is its own group."""
    p = np.asarray(prompts, np.float32)
    p = p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-12)
    parent = np.arange(len(p))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i
    for start in range(0, len(p), chunk):
        sim = p[start:start + chunk] @ p.T
        for a, b in zip(*np.nonzero(sim >= min_cosine)):
            ra, rb = root(start + int(a)), root(int(b))
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    return np.array([root(i) for i in range(len(p))], np.int64)


def name_counts(s: np.ndarray, threshold: np.ndarray, top1: np.ndarray | None, groups: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Per label, among the sample images at or over its threshold: how many there are, how many
    have the label's own name (or a twin's, ``groups`` from :func:`name_groups`) as their best
    zero-shot match, and the most frequent other name (its count, its twins' counts added, and the
    index of its most frequent member, -1 if none). None without zero-shot matches. Counted as sparse
    (label, name) pairs: memory grows with the images over thresholds, not with the labels squared."""
    if top1 is None:
        return None
    top1 = np.asarray(top1, np.int64)
    n, L = s.shape
    if top1.shape != (n,):
        raise ValueError(f"zeroshot_top1 must hold one label index per sample image, got {top1.shape}")
    g = np.arange(L) if groups is None else np.asarray(groups, np.int64)
    above = s >= threshold[None, :]
    rows, cols = np.nonzero(above & ((top1 >= 0) & (top1 < L))[:, None])
    names = top1[rows]
    pairs, count = np.unique(cols * L + g[names], return_counts=True)  # (label, group of the name)
    label, group = np.divmod(pairs, L)
    own, rival, rival_count = np.zeros(L), np.full(L, -1), np.zeros(L)
    mine = g[label] == group
    own[label[mine]] = count[mine]
    order = np.lexsort((-count[~mine], label[~mine]))  # per label, its most frequent other group first
    lab, grp, cnt = label[~mine][order], group[~mine][order], count[~mine][order]
    first = np.r_[True, lab[1:] != lab[:-1]] if len(lab) else np.zeros(0, bool)
    rival[lab[first]], rival_count[lab[first]] = _most_named(cols, names, g, lab[first], grp[first], L), cnt[first]
    return above.sum(0).astype(np.float64), own, rival_count, rival


def _most_named(cols: np.ndarray, names: np.ndarray, g: np.ndarray, labels: np.ndarray, groups: np.ndarray,
                L: int) -> np.ndarray:
    """For each (label, rival group), the group's member that names the label's images most often."""
    want = np.full(L, -1, np.int64)
    want[labels] = groups
    keep = want[cols] == g[names]
    pairs, count = np.unique(cols[keep] * L + names[keep], return_counts=True)
    lab, nam = np.divmod(pairs, L)
    order = np.lexsort((-count, lab))
    lab, nam = lab[order], nam[order]
    first = np.r_[True, lab[1:] != lab[:-1]] if len(lab) else np.zeros(0, bool)
    best = dict(zip(lab[first].tolist(), nam[first].tolist()))
    return np.array([best[int(x)] for x in labels], np.int64)


def name_words(names, labels: list[str], ratio: np.ndarray, min_ratio: float,
               groups: np.ndarray | None = None) -> list[str] | None:
    """Per label, how its images name it, in words (None without zero-shot matches); a label with
    twins says which names were counted as its own."""
    if names is None:
        return None
    m, own, other, rival = names
    twins: dict[int, list[str]] = {}
    if groups is not None:
        for j, g in enumerate(np.asarray(groups).tolist()):
            twins.setdefault(g, []).append(labels[j])

    def its(j: int) -> str:
        mates = [x for x in twins.get(int(groups[j]), []) if x != labels[j]] if groups is not None else []
        shown = ", ".join(repr(x) for x in mates[:3]) + (f" and {len(mates) - 3} more" if len(mates) > 3 else "")
        return f"its name (or its twin {shown}, one name to the text tower)" if mates else "its name"
    return ["no sample image reaches its threshold" if not m[j] else
            f"{its(j)} is the best match of {int(own[j])} of its {int(m[j])} images, "
            + (f"'{labels[rival[j]]}' of {int(other[j])}" if rival[j] >= 0 else "no other name of any")
            + f" ({ratio[j]:.2f} {'<' if ratio[j] < min_ratio else '>='} {min_ratio:g} times as often)"
            for j in range(len(labels))]
