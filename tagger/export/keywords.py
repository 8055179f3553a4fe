"""A person's keywords of an image, read from its sidecars (``photo.jpg.xmp``, ``photo.xmp``) and
from the XMP and IPTC embedded in the file (through exiftool, batched).

The keywords are ``dc:subject`` and IPTC ``Keywords`` (flat), ``lr:hierarchicalSubject`` (paths with
``|``) and ``digiKam:TagsList`` (paths with ``/``). What tagger wrote itself is left out: a person's
keywords only. Tagger's record (:mod:`tagger.export.record`) may be in either sidecar or in the image's
own XMP, and a photo tool may copy a sidecar's keywords into the image without it (exiftool and digiKam
copy no unknown namespace), so the items any record of the image lists are left out of what the image
holds; a sidecar loses only what its own record lists (``photo.xmp`` may hold a person's ``star`` where
tagger wrote ``star`` into ``photo.jpg.xmp``).
"""
from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..uris import to_local_path
from .record import Owner, read_record
from .sidecars import existing_sidecar, owner_of, read_sidecar, sibling_claims, sidecar_path
from .xmp import HIERARCHY, LISTS, SUBJECT, TAGS_LIST
from .xmpdoc import NAMESPACES, XmpDoc

__all__ = ["EXIFTOOL_BATCH", "Keywords", "embedded_keywords", "image_keywords", "sidecar_keywords"]

logger = logging.getLogger(__name__)

#: Files per exiftool call.
EXIFTOOL_BATCH = 500
_EXIF_TAGS = ("-XMP-dc:Subject", "-XMP-lr:HierarchicalSubject", "-XMP-digiKam:TagsList", "-IPTC:Keywords",
              "-b", "-XMP")  # the image's whole XMP packet, for tagger's record in it
_TAGGER_NS = NAMESPACES["tagger"].encode()


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


def _no_items() -> dict[str, set[str]]:
    return {t: set() for t in LISTS}


@dataclass
class _Found:
    """The keyword items of one source (a sidecar, or the image file) per list (``dc:subject`` with IPTC
    Keywords, ``lr:hierarchicalSubject``, ``digiKam:TagsList``), and the items tagger's record there lists."""

    items: dict[str, list[str]]
    own: dict[str, set[str]] = field(default_factory=_no_items)

    def keywords(self, own: Mapping[str, set[str]] | None = None) -> Keywords:
        """The keywords without tagger's items (``own``, default the record of this source)."""
        own = self.own if own is None else own
        kept = {t: [v for v in self.items.get(t, ()) if v.strip() not in own[t]] for t in LISTS}
        return _collect(kept[SUBJECT], kept[HIERARCHY], kept[TAGS_LIST])


def _own_items(doc: XmpDoc, owner: Owner | None = None) -> dict[str, set[str]]:
    """The items tagger's record in ``doc`` lists as written by tagger (for ``owner``'s image, when
    given: a record copied with another photo's sidecar is not tagger's here), per list."""
    rec = read_record(doc, owner)
    mine = [*rec.entries.values(), *rec.others]
    return {SUBJECT: {e.keyword for e in mine if e.keyword}, HIERARCHY: {p for e in mine for p in e.paths},
            TAGS_LIST: {t for e in mine for t in e.tags}}


def _sidecar_found(path: Path, owner: Owner | None = None) -> _Found:
    data, _ = read_sidecar(path)
    if data is None:
        return _Found({})
    doc = XmpDoc(data)
    return _Found({t: doc.items(t) for t in LISTS}, _own_items(doc, owner))


def sidecar_keywords(path: Path) -> Keywords:
    """A person's keywords in sidecar ``path`` (tagger's own left out); ValueError when unreadable."""
    return _sidecar_found(path).keywords()


def _packet_own(value: object) -> dict[str, set[str]]:
    """The items tagger's record lists in an image's XMP packet as exiftool gives it (text, or
    ``base64:`` bytes); none when it holds no record or cannot be read."""
    if not isinstance(value, str):
        return _no_items()
    try:
        data = base64.b64decode(value[7:]) if value.startswith("base64:") else value.encode("utf-8", "surrogateescape")
        return _own_items(XmpDoc(data)) if _TAGGER_NS in data else _no_items()
    except ValueError:
        return _no_items()


def _as_list(value) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in (value if isinstance(value, list) else [value])]


def _run_exiftool(exiftool: str, files: list[bytes] | None, argfile: str | None) -> list[dict]:
    """exiftool's JSON rows for ``files`` (exact names, as arguments) or the names in ``argfile``. Its
    numbers are kept as the text they were (a keyword ``1.50`` stays ``1.50``, not ``1.5``)."""
    names: list[str | bytes] = ["-@", argfile] if argfile is not None else ["--", *(files or [])]
    out = subprocess.run([exiftool, "-j", "-q", "-q", "-charset", "filename=utf8", "-charset", "iptc=utf8",
                          *_EXIF_TAGS, *names], capture_output=True, timeout=600)
    try:
        rows = json.loads(out.stdout.decode("utf-8", "surrogateescape") or "[]", parse_float=str, parse_int=str,
                          parse_constant=str)
    except json.JSONDecodeError:
        logger.warning("exiftool gave no JSON for %s: %s", argfile or files, out.stderr[-300:])
        return []
    return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []


def _iptc_text(value: str) -> str:
    """An IPTC keyword as exiftool gives it, read as UTF-8: one that is not (``base64:`` bytes, written by
    an older tool in a legacy code page without saying so) is read as Windows-1252 / Latin-1."""
    if not value.startswith("base64:"):
        return value
    try:
        raw = base64.b64decode(value[7:], validate=True)
    except ValueError:
        return value
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1" if set(raw) & _CP1252_HOLES else "cp1252")


_CP1252_HOLES = {0x81, 0x8D, 0x8F, 0x90, 0x9D}  # bytes Windows-1252 leaves undefined


def _found_in(row: dict) -> _Found:
    """The keywords and tagger's record of an exiftool row."""
    iptc = [_iptc_text(v) for v in _as_list(row.get("Keywords"))]
    return _Found({SUBJECT: _as_list(row.get("Subject")) + iptc,
                  HIERARCHY: _as_list(row.get("HierarchicalSubject")), TAGS_LIST: _as_list(row.get("TagsList"))},
                 _packet_own(row.get("XMP")))


def _plain(path: str) -> bool:
    """A name an argument file passes unchanged: UTF-8, one line, no outer spaces (exiftool reads each
    line of the file as one argument, so a name holding a newline would pass options of its own)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return path == path.strip() and not any(ord(c) < 32 or c == "\x7f" for c in path)


def _exiftool_batch(exiftool: str, paths: list[str]) -> dict[str, _Found]:
    """Path -> keywords of ``paths`` (absolute, regular files): plain names through an argument file, the
    others (a newline, outer spaces, bytes that are not UTF-8 in the name) one call each, as exact
    arguments after ``--``, matched by position, never by the name exiftool prints."""
    plain = [p for p in paths if _plain(p)]
    odd = [p for p in paths if not _plain(p)]
    out: dict[str, _Found] = {}
    if plain:
        with tempfile.NamedTemporaryFile("w", suffix=".args", encoding="utf-8", delete=False) as fh:
            fh.write("\n".join(plain) + "\n")
            args = fh.name
        try:
            rows = _run_exiftool(exiftool, None, args)
        finally:
            os.unlink(args)
        known = set(plain)
        out.update((r["SourceFile"], _found_in(r)) for r in rows if r.get("SourceFile") in known)
    for path in odd:
        rows = _run_exiftool(exiftool, [os.fsencode(path)], None)
        if len(rows) == 1:
            out[path] = _found_in(rows[0])
    return out


def _embedded(paths: list[str], exiftool: str | None = None) -> dict[str, _Found]:
    exiftool = exiftool or shutil.which("exiftool")
    if exiftool is None:
        return {}
    paths = [p for p in paths if os.path.isabs(p) and os.path.isfile(p)]  # regular files: a FIFO would block
    out: dict[str, _Found] = {}
    for i in range(0, len(paths), EXIFTOOL_BATCH):
        out.update(_exiftool_batch(exiftool, paths[i:i + EXIFTOOL_BATCH]))
    return out


def embedded_keywords(paths: list[str], exiftool: str | None = None) -> dict[str, Keywords]:
    """Path -> keywords embedded in the file (XMP, IPTC; those a tagger record in its XMP lists left
    out), through exiftool in batches, for the regular files among ``paths`` (absolute local paths);
    empty when exiftool is not installed. exiftool only reads here: each name reaches it as one
    argument, whatever it holds."""
    return {p: f.keywords() for p, f in _embedded(paths, exiftool).items()}


def _sidecars_found(path: str, errors: list[str] | None) -> list[_Found]:
    """What each sidecar of image ``path`` holds (both names); unreadable ones put in ``errors``."""
    out = []
    for naming in ("photo.jpg.xmp", "photo.xmp"):
        if sibling_claims(path, naming) is not None:  # photo.jpg.jpg: photo.jpg.xmp is photo.jpg's
            continue
        side = existing_sidecar(sidecar_path(path, naming))
        if side is None or not os.path.lexists(side):
            continue
        try:
            out.append(_sidecar_found(side, owner_of(path, side)))
        except (OSError, ValueError) as e:
            if errors is not None:
                errors.append(f"{side}: {getattr(e, 'strerror', None) or e}")
    return out


def image_keywords(paths: list[str], *, embedded: bool = True,
                   errors: list[str] | None = None) -> Iterator[tuple[str, Keywords]]:
    """``(path, keywords)`` per image: both sidecar names, and the embedded metadata unless
    ``embedded`` is False, without tagger's items (each sidecar's own record's; in the image, those
    any record of the image lists). Unreadable sidecars are skipped, their ``path: reason`` put in ``errors``."""
    local = {p: to_local_path(p) for p in paths}  # a catalog URI may be a file:// one (a name not UTF-8)
    inside = _embedded([lp for lp in local.values() if lp]) if embedded else {}
    for path in paths:
        found = _sidecars_found(path, errors)
        kw = Keywords()
        for f in found:  # each sidecar without its own record's items: the other may hold a person's same word
            kw.update(f.keywords())
        if (local[path] or "") in inside:
            f = inside[local[path] or ""]
            own = {t: set().union(f.own[t], *(g.own[t] for g in found)) for t in LISTS}
            kw.update(f.keywords(own))
        yield path, kw
