"""XMP sidecars with a run's keywords, as photo tools read them: ``dc:subject`` (flat keywords) and
``lr:hierarchicalSubject`` (each label's path from its root ancestor, joined with ``|``).

A sidecar is ``<image file name>.xmp`` beside the image (``photo.jpg`` -> ``photo.jpg.xmp``), or the
same path under a mirror folder for sources that cannot be written. An existing sidecar is parsed
as XML and only those two bags are replaced: every other field (rating, title, ...) is kept.
"""
from __future__ import annotations

import io
import logging
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlparse

from ..pipeline.sources import to_local_path
from ..store.atomic import atomic_open

__all__ = ["NAMESPACES", "label_paths", "merge_sidecar", "sidecar_path", "write_sidecars"]

logger = logging.getLogger(__name__)

NAMESPACES = {
    "x": "adobe:ns:meta/",
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "dc": "http://purl.org/dc/elements/1.1/",
    "lr": "http://ns.adobe.com/lightroom/1.0/",
}
_RDF = "{%s}" % NAMESPACES["rdf"]
_REPLACED = ("{%s}subject" % NAMESPACES["dc"], "{%s}hierarchicalSubject" % NAMESPACES["lr"])
_PACKET_BEGIN = '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
_PACKET_END = '\n<?xpacket end="w"?>\n'
_MAX_PATHS = 16  # hierarchical paths written per label (several parents multiply them)


def label_paths(label: str, parents: Mapping[str, Sequence[str]]) -> list[str]:
    """``label``'s paths from each root ancestor, ``root|...|label`` (just ``label`` without parents)."""
    out: list[str] = []

    def walk(node: str, below: list[str]) -> None:
        ups = [p for p in parents.get(node, ()) if p not in below]
        if not ups or len(below) > 32:
            out.append("|".join([node, *below]))
            return
        for p in ups:
            if len(out) < _MAX_PATHS:
                walk(p, [node, *below])
    walk(label, [])
    return sorted(dict.fromkeys(out))


def sidecar_path(uri: str, mirror: str | os.PathLike | None = None) -> Path | None:
    """Where ``uri``'s sidecar goes: beside a local file, or under ``mirror`` (local and remote URIs
    keep their path there). None for a remote URI without a mirror."""
    local = to_local_path(uri)
    if mirror is None:
        return Path(local + ".xmp") if local is not None else None
    if local is not None:
        parts = Path(local).parts[1:]  # without the root (or drive)
    else:
        parsed = urlparse(uri)
        parts = (parsed.scheme, parsed.netloc, *PurePosixPath(unquote(parsed.path)).parts[1:])
    return Path(mirror, *parts).with_name(parts[-1] + ".xmp")


def _register_prefixes(data: bytes) -> None:
    """Serialize with the document's own prefixes (and the standard ones) instead of ns0, ns1..."""
    pairs = list(NAMESPACES.items())
    for _, (prefix, uri) in ET.iterparse(io.BytesIO(data), events=("start-ns",)):
        pairs.append((prefix, uri))
    for prefix, uri in pairs:
        if prefix:
            try:
                ET.register_namespace(prefix, uri)
            except ValueError:  # a reserved name (ns0 ...): ElementTree picks one
                pass


def _skeleton() -> ET.Element:
    root = ET.Element("{%s}xmpmeta" % NAMESPACES["x"])
    rdf = ET.SubElement(root, _RDF + "RDF")
    ET.SubElement(rdf, _RDF + "Description", {_RDF + "about": ""})
    return root


def _bag(parent: ET.Element, tag: str, items: Iterable[str]) -> None:
    bag = ET.SubElement(ET.SubElement(parent, tag), _RDF + "Bag")
    for item in items:
        ET.SubElement(bag, _RDF + "li").text = item


def merge_sidecar(existing: bytes | None, keywords: Sequence[str], hierarchical: Sequence[str]) -> bytes:
    """The sidecar ``existing`` (or a new one) with its ``dc:subject`` and ``lr:hierarchicalSubject``
    bags replaced (removed when empty); ValueError when ``existing`` is not an XMP document."""
    if existing and existing.strip():
        try:
            root = ET.fromstring(existing)
        except ET.ParseError as e:
            raise ValueError(f"not XML: {e}") from e
        _register_prefixes(existing)
    else:
        _register_prefixes(b"<x/>")
        root = _skeleton()
    rdf = root if root.tag == _RDF + "RDF" else root.find(f".//{_RDF}RDF")
    if rdf is None:
        raise ValueError("no rdf:RDF element: not an XMP document")
    descriptions = rdf.findall(_RDF + "Description")
    for d in descriptions:
        for child in [c for c in d if c.tag in _REPLACED]:
            d.remove(child)
        for name in [a for a in d.attrib if a in _REPLACED]:
            del d.attrib[name]
    target = descriptions[0] if descriptions else ET.SubElement(rdf, _RDF + "Description", {_RDF + "about": ""})
    if keywords:
        _bag(target, _REPLACED[0], keywords)
    if hierarchical:
        _bag(target, _REPLACED[1], hierarchical)
    ET.indent(root, space=" ")
    return (_PACKET_BEGIN + ET.tostring(root, encoding="unicode") + _PACKET_END).encode("utf-8")


def _write_one(target: Path, labels: Sequence[str], parents: Mapping[str, Sequence[str]]) -> bool:
    """Write or update one sidecar; False (nothing written) for an image without labels or sidecar."""
    existing = target.read_bytes() if target.is_file() else None
    if existing is None and not labels:
        return False
    paths = sorted({p for lab in labels for p in label_paths(lab, parents)}) if parents else list(labels)
    data = merge_sidecar(existing, list(labels), paths)
    with atomic_open(target) as fh:
        fh.write(data)
    return True


def write_sidecars(images: Iterable[tuple[str, Sequence[str]]], *, mirror: str | os.PathLike | None = None,
                   parents: Mapping[str, Sequence[str]] | None = None) -> dict[str, Any]:
    """Write (or update) the sidecar of each ``(uri, positive labels)``. Returns counts: ``written``,
    ``no_labels`` (images without a positive label or a sidecar: none made), ``remote`` (remote URIs
    skipped for want of a mirror), ``failed`` and ``first_error``."""
    out: dict[str, Any] = {"written": 0, "no_labels": 0, "remote": 0, "failed": 0, "first_error": None}
    for uri, labels in images:
        target = sidecar_path(uri, mirror)
        if target is None:
            out["remote"] += 1
            continue
        try:
            written = _write_one(target, labels, parents or {})
        except (OSError, ValueError) as e:
            out["failed"] += 1
            if out["first_error"] is None:
                out["first_error"] = f"{target}: {getattr(e, 'strerror', None) or e}"
            logger.warning("cannot write sidecar %s: %s", target, e)
            continue
        out["written" if written else "no_labels"] += 1
    return out
