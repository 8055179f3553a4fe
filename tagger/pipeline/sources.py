"""Image sources: list the images of a folder, a glob, a manifest or an object-store prefix.

Local files are named by absolute paths (``file://`` URIs are converted by :mod:`tagger.uris`), so
that one file has one URI and thus one ``image_id``. Other schemes (``s3://``, ``gs://``…) go through fsspec,
imported only when needed.

Only regular files are read: a FIFO, device or socket with an image name (or a link to one) is
skipped when listing, with its kind in the reasons, and refused when read (it could hang or never
end); a link is followed only to a regular file. Reading one image (whole, within a size cap and,
remote, a time limit) is :mod:`.reading`; manifests are :mod:`.manifests`. A local name that is not
UTF-8 is listed under a ``file://`` URI of its bytes (:func:`~.reading.local_uri`).
"""
from __future__ import annotations

import glob as globlib
import logging
import os
import stat
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa

from ..errors import SourceError
from ..uris import IMAGE_EXTENSIONS, normalize_uri, to_local_path
from ..uris import scheme as _scheme
from .manifests import parquet_manifest, text_manifest
from ..uris import local_uri
from .reading import (DEFAULT_MAX_IMAGE_BYTES, MAX_IMAGE_BYTES_ENV, REMOTE_READ_TIMEOUT_S, _describe_remote, _file_kind,
                      _filesystem, max_image_bytes, read_bytes)

__all__ = ["DEFAULT_MAX_IMAGE_BYTES", "IMAGE_EXTENSIONS", "MAX_IMAGE_BYTES_ENV", "REMOTE_READ_TIMEOUT_S", "Listing", "is_image_name",
           "list_image_records", "list_images", "local_uri", "max_image_bytes", "normalize_uri",
           "read_bytes", "scan_images", "to_local_path"]

logger = logging.getLogger(__name__)


TEXT_MANIFEST_EXTENSIONS = (".txt", ".lst", ".list", ".urls")
PARQUET_EXTENSIONS = (".parquet", ".pq")
#: A listing: each image's URI, its size and, for a local file, its modification time (ns since the epoch:
#: an edit that keeps the size still changes it); null where the source does not say.
SCHEMA = pa.schema([("uri", pa.string()), ("size", pa.int64()), ("modified_ns", pa.int64())])
#: ``(uri, size)`` or ``(uri, size, modified_ns)``, size and time None where unknown.
Listed = tuple[Any, ...]
_GLOB_CHARS = set("*?[")


def is_image_name(name: str) -> bool:
    """True when ``name`` ends in an image extension (case-insensitive)."""
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _not_regular(path: str) -> str | None:
    """Why the file at ``path`` (links followed) is not read: its kind, or a broken link; None for a
    regular file or one that cannot be examined (reading it then fails as an error row)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "broken link" if os.path.islink(path) else None
    except OSError:
        return None
    return None if stat.S_ISREG(mode) else f"not a regular file ({_file_kind(mode)})"


@dataclass
class Listing:
    """What listing a source found: the images, and the files passed over, counted by reason."""

    images: pa.Table
    skipped: Counter = field(default_factory=Counter)

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())

    def skipped_text(self) -> str:
        """``"3 with extension .txt, 1 hidden"`` (empty when nothing was skipped)."""
        return ", ".join(f"{n} {why}" for why, n in sorted(self.skipped.items(), key=lambda kv: (-kv[1], kv[0])))


def _skip_reason(name: str) -> str:
    ext = os.path.splitext(name)[1].lower()
    return f"with extension {ext}" if ext else "without extension"


def _table(items: Iterable[Listed]) -> pa.Table:
    rows = sorted({uri: (*rest, None)[:2] for uri, *rest in items}.items())
    return pa.table({"uri": pa.array([u for u, _ in rows], pa.string()),
                     "size": pa.array([s for _, (s, _) in rows], pa.int64()),
                     "modified_ns": pa.array([m for _, (_, m) in rows], pa.int64())}, schema=SCHEMA)


def _local_stat(path: str) -> tuple[int | None, int | None]:
    """(size, modification time in ns) of a local file, (None, None) when it cannot be examined."""
    try:
        st = os.stat(path)
    except OSError:
        return None, None
    return st.st_size, st.st_mtime_ns


def _walk_local(root: str, include_hidden: bool, follow_links: bool,
                skipped: Counter, exclude: frozenset[str] = frozenset()) -> list[Listed]:
    out = []

    def unreadable(e: OSError) -> None:  # os.walk would pass over it in silence
        skipped["unreadable folder"] += 1
        logger.warning("cannot list %s: %s", e.filename, e.strerror or e)

    for dirpath, dirnames, filenames in os.walk(root, followlinks=follow_links, onerror=unreadable):
        if not include_hidden:
            skipped["hidden"] += sum(d.startswith(".") for d in dirnames)
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        if exclude:
            inside = [d for d in dirnames if os.path.realpath(os.path.join(dirpath, d)) in exclude]
            skipped["in the workspace"] += len(inside)  # its thumbnails and report are not the user's images
            dirnames[:] = [d for d in dirnames if d not in inside]
        for name in filenames:
            if not include_hidden and name.startswith("."):
                skipped["hidden"] += 1
            elif not is_image_name(name):
                skipped[_skip_reason(name)] += 1
            else:
                path = os.path.join(dirpath, name)
                why = _not_regular(path)
                if why:
                    skipped[why] += 1
                else:
                    out.append((local_uri(path), *_local_stat(path)))
    return out


def _glob_local(pattern: str, include_hidden: bool, skipped: Counter) -> list[Listed]:
    kwargs: dict[str, Any] = {"include_hidden": True} if include_hidden and sys.version_info >= (3, 11) else {}
    out = []
    for path in globlib.glob(pattern, recursive=True, **kwargs):
        if os.path.isdir(path):
            continue
        why = _not_regular(path) if is_image_name(path) else _skip_reason(path)
        if why:
            skipped[why] += 1
        else:
            out.append((local_uri(os.path.abspath(path)), *_local_stat(path)))
    return out


def _list_remote(uri: str, skipped: Counter) -> list[Listed]:
    fs, path = _filesystem(uri)
    scheme = _scheme(uri)
    protocol = scheme or (fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol)

    def full(p: str) -> str:
        return p if _scheme(p) else f"{protocol}://{p.lstrip('/')}"

    try:
        if _GLOB_CHARS & set(path):
            found = fs.glob(path, detail=True)
        elif fs.isdir(path):
            found = fs.find(path, detail=True)
        else:
            raise SourceError(f"image source {uri} not found (expected a folder, a glob or a manifest)")
    except SourceError:
        raise
    except Exception as e:  # remote backends raise their own error types
        raise SourceError(f"cannot list {uri}: {_describe_remote(e)}") from e
    files = [(p, info) for p, info in found.items() if info.get("type", "file") == "file"]
    skipped.update(_skip_reason(p) for p, _ in files if not is_image_name(p))
    return [(full(p), info.get("size")) for p, info in files if is_image_name(p)]


def _is_manifest(source: str, exts: tuple[str, ...]) -> bool:
    return urlparse(source).path.lower().endswith(exts) if _scheme(source) else source.lower().endswith(exts)


def list_images(source: str | os.PathLike, *, include_hidden: bool = False,
                follow_links: bool = False) -> pa.Table:
    """:func:`scan_images`'s table of images: ``(uri, size, modified_ns)`` (:data:`SCHEMA`) sorted by uri."""
    return scan_images(source, include_hidden=include_hidden, follow_links=follow_links).images


def scan_images(source: str | os.PathLike, *, include_hidden: bool = False,
                follow_links: bool = False, exclude: Iterable[str | os.PathLike] = ()) -> Listing:
    """List the images of ``source``, counting the files passed over (by extension, hidden).

    ``source`` is a folder (whatever its name; searched recursively for jpg/jpeg/png/webp/bmp/gif/
    tif/tiff/heic/heif/avif, any case), an image file, a glob (``**`` allowed), a text manifest
    (``.txt``: one URI per line, ``#`` comments; relative paths are taken from the manifest's folder),
    a Parquet manifest (text column ``uri`` or ``path``, optional numeric ``size``), each local,
    ``file://`` or remote (fsspec). Hidden files and folders are skipped unless ``include_hidden``;
    so are files that are not regular (FIFOs, devices, sockets, also behind a link) and broken links,
    each kind counted with its reason; so are local files under a folder of ``exclude`` (the workspace's
    own folders, when the source holds them). Manifests report the sizes they hold (else null). An empty or
    missing source, a file that is neither image nor manifest, a manifest that is not UTF-8 text or a
    Parquet manifest of the wrong types raises SourceError; an empty one gives an empty table (and a
    warning saying what was skipped).
    """
    src = os.fspath(source)
    if not src.strip():
        raise SourceError("empty image source: give a folder, a glob, a manifest or an image file")
    skipped: Counter = Counter()
    local = to_local_path(src)
    away = frozenset(os.path.realpath(os.fspath(e)) for e in exclude)
    if local is not None and os.path.isdir(local) and away and _under(local, away):
        items, skipped["in the workspace"] = [], 1  # the source is one of the workspace's own folders
    elif local is not None and os.path.isdir(local):  # a folder, whatever its name
        items = _walk_local(local, include_hidden, follow_links, skipped, away)
    elif _is_manifest(src, PARQUET_EXTENSIONS):
        items = parquet_manifest(src)
    elif _is_manifest(src, TEXT_MANIFEST_EXTENSIONS):
        items = text_manifest(src)
    elif local is None:
        items = _list_remote(src, skipped)
    else:
        items = _list_local(src, local, include_hidden, skipped)
    if away and not (local is not None and os.path.isdir(local)):  # a walk pruned them already
        items = _outside(items, away, skipped)
    listing = Listing(_table(items), +skipped)  # unary plus drops zero counts
    why = f"; skipped {listing.n_skipped} file(s): {listing.skipped_text()}" if listing.n_skipped else ""
    if listing.images.num_rows == 0:
        logger.warning("no images in %s%s", src, why)
    elif listing.n_skipped:
        logger.warning("listed %d images from %s%s", listing.images.num_rows, src, why)
    else:
        logger.info("listed %d images from %s", listing.images.num_rows, src)
    return listing


def _under(path: str, away: frozenset[str]) -> bool:
    """Whether the local ``path`` (resolved) is one of the folders ``away`` or lies below one."""
    folder = os.path.realpath(path)
    while True:
        if folder in away:
            return True
        parent = os.path.dirname(folder)
        if parent == folder:
            return False
        folder = parent


def _outside(items: list[Listed], away: frozenset[str], skipped: Counter) -> list[Listed]:
    """``items`` without the local files under a folder of ``away`` (counted as skipped)."""
    def under(uri: str) -> bool:
        path = to_local_path(uri)
        return path is not None and _under(path, away)
    kept = [item for item in items if not under(item[0])]
    skipped["in the workspace"] += len(items) - len(kept)
    return kept


def _list_local(src: str, local: str, include_hidden: bool, skipped: Counter) -> list[Listed]:
    """One image file (its name taken literally, even with ``[``), else a glob; else SourceError."""
    if os.path.isfile(local) and is_image_name(local):
        return [(local_uri(local), *_local_stat(local))]
    if _GLOB_CHARS & set(local):
        return _glob_local(local, include_hidden, skipped)
    if os.path.lexists(local) and _not_regular(local):
        raise SourceError(f"image source {src}: {_not_regular(local)}; give a folder, a glob, a manifest "
                          "or an image file")
    if os.path.isfile(local):
        raise SourceError(f"image source {src} is neither an image ({_skip_reason(local)}) nor a manifest "
                          f"({', '.join(TEXT_MANIFEST_EXTENSIONS + PARQUET_EXTENSIONS)})")
    raise SourceError(f"image source {src} not found (expected a folder, a glob, "
                      f"a .txt or .parquet manifest, or an image file)")


def list_image_records(source: str | os.PathLike, **kwargs) -> list[tuple[str, int | None]]:
    """``list_images`` as a list of ``(uri, size)`` tuples."""
    t = list_images(source, **kwargs)
    return list(zip(t.column("uri").to_pylist(), t.column("size").to_pylist()))


