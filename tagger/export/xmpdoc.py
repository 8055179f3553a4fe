"""An XMP document read and written with ElementTree: the lists (``rdf:Bag``, ``rdf:Seq``) of its
properties edited in place, every other element, attribute, comment and processing instruction
inside the root element kept as it was (what lies outside it, padding and a comment before
``x:xmpmeta``, is not: the packet is written anew around the root).

A sidecar is refused (:class:`~tagger.errors.SidecarError`, a ValueError) when :mod:`.xmpparse`
does not read it as one, or it holds no ``rdf:RDF``. Any encoding the parser reads is written back as
UTF-8. Serialising the same tree again gives the same bytes, so an unchanged sidecar is never rewritten.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence

from ..errors import SidecarError
from .xmpparse import MAX_DEPTH, MAX_SIDECAR_BYTES, NAMESPACES, parse, register

__all__ = ["MAX_DEPTH", "MAX_SIDECAR_BYTES", "NAMESPACES", "XmpDoc", "bag", "li_items", "li_resource", "qname",
           "resource", "structs", "text_element", "xml_unsafe"]

_PACKET_BEGIN = '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
_PACKET_END = '\n<?xpacket end="{}"?>\n'
_READ_ONLY_END = re.compile(rb"<\?xpacket\s+end\s*=\s*[\"']r[\"']\s*\?>")  # kept as the packet said
# characters XML 1.0 cannot hold (not even as character references)
_XML_UNSAFE = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def qname(prefix: str, name: str) -> str:
    """ElementTree's ``{uri}name`` for a known prefix (``qname("dc", "subject")``)."""
    return "{%s}%s" % (NAMESPACES[prefix], name)


_RDF = "{%s}" % NAMESPACES["rdf"]
_LI, _DESC, _RESOURCE = _RDF + "li", _RDF + "Description", _RDF + "parseType"
_CONTAINERS = (_RDF + "Bag", _RDF + "Seq", _RDF + "Alt")
#: What a keyword list's property element may carry (as the XMP Toolkit reads a list or a text): any other
#: attribute (``rdf:resource``, ``rdf:parseType``, ``rdf:datatype``, ``rdf:nodeID``, a property) makes it
#: something else, which a list written into would turn into invalid RDF.
_LIST_ATTRS = frozenset({"{http://www.w3.org/XML/1998/namespace}lang", _RDF + "ID"})


def xml_unsafe(text: str) -> str | None:
    """The first character of ``text`` that XML 1.0 cannot hold (U+FFFE, a C0 control ...), or None."""
    m = _XML_UNSAFE.search(text)
    return m.group(0) if m else None


# what an empty packet holds besides white space: a byte-order mark, the XML declaration, xpacket wrappers
_PACKET_ONLY = re.compile(rb"\A(?:\xef\xbb\xbf|\s|<\?xml[^>]*\?>|<\?xpacket[^>]*\?>)*\Z")


def _is_element(e: ET.Element) -> bool:
    """Whether ``e`` is an element (not a comment or processing instruction kept in the tree)."""
    return isinstance(e.tag, str)


def _li_text(li: ET.Element) -> str:
    """An item's value: its text, or a qualified value's ``rdf:value`` (an element or an attribute, of
    the item or of an ``rdf:Description`` in it), as photo tools write a keyword with qualifiers."""
    if (li.text or "").strip():
        return li.text or ""
    value = _RDF + "value"
    for host in (li, li.find(_DESC)):
        if host is not None and value in host.attrib:
            return host.attrib[value]
        v = None if host is None else host.find(value)
        if v is not None:
            return v.text or ""
    return li.text or ""


def _texts(e: ET.Element) -> list[str]:
    """The item texts of a list property element (its own text when it holds no list)."""
    lis = e.findall(f"./*/{_LI}")
    return [_li_text(li) for li in lis] if lis else [] if any(map(_is_element, e)) else [e.text or ""]


class XmpDoc:
    """One XMP packet: ``descriptions`` are its ``rdf:Description`` elements (one is made if none)."""

    def __init__(self, data: bytes | None = None) -> None:
        self.end = "r" if data and _READ_ONLY_END.search(data[-65536:]) else "w"
        if data and not _PACKET_ONLY.match(data.strip()):  # strip first: the pattern steps a byte at a time
            self.root = parse(data)
        else:
            register(())
            self.root = ET.Element(qname("x", "xmpmeta"))
            ET.SubElement(self.root, _RDF + "RDF")
        rdf = self.root if self.root.tag == _RDF + "RDF" else self.root.find(f".//{_RDF}RDF")
        if rdf is None and self.root.tag == qname("x", "xmpmeta"):  # an empty packet: <x:xmpmeta/>
            rdf = ET.SubElement(self.root, _RDF + "RDF")
        if rdf is None:
            raise SidecarError("no rdf:RDF element: not an XMP document")
        self.rdf = rdf
        if rdf.find(_DESC) is None:
            ET.SubElement(rdf, _DESC, {_RDF + "about": ""})

    def check_layout(self) -> None:
        """SidecarError unless the packet's properties all lie in ``rdf:Description`` elements of one
        ``rdf:RDF``. Two ``rdf:RDF`` elements, or a typed node (``<xmp:Thing rdf:about="">``), are not
        XMP: exiftool reads them all, the XMP Toolkit refuses a typed node, so no place to merge into is
        right for every reader."""
        roots = _outer_rdfs(self.root)
        if len(roots) > 1:
            raise SidecarError(f"{len(roots)} rdf:RDF elements (an XMP packet has one; photo tools differ "
                               "on what they read): left alone")
        typed = next((e for e in self.rdf if _is_element(e) and e.tag != _DESC), None)
        if typed is not None:
            raise SidecarError(f"a typed node {_prefixed(typed.tag)} in place of rdf:Description (not XMP; photo "
                               "tools differ on what they read there): left alone")

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
                out.extend(_texts(e))
        return [v.strip() for v in out if v.strip()]

    def has(self, tag: str) -> bool:
        return any(tag in d.attrib or d.find(tag) is not None for d in self.descriptions)

    def _list_element(self, tag: str, container: str) -> ET.Element:
        """The one list container of ``tag``, made in the first description when absent. A simple
        value (an attribute or text) becomes an item of it, and the items of the same property
        repeated in other descriptions (readers see only one of them) are moved into it, so every
        reader sees the person's items and the added ones together. SidecarError when ``tag`` holds
        neither a list nor text (a structure): nothing is changed then."""
        found = self.elements(tag)
        lists = [(d, e, c) for d, e in found if (c := _container(e)) is not None]
        texts = [(d, e) for d, e in found if not any(map(_is_element, e))]
        if found and not lists and not texts:
            raise SidecarError(f"{_prefixed(tag)} is neither a list nor a text: left alone")
        if lists:
            host, inner = lists[0][1], lists[0][2]
        else:
            host = texts[0][1] if texts else ET.SubElement(self.descriptions[0], tag)
            inner = ET.SubElement(host, _RDF + container)
            _move_text(host, inner)
        have = {_li_text(li).strip() for li in inner.findall(_LI)}  # one set for every description folded in
        for d, e, c in lists[1:]:
            for li in c.findall(_LI):  # moved whole: a qualified item keeps its qualifiers
                text = _li_text(li).strip()
                if text not in have:
                    inner.append(li)
                    have.add(text)
            d.remove(e)
        for d, e in texts:
            if e is not host:
                _append_new(inner, have, (e.text or "").strip())
                d.remove(e)
        for d in self.descriptions:
            if tag in d.attrib:
                _append_new(inner, have, d.attrib.pop(tag).strip())
        return inner

    def _check_plain(self, tag: str) -> None:
        """SidecarError when a property element of ``tag`` carries an attribute other than ``xml:lang``
        or ``rdf:ID``: a resource, an XML literal, a typed literal, a blank node or a structure is not a
        keyword list, and whatever wrote it reads it as such, so it is not turned into one."""
        for _, e in self.elements(tag):
            marker = next((a for a in e.attrib if a not in _LIST_ATTRS), None)
            if marker is not None:
                value = e.attrib[marker]
                value = value if len(value) <= 60 else value[:57] + "..."
                raise SidecarError(f'{_prefixed(tag)} carries {_prefixed(marker)}="{value}": not a keyword list '
                                   "(an rdf:Bag of text), left alone")

    def edit_list(self, tag: str, remove: Iterable[str], add: Sequence[str], container: str = "Bag") -> None:
        """Remove the items of ``remove`` from list ``tag`` (every occurrence, in every description)
        and append ``add`` to its list (:meth:`_list_element`); a list emptied by the removal is dropped
        (one still holding a comment is kept, empty of items). SidecarError, nothing changed, when a
        property element of ``tag`` carries an RDF marker (:meth:`_check_plain`)."""
        drop = set(remove)
        if drop or add:
            self._check_plain(tag)
        if drop:
            for d, e in self.elements(tag):
                for inner in [c for c in e if c.tag in _CONTAINERS]:
                    # plain items only: tagger writes no qualifiers, so a qualified item is a person's
                    for li in [li for li in inner.findall(_LI) if (li.text or "").strip() in drop]:
                        inner.remove(li)
                    if not len(inner):  # a list left holding a person's comment keeps it
                        e.remove(inner)
                if not any(map(_is_element, e)) and not (e.text or "").strip():
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
        _indent(self.root)
        text = ET.tostring(self.root, encoding="unicode")
        # a carriage return in a value (read from &#13;) written as is would read back as a line feed;
        # nothing else of the serialised text can hold one (attributes are escaped, the markup has none)
        return (_PACKET_BEGIN + text.replace("\r", "&#13;") + _PACKET_END.format(self.end)).encode("utf-8")


def _indent(root: ET.Element) -> None:
    """``ET.indent``, but a value keeps its white space: an XML literal (``rdf:parseType="Literal"``) all of
    it, a text holding comments or processing instructions (an element with no element inside) its text
    and what follows each of them, which ``ET.indent`` would pad (``foo<!-- c -->`` read as ``foo`` and a
    line break)."""
    kept: list[tuple[ET.Element, str | None, str | None, bool]] = []
    for e in root.iter():
        if e.get(_RESOURCE) == "Literal":
            kept.extend((x, x.text, x.tail, x is not e) for x in e.iter())
        elif len(e) and not any(map(_is_element, e)):
            kept.append((e, e.text, e.tail, False))
            kept.extend((x, x.text, x.tail, True) for x in e)
    ET.indent(root, space=" ")
    for x, text, tail, inside in kept:
        x.text = text
        if inside:
            x.tail = tail


def _container(e: ET.Element) -> ET.Element | None:
    """The ``rdf:Bag``, ``rdf:Seq`` or ``rdf:Alt`` of a list property element (None if it holds none)."""
    return next((c for c in e if c.tag in _CONTAINERS), None)


def _prefixed(tag: str) -> str:
    """``dc:subject`` for ``{http://purl.org/dc/elements/1.1/}subject``; a name of another namespace as is."""
    uri, _, name = tag[1:].partition("}")
    prefix = next((p for p, u in NAMESPACES.items() if u == uri), None)
    return f"{prefix}:{name}" if prefix and tag.startswith("{") else tag


def _outer_rdfs(e: ET.Element) -> list[ET.Element]:
    """The ``rdf:RDF`` elements at or below ``e`` that are not inside another one (one in an XML literal
    is part of a value)."""
    if e.tag == _RDF + "RDF":
        return [e]
    return [r for c in e if _is_element(c) for r in _outer_rdfs(c)]


def _move_text(e: ET.Element, inner: ET.Element) -> None:
    """A simple value's text becomes the first item of the list ``inner`` made inside ``e``."""
    text, e.text = (e.text or "").strip(), None
    if text:
        ET.SubElement(inner, _LI).text = text


def _append_new(inner: ET.Element, have: set[str], value: str) -> None:
    """Append ``value`` to the list ``inner`` unless empty or among ``have`` (its items, kept up to date)."""
    if value and value not in have:
        ET.SubElement(inner, _LI).text = value
        have.add(value)


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
