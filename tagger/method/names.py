"""Corroboration by names: how the images that pass a label's threshold are named by zero-shot CLIP.

Each sample image's best zero-shot match (the label whose class prompt is closest) is counted per
label among the images over its threshold: its own name against the most frequent other one. The
anchored decision rule (:mod:`tagger.method.decisions`) keeps a label only when its own name holds
its own against that rival.
"""
from __future__ import annotations

import unicodedata

import numpy as np

__all__ = ["fold", "name_counts", "name_words"]


MIN_HELD = 3  # a shorter name (`c`, `ox`) is held by too many words to say anything


def fold(name: str) -> str:
    """The form two names are compared in: compatibility-normalised (full-width letters, ligatures) and
    case-folded, so ``Star``, ``STAR`` and ``ＳＴＡＲ`` are one name."""
    return unicodedata.normalize("NFKC", name).casefold()


def _inside(labels: list[str], label: np.ndarray, name: np.ndarray) -> np.ndarray:
    """Per (label, name) pair, whether the name holds the label's name (``red circle`` and ``circle``,
    ``doorbell`` and ``bell``): a more specific name matching the images does not deny the label."""
    folded = {i: fold(labels[i]) for i in set(label.tolist()) | set(name.tolist())}
    return np.array([len(folded[a]) >= MIN_HELD and folded[a] in folded[b]
                     for a, b in zip(label.tolist(), name.tolist())], bool)


def name_counts(s: np.ndarray, threshold: np.ndarray, top1: np.ndarray | None, labels: list[str] | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Per label, among the sample images at or over its threshold: how many there are, how many
    have the label's own name as their best zero-shot match, and the most frequent other name (its
    count and index, -1 if none). With ``labels``, a name that holds the label's own (``doorbell`` for
    ``bell``, ``red circle`` for ``circle``) counts as the label's own, never as a rival: a bell's
    images named doorbell are still a bell's, and a word added to the vocabulary made the label it
    contains vanish. None without zero-shot matches. Counted as sparse (label, name) pairs: memory
    grows with the images over thresholds, not with the labels squared."""
    if top1 is None:
        return None
    top1 = np.asarray(top1, np.int64)
    n, L = s.shape
    if top1.shape != (n,):
        raise ValueError(f"zeroshot_top1 must hold one label index per sample image, got {top1.shape}")
    above = s >= threshold[None, :]
    rows, cols = np.nonzero(above & ((top1 >= 0) & (top1 < L))[:, None])
    pairs, count = np.unique(cols * L + top1[rows], return_counts=True)
    label, name = np.divmod(pairs, L)
    own, rival, rival_count = np.zeros(L), np.full(L, -1), np.zeros(L)
    mine = label == name
    if labels is not None and (~mine).any():  # a more specific name (doorbell) names a bell too
        mine[~mine] = _inside(labels, label[~mine], name[~mine])
    np.add.at(own, label[mine], count[mine])
    other = ~mine
    order = np.lexsort((-count[other], label[other]))  # per label, its most frequent other name first
    lab, nam, cnt = label[other][order], name[other][order], count[other][order]
    first = np.r_[True, lab[1:] != lab[:-1]] if len(lab) else np.zeros(0, bool)
    rival[lab[first]], rival_count[lab[first]] = nam[first], cnt[first]
    return above.sum(0).astype(np.float64), own, rival_count, rival


def name_words(names, labels: list[str], ratio: np.ndarray, min_ratio: float) -> list[str] | None:
    """Per label, how its images name it, in words (None without zero-shot matches)."""
    if names is None:
        return None
    m, own, other, rival = names
    return ["no sample image reaches its threshold" if not m[j] else
            f"its name is the best match of {int(own[j])} of its {int(m[j])} images, "
            + (f"'{labels[rival[j]]}' of {int(other[j])}" if rival[j] >= 0 else "no other name of any")
            + f" ({ratio[j]:.2f} {'<' if ratio[j] < min_ratio else '>='} {min_ratio:g} times as often)"
            for j in range(len(labels))]
