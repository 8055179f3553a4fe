"""A person's decisions over a score matrix's columns: what the hierarchy raises ancestors from.

A tag run decides each label from its scores, then raises every label's ancestors (an image positive
for ``circle`` is a ``shape``). Where a person accepted or rejected a label on an image, that decision
stands in for the model's before the ancestors are raised, so an accepted child makes its parents
positive and a rejected one no longer does (the parent keeps its own decision and its other children's).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["Reviewed", "lifted_images", "reviewed_columns", "with_review"]

Reviewed = tuple[np.ndarray, np.ndarray, np.ndarray]  # image ids, label columns, accepted


def reviewed_columns(pairs: Sequence[tuple[int, str, bool]], labels: Sequence[str]) -> Reviewed | None:
    """``(image_id, label, accepted)`` decisions as arrays over the columns ``labels`` (others left out);
    None when none falls on them."""
    col = {name: j for j, name in enumerate(labels)}
    kept = [(i, col[lab], a) for i, lab, a in pairs if lab in col]
    if not kept:
        return None
    ids, cols, accept = zip(*kept)
    return np.asarray(ids, np.int64), np.asarray(cols, np.int64), np.asarray(accept, bool)


def with_review(image_ids: np.ndarray, positive: np.ndarray, reviewed: Reviewed) -> np.ndarray:
    """``positive`` [rows of ``image_ids``, columns] with the decisions on these images in place of the
    model's (a copy; ``positive`` itself when none of them is here)."""
    row = {int(i): r for r, i in enumerate(np.asarray(image_ids).tolist())}
    hits = [(row[int(i)], int(c), bool(a)) for i, c, a in zip(*reviewed) if int(i) in row]
    if not hits:
        return positive
    out = np.array(positive, bool, copy=True)
    r, c, a = (np.asarray(x) for x in zip(*hits))
    out[r, c] = a
    return out


def lifted_images(pairs: Sequence[tuple[int, str, bool]], parents: Mapping[str, Sequence[str]]) -> list[int]:
    """The images whose ancestors a decision stands in for: those with a decision on a label that has
    parents (sorted ids)."""
    return sorted({int(i) for i, lab, _ in pairs if parents.get(lab)})
