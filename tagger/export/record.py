"""What tagger wrote into a sidecar, kept in the sidecar under its own namespace (prefix ``tagger``)::

    <tagger:machineTags><rdf:Bag>
      <rdf:li rdf:parseType="Resource">
        <tagger:label>star</tagger:label>            the label
        <tagger:keyword>star</tagger:keyword>        the dc:subject item it added (absent: a person's)
        <tagger:paths><rdf:Bag>..</rdf:Bag></tagger:paths>   lr:hierarchicalSubject items it added
        <tagger:tags><rdf:Bag>..</rdf:Bag></tagger:tags>     digiKam:TagsList items it added
        <tagger:confidence>0.9312</tagger:confidence> <tagger:provenance>model</tagger:provenance>
        <tagger:run>7</tagger:run>                   the tag run that made the label positive
      </rdf:li> ...
    </rdf:Bag></tagger:machineTags>
    <tagger:declined><rdf:Bag><rdf:li>tree</rdf:li></rdf:Bag></tagger:declined>
    <tagger:declinedPaths><rdf:Bag><rdf:li>shape|star</rdf:li></rdf:Bag></tagger:declinedPaths>
    <tagger:declinedTags><rdf:Bag><rdf:li>shape/star</rdf:li></rdf:Bag></tagger:declinedTags>

A later export removes only the items listed here. What a person deleted after tagger wrote it is
not written again: ``declined`` holds labels whose dc:subject keyword went, ``declinedPaths`` and
``declinedTags`` the lr:hierarchicalSubject and digiKam:TagsList items that went, each on its own.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from .xmpdoc import XmpDoc, bag, li_items, li_resource, qname, structs, text_element

__all__ = ["Entry", "Record", "RECORD_TAGS", "read_record", "write_record"]

_T = {n: qname("tagger", n) for n in ("machineTags", "declined", "declinedPaths", "declinedTags", "label", "keyword",
                                      "paths", "tags", "confidence", "provenance", "run")}
RECORD_TAGS = (_T["machineTags"], _T["declined"], _T["declinedPaths"], _T["declinedTags"])
_N = TypeVar("_N", int, float)


@dataclass(frozen=True)
class Entry:
    """One label tagger wrote into the sidecar, and the items it added for it."""

    label: str
    keyword: str | None
    paths: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    confidence: float | None = None
    provenance: str = "model"
    run: int | None = None


@dataclass
class Record:
    entries: dict[str, Entry] = field(default_factory=dict)
    declined: set[str] = field(default_factory=set)        # labels
    declined_paths: set[str] = field(default_factory=set)  # lr:hierarchicalSubject items
    declined_tags: set[str] = field(default_factory=set)   # digiKam:TagsList items

    def declines(self) -> dict[str, set[str]]:
        """The record's field name -> its set of declined items."""
        return {"declined": self.declined, "declinedPaths": self.declined_paths, "declinedTags": self.declined_tags}


def _field(node: ET.Element, name: str) -> ET.Element | str | None:
    tag = _T[name]
    if tag in node.attrib:
        return node.attrib[tag]
    return node.find(tag)


def _text(node: ET.Element, name: str) -> str | None:
    v = _field(node, name)
    if v is None or isinstance(v, str):
        return v.strip() if v else None
    return (v.text or "").strip() or None


def _number(text: str | None, kind: Callable[[str], _N]) -> _N | None:
    try:
        return kind(text) if text is not None else None
    except ValueError:
        return None


def _entry(node: ET.Element) -> Entry | None:
    label = _text(node, "label")
    if not label:
        return None
    lists = {}
    for name in ("paths", "tags"):
        v = _field(node, name)
        lists[name] = tuple(li_items(v)) if isinstance(v, ET.Element) else ((v,) if v else ())
    return Entry(label, _text(node, "keyword"), lists["paths"], lists["tags"],
                 _number(_text(node, "confidence"), float), _text(node, "provenance") or "model",
                 _number(_text(node, "run"), int))


def read_record(doc: XmpDoc) -> Record:
    """The record of a sidecar (empty when tagger never wrote it)."""
    rec = Record()
    for _, e in doc.elements(_T["machineTags"]):
        for node in structs(e):
            entry = _entry(node)
            if entry is not None:
                rec.entries[entry.label] = entry
    for name, items in rec.declines().items():
        for _, e in doc.elements(_T[name]):
            items.update(v for v in li_items(e) if v)
    return rec


def _entry_element(e: Entry) -> ET.Element:
    li = li_resource()
    li.append(text_element(_T["label"], e.label))
    if e.keyword is not None:
        li.append(text_element(_T["keyword"], e.keyword))
    if e.paths:
        li.append(bag(_T["paths"], e.paths))
    if e.tags:
        li.append(bag(_T["tags"], e.tags))
    if e.confidence is not None:
        li.append(text_element(_T["confidence"], f"{e.confidence:.4f}"))
    li.append(text_element(_T["provenance"], e.provenance))
    if e.run is not None:
        li.append(text_element(_T["run"], str(e.run)))
    return li


def write_record(doc: XmpDoc, rec: Record) -> None:
    """Replace the sidecar's record with ``rec`` (entries by label; nothing when it is empty)."""
    new = []
    if rec.entries:
        keywords = bag(_T["machineTags"], [])
        keywords[0].extend(_entry_element(rec.entries[k]) for k in sorted(rec.entries))
        new.append(keywords)
    new.extend(bag(_T[name], sorted(items)) for name, items in rec.declines().items() if items)
    doc.replace_properties(RECORD_TAGS, new)
