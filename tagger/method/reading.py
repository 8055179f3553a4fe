"""Which of a label's terms the text tower reads.

A synonym the text tower does not know (an emoji, a word of a language it never saw) gives sentences
that embed like sentences without the label. Trained as the label's positives, they pull its
classifier row toward the rest of the corpus and its text separation down, and a label the images
show well is judged absent. Each term is read along the label's own direction: the mean embedding of
the label's sentences that name it by that term, less the mean of the sentences without the label,
projected on the same difference of the term the label's sentences agree with most (which reads 1). A term read below
``min_reading`` is *unread*: the sentences that name the label by unread terms only no longer count
as the label's (:func:`unread_cells`; a sentence left naming no label is left out). Terms with fewer than ``min_sentences`` sentences are not judged.

Measured on the toy towers (20 labels, their 33 synonyms and 10 they never saw): every known synonym
reads 0.63-1.0 (toy-vit and toy-rn), every unknown one 0.08-0.25; the default 0.4 sits between.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Mapping

import numpy as np

__all__ = ["MIN_READING", "TermReading", "term_readings", "unread_cells"]

logger = logging.getLogger(__name__)

#: A term read below this share of its label's best-read term does not count as naming its label.
MIN_READING = 0.4


@dataclass(frozen=True)
class TermReading:
    """How well the text tower reads ``term`` of ``label``: ``reading`` (1 for the best-read term of
    the label) over ``sentences`` sentences naming the label by it."""

    label: str
    term: str
    sentences: int
    reading: float


def term_readings(embeddings: np.ndarray, positives: Mapping[str, np.ndarray],
                  groups: Mapping[str, Mapping[str, np.ndarray]], min_sentences: int = 8) -> list[TermReading]:
    """The reading of each term of each label in ``groups`` (label -> term -> the rows of the label's
    sentences naming it by that term), its sentences' ``embeddings`` ``(n, d)`` and ``positives``
    (label -> the rows of every sentence about it). Labels with fewer than two judged terms are left out."""
    x = np.asarray(embeddings)
    total = x.sum(0, dtype=np.float64)
    out: list[TermReading] = []
    for label, terms in groups.items():
        judged = {t: np.asarray(r, np.int64) for t, r in terms.items() if len(r) >= min_sentences}
        pos = np.asarray(positives[label], np.int64)
        if len(judged) < 2 or len(pos) >= len(x):
            continue
        neg_mean = (total - x[pos].sum(0, dtype=np.float64)) / (len(x) - len(pos))
        moved = {t: x[r].mean(0, dtype=np.float64) - neg_mean for t, r in judged.items()}
        best = _consensus(moved, {t: len(r) for t, r in judged.items()})
        scale = float(moved[best] @ moved[best])
        if scale <= 0:
            continue
        out.extend(TermReading(label, t, len(judged[t]), round(float(m @ moved[best]) / scale, 4))
                   for t, m in moved.items())
    return out


def _consensus(moved: Mapping[str, np.ndarray], counts: Mapping[str, int]) -> str:
    """The term whose direction the label's sentences agree with most: the largest sum, over every
    term's sentences, of their mean's (non-negative) projection on it. A term whose sentences move far,
    but not the way the others do, does not win by its length alone."""
    def agreement(s: str) -> float:
        norm = float(np.linalg.norm(moved[s]))
        if norm == 0:
            return 0.0
        return sum(counts[t] * max(0.0, float(moved[t] @ moved[s]) / norm) for t in moved)
    return max(moved, key=agreement)


def unread_cells(groups: Mapping[str, Mapping[str, np.ndarray]], readings: list[TermReading],
                 min_reading: float = MIN_READING) -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:
    """Each label's rows that name it by unread terms only (no read term of the label in them; sorted,
    labels without any left out) and each label's unread terms."""
    unread: dict[str, list[str]] = {}
    for r in readings:
        if r.reading < min_reading:
            unread.setdefault(r.label, []).append(r.term)
    cells: dict[str, np.ndarray] = {}
    for label, terms in unread.items():
        bad = np.unique(np.concatenate([np.asarray(groups[label][t], np.int64) for t in terms]))
        good = [np.asarray(rows, np.int64) for t, rows in groups[label].items() if t not in terms]
        rows = np.setdiff1d(bad, np.concatenate(good)) if good else bad
        if rows.size:
            cells[label] = rows
    return cells, unread
