"""Safe output targets for the verbs that write files outside the workspace (``export --out``,
``export --mirror``, ``report --out``, ``import-keywords --out``).

A target is refused, with one :class:`~tagger.errors.ConfigError` line, when it lies inside the
workspace (the catalog, ``workspace.json``, an index ...), when it exists and is not a regular file
(a folder, a device, a FIFO, a socket), when it is named like an image or a sidecar (``.jpg``, camera
raw, ``.xmp`` ...: even with ``force``, existing or not), when it exists (a broken link too) and
``force`` was not given, when its name ends in ``/`` (a folder's name, existing or not), or when its
folder is missing (nothing creates folders it was not asked to) or not writable. A symbolic link is
the file it leads to: each rule applies to that file (and the names rule to the link's name too),
which is written in its own folder, the link left as it is; a broken link, with ``force``, is
replaced. A link through ``/proc`` (``/dev/stdout``, ``/dev/fd/1``: a process's open file) is
refused: standard output is ``--out -``. Files are written with
:func:`tagger.atomic.atomic_open` (``parents=False``): a temp file in the same folder, flushed, then
renamed over the target.
"""
from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from .errors import ConfigError
from .uris import IMAGE_EXTENSIONS
from .workspace import CATALOG_FILE, OWNED

__all__ = ["STDOUT", "WORKSPACE_OWNED", "check_out_dir", "check_out_file", "inside", "os_reason", "workspace_owned"]

logger = logging.getLogger(__name__)

#: Files an export never replaces, even with ``force``: the images ``encode`` reads and other photo
#: formats (camera raw, JPEG XL, JPEG 2000, layered editor files, SVG).
PHOTO_EXTENSIONS = IMAGE_EXTENSIONS | frozenset(
    "." + e for e in ("dng", "cr2", "cr3", "crw", "nef", "nrw", "arw", "srf", "sr2", "raf", "orf", "rw2", "pef",
                      "srw", "x3f", "3fr", "erf", "kdc", "mrw", "raw", "rwl", "iiq", "jxl", "jp2", "jpe", "jfif",
                      "psd", "psb", "xcf", "svg", "exr", "hdr"))

#: Top-level entries of a workspace that belong to tagger (a sidecar or export never lands there).
WORKSPACE_OWNED = OWNED


def os_reason(e: OSError) -> str:
    """A short reason for an OSError (``permission denied``), without the traceback's repr."""
    return (e.strerror or type(e).__name__).lower()


def _resolved(path: Path) -> Path:
    return Path(os.path.realpath(os.path.expanduser(os.fspath(path))))


def inside(path: str | os.PathLike, root: str | os.PathLike) -> bool:
    """Whether ``path`` (symbolic links followed) is ``root`` or lies below it."""
    return _resolved(Path(path)).is_relative_to(_resolved(Path(root)))


def workspace_owned(path: str | os.PathLike, root: str | os.PathLike) -> bool:
    """Whether ``path`` is one of the workspace's own files or folders (or below one), catalog
    companions (``catalog.duckdb.wal``, ``catalog.duckdb.tmp/``) included."""
    p, r = _resolved(Path(path)), _resolved(Path(root))
    if not p.is_relative_to(r) or p == r:
        return p == r
    top = p.relative_to(r).parts[0]
    return top in WORKSPACE_OWNED or top.startswith(CATALOG_FILE)


#: ``--out -``: a table goes to standard output (no file is written).
STDOUT = "-"


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISREG, "a file"), (stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def check_out_file(path: str | os.PathLike, workspace: str | os.PathLike | None, *, force: bool = False,
                   option: str = "--out") -> Path:
    """The file to write for ``path``, absolute (a link's target), once it is safe to write (see the
    module's rules); ConfigError otherwise."""
    raw = os.fspath(path)
    if not raw.strip():
        raise ConfigError(f"{option} is empty: give the name of the file to write")
    if os.path.basename(raw) in ("", ".", ".."):
        raise ConfigError(f"{option} {raw} names a folder: give the name of the file to write")
    given = Path(os.path.abspath(os.path.expanduser(raw)))
    p = _link_target(given, option)
    for name in dict.fromkeys((given, p)):
        _check_name(name, option)
    if workspace is not None and inside(p, workspace):
        raise ConfigError(f"{option} {given} is inside the workspace {workspace}: write exports outside it")
    _check_existing(given, p, option, force)
    _check_folder(p.parent, option, p)
    return p


def _check_name(p: Path, option: str) -> None:
    """ConfigError when ``p`` is named like a photo or a sidecar (a table under such a name)."""
    if p.suffix.lower() in PHOTO_EXTENSIONS | {".xmp"}:
        raise ConfigError(f"{option} {p} is named like an image or a sidecar ({p.suffix}), not a table: "
                          "give another name")


def _check_existing(given: Path, p: Path, option: str, force: bool) -> None:
    """ConfigError when the file ``p`` (for ``given``) exists and may not be replaced."""
    try:
        st = os.stat(p)
    except FileNotFoundError:
        if os.path.lexists(p) and not force:
            raise ConfigError(f"{option} {p} is a broken link: give --force to replace it, or another name") from None
        return
    except OSError as e:
        raise ConfigError(f"cannot write {option} {given}: {os_reason(e)}") from e
    shown = p if p == given else f"{given} (a link to {p})"
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{option} {shown} is {_kind(st.st_mode)}: give the name of a regular file")
    if not force:
        raise ConfigError(f"{option} {shown} exists: give --force to replace it, or another name")
    if not stat.S_IMODE(st.st_mode) & 0o222 or not os.access(p, os.W_OK):
        # a person's way of saying "leave this file alone", which writing a new file and renaming it would bypass
        raise ConfigError(f"{option} {shown} is read-only: left alone, even with --force (make it writable, or give "
                          "another name)")


#: Links followed at most, as the kernel does (``ELOOP`` past this).
_MAX_HOPS = 40


def _link_target(p: Path, option: str) -> Path:
    """The file the symbolic link ``p`` leads to (every link on the way followed); ``p`` itself when it
    is no link or a broken one. ConfigError for a link through ``/proc`` (a process's open file, as
    ``/dev/stdout`` is): replacing what it leads to is never what was meant."""
    hop = p
    try:
        for _ in range(_MAX_HOPS):
            if not hop.is_symlink():
                break
            if Path(os.path.realpath(hop.parent)).is_relative_to("/proc"):
                raise ConfigError(f"{option} {p} is a link to a process's open file, not a file to replace: "
                                  "give --out - to write to standard output")
            hop = Path(os.path.realpath(hop.parent)) / os.readlink(hop)
    except OSError as e:
        raise ConfigError(f"cannot write {option} {p}: {os_reason(e)}") from e
    if hop == p or not os.path.exists(p):
        return p
    return Path(os.path.realpath(p))


def _check_folder(folder: Path, option: str, target: Path) -> None:
    if not folder.is_dir():
        raise ConfigError(f"cannot write {option} {target}: folder {folder} does not exist (it is not created)")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write {option} {target}: folder {folder} is not writable")


def check_out_dir(path: str | os.PathLike, workspace: str | os.PathLike | None, *, option: str = "--mirror",
                  create: bool = True) -> Path:
    """The folder ``path`` (absolute), made when missing and ``create`` (its parent must exist: no
    folders above it are made), outside the workspace and writable; ConfigError otherwise."""
    p = Path(os.path.abspath(os.path.expanduser(os.fspath(path))))
    if workspace is not None and inside(p, workspace):
        raise ConfigError(f"{option} {p} is inside the workspace {workspace}: give a folder outside it")
    if os.path.lexists(p) and not p.is_dir():
        kind = _kind(os.stat(p).st_mode) if p.exists() else "a broken link"
        raise ConfigError(f"{option} {p} is {kind}: give a folder")
    if not p.exists():
        _check_folder(p.parent, option, p)
        if create:
            try:
                p.mkdir()
            except OSError as e:
                raise ConfigError(f"cannot create {option} {p}: {os_reason(e)}") from e
        return p
    if not os.access(p, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write into {option} {p}: the folder is not writable")
    return p
