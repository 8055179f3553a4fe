"""An XMP document read and written with ElementTree: the lists (``rdf:Bag``, ``rdf:Seq``) of its
properties edited in place, every other element and attribute kept as it was.

A sidecar is refused (ValueError) when it is larger than :data:`MAX_SIDECAR_BYTES`, declares a
DOCTYPE (no XMP packet does; entity tricks live there), is not XML, or holds no ``rdf:RDF``.
Serialising the same tree again gives the same bytes, so an unchanged sidecar is never rewritten.
"""
from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence

__all__ = ["MAX_SIDECAR_BYTES", "NAMESPACES", "XmpDoc", "bag", "li_items", "li_resource", "qname", "resource",
           "structs", "text_element", "xml_unsafe"]

NAMESPACES = {
    "x": "adobe:ns:meta/",
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "dc": "http://purl.org/dc/elements/1.1/",
    "lr": "http://ns.adobe.com/lightroom/1.0/",
    "digiKam": "http://www.digikam.org/ns/1.0/",
    "tagger": "urn:x-tagger:xmp:1.0#",
}
MAX_SIDECAR_BYTES = 32 << 20
_PACKET_BEGIN = '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
_PACKET_END = '\n<?xpacket end="w"?>\n'
# characters XML 1.0 cannot hold (not even as character references)
_XML_UNSAFE = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def qname(prefix: str, name: str) -> str:
    """ElementTree's ``{uri}name`` for a known prefix (``qname("dc", "subject")``)."""
    return "{%s}%s" % (NAMESPACES[prefix], name)


_RDF = "{%s}" % NAMESPACES["rdf"]
_LI, _DESC, _RESOURCE = _RDF + "li", _RDF + "Description", _RDF + "parseType"


def xml_unsafe(text: str) -> str | None:
    """The first character of ``text`` that XML 1.0 cannot hold (U+FFFE, a C0 control ...), or None."""
    m = _XML_UNSAFE.search(text)
    return m.group(0) if m else None


def _register(data: bytes | None) -> None:
    """Serialise with the document's own prefixes (and the standard ones), not ns0, ns1 ..."""
    pairs = list(NAMESPACES.items())
    if data:
        pairs += [(p, u) for _, (p, u) in ET.iterparse(io.BytesIO(data), events=("start-ns",))]
    for prefix, uri in pairs:
        if prefix:
            try:
                ET.register_namespace(prefix, uri)
            except ValueError:  # a reserved name (ns0 ...): ElementTree picks one
                pass


def _parse(data: bytes) -> ET.Element:
    if len(data) > MAX_SIDECAR_BYTES:
        raise ValueError(f"larger than {MAX_SIDECAR_BYTES >> 20} MiB: not a sidecar")
    if b"<!DOCTYPE" in data[:4096].upper() or b"<!ENTITY" in data.upper():
        raise ValueError("declares a DOCTYPE or entities: not an XMP sidecar")
    try:
        _register(data)
        return ET.fromstring(data)
    except ET.ParseError as e:
        raise ValueError(f"not XML: {e}") from e


class XmpDoc:
    """One XMP packet: ``descriptions`` are its ``rdf:Description`` elements (one is made if none)."""

    def __init__(self, data: bytes | None = None) -> None:
        if data and data.strip():
            self.root = _parse(data)
        else:
            _register(None)
            self.root = ET.Element(qname("x", "xmpmeta"))
            ET.SubElement(self.root, _RDF + "RDF")
        rdf = self.root if self.root.tag == _RDF + "RDF" else self.root.find(f".//{_RDF}RDF")
        if rdf is None:
            raise ValueError("no rdf:RDF element: not an XMP document")
        self.rdf = rdf
        if rdf.find(_DESC) is None:
            ET.SubElement(rdf, _DESC, {_RDF + "about": ""})

    @property
    def descriptions(self) -> list[ET.Element]:
        return self.rdf.findall(_DESC)

    def elements(self, tag: str) -> list[tuple[ET.Element, ET.Element]]:
        """``(description, element)`` of every property ``tag``."""
        return [(d, e) for d in self.descriptions for e in d.findall(tag)]

    def items(self, tag: str) -> list[str]:
        """The values of list property ``tag`` over all descriptions (a simple value counts as one)."""
        out: list[str] = []
        for d in self.descriptions:
            if tag in d.attrib:
                out.append(d.attrib[tag])
            for e in d.findall(tag):
                lis = e.findall(f"./*/{_LI}")
                out.extend([li.text or "" for li in lis] if lis else [e.text or ""])
        return [v.strip() for v in out if v.strip()]

    def has(self, tag: str) -> bool:
        return any(tag in d.attrib or d.find(tag) is not None for d in self.descriptions)

    def _list_element(self, tag: str, container: str) -> ET.Element:
        """The list container of ``tag`` (made in the first description when absent; a simple value
        as an attribute or text becomes the list's first item)."""
        for d in self.descriptions:
            if tag in d.attrib:
                value = d.attrib.pop(tag)
                ET.SubElement(ET.SubElement(ET.SubElement(d, tag), _RDF + container), _LI).text = value
        for _, e in self.elements(tag):
            inner = next(iter(e), None)
            if inner is not None and inner.tag in (_RDF + "Bag", _RDF + "Seq", _RDF + "Alt"):
                return inner
            if inner is None:
                text, e.text = (e.text or "").strip(), None
                inner = ET.SubElement(e, _RDF + container)
                if text:
                    ET.SubElement(inner, _LI).text = text
                return inner
        return ET.SubElement(ET.SubElement(self.descriptions[0], tag), _RDF + container)

    def edit_list(self, tag: str, remove: Iterable[str], add: Sequence[str], container: str = "Bag") -> None:
        """Remove the items of ``remove`` from list ``tag`` (every occurrence, in every description)
        and append ``add`` to its first list; a list emptied by the removal is dropped."""
        drop = set(remove)
        if drop:
            for d, e in self.elements(tag):
                for inner in list(e):
                    for li in [li for li in inner.findall(_LI) if (li.text or "").strip() in drop]:
                        inner.remove(li)
                    if inner.tag.startswith(_RDF) and not len(inner):
                        e.remove(inner)
                if not len(e) and not (e.text or "").strip():
                    d.remove(e)
        if add:
            inner = self._list_element(tag, container)
            for item in add:
                ET.SubElement(inner, _LI).text = item

    def replace_properties(self, tags: Iterable[str], new: Sequence[ET.Element]) -> None:
        """Drop every property of ``tags`` and put ``new`` in the first description."""
        names = set(tags)
        for d in self.descriptions:
            for e in [e for e in d if e.tag in names]:
                d.remove(e)
            for a in [a for a in d.attrib if a in names]:
                del d.attrib[a]
        self.descriptions[0].extend(new)

    def to_bytes(self) -> bytes:
        ET.indent(self.root, space=" ")
        return (_PACKET_BEGIN + ET.tostring(self.root, encoding="unicode") + _PACKET_END).encode("utf-8")


def resource(tag: str) -> ET.Element:
    """An element holding a structure (``rdf:parseType="Resource"``)."""
    return ET.Element(tag, {_RESOURCE: "Resource"})


def li_resource() -> ET.Element:
    return resource(_LI)


def bag(tag: str, items: Iterable[str], container: str = "Bag") -> ET.Element:
    """``<tag><rdf:Bag><rdf:li>item</rdf:li>...</rdf:Bag></tag>``."""
    e = ET.Element(tag)
    inner = ET.SubElement(e, _RDF + container)
    for item in items:
        ET.SubElement(inner, _LI).text = item
    return e


def text_element(tag: str, text: str) -> ET.Element:
    e = ET.Element(tag)
    e.text = text
    return e


def li_items(e: ET.Element) -> list[str]:
    """The ``rdf:li`` texts of a list property element."""
    return [(li.text or "").strip() for li in e.findall(f"./*/{_LI}")]


def structs(e: ET.Element) -> list[ET.Element]:
    """The structures (``rdf:li`` with parseType Resource, or holding an ``rdf:Description``) of a list."""
    out = []
    for li in e.findall(f"./*/{_LI}"):
        inner = li.find(_DESC)
        out.append(inner if inner is not None else li)
    return out
