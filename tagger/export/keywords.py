"""A person's keywords of an image, read from its sidecars (``photo.jpg.xmp``, ``photo.xmp``) and
from the XMP and IPTC embedded in the file (through exiftool, batched).

The keywords are ``dc:subject`` and IPTC ``Keywords`` (flat), ``lr:hierarchicalSubject`` (paths with
``|``) and ``digiKam:TagsList`` (paths with ``/``). What tagger wrote itself (the items its record
lists, :mod:`tagger.export.record`) is left out: a person's keywords only.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .record import read_record
from .sidecars import existing_sidecar, read_sidecar, sidecar_path
from .xmp import HIERARCHY, SUBJECT, TAGS_LIST
from .xmpdoc import XmpDoc

__all__ = ["EXIFTOOL_BATCH", "Keywords", "embedded_keywords", "image_keywords", "sidecar_keywords"]

logger = logging.getLogger(__name__)

#: Files per exiftool call.
EXIFTOOL_BATCH = 500
_EXIF_TAGS = ("-XMP-dc:Subject", "-XMP-lr:HierarchicalSubject", "-XMP-digiKam:TagsList", "-IPTC:Keywords")


@dataclass
class Keywords:
    """One image's keywords: flat ones, and hierarchical paths as tuples of names."""

    flat: set[str] = field(default_factory=set)
    paths: set[tuple[str, ...]] = field(default_factory=set)

    def update(self, other: "Keywords") -> None:
        self.flat |= other.flat
        self.paths |= other.paths

    def __bool__(self) -> bool:
        return bool(self.flat or self.paths)


def _path(text: str, sep: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(sep) if p.strip())


def _collect(flat: Iterable[str], hierarchical: Iterable[str], tags_list: Iterable[str]) -> Keywords:
    kw = Keywords({k.strip() for k in flat if k and k.strip()})
    kw.paths = {p for p in (_path(h, "|") for h in hierarchical) if p}
    kw.paths |= {p for p in (_path(t, "/") for t in tags_list) if p}
    return kw


def sidecar_keywords(path: Path) -> Keywords:
    """A person's keywords in sidecar ``path`` (tagger's own left out); ValueError when unreadable."""
    data, _ = read_sidecar(path)
    if data is None:
        return Keywords()
    doc = XmpDoc(data)
    mine = read_record(doc).entries.values()
    own = {SUBJECT: {e.keyword for e in mine if e.keyword}, HIERARCHY: {p for e in mine for p in e.paths},
           TAGS_LIST: {t for e in mine for t in e.tags}}
    items = {t: [v for v in doc.items(t) if v not in own[t]] for t in own}
    return _collect(items[SUBJECT], items[HIERARCHY], items[TAGS_LIST])


def _as_list(value) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in (value if isinstance(value, list) else [value])]


def _exiftool_batch(exiftool: str, paths: list[str]) -> dict[str, Keywords]:
    with tempfile.NamedTemporaryFile("w", suffix=".args", encoding="utf-8", delete=False) as fh:
        fh.write("\n".join(paths) + "\n")
        args = fh.name
    try:
        out = subprocess.run([exiftool, "-j", "-q", "-q", "-charset", "filename=utf8", "-charset", "iptc=utf8",
                              *_EXIF_TAGS, "-@", args], capture_output=True, timeout=600)
    finally:
        os.unlink(args)
    try:
        rows = json.loads(out.stdout.decode("utf-8", "replace") or "[]")
    except json.JSONDecodeError:
        logger.warning("exiftool gave no JSON for %d file(s): %s", len(paths), out.stderr[-300:])
        return {}
    return {r["SourceFile"]: _collect(_as_list(r.get("Subject")) + _as_list(r.get("Keywords")),
                                      _as_list(r.get("HierarchicalSubject")), _as_list(r.get("TagsList")))
            for r in rows if isinstance(r, dict) and "SourceFile" in r}


def embedded_keywords(paths: list[str], exiftool: str | None = None) -> dict[str, Keywords]:
    """Path -> keywords embedded in the file (XMP, IPTC), through exiftool in batches, for the regular
    files among ``paths``; empty when exiftool is not installed."""
    exiftool = exiftool or shutil.which("exiftool")
    if exiftool is None:
        return {}
    paths = [p for p in paths if os.path.isfile(p)]  # regular files only: a FIFO would block the reader
    out: dict[str, Keywords] = {}
    for i in range(0, len(paths), EXIFTOOL_BATCH):
        out.update(_exiftool_batch(exiftool, paths[i:i + EXIFTOOL_BATCH]))
    return out


def image_keywords(paths: list[str], *, embedded: bool = True,
                   errors: list[str] | None = None) -> Iterator[tuple[str, Keywords]]:
    """``(path, keywords)`` per image: both sidecar names, and the embedded metadata unless
    ``embedded`` is False. Unreadable sidecars are skipped, their ``path: reason`` put in ``errors``."""
    inside = embedded_keywords(paths) if embedded else {}
    for path in paths:
        kw = Keywords()
        for naming in ("photo.jpg.xmp", "photo.xmp"):
            side = existing_sidecar(sidecar_path(path, naming))
            if side is None or not os.path.lexists(side):
                continue
            try:
                kw.update(sidecar_keywords(side))
            except (OSError, ValueError) as e:
                if errors is not None:
                    errors.append(f"{side}: {getattr(e, 'strerror', None) or e}")
        if path in inside:
            kw.update(inside[path])
        yield path, kw
