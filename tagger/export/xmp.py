"""Merge a run's positive labels into an XMP sidecar without touching what a person wrote.

Photo tools read keywords from ``dc:subject`` (flat), ``lr:hierarchicalSubject`` (paths joined
with ``|``: Lightroom, darktable, digiKam) and ``digiKam:TagsList`` (the same paths joined with
``/``; digiKam reads it first when it holds items). :func:`merge_sidecar` adds each positive label to
those lists, records in the sidecar what it added (:mod:`tagger.export.record`), and takes out only
items it added itself that are no longer positive. An item a person already had (compared
Unicode-normalised and case-folded: a person's ``Star`` is the label ``star``) is neither added again
nor recorded as tagger's, so it is never removed; a machine item a person deleted from any of the lists
(a keyword, or just its hierarchical path) is not written again.
``TagsList`` is only edited where it holds items (digiKam reads the first of its lists that is not
empty: making or filling one would hide a person's hierarchical keywords from it). A label whose
name XML 1.0 cannot hold (U+FFFE ...) is not written; a label holding ``|`` (``/`` for TagsList) is
written as a flat keyword only, never as a hierarchy.
"""
from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import NamedTuple

from .record import Entry, Owner, Record, read_record, write_record
from .xmpdoc import XmpDoc, qname, xml_unsafe

__all__ = ["MachineTag", "MergeResult", "fold_keyword", "iso_utc", "label_paths", "merge_sidecar"]

logger = logging.getLogger(__name__)

SUBJECT, HIERARCHY, TAGS_LIST = qname("dc", "subject"), qname("lr", "hierarchicalSubject"), qname("digiKam", "TagsList")
LISTS = (SUBJECT, HIERARCHY, TAGS_LIST)
_MAX_PATHS = 16  # hierarchical paths written per label (several parents multiply them)


class MachineTag(NamedTuple):
    """A positive tag of a run, as it goes into a sidecar."""

    label: str
    confidence: float | None = None
    provenance: str = "model"
    decided_at: str | None = None  # a person's accept: when (UTC, ISO 8601 as :func:`iso_utc` writes it)


def iso_utc(when: datetime | None = None) -> str:
    """``when`` (naive: UTC; default now) as the record writes times: ``2026-12-07T10:11:12.000000Z``."""
    when = when or datetime.now(timezone.utc)
    if when.tzinfo is not None:
        when = when.astimezone(timezone.utc).replace(tzinfo=None)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


@dataclass
class MergeResult:
    data: bytes
    added: list[str] = field(default_factory=list)     # labels whose keyword was newly written
    removed: list[str] = field(default_factory=list)   # labels taken out (no longer positive)
    refused: list[str] = field(default_factory=list)   # labels XML cannot hold
    declined: list[str] = field(default_factory=list)  # labels a person deleted
    reinstated: list[str] = field(default_factory=list)  # declined labels a person accepted in tagger since
    cleared: bool = False  # every keyword this workspace wrote (2 or more) went at once


def label_paths(label: str, parents: Mapping[str, Sequence[str]], root: str | None = None) -> list[str]:
    """``label``'s paths from each root ancestor, ``root|...|label`` (just ``label`` without parents),
    under ``root`` when given; none when a name on the way holds ``|``."""
    out: list[list[str]] = []

    def walk(node: str, below: list[str]) -> None:
        ups = [p for p in parents.get(node, ()) if p not in below]
        if not ups or len(below) > 32:
            out.append([node, *below])
            return
        for p in ups:
            if len(out) < _MAX_PATHS:
                walk(p, [node, *below])
    walk(label, [])
    head = [root] if root else []
    return sorted({"|".join(head + names) for names in out if not any("|" in n for n in head + names)})


def _tags_form(path: str) -> str | None:
    parts = path.split("|")
    return None if any("/" in p for p in parts) else "/".join(parts)


def fold_keyword(item: str) -> str:
    """How keywords are compared: Unicode-normalised (NFC), trimmed and case-folded, so a person's
    ``Star`` (or a decomposed ``Zürich`` from macOS) is the label ``star`` (``zürich``) already there."""
    return unicodedata.normalize("NFC", item).strip().casefold()


def _folded(items: Iterable[str]) -> set[str]:
    return {fold_keyword(x) for x in items}


def _owned(desired: Sequence[str], before: Sequence[str], have: set[str]) -> tuple[tuple[str, ...], list[str]]:
    """Of the ``desired`` items: those tagger owns (it added them before, or adds them now) and
    those to add (absent from the list whose folded items, :func:`fold_keyword`, are ``have``; it then holds them all)."""
    owned = tuple(x for x in desired if x in before or fold_keyword(x) not in have)
    add = [x for x in desired if fold_keyword(x) not in have]
    have.update(map(fold_keyword, desired))
    return owned, add


def _sane(e: Entry) -> Entry:
    """Entry ``e`` of a sidecar's record without the items tagger never writes for its label (a
    keyword other than the label, a path not ending in it): a record edited by hand or by another
    tool never makes tagger take out a person's keyword."""
    return replace(e, keyword=e.keyword if e.keyword == e.label else None,
                   paths=tuple(p for p in e.paths if p.split("|")[-1] == e.label),
                   tags=tuple(t for t in e.tags if t.split("/")[-1] == e.label))


def _machine_tag(t: MachineTag | str | tuple) -> MachineTag:
    return t if isinstance(t, MachineTag) else MachineTag(t) if isinstance(t, str) else MachineTag(*t)


def _declines(prior: Record, have: Mapping[str, set[str]], tags_list: bool) -> Record:
    """A record holding ``prior``'s declines and what a person deleted since tagger wrote it, each list on
    its own (``have``: the folded items of each list): a label whose keyword left dc:subject, a path that
    left lr:hierarchicalSubject, a TagsList item that left TagsList (where the sidecar still has one)."""
    entries = [*prior.entries.values(), *prior.others]  # a keyword any workspace wrote that went is a "no"
    labels = prior.declined | {e.label for e in entries if fold_keyword(e.label) not in have[SUBJECT]}
    live = [e for e in prior.entries.values() if e.label not in labels]
    paths = {p for e in live for p in e.paths if fold_keyword(p) not in have[HIERARCHY]}
    tags = {t for e in live for t in e.tags if fold_keyword(t) not in have[TAGS_LIST]} if tags_list else set()
    return Record(others=[e for e in prior.others if e.label not in labels], declined=labels,  # theirs went too
                  declined_paths=prior.declined_paths | paths, declined_tags=prior.declined_tags | tags,
                  roots=set(prior.roots))


def _reinstate(record: Record, wanted: Mapping[str, MachineTag], res: MergeResult) -> None:
    """Take back the declines a person's accept in tagger overrules: made after the decline was found
    (a decline recorded without a time stands). The label's declined paths and TagsList items go too."""
    for label, tag in wanted.items():
        when = record.declined_at.get(label, "")
        if (label in record.declined and tag.provenance == "person" and tag.decided_at and _ISO.fullmatch(when)
                and _ISO.fullmatch(tag.decided_at) and tag.decided_at > when):
            record.declined.discard(label)
            record.declined_at.pop(label, None)
            record.declined_paths = {p for p in record.declined_paths if p.split("|")[-1] != label}
            record.declined_tags = {t for t in record.declined_tags if t.split("/")[-1] != label}
            res.reinstated.append(label)


def _hand_over(drop: Sequence[Entry], record: Record) -> set[str]:
    """The keywords of ``drop`` (this workspace's labels no longer positive) that another workspace's
    entry of the same label still wants: they stay in dc:subject, now recorded as that workspace's
    (which would otherwise read their going as a person's "no"). The keywords handed over."""
    kept = set()
    for e in drop:
        for i, other in enumerate(record.others):
            if (e.keyword and other.keyword is None and fold_keyword(other.label) == fold_keyword(e.label)
                    and e.label not in record.declined):
                record.others[i] = replace(other, keyword=e.keyword)
                kept.add(e.keyword)
                break
    return kept


def _core(item: str, sep: str, roots: set[str]) -> str:
    """``item`` (a path joined with ``sep``), folded, without a root tagger put it under (``--root``),
    which a person's deletion is not about."""
    head, cut, rest = item.partition(sep)
    return fold_keyword(rest if cut and rest and head in roots else item)


def _kept(items: Sequence[str], declined: set[str], sep: str, roots: set[str]) -> list[str]:
    """``items`` but those declined, under any root tagger used (a path deleted as ``object|bell`` is
    not written as ``auto|object|bell``, nor ``auto|object|bell`` as ``object|bell``)."""
    folded = _folded(declined) | {_core(d, sep, roots) for d in declined}
    return [x for x in items if fold_keyword(x) not in folded and _core(x, sep, roots) not in folded]


_Plan = tuple[Entry | None, list[str], list[str]]  # the label's entry so far, the paths and TagsList items it wants


def _plans(wanted: Iterable[str], keep: Mapping[str, Entry], record: Record, gone: dict[str, set[str]],
           tags_list: bool, parents: Mapping[str, Sequence[str]], root: str | None,
           res: MergeResult) -> dict[str, _Plan]:
    """What each wanted label writes (none for a declined one, or a name XML cannot hold: put in
    ``res.refused``); items written for an older hierarchy or root are put in ``gone``."""
    plans = {}
    for label in sorted(set(wanted) - record.declined):
        if xml_unsafe(label) is not None:
            res.refused.append(label)
            continue
        paths = [p for p in label_paths(label, parents, root) if xml_unsafe(p) is None]
        forms = [f for f in map(_tags_form, paths) if f] if tags_list else []
        old = keep.get(label)
        if old is not None:
            gone[HIERARCHY].update(set(old.paths) - set(paths))
            gone[TAGS_LIST].update(set(old.tags) - set(forms))
        plans[label] = (old, _kept(paths, record.declined_paths, "|", record.roots),  # this root among them
                        _kept(forms, record.declined_tags, "/", record.roots))
    return plans


def _add(doc: XmpDoc, plans: Mapping[str, _Plan], wanted: Mapping[str, MachineTag], record: Record,
         run: int | None, owner: Owner, res: MergeResult) -> int:
    """Add the planned items a list does not hold yet and record those tagger owns; the items added."""
    have = {t: _folded(doc.items(t)) for t in LISTS}  # what the person keeps (and tagger keeps) after the removal
    adds: dict[str, list[str]] = {t: [] for t in LISTS}
    for label, (old, paths, forms) in plans.items():
        kw, add_kw = _owned([label], [old.keyword] if old and old.keyword else [], have[SUBJECT])
        own_paths, add_paths = _owned(paths, old.paths if old else (), have[HIERARCHY])
        own_tags, add_tags = _owned(forms, old.tags if old else (), have[TAGS_LIST])
        for prop, items in ((SUBJECT, add_kw), (HIERARCHY, add_paths), (TAGS_LIST, add_tags)):
            adds[prop].extend(items)
        tag = wanted[label]
        confidence = None if tag.confidence is None else round(float(tag.confidence), 4)
        record.entries[label] = Entry(label, kw[0] if kw else None, own_paths, own_tags, confidence,
                                      tag.provenance, run, owner.workspace, owner.image)
        if old is None and add_kw:  # a keyword the person had already is not counted (its paths may be)
            res.added.append(label)
    for prop, items in adds.items():
        doc.edit_list(prop, (), items)
    return sum(map(len, adds.values()))


def _settled(record: Record) -> Record:
    """``record`` without what only describes the run that wrote it (each entry's run and confidence):
    a new run that leaves a sidecar's keywords, provenance and declines as they are does not rewrite it."""
    return replace(record, entries={k: replace(e, run=None, confidence=None) for k, e in record.entries.items()})


def merge_sidecar(existing: bytes | None, tags: Sequence[MachineTag | str], *, run: int | None = None,
                  parents: Mapping[str, Sequence[str]] | None = None, root: str | None = None,
                  owner: Owner | None = None, changed_at: str | None = None) -> MergeResult:
    """``existing`` (or a new sidecar) with ``tags`` merged in (see the module) for ``owner`` (the
    workspace and image: only what it wrote is taken out; :mod:`tagger.export.record`). A decline
    found now is recorded at ``changed_at`` (when the sidecar last changed, :func:`iso_utc`; default
    now). ValueError (:class:`~tagger.errors.SidecarError`) when ``existing`` is not an XMP document,
    or not one it can merge into without changing a person's value (:meth:`XmpDoc.check_layout`, a
    keyword list that is not one)."""
    doc = XmpDoc(existing)
    doc.check_layout()
    owner = owner or Owner()
    prior = read_record(doc, owner)
    prior.entries = {k: _sane(e) for k, e in prior.entries.items()}
    prior.others = [_sane(e) for e in prior.others]
    have = {t: _folded(doc.items(t)) for t in LISTS}
    tags_list = bool(have[TAGS_LIST])  # digiKam reads an empty TagsList as none: filling it would hide the rest
    record = _declines(prior, have, tags_list)
    owned = {e.label for e in prior.entries.values() if e.keyword}
    res = MergeResult(b"", cleared=len(owned) >= 2 and owned <= record.declined - prior.declined)
    found = changed_at or iso_utc()
    record.declined_at = {k: prior.declined_at.get(k) or found for k in record.declined}  # older ones too
    if root:
        record.roots.add(root)
    wanted = {t.label: t for t in map(_machine_tag, tags)}
    _reinstate(record, wanted, res)
    keep = {k: e for k, e in prior.entries.items() if k in wanted and k not in record.declined}
    drop = [e for k, e in prior.entries.items() if k not in keep]
    handed = _hand_over(drop, record)
    res.removed = sorted(e.label for e in drop if e.label not in record.declined and e.keyword not in handed)
    res.declined = sorted(k for k in wanted if k in record.declined)
    gone = {SUBJECT: {e.keyword for e in drop if e.keyword and e.label not in record.declined} - handed,
            HIERARCHY: {p for e in drop for p in e.paths},
            TAGS_LIST: {t for e in drop for t in e.tags}}
    plans = _plans(wanted, keep, record, gone, tags_list, parents or {}, root, res)
    for prop, items in gone.items():
        doc.edit_list(prop, items, [])
    edits = sum(map(len, gone.values())) + _add(doc, plans, wanted, record, run, owner, res)
    if existing is not None and not edits and _settled(record) == _settled(prior):  # stays as its tool wrote it
        res.data = existing
        return res
    write_record(doc, record)
    res.data = doc.to_bytes()
    return res
