"""Reading a sidecar's bytes into an ElementTree element, with the checks that tell an XMP sidecar
from other XML: refused (:class:`~tagger.errors.SidecarError`) when larger than
:data:`MAX_SIDECAR_BYTES`, declaring a DOCTYPE or entities (no XMP packet does; entity tricks live
there; checked by the XML parser, so in any encoding, UTF-16 included), nesting elements deeper than
:data:`MAX_DEPTH`, not XML, or in an encoding the parser lacks. The document's namespace prefixes
are registered so that it is written back with them.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
import xml.parsers.expat as expat
from collections.abc import Iterable

from ..errors import SidecarError

__all__ = ["MAX_DEPTH", "MAX_SIDECAR_BYTES", "NAMESPACES", "parse", "register"]

NAMESPACES = {
    "x": "adobe:ns:meta/",
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "dc": "http://purl.org/dc/elements/1.1/",
    "lr": "http://ns.adobe.com/lightroom/1.0/",
    "digiKam": "http://www.digikam.org/ns/1.0/",
    "tagger": "urn:x-tagger:xmp:1.0#",
}
MAX_SIDECAR_BYTES = 32 << 20
#: Element nesting refused beyond this (XMP packets nest a dozen levels; serialising recurses per level).
MAX_DEPTH = 256
MAX_PREFIXES = 256  # a document's own prefixes kept at most (ElementTree's registry is global and each
# registration scans it: thousands of declarations made one merge take seconds); more are written ns0 ...
_BOM8 = b"\xef\xbb\xbf"


def _trimmed(data: bytes) -> bytes:
    """``data`` without blank lines before its first tag (an XML declaration must come first)."""
    body = data[len(_BOM8):] if data.startswith(_BOM8) else data
    trimmed = body.lstrip(b" \t\r\n")
    return trimmed if trimmed is not body and trimmed.startswith(b"<") else data


class _Refused(SidecarError):
    """A document the XML parser reads, but no XMP sidecar would be."""


def _scan(data: bytes) -> list[tuple[str, str]]:
    """One streaming pass of the XML parser over ``data``: its namespace bindings. SidecarError for a
    DOCTYPE or entity declaration, nesting deeper than :data:`MAX_DEPTH`, or bytes that are not XML."""
    parser = expat.ParserCreate(namespace_separator=" ")
    pairs: list[tuple[str, str]] = []
    depth = [0]

    def start(_name: str, _attrs: object) -> None:
        depth[0] += 1
        if depth[0] > MAX_DEPTH:
            raise _Refused(f"elements nested deeper than {MAX_DEPTH}: not an XMP sidecar")

    def end(_name: str) -> None:
        depth[0] -= 1

    def declaration(*_args: object) -> None:
        raise _Refused("declares a DOCTYPE or entities: not an XMP sidecar")

    parser.StartElementHandler, parser.EndElementHandler = start, end
    parser.StartDoctypeDeclHandler = parser.EntityDeclHandler = declaration
    parser.StartNamespaceDeclHandler = lambda prefix, uri: pairs.append((prefix or "", uri or ""))
    try:
        parser.Parse(data, True)
    except expat.ExpatError as e:
        raise SidecarError(f"not XML: {e}") from e
    except _Refused:
        raise
    except (LookupError, ValueError) as e:  # an encoding the parser does not know or cannot read
        raise SidecarError(f"in an encoding the XML parser cannot read ({e}): write it as UTF-8") from e
    return pairs


def _own_binding(prefix: str, uri: str) -> bool:
    """Whether a document's prefix binding is kept when it is written: not a standard prefix bound to another
    namespace (that namespace is written ns0 ...), nor tagger's namespace under another prefix, so tagger's
    record is always ``tagger:`` (``exiftool -XMP-tagger:all``) and ``dc:`` ... always name their own."""
    return bool(prefix) and NAMESPACES.get(prefix, uri) == uri and (uri != NAMESPACES["tagger"] or prefix == "tagger")


def register(pairs: Iterable[tuple[str, str]]) -> None:
    """Serialise with the document's own prefixes (and the standard ones), not ns0, ns1 ..."""
    own = list(dict.fromkeys(p for p in pairs if _own_binding(*p) and p not in NAMESPACES.items()))[:MAX_PREFIXES]
    for prefix, uri in [*NAMESPACES.items(), *own]:
        if prefix:
            try:
                ET.register_namespace(prefix, uri)
            except ValueError:  # a reserved name (ns0 ...): ElementTree picks one
                pass


def parse(data: bytes) -> ET.Element:
    """The root element of ``data``, comments and processing instructions kept; SidecarError when it
    is not a sidecar (the module's checks)."""
    if len(data) > MAX_SIDECAR_BYTES:
        raise SidecarError(f"larger than {MAX_SIDECAR_BYTES >> 20} MiB: not a sidecar")
    data = _trimmed(data)
    register(_scan(data))
    parser = ET.XMLParser(target=ET.TreeBuilder(insert_comments=True, insert_pis=True))
    try:
        parser.feed(data)
        return parser.close()
    except (ET.ParseError, LookupError) as e:
        raise SidecarError(f"not XML: {e}") from e
