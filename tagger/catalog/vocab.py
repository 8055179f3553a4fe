"""Labels (the vocabulary), generated text corpora and trained classifiers."""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..errors import CatalogError, ConfigError
from ..text.vocab import name_problem
from .base import CatalogBase, first_row, from_json, to_json

__all__ = ["MAX_LABEL_LENGTH", "Label", "VocabMixin", "clean_label"]

logger = logging.getLogger(__name__)
MAX_LABEL_LENGTH = 100  # characters of a label or synonym (they go into prompts and sentences)


@dataclass(frozen=True)
class Label:
    """One vocabulary entry."""

    label_id: int
    name: str
    synonyms: list[str]
    added_at: datetime
    retired_at: datetime | None
    threshold: float | None = None  # pinned by the user; None: fitted per run

    @property
    def active(self) -> bool:
        return self.retired_at is None


def clean_label(name: Any, what: str = "label") -> str:
    """A label name (or synonym) with surrounding whitespace removed; refuses non-strings, empty
    names, names over MAX_LABEL_LENGTH characters and the characters :func:`~tagger.text.vocab.name_problem`
    names (control characters such as newlines and tabs, non-characters such as U+FFFE,
    bidirectional overrides such as U+202E, and ``|``)."""
    if not isinstance(name, str):
        raise CatalogError(f"{what} names must be strings, got {type(name).__name__}: {name!r}")
    out = name.strip()
    if not out:
        raise CatalogError(f"{what} names must not be empty")
    problem = name_problem(out)
    if problem:
        raise CatalogError(f"{what} {out[:40]!r} {problem}")
    if len(out) > MAX_LABEL_LENGTH:
        raise CatalogError(f"{what} {out[:40] + '...'!r} is {len(out)} characters long; at most "
                           f"{MAX_LABEL_LENGTH} allowed")
    return out


def _case_clashes(names: Sequence[str], existing: Sequence[str]) -> None:
    """Refuse names that differ from another given or stored label only by case (``Star``, ``star``)."""
    seen = {n.casefold(): n for n in existing}
    for name in dict.fromkeys(names):
        other = seen.setdefault(name.casefold(), name)
        if other != name:
            raise CatalogError(f"label {name!r} differs from the label {other!r} only by case; use {other!r}")


def _synonym_lists(names: list[str], synonyms: Any) -> list[list[str] | None]:
    if synonyms is None:
        return [None] * len(names)
    if isinstance(synonyms, Mapping):
        lookup = {clean_label(k): v for k, v in synonyms.items()}
        raw = [lookup.get(n) for n in names]
    else:
        raw = list(synonyms)
        if len(raw) != len(names):
            raise CatalogError(f"add_labels: {len(names)} names but {len(raw)} synonym lists")
    out: list[list[str] | None] = []
    for s in raw:
        if s is None:
            out.append(None)
        elif isinstance(s, str):
            out.append([clean_label(s, "synonym")])
        else:
            out.append([clean_label(str(x), "synonym") for x in s])
    return out


class VocabMixin(CatalogBase):
    """The label vocabulary, text corpora and classifiers."""

    def add_labels(self, names: Sequence[str],
                   synonyms: Mapping[str, Sequence[str]] | Sequence[Sequence[str] | None] | None = None,
                   ) -> list[int]:
        """Add labels (or re-activate retired ones); return their label_ids in order.

        ``synonyms`` is a mapping name -> list or a list aligned with ``names``; when given for a
        known label it replaces the stored list. Names are stored exactly, minus outer spaces;
        :func:`clean_label` refuses bad names, and a name that differs from another only by case
        is refused too.
        """
        if isinstance(names, str):
            names = [names]
        clean = [clean_label(n) for n in names]
        syns = _synonym_lists(clean, synonyms)
        now = self._now()
        ids: list[int] = []
        with self._transaction("add labels") as con:
            _case_clashes(clean, [r[0] for r in con.execute("SELECT name FROM labels").fetchall()])
            for name, syn in zip(clean, syns):
                row = con.execute("SELECT label_id FROM labels WHERE name = ?", [name]).fetchone()
                if row is None:
                    label_id = int(first_row(con.execute("SELECT coalesce(max(label_id), 0) + 1 FROM labels"))[0])
                    con.execute("INSERT INTO labels (label_id, name, synonyms, added_at, retired_at) "
                                "VALUES (?, ?, ?, ?, NULL)", [label_id, name, syn or [], now])
                else:
                    label_id = int(row[0])
                    con.execute("UPDATE labels SET retired_at = NULL WHERE label_id = ?", [label_id])
                    if syn is not None:
                        con.execute("UPDATE labels SET synonyms = ? WHERE label_id = ?", [syn, label_id])
                ids.append(label_id)
        return ids

    def retire_labels(self, names: Sequence[str]) -> int:
        """Retire labels (kept for history, no longer active); return how many were active.
        Unknown names raise CatalogError and change nothing."""
        if isinstance(names, str):
            names = [names]
        clean = [clean_label(n) for n in names]
        now = self._now()
        n = 0
        with self._transaction("retire labels") as con:
            known = {r[0] for r in con.execute("SELECT name FROM labels WHERE name IN (SELECT unnest(?))",
                                               [clean]).fetchall()}
            unknown = [x for x in clean if x not in known]
            if unknown:
                raise CatalogError(f"retire labels: unknown label(s) {unknown!r}")
            for name in dict.fromkeys(clean):
                n += int(first_row(con.execute(
                    "UPDATE labels SET retired_at = ? WHERE name = ? AND retired_at IS NULL", [now, name]))[0])
        return n

    def active_labels(self) -> list[str]:
        """Names of the active labels, in the order they were added."""
        return [r[0] for r in self.query("SELECT name FROM labels WHERE retired_at IS NULL ORDER BY label_id")]

    def list_labels(self, include_retired: bool = True) -> list[Label]:
        """Every label (or only active ones) with synonyms and dates, by label_id."""
        where = "" if include_retired else " WHERE retired_at IS NULL"
        rows = self.query("SELECT label_id, name, synonyms, added_at, retired_at, threshold FROM labels"
                          f"{where} ORDER BY label_id")
        return [Label(int(i), n, list(s or []), a, r, t) for i, n, s, a, r, t in rows]

    # -- text corpora --------------------------------------------------------------------------
    def add_corpus(self, corpus_id: str, n_sentences: int, *, labels: Sequence[str] | None = None,
                   path: str | None = None, config: Mapping[str, Any] | None = None) -> None:
        """Record a generated text corpus (re-adding the same id updates it)."""
        with self._transaction("add corpus") as con:
            con.execute("""
                INSERT INTO text_corpora (corpus_id, n_sentences, labels, path, config, created_at)
                VALUES (?, ?, ?, ?, ?, ?)
                ON CONFLICT (corpus_id) DO UPDATE SET n_sentences = excluded.n_sentences,
                    labels = excluded.labels, path = excluded.path, config = excluded.config,
                    created_at = excluded.created_at""",
                        [corpus_id, int(n_sentences), list(labels) if labels is not None else None,
                         path, to_json(config), self._now()])

    def corpora(self) -> list[dict[str, Any]]:
        """Every text corpus as a dict, oldest first."""
        rows = self.query("SELECT corpus_id, n_sentences, labels, path, config, created_at "
                          "FROM text_corpora ORDER BY created_at, corpus_id")
        keys = ("corpus_id", "n_sentences", "labels", "path", "config", "created_at")
        return [dict(zip(keys, r[:4] + (from_json(r[4]), r[5]))) for r in rows]

    # -- classifiers ---------------------------------------------------------------------------
    def add_classifier(self, classifier_id: str, *, model_id: str, labels: Sequence[str],
                       corpus_id: str | None = None, config: Mapping[str, Any] | None = None,
                       metrics: Mapping[str, Any] | None = None, path: str | None = None) -> None:
        """Record a trained classifier (re-adding the same id updates it and makes it the newest, as
        training it again means to use it)."""
        with self._transaction("add classifier") as con:
            con.execute("""
                INSERT INTO classifiers (classifier_id, corpus_id, model_id, labels, config, metrics,
                                         path, created_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (classifier_id) DO UPDATE SET corpus_id = excluded.corpus_id,
                    model_id = excluded.model_id, labels = excluded.labels, config = excluded.config,
                    metrics = excluded.metrics, path = excluded.path, created_at = excluded.created_at""",
                        [classifier_id, corpus_id, model_id, list(labels), to_json(config),
                         to_json(metrics), path, self._now()])

    def classifiers(self) -> list[dict[str, Any]]:
        """Every classifier as a dict, oldest first."""
        rows = self.query("SELECT classifier_id, corpus_id, model_id, labels, config, metrics, path, "
                          "created_at FROM classifiers ORDER BY created_at, classifier_id")
        keys = ("classifier_id", "corpus_id", "model_id", "labels", "config", "metrics", "path", "created_at")
        return [dict(zip(keys, r[:4] + (from_json(r[4]), from_json(r[5])) + r[6:])) for r in rows]

    def get_classifier(self, classifier_id: str) -> dict[str, Any] | None:
        """One classifier by id, or None."""
        return next((c for c in self.classifiers() if c["classifier_id"] == classifier_id), None)

    def latest_classifier(self, model_id: str) -> dict[str, Any]:
        """The newest classifier trained for ``model_id`` (ConfigError when there is none)."""
        found = [c for c in self.classifiers() if c["model_id"] == model_id]
        if not found:
            raise ConfigError(f"no classifier for {model_id}: run train first")
        return found[-1]
