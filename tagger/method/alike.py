"""Labels the text tower reads as one thing.

A label added beside one that names the same thing (``disc`` beside ``circle``, ``cottage`` beside
``house``) without being made its synonym splits the same sentences in two: the classifier is asked
to tell apart what the text tower cannot, one of the two loses its text separation, and its images'
best zero-shot name is the other's, so it was judged absent. Each label's *direction* is the mean
embedding of its sentences less the mean of the others, made unit, less the mean of every label's
such direction (what all share: the words the tower does not know move their sentences alike, so 200
ordinary nouns the toy tower never saw read 0.83 to one another before, 0.02 after). Two labels whose
directions' cosine reaches ``min_cos`` are *alike*: each is trained on the other's sentences too, both
tag the same images, and their names corroborate each other. Pairs a name holds (``red circle`` and
``circle``) or a hierarchy links are never alike (the caller says which, ``apart``).

Measured on the toy towers (20 labels, with ``disc``, ``crescent`` and ``cottage`` added as labels of
their own): the added ones read 0.985-0.996 against the label they name again, the closest two
distinct labels (hexagon, pentagon) 0.72; with 200 unknown nouns added, no two nouns read above 0.83
and no noun above 0.71 against a label (median 0.02). The default 0.9 sits above them all.
"""
from __future__ import annotations

import logging
from typing import Callable, Sequence

import numpy as np
import scipy.sparse as sp

__all__ = ["MIN_ALIKE", "alike_groups", "alike_pairs", "label_directions"]

logger = logging.getLogger(__name__)

#: Two labels whose directions' cosine reaches this are read as one thing.
MIN_ALIKE = 0.9
#: A label with fewer sentences than this has no direction worth comparing.
MIN_SENTENCES = 8


def label_directions(embeddings: np.ndarray, targets: sp.csr_array | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each label's unit direction ``(L, d)`` (its sentences' mean less the others', made unit, less the
    mean of all labels' such directions; 0 for a label with fewer than :data:`MIN_SENTENCES` sentences,
    or all of them) and its sentence count ``(L,)``."""
    x = np.asarray(embeddings, np.float32)
    y = sp.csr_array(targets, dtype=np.float32)
    counts = np.asarray(y.sum(axis=0)).ravel()
    sums = np.asarray(y.T @ x, np.float64)
    total = x.sum(0, dtype=np.float64)
    n = len(x)
    ok = (counts >= MIN_SENTENCES) & (counts < n)
    with np.errstate(invalid="ignore", divide="ignore"):
        d = sums / counts[:, None] - (total - sums) / (n - counts)[:, None]
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        ok &= np.isfinite(d).all(1)
        if ok.any():  # what every label's direction shares goes (words the tower does not know move alike)
            d = d - d[ok].mean(0)
            d /= np.linalg.norm(d, axis=1, keepdims=True)
    return np.where(ok[:, None] & np.isfinite(d), d, 0.0).astype(np.float32), counts


def alike_pairs(directions: np.ndarray, names: Sequence[str], of: Sequence[int] | None = None,
                min_cos: float = MIN_ALIKE, apart: Callable[[str, str], bool] | None = None,
                block: int = 2048) -> list[tuple[str, str, float]]:
    """The pairs of labels whose directions' cosine reaches ``min_cos`` (at least one of them among the
    indices ``of``; default every label), each once, the earlier label first, unless ``apart``."""
    u = np.asarray(directions, np.float32)
    rows = np.arange(len(u)) if of is None else np.unique(np.asarray(of, np.int64))
    found: dict[tuple[int, int], float] = {}
    for k in range(0, len(rows), block):
        r = rows[k:k + block]
        cos = u[r] @ u.T
        cos[np.arange(len(r)), r] = -1.0  # not itself
        i, j = np.nonzero(cos >= min_cos)
        for a, b, c in zip(r[i].tolist(), j.tolist(), cos[i, j].tolist()):
            found[(min(a, b), max(a, b))] = c
    return [(names[a], names[b], round(c, 3)) for (a, b), c in sorted(found.items())
            if apart is None or not apart(names[a], names[b])]


def alike_groups(pairs: Sequence[tuple[str, str, float]], order: Sequence[str],
                 apart: Callable[[str, str], bool] | None = None) -> dict[str, str]:
    """Each label of an alike pair -> its group's first label in ``order``: pairs chain into groups,
    closest first, but never into one holding two labels ``apart`` (``disc`` alike ``red circle`` does
    not bring ``red circle`` into ``circle``'s group)."""
    rank = {n: i for i, n in enumerate(order)}
    members: dict[str, list[str]] = {}
    root: dict[str, str] = {}
    for a, b, _ in sorted(pairs, key=lambda p: -p[2]):
        ga, gb = members.setdefault(root.setdefault(a, a), [a]), members.setdefault(root.setdefault(b, b), [b])
        if ga is gb or (apart is not None and any(apart(x, y) for x in ga for y in gb)):
            continue
        keep, gone = (root[a], root[b]) if rank.get(root[a], 1 << 62) <= rank.get(root[b], 1 << 62) else (root[b], root[a])
        members[keep].extend(members.pop(gone))
        for x in members[keep]:
            root[x] = keep
    return {x: first for first, group in members.items() if len(group) > 1 for x in group}
