"""Labels (the vocabulary), generated text corpora and trained classifiers."""
from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..errors import CatalogError, ConfigError
from ..text.vocab import TermClash, fold, name_problem, same_term, term_clashes
from .base import CatalogBase, first_row, from_json, to_json

__all__ = ["MAX_LABEL_LENGTH", "Label", "VocabMixin", "clean_label", "tidy_synonyms"]

logger = logging.getLogger(__name__)
MAX_LABEL_LENGTH = 100  # characters of a label or synonym (they go into prompts and sentences)
_NO_WORD = re.compile(r"[\s\-]*")  # what the text validator splits words on: a name of only these has none
Fetch = Callable[[str, list[Any]], list[tuple]]  # runs one SQL statement with its parameters, returns its rows


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
    if _NO_WORD.fullmatch(out):
        raise CatalogError(f"{what} {out[:40]!r} has no word (only spaces and hyphens): no sentence could name it")
    if len(out) > MAX_LABEL_LENGTH:
        raise CatalogError(f"{what} {out[:40] + '...'!r} is {len(out)} characters long; at most "
                           f"{MAX_LABEL_LENGTH} allowed")
    return out


def _case_clashes(names: Sequence[str], existing: Sequence[str], retired: Sequence[str] = ()) -> None:
    """Refuse names that differ from another given or stored label only by case (``Star``, ``star``);
    a retired label keeps its name, so the message says how to bring it back."""
    seen = {fold(n): n for n in existing}
    gone = set(retired)
    for name in dict.fromkeys(names):
        other = seen.setdefault(fold(name), name)
        if other == name:
            continue
        if other in gone:
            raise CatalogError(f"label {name!r} differs from the retired label {other!r} only by case; a retired "
                               f"label keeps its name: use {other!r} (`tagger labels add` re-activates it)")
        raise CatalogError(f"label {name!r} differs from the label {other!r} only by case; use {other!r}")


def tidy_synonyms(name: str, synonyms: Sequence[str]) -> list[str]:
    """``synonyms`` of label ``name`` without repeats and without the label's own name (in any case or
    plural): each names what the label or an earlier synonym already names."""
    out: list[str] = []
    for syn in synonyms:
        if same_term(syn, name) or any(same_term(syn, kept) for kept in out):
            logger.info("label %r: synonym %r dropped (it repeats the name or another synonym)", name, syn)
            continue
        out.append(syn)
    return out


def _clash_error(clashes: list[TermClash], edits: Mapping[str, list[str] | None]) -> CatalogError:
    """One error line for the term clashes of an edit (the first described, the other pairs counted);
    an edited label whose synonyms are ``None`` kept its stored ones (a retired label added again)."""
    first = clashes[0]
    more = len({frozenset({(c.label, c.term), (c.other, c.other_term)}) for c in clashes}) - 1
    hint = ""
    if edits.get(first.label, ()) is None and first.term != first.label:  # its own stored synonym
        hint = (f"; drop it from {first.label!r} first "
                f"(`tagger labels set {first.label!r} --no-synonym {first.term!r}`)")
    elif first.other_term != first.other and first.other not in edits:  # a stored label's synonym: movable
        hint = (f"; to move it, first remove it from {first.other!r} "
                f"(`tagger labels set {first.other!r} --no-synonym {first.other_term!r}`)")
    return CatalogError(first.describe() + hint + (f" (and {more} more clash(es))" if more else ""))


def _refuse_clashes(fetch: Fetch, edits: Mapping[str, list[str] | None], strict: bool = True) -> None:
    """CatalogError when a name or synonym of an edited label (made active, synonyms ``None``: kept)
    names the same thing as another active label's, in the vocabulary as it would be after the edit;
    not ``strict``: a warning instead."""
    rows = fetch("SELECT name, synonyms, retired_at IS NULL FROM labels ORDER BY label_id", [])
    stored = {n: list(s or []) for n, s, _ in rows}
    terms = {n: stored[n] for n, _, active in rows if active}
    for name, syns in edits.items():
        terms[name] = list(syns) if syns is not None else stored.get(name, [])
    clashes = [c for c in term_clashes(terms, list(edits)) if c.exact]
    if clashes and strict:
        raise _clash_error(clashes, edits)
    if clashes:
        logger.warning("%s", _clash_error(clashes, edits))


def _check_add(fetch: Fetch, names: list[str], syns: list[list[str] | None], strict: bool = True) -> None:
    """Refuse (CatalogError) adding ``names`` with ``syns``: case-only twins, and clashing terms
    (only warned of when not ``strict``)."""
    rows = fetch("SELECT name, retired_at IS NOT NULL FROM labels", [])
    _case_clashes(names, [r[0] for r in rows], [r[0] for r in rows if r[1]])
    edits: dict[str, list[str] | None] = {}
    for name, syn in zip(names, syns):
        edits[name] = syn if syn is not None else edits.get(name)
    _refuse_clashes(fetch, edits, strict)


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
    for name, s in zip(names, raw):
        if s is None:
            out.append(None)
        elif isinstance(s, str):
            out.append(tidy_synonyms(name, [clean_label(s, "synonym")]))
        else:
            out.append(tidy_synonyms(name, [clean_label(str(x), "synonym") for x in s]))
    return out


def _apply_synonym_edit(label: str, before: list[str], add: list[str], remove: list[str]) -> list[str]:
    """``before`` less ``remove`` (matched as the validator does: any case, plural) plus ``add``."""
    absent = [s for s in remove if not any(same_term(s, have) for have in before)]
    if absent:
        raise CatalogError(f"label {label!r} has no synonym(s) {absent!r} (it has {before or 'none'})")
    kept = [have for have in before if not any(same_term(s, have) for s in remove)]
    return tidy_synonyms(label, kept + add)


def _unknown(fetch: Fetch, names: list[str]) -> str:
    """``unknown label(s) [...]``, naming the stored label each differs from only by case."""
    stored = {fold(n): n for (n,) in fetch("SELECT name FROM labels", [])}
    near = [f"{n!r} is {stored[fold(n)]!r}" for n in names if fold(n) in stored]
    return f"unknown label(s) {names!r}" + (f" (names are case-sensitive: {', '.join(near)})" if near else "")


class VocabMixin(CatalogBase):
    """The label vocabulary, text corpora and classifiers."""

    def add_labels(self, names: Sequence[str],
                   synonyms: Mapping[str, Sequence[str]] | Sequence[Sequence[str] | None] | None = None,
                   *, strict: bool = False) -> list[int]:
        """Add labels (or re-activate retired ones); return their label_ids in order.

        ``synonyms`` is a mapping name -> list or a list aligned with ``names``; when given for a
        known label it replaces the stored list (repeats and the label's own name dropped). Names
        are stored exactly, minus outer spaces; :func:`clean_label` refuses bad names, and a name
        that differs from another only by case is refused too. A name or synonym that is another
        active label's, case, spaces and hyphens aside, is refused when ``strict`` (CatalogError;
        nothing is written: what ``tagger labels`` does), else logged as a warning (a script's list).
        A singular and its plural (``glass``, ``glasses``) may be two labels: :meth:`term_clashes`.
        """
        clean, syns = self._clean_additions(names, synonyms)
        now = self._now()
        ids: list[int] = []
        with self._transaction("add labels") as con:
            _check_add(lambda sql, p: con.execute(sql, p).fetchall(), clean, syns, strict)
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

    @staticmethod
    def _clean_additions(names: Sequence[str], synonyms: Any) -> tuple[list[str], list[list[str] | None]]:
        clean = [clean_label(n) for n in ([names] if isinstance(names, str) else names)]
        return clean, _synonym_lists(clean, synonyms)

    def check_labels(self, names: Sequence[str],
                     synonyms: Mapping[str, Sequence[str]] | Sequence[Sequence[str] | None] | None = None) -> None:
        """Refuse (CatalogError) what :meth:`add_labels` would refuse; writes nothing."""
        clean, syns = self._clean_additions(names, synonyms)
        _check_add(lambda sql, p: self.query(sql, p), clean, syns)

    def term_clashes(self, names: Sequence[str]) -> list[TermClash]:
        """Where a name or synonym of the active labels ``names`` names the same thing as another
        active label's: only singulars and plurals of each other (``glass``, ``glasses``) once an edit
        has passed, since the same words are refused."""
        rows = self.query("SELECT name, synonyms FROM labels WHERE retired_at IS NULL ORDER BY label_id")
        terms = {n: list(s or []) for n, s in rows}
        return term_clashes(terms, [n for n in dict.fromkeys(x.strip() for x in names) if n in terms])

    def edit_synonyms(self, name: str, add: Sequence[str] = (), remove: Sequence[str] = (), *,
                      dry_run: bool = False) -> tuple[list[str], list[str]]:
        """Add synonyms to label ``name`` and remove others; return its synonyms before and after.

        Removing a synonym the label lacks, or adding one that is another active label's name or
        synonym (case, spaces and hyphens aside), raises CatalogError and changes nothing; adding
        one it already has (or a plural of it) changes nothing. ``dry_run``: check only."""
        label = clean_label(name)
        plus = [clean_label(s, "synonym") for s in add]
        minus = [clean_label(s, "synonym") for s in remove]
        with self._transaction("edit synonyms") as con:
            fetch: Fetch = lambda sql, p: con.execute(sql, p).fetchall()  # noqa: E731
            row = con.execute("SELECT synonyms, retired_at IS NULL FROM labels WHERE name = ?", [label]).fetchone()
            if row is None:
                raise CatalogError(_unknown(fetch, [label]))
            before = list(row[0] or [])
            after = _apply_synonym_edit(label, before, plus, minus)
            if row[1]:
                _refuse_clashes(fetch, {label: after})
            if not dry_run and after != before:
                con.execute("UPDATE labels SET synonyms = ? WHERE name = ?", [after, label])
        return before, after

    def retire_labels(self, names: Sequence[str]) -> int:
        """Retire labels (kept for history, no longer active); return how many were active.
        Unknown names raise CatalogError and change nothing."""
        if isinstance(names, str):
            names = [names]
        clean = [str(n).strip() for n in names]  # any stored name, even one refused today (`.`), can be retired
        now = self._now()
        n = 0
        with self._transaction("retire labels") as con:
            known = {r[0] for r in con.execute("SELECT name FROM labels WHERE name IN (SELECT unnest(?))",
                                               [clean]).fetchall()}
            unknown = [x for x in clean if x not in known]
            if unknown:
                raise CatalogError("retire labels: " + _unknown(lambda sql, p: con.execute(sql, p).fetchall(), unknown))
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

    def classifier_corpus(self, classifier_id: str | None) -> dict[str, Any] | None:
        """The corpus a classifier learnt from, as :meth:`corpora` gives it (None: no such classifier,
        or its corpus is not recorded)."""
        clf = self.get_classifier(classifier_id) if classifier_id else None
        return next((c for c in self.corpora() if clf and c["corpus_id"] == clf.get("corpus_id")), None)

    def latest_classifier(self, model_id: str) -> dict[str, Any]:
        """The newest classifier trained for ``model_id`` (ConfigError when there is none)."""
        found = [c for c in self.classifiers() if c["model_id"] == model_id]
        if not found:
            raise ConfigError(f"no classifier for {model_id}: run train first")
        return found[-1]
