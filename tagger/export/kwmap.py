"""Map a person's keywords to the workspace's labels, and write the labelled images.

A keyword maps through, in order: the user's mapping file (CSV ``keyword,label``; the keyword a flat
one or a ``|`` path, matched exactly then case-folded; rows of one keyword give it each of their
labels; an empty label or ``-`` ignores it, unless another row gives it a label), the label names,
then label names and synonyms case-folded, then as the vocabulary compares names (spaces, hyphens
and underscores aside, singular or plural: ``Lightning-Bolts`` is ``lightning bolt``). Every name on
a hierarchical path is tried (``animals|dog`` gives ``dog``, and ``animals`` where it is a label),
and a mapped label brings its ancestors in the label hierarchy. A flat keyword that names a step of
one of the image's paths is that path's (Lightroom, digiKam and darktable write a path's names flat
as well): the path decides it, so a row that ignores or redirects ``sounds|bell`` covers the flat
``Bell`` written with it. The output is a CSV of ``uri,label,decision`` rows (decision ``accept``),
which ``tagger tag --calibrate-with``, ``tagger train --annotations`` and ``tagger review import``
all read.
"""
from __future__ import annotations

import csv
import io
import logging
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from ..atomic import atomic_open
from ..errors import ConfigError
from ..targets import os_reason
from ..textfile import read_utf8_text
from ..text.vocab import term_keys
from .keywords import Keywords
from .xmp import fold_keyword

__all__ = ["KeywordMap", "import_keywords", "read_mapping", "write_labelled"]

logger = logging.getLogger(__name__)

IGNORE = ""


def read_mapping(path: str | Path, vocabulary: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """keyword -> its labels (empty: ignored) of a mapping file, a keyword on several rows getting each
    row's label; ConfigError for an unreadable file, a malformed row or a label not in ``vocabulary``."""
    p = Path(path)
    text = read_utf8_text(p, "mapping file")
    try:
        rows = [r for r in csv.reader(io.StringIO(text)) if r and any(c.strip() for c in r)]
    except csv.Error as e:  # e.g. a field over the csv module's limit (128 KiB)
        raise ConfigError(f"cannot read mapping file {p}: {e}") from None
    if rows and [c.strip().lower() for c in rows[0]][:2] == ["keyword", "label"]:
        rows = rows[1:]
    known = set(vocabulary)
    out: dict[str, tuple[str, ...]] = {}
    for k, row in enumerate(rows, 1):
        if len(row) != 2 or not row[0].strip():
            raise ConfigError(f"mapping file {p}: row {k} must be keyword,label (an empty label ignores the keyword)")
        label = row[1].strip()
        label = IGNORE if label in ("", "-") else label
        if label and label not in known:
            raise ConfigError(f"mapping file {p}: row {k} maps to {label!r}, not an active label")
        given = out.setdefault(row[0].strip(), ())
        if label and label not in given:
            out[row[0].strip()] = (*given, label)
    return out


def _spellings(keyword: str) -> set[str]:
    """The spellings the vocabulary would take ``keyword`` for (:func:`~tagger.text.vocab.term_keys`);
    none for one without a word (``-``, ``_``, spaces), which names no label."""
    try:
        return term_keys(keyword)
    except ConfigError:
        return set()


class KeywordMap:
    """Keywords -> labels for one vocabulary (``labels``: name -> synonyms; ``parents``: hierarchy)."""

    def __init__(self, labels: Mapping[str, Sequence[str]], parents: Mapping[str, Sequence[str]] | None = None,
                 mapping: Mapping[str, Sequence[str]] | None = None) -> None:
        self.labels = set(labels)
        self.parents = parents or {}
        self.user = {k: tuple(v) for k, v in (mapping or {}).items()}
        self.user_folded: dict[str, tuple[str, ...]] = {}
        for k, v in self.user.items():  # keywords that fold together give each of their labels
            was = self.user_folded.get(fold_keyword(k), ())
            self.user_folded[fold_keyword(k)] = (*was, *(x for x in v if x not in was))
        self.folded: dict[str, str] = {}
        for name, synonyms in labels.items():
            for s in synonyms or ():
                self.folded.setdefault(fold_keyword(s), name)
        for name in labels:  # a label's own name wins over another's synonym
            self.folded[fold_keyword(name)] = name
        self.spelled: dict[str, str] = {}  # as the vocabulary compares names: words run together, plurals
        for name in labels:
            for key in term_keys(name):
                self.spelled.setdefault(key, name)
        for name, synonyms in labels.items():
            for s in synonyms or ():
                for key in term_keys(s):
                    self.spelled.setdefault(key, name)

    def one(self, keyword: str) -> tuple[str, ...] | None:
        """The labels of one keyword or path text; empty for an ignored one; None if unmapped."""
        for table, key in ((self.user, keyword), (self.user_folded, fold_keyword(keyword))):
            if key in table:
                return table[key]
        if keyword in self.labels:
            return (keyword,)
        name = self.folded.get(fold_keyword(keyword))
        if name is None:  # "lightning-bolt", "Lightning_Bolts" for the label "lightning bolt"
            name = next((self.spelled[k] for k in sorted(_spellings(keyword)) if k in self.spelled), None)
        return None if name is None else (name,)

    def _with_ancestors(self, labels: set[str]) -> set[str]:
        out, todo = set(labels), list(labels)
        while todo:
            for p in self.parents.get(todo.pop(), ()):
                if p not in out and p in self.labels:
                    out.add(p)
                    todo.append(p)
        return out

    def labels_of(self, kw: Keywords, unmapped: Counter | None = None) -> list[str]:
        """The labels ``kw`` maps to (ancestors included); the unmapped keywords counted in ``unmapped``."""
        found: set[str] = set()
        missed: set[str] = set()
        covered = {fold_keyword(name) for path in kw.paths for name in path}  # tools write a path's names flat too
        for path in sorted(kw.paths):
            whole = self.one("|".join(path))
            hits = [whole] if whole is not None else [self.one(name) for name in path]
            mapped = {label for h in hits if h for label in h}
            found |= mapped
            if not mapped and None in hits:  # a name the map ignores does not hide the others
                missed.add("|".join(path))
        for word in sorted(kw.flat):
            if fold_keyword(word) in covered:  # its path decided it (a mapping row for the path included)
                continue
            labels = self.one(word)
            if labels is not None:
                found.update(labels)
            else:
                missed.add(word)
        if unmapped is not None:
            unmapped.update(missed)
        return sorted(self._with_ancestors({f for f in found if f}))


def write_labelled(path: Path, rows: Sequence[tuple[str, Sequence[str]]]) -> int:
    """Write ``(uri, labels)`` as ``uri,label,decision`` CSV rows (atomically); the number of rows."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["uri", "label", "decision"])
    n = 0
    for uri, labels in rows:
        for label in labels:
            w.writerow([uri, label, "accept"])
            n += 1
    try:
        with atomic_open(path, parents=False) as fh:
            fh.write(buf.getvalue().encode("utf-8"))
    except OSError as e:
        raise ConfigError(f"cannot write --out {path}: {os_reason(e)}") from e
    return n


def import_keywords(cat, *, under: str | None = None, mapping_file: str | Path | None = None,
                    embedded: bool = True, top_unmapped: int = 50) -> tuple[list[tuple[str, list[str]]], dict]:
    """Read the keywords of the catalog's local images (those below ``under``) and map them to the
    active labels. Returns ``(uri, labels)`` of the images with a mapped label, and a summary
    (images read, with keywords, labelled; label counts; the unmapped keywords by images)."""
    from ..catalog.keywords import image_uris, vocabulary
    from .keywords import image_keywords
    labels, parents = vocabulary(cat)
    if not labels:
        raise ConfigError("the workspace has no active label: add labels first (tagger labels add)")
    kmap = KeywordMap(labels, parents, read_mapping(mapping_file, labels) if mapping_file is not None else None)
    uris = image_uris(cat, under)
    if not uris and under is not None and os.path.realpath(under) != under:  # a link to the encoded folder
        uris = image_uris(cat, os.path.realpath(under))
    if not uris and under is not None and not os.path.isdir(under):
        raise ConfigError(f"{under} is not a folder: give the folder of the photos whose keywords to read")
    if not uris:
        raise ConfigError(f"no registered local image{' below ' + under if under else ''}: encode the photos first")
    unmapped: Counter = Counter()
    per_label: Counter = Counter()
    errors: list[str] = []
    rows, with_keywords = [], 0
    for uri, kw in image_keywords(uris, embedded=embedded, errors=errors):
        if not kw:
            continue
        with_keywords += 1
        found = kmap.labels_of(kw, unmapped)
        if found:
            rows.append((uri, found))
            per_label.update(found)
    summary = {"images": len(uris), "with_keywords": with_keywords, "labelled": len(rows),
               "tags": sum(len(f) for _, f in rows), "labels": dict(per_label.most_common()),
               "unmapped_keywords": len(unmapped), "unmapped": dict(unmapped.most_common(top_unmapped)),
               "unreadable_sidecars": len(errors), "first_error": errors[0] if errors else None}
    return rows, summary
