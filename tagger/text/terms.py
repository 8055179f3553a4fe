"""The corpus a classifier trains on: without the sentences its text tower cannot read.

Each label's sentences are grouped by the term (its name or a synonym) they name it by; a term the
text tower does not read (:mod:`tagger.method.reading`: its sentences embed like sentences without
the label) has its sentences left out, unless they also name the label by a term it reads. The
corpus itself (its file, its id) is unchanged: what is left out depends on the text tower.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Collection

import numpy as np

from ..method.reading import MIN_READING, TermReading, term_readings, unread_rows
from .corpus import TextCorpus
from .vocab import _found, _spaced, _term_pattern

__all__ = ["Readable", "readable", "term_groups"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Readable:
    """``corpus`` and its ``embeddings`` with the unread sentences left out; ``unread`` each label's
    unread terms, ``left_out`` how many sentences went."""

    corpus: TextCorpus
    embeddings: np.ndarray
    unread: dict[str, list[str]] = field(default_factory=dict)
    left_out: int = 0
    readings: list[TermReading] = field(default_factory=list)

    def summary(self) -> dict[str, object]:
        """What a training reports: the unread terms by label and the sentences left out."""
        return {"unread_synonyms": self.unread, "sentences_left_out": self.left_out} if self.unread else {}


def term_groups(corpus: TextCorpus, labels: Collection[str] | None = None
                ) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """For each label of ``labels`` (default: all) that has synonyms: the rows of its sentences naming
    it by each term (name first), and the rows of all its sentences."""
    synonyms = corpus.synonyms
    wanted = [n for n in corpus.class_names if synonyms.get(n) and (labels is None or n in labels)]
    if not wanted:
        return {}, {}
    m = corpus.label_matrix.tocsc()
    column = {n: j for j, n in enumerate(corpus.class_names)}
    spaced: dict[int, str] = {}
    groups: dict[str, dict[str, np.ndarray]] = {}
    positives: dict[str, np.ndarray] = {}
    for label in wanted:
        j = column[label]
        rows = np.asarray(m.indices[m.indptr[j]:m.indptr[j + 1]], np.int64)
        positives[label] = rows
        texts = [spaced.setdefault(int(i), _spaced(corpus.sentences[i])) for i in rows]
        groups[label] = {}
        for term in dict.fromkeys((label, *synonyms[label])):
            pattern = _term_pattern(term)
            groups[label][term] = rows[np.fromiter((_found(pattern, t) for t in texts), bool, len(rows))]
    return groups, positives


def readable(corpus: TextCorpus, embeddings: np.ndarray, min_reading: float = MIN_READING,
             labels: Collection[str] | None = None) -> Readable:
    """``corpus`` (row-aligned ``embeddings``) without the sentences that name one of ``labels``
    (default: all) by terms the text tower does not read only. A warning names each unread term."""
    groups, positives = term_groups(corpus, labels)
    readings = term_readings(embeddings, positives, groups)
    rows, unread = unread_rows(groups, readings, min_reading)
    _warn(unread, readings, rows, positives, len(corpus))
    if not len(rows):
        return Readable(corpus, embeddings, {}, 0, readings)
    keep = np.setdiff1d(np.arange(len(corpus)), rows)
    return Readable(corpus.take(keep), np.asarray(embeddings)[keep], unread, len(rows), readings)


#: Labels named one by one in the warning; the rest are counted (the classifier's metrics name all).
WARN_LABELS = 10


def _warn(unread: dict[str, list[str]], readings: list[TermReading], rows: np.ndarray,
          positives: dict[str, np.ndarray], n: int) -> None:
    if not unread:
        return
    gone = np.zeros(n, bool)
    gone[rows] = True
    read = {(r.label, r.term): r.reading for r in readings}
    for label, terms in list(unread.items())[:WARN_LABELS]:
        logger.warning("label %r: the text model does not read %s (its sentences embed like sentences without the "
                       "label; read %s against 1 for its best term); %d sentence(s) naming the label only so are "
                       "left out of training", label, ", ".join(repr(t) for t in terms),
                       ", ".join(f"{read[(label, t)]:.2f}" for t in terms), int(gone[positives[label]].sum()))
    if len(unread) > WARN_LABELS:
        logger.warning("%d more label(s) have synonyms the text model does not read (the classifier's metrics "
                       "name them all); %d sentence(s) left out of training in all", len(unread) - WARN_LABELS,
                       len(rows))
