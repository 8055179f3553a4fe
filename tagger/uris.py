"""URI helpers every layer uses: a URI's scheme, and the local path of a plain path or ``file://`` URI.

Local files are named by absolute paths (``file://`` URIs are converted), so that one file has one
URI and thus one ``image_id``; a path whose name is not UTF-8 by a ``file://`` URI of its bytes
(:func:`local_uri`: a catalog string must be UTF-8); any other scheme (``s3://``, ``gs://``...) is
remote. This module imports nothing of the package.
"""
from __future__ import annotations

import os
from urllib.parse import quote, unquote_to_bytes, urlparse

__all__ = ["IMAGE_EXTENSIONS", "local_uri", "normalize_uri", "scheme", "to_local_path"]

#: What a folder listing takes for an image (any case). HEIC/HEIF (phones) decode through pillow-heif,
#: AVIF through Pillow itself; raw camera files are not listed.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff",
                              ".heic", ".heif", ".avif"})


def scheme(uri: str) -> str:
    """The lower-case scheme of ``uri`` ("" for a plain path; a one-letter scheme is a Windows drive)."""
    p = urlparse(uri)
    return p.scheme.lower() if len(p.scheme) > 1 else ""


def local_uri(path: str) -> str:
    """The URI of a local path: the path itself, or, for a name that is not UTF-8 (os keeps its bytes
    as surrogates, which no catalog string can hold), ``file://`` with those bytes percent-encoded."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return "file://" + quote(os.fsencode(path), safe="/")
    return path


def to_local_path(uri: str) -> str | None:
    """Absolute local path for a plain path or ``file://`` URI; None for remote URIs."""
    kind = scheme(uri)
    if kind == "file":
        p = urlparse(uri)
        path = os.fsdecode(unquote_to_bytes(p.path))  # bytes that are not UTF-8 stay the OS's own name
        if p.netloc and p.netloc != "localhost":
            path = f"//{p.netloc}{path}"
        return os.path.abspath(path)
    if kind:
        return None
    return os.path.abspath(os.path.expanduser(uri))


def normalize_uri(uri: str, base: str | None = None) -> str:
    """Canonical form of one URI: absolute path for local files (relative ones taken from
    ``base``), the URI unchanged for remote schemes."""
    uri = uri.strip()
    if not scheme(uri) and base is not None and not os.path.isabs(os.path.expanduser(uri)):
        uri = os.path.join(base, uri)
    local = to_local_path(uri)
    return local_uri(local) if local is not None else uri
