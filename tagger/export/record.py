"""What tagger wrote into a sidecar, kept in the sidecar under its own namespace (prefix ``tagger``)::

    <tagger:machineTags><rdf:Bag>
      <rdf:li rdf:parseType="Resource">
        <tagger:label>star</tagger:label>            the label
        <tagger:keyword>star</tagger:keyword>        the dc:subject item it added (absent: a person's)
        <tagger:paths><rdf:Bag>..</rdf:Bag></tagger:paths>   lr:hierarchicalSubject items it added
        <tagger:tags><rdf:Bag>..</rdf:Bag></tagger:tags>     digiKam:TagsList items it added
        <tagger:confidence>0.9312</tagger:confidence> <tagger:provenance>model</tagger:provenance>
        <tagger:run>7</tagger:run>                   the tag run that made the label positive
        <tagger:workspace>3f2a..</tagger:workspace>  the workspace that wrote it
        <tagger:image>photo.jpg</tagger:image>       the image's file name it was written for
      </rdf:li> ...
    </rdf:Bag></tagger:machineTags>
    <tagger:declined><rdf:Bag><rdf:li>tree</rdf:li></rdf:Bag></tagger:declined>
    <tagger:declinedPaths><rdf:Bag><rdf:li>shape|star</rdf:li></rdf:Bag></tagger:declinedPaths>
    <tagger:declinedTags><rdf:Bag><rdf:li>shape/star</rdf:li></rdf:Bag></tagger:declinedTags>
    <tagger:roots><rdf:Bag><rdf:li>auto</rdf:li></rdf:Bag></tagger:roots>  the --root names used
    <tagger:declinedAt><rdf:Bag><rdf:li rdf:parseType="Resource">
      <tagger:label>tree</tagger:label><tagger:when>2026-12-07T10:11:12.000000Z</tagger:when>
    </rdf:li></rdf:Bag></tagger:declinedAt>               when each label was found deleted (UTC)

A later export removes only the items listed here, and only those its own workspace wrote for this
image: another workspace's entries are kept as they are (:attr:`Record.others`), and entries written
for an image of another name (a sidecar copied with a duplicated photo) are dropped from the record,
their items left to the person. Entries without a workspace or image (written before they were
recorded) belong to whichever workspace exports next. What a person deleted after tagger wrote it is
not written again: ``declined`` holds labels whose dc:subject keyword went, ``declinedPaths`` and
``declinedTags`` the lr:hierarchicalSubject and digiKam:TagsList items that went, each on its own;
``declinedAt`` when (at the latest) the label's keyword went, so that a person's accept made in tagger
after it writes the label again.
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import quote, unquote_to_bytes

from .xmpdoc import XmpDoc, bag, li_items, li_resource, qname, structs, text_element

__all__ = ["Entry", "Owner", "Record", "RECORD_TAGS", "read_record", "record_name", "write_record"]

_T = {n: qname("tagger", n) for n in ("machineTags", "declined", "declinedPaths", "declinedTags", "declinedAt", "label",
                                      "keyword", "paths", "tags", "confidence", "provenance", "run", "workspace",
                                      "image", "when", "roots")}
RECORD_TAGS = (_T["machineTags"], _T["declined"], _T["declinedPaths"], _T["declinedTags"], _T["declinedAt"],
               _T["roots"])
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
    workspace: str | None = None
    image: str | None = None


#: What a record keeps of an image's file name as is: printable ASCII but space and ``%``; every other
#: byte of the name (controls, spaces, non-ASCII, bytes that are not UTF-8) is percent-encoded.
_NAME_SAFE = "".join(chr(c) for c in range(33, 127) if chr(c) != "%")


def record_name(file_name: str) -> str:
    """An image's file name as a record writes it (XML holds any of it, and it reads back the same)."""
    return quote(os.fsencode(file_name), safe=_NAME_SAFE)


def _file_name(recorded: str) -> str:
    return os.fsdecode(unquote_to_bytes(recorded))


@dataclass(frozen=True)
class Owner:
    """Who exports: the workspace's id and the image (its :func:`record_name`), with the sidecar's file
    name and the image's local folder (None: remote) to tell a copied sidecar from a shared or renamed
    one. None: anyone, as before these were recorded."""

    workspace: str | None = None
    image: str | None = None
    sidecar: str | None = None
    folder: str | None = None

    def has(self, e: Entry) -> bool:
        """``e`` was written by this workspace (or by one that did not record itself)."""
        return self.workspace is None or e.workspace in (None, self.workspace)

    def other_image(self, e: Entry) -> bool:
        """``e`` was written for another image: one of another name that does not share this sidecar
        (``IMG_1.CR2`` and ``IMG_1.JPG`` share ``IMG_1.xmp``) and is still beside this one (the sidecar
        was copied with a duplicated photo; an image renamed with its sidecar is the same image)."""
        if self.image is None or e.image is None or e.image == self.image:
            return False
        name = _file_name(e.image)
        if self.sidecar is not None and self.sidecar[-4:].lower() == ".xmp":
            if self.sidecar[:-4] in (name, name.rpartition(".")[0] or name):
                return False
        return self.folder is None or os.path.lexists(os.path.join(self.folder, name))


@dataclass
class Record:
    entries: dict[str, Entry] = field(default_factory=dict)  # this owner's, by label
    others: list[Entry] = field(default_factory=list)        # other workspaces' entries for this image
    strays: int = 0                                          # entries for another image, left out
    declined: set[str] = field(default_factory=set)        # labels
    declined_paths: set[str] = field(default_factory=set)  # lr:hierarchicalSubject items
    declined_tags: set[str] = field(default_factory=set)   # digiKam:TagsList items
    declined_at: dict[str, str] = field(default_factory=dict)  # label -> when its decline was found (UTC, ISO)
    roots: set[str] = field(default_factory=set)  # the --root names tagger's paths were put under

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
                 _number(_text(node, "run"), int), _text(node, "workspace"), _text(node, "image"))


def read_record(doc: XmpDoc, owner: Owner | None = None) -> Record:
    """The record of a sidecar (empty when tagger never wrote it), as ``owner`` sees it (module
    docstring); without an owner every entry is in :attr:`Record.entries` or, where two workspaces
    wrote the same label, in :attr:`Record.others`."""
    rec, owner = Record(), owner or Owner()
    for _, e in doc.elements(_T["machineTags"]):
        for node in structs(e):
            entry = _entry(node)
            if entry is None:
                continue
            if owner.other_image(entry):
                rec.strays += 1
                continue
            if owner.has(entry) and entry.label not in rec.entries:
                rec.entries[entry.label] = entry
            else:
                rec.others.append(entry)
    for name, items in rec.declines().items():
        for _, e in doc.elements(_T[name]):
            items.update(v for v in li_items(e) if v)
    for _, e in doc.elements(_T["roots"]):
        rec.roots.update(v for v in li_items(e) if v)
    for _, e in doc.elements(_T["declinedAt"]):
        for node in structs(e):
            label, when = _text(node, "label"), _text(node, "when")
            if label in rec.declined and when:
                rec.declined_at[label] = when
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
    for name in ("workspace", "image"):
        value = getattr(e, name)
        if value is not None:
            li.append(text_element(_T[name], value))
    return li


def write_record(doc: XmpDoc, rec: Record) -> None:
    """Replace the sidecar's record with ``rec`` (entries by label; nothing when it is empty)."""
    new = []
    if rec.entries or rec.others:
        keywords = bag(_T["machineTags"], [])
        keywords[0].extend(_entry_element(rec.entries[k]) for k in sorted(rec.entries))
        keywords[0].extend(_entry_element(e) for e in rec.others)
        new.append(keywords)
    new.extend(bag(_T[name], sorted(items)) for name, items in rec.declines().items() if items)
    if rec.roots:
        new.append(bag(_T["roots"], sorted(rec.roots)))
    times = {k: v for k, v in rec.declined_at.items() if k in rec.declined}
    if times:
        when = bag(_T["declinedAt"], [])
        for label in sorted(times):
            li = li_resource()
            li.extend([text_element(_T["label"], label), text_element(_T["when"], times[label])])
            when[0].append(li)
        new.append(when)
    doc.replace_properties(RECORD_TAGS, new)
