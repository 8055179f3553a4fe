"""The corpus a classifier trains on, as its text tower reads it.

Each label's sentences are grouped by the term (its name or a synonym) they name it by; a term the
text tower does not read (:mod:`tagger.method.reading`: its sentences embed like sentences without
the label) no longer counts: a sentence naming the label by such terms only stops being the label's
(it stays for the other labels it names; one left naming none is left out). Labels
the tower reads as one thing (:mod:`tagger.method.alike`: ``disc`` beside ``circle``) are each
trained on the other's sentences too (:func:`trainable`). The corpus itself (its file, its id) is
unchanged: what is left out or shared depends on the text tower.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Callable, Collection

import numpy as np
import scipy.sparse as sp

from ..method.alike import MIN_ALIKE, alike_groups, alike_pairs, label_directions
from ..method.hierarchy import expand_label_matrix, is_ancestor
from ..method.names import fold
from ..method.reading import MIN_READING, TermReading, term_readings, unread_cells
from .corpus import TextCorpus, corpus_parents
from .vocab import _found, _pieces, _singulars, _spaced, _term_pattern

if TYPE_CHECKING:
    from ..method.classifier import TextClassifier

__all__ = ["Readable", "readable", "term_groups", "trainable"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Readable:
    """``corpus`` and its ``embeddings`` as the tower reads them; ``unread`` each label's unread terms,
    ``unread_sentences`` how many (sentence, label) marks they cleared, ``left_out`` how many sentences
    went (left naming no label)."""

    corpus: TextCorpus
    embeddings: np.ndarray
    unread: dict[str, list[str]] = field(default_factory=dict)
    left_out: int = 0
    readings: list[TermReading] = field(default_factory=list)
    alike: list[tuple[str, str, float]] = field(default_factory=list)
    groups: dict[str, str] = field(default_factory=dict)
    unread_sentences: int = 0

    def summary(self) -> dict[str, object]:
        """What a training reports: the unread terms by label, the sentences left out, the alike pairs."""
        out: dict[str, object] = {"unread_synonyms": self.unread, "unread_sentences": self.unread_sentences,
                                  "sentences_left_out": self.left_out} if self.unread else {}
        return {**out, "alike_labels": [list(p) for p in self.alike]} if self.alike else out

    def marked(self, classifier: "TextClassifier") -> "TextClassifier":
        """``classifier`` trained on this corpus, with what was left out or shared in its metrics and its
        labels' alike groups in its anchors."""
        anchors = classifier.anchors
        if self.groups and anchors is not None:
            anchors = anchors.with_alike(classifier.labels, self.groups)
        return replace(classifier, metrics={**classifier.metrics, **self.summary()}, anchors=anchors)


def term_groups(corpus: TextCorpus, labels: Collection[str] | None = None
                ) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """For each label of ``labels`` (default: all) that has synonyms: the rows of its sentences naming
    it by each term (name first), and the rows of all its sentences."""
    synonyms = corpus.synonyms
    asked = None if labels is None else set(labels)
    wanted = [n for n in corpus.class_names if synonyms.get(n) and (asked is None or n in asked)]
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
        for i in rows.tolist():
            if i not in spaced:
                spaced[i] = _spaced(corpus.sentences[i])
        texts = [spaced[i] for i in rows.tolist()]
        groups[label] = {}
        for term in dict.fromkeys((label, *synonyms[label])):
            pattern = _term_pattern(term)
            groups[label][term] = rows[np.fromiter((_found(pattern, t) for t in texts), bool, len(rows))]
    return groups, positives


def readable(corpus: TextCorpus, embeddings: np.ndarray, min_reading: float = MIN_READING,
             labels: Collection[str] | None = None) -> Readable:
    """``corpus`` (row-aligned ``embeddings``) where a sentence naming one of ``labels`` (default: all)
    by terms the text tower does not read only no longer counts as that label's; a sentence left naming
    no label is left out. A warning names each unread term."""
    groups, positives = term_groups(corpus, labels)
    readings = term_readings(embeddings, positives, groups)
    cells, unread = unread_cells(groups, readings, min_reading)
    if not cells:  # every sentence of an unread term names its label by a read one too: said, nothing changes
        _warn(unread, readings, cells, 0)
        return Readable(corpus, embeddings, readings=readings)
    matrix, emptied = _cleared(corpus, cells)
    _warn(unread, readings, cells, int(emptied.sum()))
    keep = np.flatnonzero(~emptied)
    return Readable(replace(corpus, label_matrix=matrix).take(keep), np.asarray(embeddings)[keep], unread,
                    int(emptied.sum()), readings, unread_sentences=sum(len(r) for r in cells.values()))


def _cleared(corpus: TextCorpus, cells: dict[str, np.ndarray]) -> tuple[sp.csr_array, np.ndarray]:
    """The label matrix without the marks ``cells`` (label -> rows), and which rows it leaves naming no
    class (they named one before)."""
    m = sp.coo_array(corpus.label_matrix)
    width = m.shape[1]
    column = {n: j for j, n in enumerate(corpus.class_names)}
    bad = np.concatenate([np.asarray(rows, np.int64) * width + column[label] for label, rows in cells.items()])
    named = m.data != 0
    gone = np.isin(m.row.astype(np.int64) * width + m.col, bad) | ~named
    rest = ~gone
    matrix = sp.csr_array((m.data[rest], (m.row[rest], m.col[rest])), shape=m.shape)
    before = np.bincount(m.row[named], minlength=m.shape[0]) > 0
    after = np.bincount(m.row[rest], minlength=m.shape[0]) > 0
    return matrix, before & ~after


#: Labels named one by one in the warning; the rest are counted (the classifier's metrics name all).
WARN_LABELS = 10


def _warn(unread: dict[str, list[str]], readings: list[TermReading], cells: dict[str, np.ndarray],
          left_out: int) -> None:
    read = {(r.label, r.term): r.reading for r in readings}
    for label, terms in list(unread.items())[:WARN_LABELS]:
        logger.warning("label %r: the text model does not read %s (its sentences embed like sentences without the "
                       "label; read %s against 1 for its best term); %d sentence(s) naming the label only so no "
                       "longer count as its", label, ", ".join(repr(t) for t in terms),
                       ", ".join(f"{read[(label, t)]:.2f}" for t in terms), len(cells.get(label, ())))
    if len(unread) > WARN_LABELS:
        logger.warning("%d more label(s) have synonyms the text model does not read (the classifier's metrics "
                       "name them all)", len(unread) - WARN_LABELS)
    if left_out:
        logger.warning("%d sentence(s) named no other label and are left out of training", left_out)


def trainable(corpus: TextCorpus, embeddings: np.ndarray, min_reading: float = MIN_READING,
              min_alike: float = MIN_ALIKE, labels: Collection[str] | None = None) -> Readable:
    """:func:`readable`, then labels found alike (one of each pair among ``labels``, default all; never
    a background noun, a label whose name holds another's, nor two a hierarchy links) given each
    other's sentences as positives. The hierarchy's ancestors are set after the unread marks are
    cleared (:meth:`TextCorpus.targets`; rows given with them already set stay so): a sentence
    naming a label by an unread term only does not make it about the label's ancestors either."""
    kept = readable(corpus, embeddings, min_reading, labels)
    if corpus_parents(kept.corpus.config):
        kept = replace(kept, corpus=replace(kept.corpus, label_matrix=kept.corpus.targets()))
    c = kept.corpus
    names = list(c.class_names)
    tagged = set(c.labels)
    directions, _ = label_directions(kept.embeddings, c.label_matrix)
    directions[[j for j, n in enumerate(names) if n not in tagged]] = 0.0
    asked = None if labels is None else set(labels)
    of = [j for j, n in enumerate(names) if n in tagged and (asked is None or n in asked)]
    parents = corpus_parents(c.config)
    refines = _refiner(tagged)

    def apart(a: str, b: str) -> bool:
        return refines(a) or refines(b) or is_ancestor(parents, a, b) or is_ancestor(parents, b, a)

    pairs = alike_pairs(directions, names, of, min_alike, apart) if of else []
    groups = alike_groups(pairs, names, apart)
    pairs = [p for p in pairs if p[0] in groups and groups[p[0]] == groups.get(p[1])]
    if not pairs:
        return kept
    for a, b, cos in pairs[:WARN_LABELS]:
        logger.warning("labels %r and %r read as one thing to the text model (%.2f): each is trained on the "
                       "other's sentences too and both tag the same images; if they are one thing, make %r a "
                       "synonym of %r", a, b, cos, b, a)
    if len(pairs) > WARN_LABELS:
        logger.warning("%d more pair(s) of labels read as one thing (the classifier's metrics name them all)",
                       len(pairs) - WARN_LABELS)
    return replace(kept, corpus=replace(c, label_matrix=_shared(c, groups, parents)), alike=pairs, groups=groups)


def _refiner(labels: Collection[str]) -> Callable[[str], bool]:
    """Whether a label's name holds another label's words (`red star` beside `Stars`, a plural for its
    singular): it is decided beside that label, never alike with anything. Words as the vocabulary's
    validator reads them; memoised."""
    words = {n: tuple(_pieces(fold(n))) for n in labels}
    starting: dict[str, list[tuple[str, ...]]] = {}  # a singular form of a first word -> names starting so
    for w in set(words.values()):
        for form in _singulars(w[0]):
            starting.setdefault(form, []).append(w)
    refining: dict[str, bool] = {}

    def refines(a: str) -> bool:
        if a not in refining:
            w = words[a]
            refining[a] = any(len(o) < len(w) and _same_words(w[i:i + len(o)], o)
                              for i in range(len(w)) for form in _singulars(w[i]) for o in starting.get(form, ()))
        return refining[a]
    return refines


def _shared(c: TextCorpus, groups: dict[str, str], parents) -> sp.csr_array:
    """``c``'s label rows with each alike group's labels set wherever one of them is (and, through a
    hierarchy, their ancestors)."""
    names = list(c.class_names)
    column = {n: j for j, n in enumerate(names)}
    members: dict[str, list[int]] = {}
    for x, first in groups.items():
        members.setdefault(first, []).append(column[x])
    rows, cols = [np.arange(len(names))], [np.arange(len(names))]
    for group in members.values():
        g = np.asarray(group, np.int64)
        rows.append(np.repeat(g, len(g)))
        cols.append(np.tile(g, len(g)))
    r, k = np.concatenate(rows), np.concatenate(cols)
    link = sp.csr_array((np.ones(len(r), np.int32), (r, k)), shape=(len(names), len(names)))
    shared = sp.csr_array((c.label_matrix.astype(np.int32) @ link) > 0, dtype=np.uint8)
    if parents:  # a label given its alike's sentences gives them to its ancestors too
        shared = sp.csr_array(expand_label_matrix(shared, c.class_names, parents))
    return shared


def _same_words(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """The same words, a plural for its singular (``red stars`` and ``red star``)."""
    return len(a) == len(b) and all(x == y or _singulars(x) & _singulars(y) for x, y in zip(a, b))
