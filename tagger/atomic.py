"""Atomic writes of files and folders: the one temp-and-rename of the package.

A file is written to a unique hidden temp name beside its target (same file system, so the rename
is atomic), flushed and fsynced, renamed over the target, and the folder's entry fsynced:
:func:`atomic_open` yields the binary handle (``np.save``, ``pq.write_table``, ``pickle.dump`` all
write to one), :func:`atomic_write_bytes` / :func:`atomic_write_text` write a whole value.
A folder is filled under a temp name and renamed into place once complete: :func:`atomic_dir`
(or :func:`commit_dir` for a temp folder filled elsewhere), every file in it fsynced first.

If the body raises, the temp is removed and the target keeps its old content; a
:class:`~tagger.errors.SimulatedCrash` leaves the temp behind, as a killed process would (those are
named with :data:`TMP_PREFIX`, the writer's pid and a random suffix, for cleaners to find).
"""
from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import SimulatedCrash

__all__ = ["TMP_PREFIX", "atomic_dir", "atomic_open", "atomic_write_bytes", "atomic_write_text", "commit_dir",
           "fsync_dir", "fsync_tree", "temp_name"]

logger = logging.getLogger(__name__)

#: Prefix of every temp file or folder (hidden, so photo tools and listings skip them).
TMP_PREFIX = ".tagger-tmp-"


def _name_max(folder: Path) -> int:
    """The longest file name ``folder``'s file system takes, in bytes (255 where it cannot say)."""
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (AttributeError, OSError, ValueError):
        return 255


def _fitted(name: str, limit: int) -> str:
    """``name``, or when its bytes pass ``limit`` its start and its last extension around ``~``."""
    if len(os.fsencode(name)) <= limit:
        return name
    ext = os.path.splitext(name)[1]
    ext = ext if len(os.fsencode(ext)) <= 16 else ""
    head = name[:limit]
    while head and len(os.fsencode(f"{head}~{ext}")) > limit:  # whole characters: no UTF-8 sequence cut
        head = head[:-1]
    return f"{head}~{ext}"


def temp_name(target: str | os.PathLike[str]) -> Path:
    """A unique hidden temp name beside ``target``: ``<TMP_PREFIX><name>.<pid>.<8 hex digits>``, a name
    too long for the file system with that around it shortened to ``<start>~<extension>``."""
    t = Path(target)
    tail = f".{os.getpid()}.{uuid.uuid4().hex[:8]}"
    limit = max(_name_max(t.parent) - len(TMP_PREFIX) - len(tail), 1)
    return t.with_name(f"{TMP_PREFIX}{_fitted(t.name, limit)}{tail}")


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Flush a folder's entries (a rename inside it) to disk; a no-op where unsupported."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(folder: str | os.PathLike[str]) -> None:
    """Fsync every regular file below ``folder`` and every folder's entries, ``folder`` included."""
    for root, _dirs, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            if os.path.isfile(path) and not os.path.islink(path):
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        fsync_dir(root)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], *, parents: bool = True, mode: int | None = None,
                before_replace: Callable[[Path], None] | None = None) -> Iterator[BinaryIO]:
    """A binary handle on a new temp file beside ``path``; on a clean exit it replaces ``path``.

    ``parents``: make missing folders above ``path`` (False: a missing folder is an error).
    ``mode``: the file's permission bits (default: as ``open`` makes them, under the umask).
    ``before_replace(tmp)``: called once the temp file is complete, just before the rename (a check
    that the target did not change meanwhile); if it raises, nothing is replaced.
    """
    target = Path(path)
    if parents:
        target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(target)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        if before_replace is not None:
            before_replace(tmp)
        os.replace(tmp, target)
    except SimulatedCrash:
        raise  # the temp file stays, as after a kill
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(target.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, parents: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically."""
    with atomic_open(path, parents=parents) as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8", *,
                      parents: bool = True) -> None:
    """Replace ``path`` with ``text`` (encoded as ``encoding``) atomically."""
    atomic_write_bytes(path, text.encode(encoding), parents=parents)


def commit_dir(tmp: str | os.PathLike[str], final: str | os.PathLike[str], *, replace: bool = True) -> bool:
    """Rename the complete folder ``tmp`` to ``final`` (its files fsynced first); True when it landed.

    An existing ``final`` is moved aside and removed once ``tmp`` is in place when ``replace``, or
    kept (``tmp`` removed, False returned) when not. When another writer commits ``final`` between
    the two steps, theirs is kept and False returned.
    """
    tmp, final = Path(tmp), Path(final)
    fsync_tree(tmp)
    old = None
    if os.path.lexists(final):
        if not replace:
            _remove(tmp)
            return False
        old = temp_name(final)
        os.replace(final, old)
    try:
        os.rename(tmp, final)
    except OSError as e:
        if e.errno in (errno.ENOTEMPTY, errno.EEXIST) and final.is_dir():
            logger.debug("%s was committed by another writer first", final)
            _remove(tmp)
            _remove(old)
            return False
        if old is not None:  # put the old one back
            with contextlib.suppress(OSError):
                os.replace(old, final)
        raise
    _remove(old)
    fsync_dir(final.parent)
    return True


def _remove(path: Path | None) -> None:
    """Remove a file or folder tree, quietly (a leftover is only a stale temp)."""
    if path is None:
        return
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike[str], *, replace: bool = True) -> Iterator[Path]:
    """A new temp folder beside ``final`` to fill; on a clean exit it is committed with
    :func:`commit_dir` (see ``replace`` there), else removed. Missing folders above are made."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(final)
    tmp.mkdir()
    try:
        yield tmp
    except SimulatedCrash:
        raise  # the temp folder stays, as after a kill
    except BaseException:
        _remove(tmp)
        raise
    commit_dir(tmp, final, replace=replace)
