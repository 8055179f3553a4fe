"""Manifests: a text file of URIs (one per line) or a Parquet table of them, read into
``(uri, size)`` pairs for :func:`~tagger.pipeline.sources.scan_images`.

A text manifest is UTF-8 (a BOM allowed), one URI or path per line, ``#`` comments, relative paths
taken from the manifest's folder; lines end at ``\n``, ``\r\n`` or ``\r`` (not at U+2028 and the like:
those are in file names). A Parquet manifest has a text column ``uri`` or ``path`` and optionally a numeric
``size`` (or ``bytes``); a binary column of image content is never read. Anything else is a
SourceError that says what is wrong.
"""
from __future__ import annotations

import logging
import os
import re

import pyarrow as pa

from ..errors import SourceError
from ..textfile import decode_utf8
from ..uris import normalize_uri, to_local_path
from .reading import _filesystem, read_bytes

__all__ = ["manifest_base", "parquet_manifest", "text_manifest"]

logger = logging.getLogger(__name__)

_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def text_manifest(src: str) -> list[tuple[str, int | None]]:
    """The URIs of the text manifest ``src`` (sizes unknown)."""
    return _manifest_lines(_manifest_text(src), manifest_base(src))


def parquet_manifest(source: str) -> list[tuple[str, int | None]]:
    """The URIs (and sizes, where given) of the Parquet manifest ``source``."""
    return _parquet_manifest(source)


def _manifest_lines(text: str, base: str | None) -> list[tuple[str, int | None]]:
    out: list[tuple[str, int | None]] = []
    for line in _LINE_BREAK.split(text):  # not str.splitlines: U+2028, U+0085, \f... are in file names
        line = line.strip()
        if line and not line.startswith("#"):
            out.append((normalize_uri(line, base), None))
    return out


def _read_parquet_manifest(source: str) -> pa.Table:
    """The uri/path (and numeric size/bytes) columns of a Parquet manifest (a binary ``bytes`` column,
    image content, is not read)."""
    import pyarrow.parquet as pq

    def read(f) -> pa.Table:
        pf = pq.ParquetFile(f)
        schema = pf.schema_arrow
        if "uri" not in schema.names and "path" not in schema.names:
            raise SourceError(f"parquet manifest {source} needs a 'uri' or 'path' column, has {schema.names}")
        sizes = [c for c in ("size", "bytes") if c in schema.names and _numeric(schema.field(c).type)]
        if "size" in schema.names and "size" not in sizes:
            raise SourceError(f"parquet manifest {source}: column 'size' must hold numbers of bytes, "
                              f"it holds {schema.field('size').type}")
        return pf.read(columns=[c for c in ("uri", "path") if c in schema.names] + sizes)

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


def _numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t)


def _uri_column(col: pa.ChunkedArray, source: str, name: str) -> list[str | None]:
    """A manifest's URIs as str: a text column as it is, a binary one decoded as UTF-8."""
    t = col.type.value_type if pa.types.is_dictionary(col.type) else col.type
    if not any(test(t) for test in (pa.types.is_string, pa.types.is_large_string, pa.types.is_binary,
                                    pa.types.is_large_binary)):
        raise SourceError(f"parquet manifest {source}: column {name!r} must hold URIs or paths as text, it holds {t}")
    try:
        return [v.decode("utf-8") if isinstance(v, bytes) else v for v in col.cast(t).to_pylist()]
    except UnicodeDecodeError as e:
        raise SourceError(f"parquet manifest {source}: column {name!r} holds bytes that are not UTF-8 "
                          f"({e.object[:60]!r})") from e


def _parquet_manifest(source: str) -> list[tuple[str, int | None]]:
    table = _read_parquet_manifest(source)
    col = "uri" if "uri" in table.column_names else "path"
    uris = _uri_column(table.column(col), source, col)
    sizes = next(([int(v) if v is not None and 0 <= v < 2**63 else None for v in table.column(c).to_pylist()]
                  for c in ("size", "bytes") if c in table.column_names), [None] * table.num_rows)
    base = manifest_base(source)
    return [(normalize_uri(u, base), s) for u, s in zip(uris, sizes) if u and u.strip()]


def _manifest_text(src: str) -> str:
    return decode_utf8(read_bytes(src), f"manifest {src}", "one URI per line", SourceError)


def manifest_base(source: str) -> str:
    """Folder against which a manifest's relative entries are resolved."""
    local = to_local_path(source)
    return os.path.dirname(local) if local is not None else source.rsplit("/", 1)[0]
