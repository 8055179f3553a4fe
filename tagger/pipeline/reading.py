"""Reading one file: a local path, a ``file://`` URI or any fsspec URI, whole and within limits.

Only a regular file is read: a FIFO, device or socket (or a link to one) is refused without
blocking. At most :func:`max_image_bytes` (``$TAGGER_MAX_IMAGE_BYTES``) is read: a larger file is an
error, not a read; a remote one within :data:`REMOTE_READ_TIMEOUT_S` (a server that never answers is
an error, not a hang). A local name that is not UTF-8 (a catalog URI must be) is named by a
``file://`` URI with its bytes percent-encoded (:func:`local_uri`), which :func:`read_bytes` reads back.
"""
from __future__ import annotations

import logging
import os
import re
import stat
import threading
from typing import Any

from ..errors import ConfigError, SourceError
from ..uris import scheme as _scheme
from ..uris import local_uri, to_local_path

__all__ = ["DEFAULT_MAX_IMAGE_BYTES", "MAX_IMAGE_BYTES_ENV", "REMOTE_READ_TIMEOUT_S", "local_uri", "max_image_bytes",
           "read_bytes"]

logger = logging.getLogger(__name__)

#: Largest image file read, in bytes (``$TAGGER_MAX_IMAGE_BYTES``; units such as ``512MB`` or ``1GiB``).
MAX_IMAGE_BYTES_ENV = "TAGGER_MAX_IMAGE_BYTES"
DEFAULT_MAX_IMAGE_BYTES = 256 * 2**20
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?)B?\s*$", re.IGNORECASE)
_KINDS = ((stat.S_ISFIFO, "FIFO"), (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
          (stat.S_ISSOCK, "socket"), (stat.S_ISDIR, "folder"))
#: Seconds one remote image may take to read (a server that accepts and never answers, a dead host).
REMOTE_READ_TIMEOUT_S = 120.0
_HTTP_CONNECT_S, _HTTP_SILENCE_S = 15.0, 30.0


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


def _filesystem(uri: str):
    try:
        import fsspec
    except ImportError as e:  # pragma: no cover - fsspec is a dependency of the test env
        raise SourceError(f"reading {uri} needs fsspec (and its backend, e.g. s3fs or gcsfs)") from e
    try:
        return fsspec.core.url_to_fs(uri, **_storage_options(uri))
    except Exception as e:  # a missing backend, or one that connects when made (ftp, sftp)
        raise SourceError(f"no filesystem for {uri}: {_describe_remote(e)}") from e


def _storage_options(uri: str) -> dict[str, Any]:
    """HTTP(S): aiohttp time limits (its own default waits 5 minutes for a server that never answers)."""
    if _scheme(uri) not in ("http", "https"):
        return {}
    import aiohttp
    timeout = aiohttp.ClientTimeout(total=REMOTE_READ_TIMEOUT_S, sock_connect=_HTTP_CONNECT_S,
                                    sock_read=_HTTP_SILENCE_S)
    return {"client_kwargs": {"timeout": timeout}}


def _describe_remote(e: BaseException) -> str:
    """``Type: message``, with the cause a backend hides (fsspec's HTTP says FileNotFoundError(url) for
    a refused connection)."""
    text = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    cause = e.__cause__ or e.__context__
    return f"{text} ({type(cause).__name__}: {cause})" if cause is not None and str(cause) else text


def _over_cap(uri: str, size: int, cap: int | None) -> SourceError:
    return SourceError(f"{uri} is {size} bytes, over the per-image limit of {cap} bytes "
                       f"(${MAX_IMAGE_BYTES_ENV})")


def _read_local(uri: str, path: str, cap: int | None) -> bytes:
    """A regular local file's bytes; opened without blocking, so a FIFO or device is refused, not read."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except (OSError, ValueError) as e:  # ValueError: a NUL in the path
        raise SourceError(f"cannot read {uri}: {getattr(e, 'strerror', None) or e}") from e
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


def read_bytes(uri: str, max_bytes: int | None = None, *, timeout: float | None = None) -> bytes:
    """Read a whole file given as a local path, ``file://`` URI or fsspec URI.

    Only a regular file is read (a local FIFO, device or socket is refused without blocking), and
    at most ``max_bytes`` (None: no cap); a remote one within ``timeout`` seconds (None:
    :data:`REMOTE_READ_TIMEOUT_S`). Raises SourceError (with the URI and the reason) when it cannot
    be read, takes longer or is larger than the cap.
    """
    local = to_local_path(uri)
    if local is not None:
        return _read_local(uri, local, max_bytes)
    fs, path = _filesystem(uri)  # made here: fsspec keeps one per thread, so a reading thread would leak them
    timeout = REMOTE_READ_TIMEOUT_S if timeout is None else timeout
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["data"] = _read_remote(fs, uri, path, max_bytes)
        except BaseException as e:  # handed to the caller below
            box["error"] = e

    worker = threading.Thread(target=run, name=f"tagger-read {uri[:80]}", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():  # left to its backend's own time limit; a daemon never holds up exit
        raise SourceError(f"cannot read {uri}: no answer within {timeout:g} s")
    if "error" in box:
        raise box["error"]
    return box["data"]


def _read_remote(fs: Any, uri: str, path: str, cap: int | None) -> bytes:
    try:
        with fs.open(path, "rb") as f:
            data = f.read() if cap is None else f.read(cap + 1)
    except Exception as e:  # remote backends raise their own error types
        raise SourceError(f"cannot read {uri}: {_describe_remote(e)}") from e
    if cap is not None and len(data) > cap:
        raise _over_cap(uri, len(data), cap)
    return data
