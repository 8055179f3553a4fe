"""Image sources: list the images of a folder, a glob, a manifest or an object-store prefix.

Local files are named by absolute paths (``file://`` URIs are converted by :mod:`tagger.uris`), so
that one file has one URI and thus one ``image_id``. Other schemes (``s3://``, ``gs://``…) go through fsspec,
imported only when needed.

Only regular files are read: a FIFO, device or socket with an image name (or a link to one) is
skipped when listing, with its kind in the reasons, and refused when read (it could hang or never
end); a link is followed only to a regular file. One image is read whole, up to a size cap
(:func:`max_image_bytes`, ``$TAGGER_MAX_IMAGE_BYTES``): a larger file is an error, not a read.
"""
from __future__ import annotations

import glob as globlib
import logging
import os
import re
import stat
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa

from ..errors import ConfigError, SourceError
from ..uris import normalize_uri, to_local_path
from ..uris import scheme as _scheme

__all__ = ["IMAGE_EXTENSIONS", "MAX_IMAGE_BYTES_ENV", "Listing", "is_image_name", "list_image_records",
           "list_images", "max_image_bytes", "normalize_uri", "read_bytes", "scan_images", "to_local_path"]

logger = logging.getLogger(__name__)

#: Largest image file read, in bytes (``$TAGGER_MAX_IMAGE_BYTES``; units such as ``512MB`` or ``1GiB``).
MAX_IMAGE_BYTES_ENV = "TAGGER_MAX_IMAGE_BYTES"
DEFAULT_MAX_IMAGE_BYTES = 256 * 2**20
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?)B?\s*$", re.IGNORECASE)
_KINDS = ((stat.S_ISFIFO, "FIFO"), (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
          (stat.S_ISSOCK, "socket"), (stat.S_ISDIR, "folder"))

#: What a folder listing takes for an image (any case). HEIC/HEIF (phones) decode through pillow-heif,
#: AVIF through Pillow itself; raw camera files are not listed.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff",
                              ".heic", ".heif", ".avif"})
TEXT_MANIFEST_EXTENSIONS = (".txt", ".lst", ".list", ".urls")
PARQUET_EXTENSIONS = (".parquet", ".pq")
SCHEMA = pa.schema([("uri", pa.string()), ("size", pa.int64())])
_GLOB_CHARS = set("*?[")


def is_image_name(name: str) -> bool:
    """True when ``name`` ends in an image extension (case-insensitive)."""
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def max_image_bytes() -> int:
    """The per-image size cap: ``$TAGGER_MAX_IMAGE_BYTES`` (bytes, or e.g. ``512MB``, ``1GiB``), default 256 MiB."""
    raw = os.environ.get(MAX_IMAGE_BYTES_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_IMAGE_BYTES
    m = _SIZE.match(raw)
    if not m:
        raise ConfigError(f"${MAX_IMAGE_BYTES_ENV} must be a size such as 268435456, 512MB or 1GiB, got {raw!r}")
    base = 1024 if m.group(3) or not m.group(2) else 1000
    value = int(float(m.group(1)) * base ** " KMGT".index(m.group(2).upper() or " "))
    if value < 1:
        raise ConfigError(f"${MAX_IMAGE_BYTES_ENV} must be at least 1 byte, got {raw!r}")
    return value


def _file_kind(mode: int) -> str:
    """``"FIFO"``, ``"character device"``... for a file mode that is not a regular file's."""
    return next((name for test, name in _KINDS if test(mode)), "special file")


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


def _table(items: Iterable[tuple[str, int | None]]) -> pa.Table:
    rows = sorted(dict(items).items())
    return pa.table({"uri": pa.array([u for u, _ in rows], pa.string()),
                     "size": pa.array([s for _, s in rows], pa.int64())}, schema=SCHEMA)


def _local_stat(path: str) -> int | None:
    try:
        return os.stat(path).st_size
    except OSError:
        return None


def _walk_local(root: str, include_hidden: bool, follow_links: bool,
                skipped: Counter) -> list[tuple[str, int | None]]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=follow_links):
        if not include_hidden:
            skipped["hidden"] += sum(d.startswith(".") for d in dirnames)
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
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
                    out.append((path, _local_stat(path)))
    return out


def _glob_local(pattern: str, include_hidden: bool, skipped: Counter) -> list[tuple[str, int | None]]:
    kwargs: dict[str, Any] = {"include_hidden": True} if include_hidden and sys.version_info >= (3, 11) else {}
    out = []
    for path in globlib.glob(pattern, recursive=True, **kwargs):
        if os.path.isdir(path):
            continue
        why = _not_regular(path) if is_image_name(path) else _skip_reason(path)
        if why:
            skipped[why] += 1
        else:
            out.append((os.path.abspath(path), _local_stat(path)))
    return out


def _filesystem(uri: str):
    try:
        import fsspec
    except ImportError as e:  # pragma: no cover - fsspec is a dependency of the test env
        raise SourceError(f"reading {uri} needs fsspec (and its backend, e.g. s3fs or gcsfs)") from e
    try:
        return fsspec.core.url_to_fs(uri)
    except (ImportError, ValueError) as e:
        raise SourceError(f"no filesystem for {uri}: {e}") from e


def _list_remote(uri: str, skipped: Counter) -> list[tuple[str, int | None]]:
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
        raise SourceError(f"cannot list {uri}: {type(e).__name__}: {e}") from e
    files = [(p, info) for p, info in found.items() if info.get("type", "file") == "file"]
    skipped.update(_skip_reason(p) for p, _ in files if not is_image_name(p))
    return [(full(p), info.get("size")) for p, info in files if is_image_name(p)]


def _manifest_lines(text: str, base: str | None) -> list[tuple[str, int | None]]:
    out: list[tuple[str, int | None]] = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append((normalize_uri(line, base), None))
    return out


def _read_parquet_manifest(source: str) -> pa.Table:
    """The uri/path (and size/bytes) columns of a Parquet manifest."""
    import pyarrow.parquet as pq

    def read(f) -> pa.Table:
        pf = pq.ParquetFile(f)
        names = pf.schema_arrow.names
        wanted = [c for c in ("uri", "path", "size", "bytes") if c in names]
        if "uri" not in wanted and "path" not in wanted:
            raise SourceError(f"parquet manifest {source} needs a 'uri' or 'path' column, has {names}")
        return pf.read(columns=wanted)

    local = to_local_path(source)
    try:
        if local is not None:
            return read(local)
        fs, path = _filesystem(source)
        with fs.open(path, "rb") as f:
            return read(f)
    except SourceError:
        raise
    except Exception as e:  # missing file, not Parquet, remote errors
        raise SourceError(f"cannot read parquet manifest {source}: {type(e).__name__}: {e}") from e


def _parquet_manifest(source: str) -> list[tuple[str, int | None]]:
    table = _read_parquet_manifest(source)
    col = "uri" if "uri" in table.column_names else "path"
    sizes = next((table.column(c).to_pylist() for c in ("size", "bytes") if c in table.column_names),
                 [None] * table.num_rows)
    base = _manifest_base(source)
    return [(normalize_uri(u, base), s) for u, s in zip(table.column(col).to_pylist(), sizes) if u]


def _is_manifest(source: str, exts: tuple[str, ...]) -> bool:
    return urlparse(source).path.lower().endswith(exts) if _scheme(source) else source.lower().endswith(exts)


def list_images(source: str | os.PathLike, *, include_hidden: bool = False,
                follow_links: bool = False) -> pa.Table:
    """:func:`scan_images`'s table of images: ``(uri: string, size: int64)`` sorted by uri."""
    return scan_images(source, include_hidden=include_hidden, follow_links=follow_links).images


def _manifest_text(src: str) -> str:
    data = read_bytes(src)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise SourceError(f"manifest {src} is not UTF-8 text (byte 0x{data[e.start]:02x} on line {line}); "
                          "save it as UTF-8, one URI per line") from e


def scan_images(source: str | os.PathLike, *, include_hidden: bool = False,
                follow_links: bool = False) -> Listing:
    """List the images of ``source``, counting the files passed over (by extension, hidden).

    ``source`` is a folder (searched recursively for jpg/jpeg/png/webp/bmp/gif/tif/tiff/heic/heif/avif,
    any case), a glob (``**`` allowed), a text manifest (``.txt``: one URI per line, ``#`` comments;
    relative paths are taken from the manifest's folder), a Parquet manifest (column ``uri`` or
    ``path``, optional ``size``), each local, ``file://`` or remote (fsspec). Hidden files and
    folders are skipped unless ``include_hidden``; so are files that are not regular (FIFOs,
    devices, sockets, also behind a link) and broken links, each kind counted with its reason. Manifests report the sizes they hold (else
    null). A missing source or a manifest that is not UTF-8 raises SourceError; an empty one
    gives an empty table (and a warning saying what was skipped).
    """
    src = os.fspath(source)
    skipped: Counter = Counter()
    if _is_manifest(src, PARQUET_EXTENSIONS):
        items = _parquet_manifest(src)
    elif _is_manifest(src, TEXT_MANIFEST_EXTENSIONS):
        items = _manifest_lines(_manifest_text(src), _manifest_base(src))
    else:
        local = to_local_path(src)
        if local is None:
            items = _list_remote(src, skipped)
        elif os.path.isdir(local):
            items = _walk_local(local, include_hidden, follow_links, skipped)
        elif _GLOB_CHARS & set(local):
            items = _glob_local(local, include_hidden, skipped)
        elif os.path.isfile(local) and is_image_name(local):
            items = [(local, _local_stat(local))]
        elif os.path.lexists(local) and _not_regular(local):
            raise SourceError(f"image source {src}: {_not_regular(local)}; give a folder, a glob, a manifest "
                              "or an image file")
        else:
            raise SourceError(f"image source {src} not found (expected a folder, a glob, "
                              f"a .txt or .parquet manifest, or an image file)")
    listing = Listing(_table(items), +skipped)  # unary plus drops zero counts
    why = f"; skipped {listing.n_skipped} file(s): {listing.skipped_text()}" if listing.n_skipped else ""
    if listing.images.num_rows == 0:
        logger.warning("no images in %s%s", src, why)
    elif listing.n_skipped:
        logger.warning("listed %d images from %s%s", listing.images.num_rows, src, why)
    else:
        logger.info("listed %d images from %s", listing.images.num_rows, src)
    return listing


def _manifest_base(source: str) -> str:
    """Folder against which a manifest's relative entries are resolved."""
    local = to_local_path(source)
    return os.path.dirname(local) if local is not None else source.rsplit("/", 1)[0]


def list_image_records(source: str | os.PathLike, **kwargs) -> list[tuple[str, int | None]]:
    """``list_images`` as a list of ``(uri, size)`` tuples."""
    t = list_images(source, **kwargs)
    return list(zip(t.column("uri").to_pylist(), t.column("size").to_pylist()))


def _over_cap(uri: str, size: int, cap: int | None) -> SourceError:
    return SourceError(f"{uri} is {size} bytes, over the per-image limit of {cap} bytes "
                       f"(${MAX_IMAGE_BYTES_ENV})")


def _read_local(uri: str, path: str, cap: int | None) -> bytes:
    """A regular local file's bytes; opened without blocking, so a FIFO or device is refused, not read."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise SourceError(f"cannot read {uri}: {e.strerror or type(e).__name__}") from e
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or (cap is not None and st.st_size > cap):
        os.close(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SourceError(f"cannot read {uri}: not a regular file ({_file_kind(st.st_mode)})")
        raise _over_cap(uri, st.st_size, cap)
    with open(fd, "rb", closefd=True) as f:
        try:
            data = f.read() if cap is None else f.read(cap + 1)
        except OSError as e:
            raise SourceError(f"cannot read {uri}: {e.strerror or type(e).__name__}") from e
    if cap is not None and len(data) > cap:  # it grew while being read
        raise _over_cap(uri, len(data), cap)
    return data


def read_bytes(uri: str, max_bytes: int | None = None) -> bytes:
    """Read a whole file given as a local path, ``file://`` URI or fsspec URI.

    Only a regular file is read (a local FIFO, device or socket is refused without blocking), and
    at most ``max_bytes`` (None: no cap). Raises SourceError (with the URI and the reason) when it
    cannot be read or is larger than the cap.
    """
    local = to_local_path(uri)
    if local is not None:
        return _read_local(uri, local, max_bytes)
    fs, path = _filesystem(uri)
    try:
        with fs.open(path, "rb") as f:
            data = f.read() if max_bytes is None else f.read(max_bytes + 1)
    except Exception as e:  # remote backends raise their own error types
        raise SourceError(f"cannot read {uri}: {type(e).__name__}: {e}") from e
    if max_bytes is not None and len(data) > max_bytes:
        raise _over_cap(uri, len(data), max_bytes)
    return data
