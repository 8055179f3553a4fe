"""Where sidecars go and how each is written safely.

A sidecar is named ``photo.jpg.xmp`` (darktable, digiKam) or ``photo.xmp`` (Lightroom Classic and
Capture One, for raw files), beside the image or under a mirror folder at the image's path
relative to the source root. Each is read, merged (:func:`~tagger.export.xmp.merge_sidecar`),
written to a hidden temp file beside it, flushed, checked again (a sidecar another program changed
since it was read is left alone and reported) and renamed over the old one: a kill at any point
leaves the old sidecar or the complete new one. An unchanged sidecar is not rewritten.
"""
from __future__ import annotations

import contextlib
import itertools
import logging
import os
import re
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlparse

from ..atomic import TMP_PREFIX, atomic_open
from ..errors import SimulatedCrash
from ..targets import os_reason, workspace_owned
from ..uris import to_local_path
from .record import Owner, record_name
from .xmp import MachineTag, MergeResult, iso_utc, merge_sidecar
from .xmpdoc import MAX_SIDECAR_BYTES

__all__ = ["NAMINGS", "SidecarChanged", "SidecarPlan", "existing_sidecar", "image_name", "owner_of", "read_sidecar",
           "sibling_claims", "sidecar_path", "write_sidecars"]

logger = logging.getLogger(__name__)

#: Sidecar names: ``photo.jpg.xmp`` keeps the image's extension, ``photo.xmp`` replaces it.
NAMINGS = ("photo.jpg.xmp", "photo.xmp")
#: ``.xmp`` in every other letter case, ``.XMP`` (the common one) first.
_OTHER_CASES = (".XMP", *sorted({"." + "".join(c) for c in itertools.product("xX", "mM", "pP")} - {".xmp", ".XMP"}))
_STALE_TMP = re.compile(re.escape(TMP_PREFIX) + r".+\.(?i:xmp)\.(\d+)\.[0-9a-f]{8}$")  # photo.jpg.XMP too


class SidecarChanged(Exception):
    """The sidecar changed on disk between its read and its replacement."""


@dataclass(frozen=True)
class SidecarPlan:
    """Where the sidecars of a run go: ``naming`` (:data:`NAMINGS`), beside the images or under
    ``mirror`` at their paths relative to ``source_root``, never onto a workspace's own files."""

    naming: str = NAMINGS[0]
    mirror: Path | None = None
    source_root: str | None = None
    workspace: Path | None = None
    parents: Mapping[str, Sequence[str]] = field(default_factory=dict)
    root_label: str | None = None
    workspace_id: str | None = None  # recorded with what this export writes (tagger.export.record)


def _name(file_name: str, naming: str) -> str:
    if naming == "photo.xmp":
        stem, dot, _ = file_name.rpartition(".")
        return (stem if dot and stem else file_name) + ".xmp"
    return file_name + ".xmp"


def sidecar_path(uri: str, naming: str = NAMINGS[0], mirror: str | os.PathLike | None = None,
                 source_root: str | None = None) -> Path | None:
    """Where ``uri``'s sidecar goes: beside a local file, or under ``mirror`` at its path relative to
    ``source_root`` (remote URIs as ``scheme/host/path``). None for a remote URI without a mirror
    or a local one outside ``source_root``."""
    local = to_local_path(uri)
    if mirror is None:
        return None if local is None else Path(local).with_name(_name(Path(local).name, naming))
    if local is not None:
        rel = os.path.relpath(local, source_root) if source_root else local.lstrip("/")
        if rel.startswith(".."):
            return None
        parts: tuple[str, ...] = Path(rel).parts
    else:
        parsed = urlparse(uri)
        parts = (parsed.scheme, parsed.netloc, *PurePosixPath(unquote(parsed.path)).parts[1:])
    return Path(mirror, *parts[:-1], _name(parts[-1], naming))


def image_name(uri: str) -> str:
    """The file name of image ``uri`` (local path or URL), as a sidecar's record names its image."""
    local = to_local_path(uri)
    return Path(local).name if local is not None else PurePosixPath(unquote(urlparse(uri).path)).name


def owner_of(uri: str, sidecar: Path, workspace: str | None = None) -> Owner:
    """Who a sidecar's record is read and written for: ``workspace`` (None: any) and image ``uri``."""
    local = to_local_path(uri)
    return Owner(workspace, record_name(image_name(uri)), sidecar.name, os.path.dirname(local) if local else None)


def sibling_claims(image: str, naming: str) -> str | None:
    """The file beside local image ``image`` whose own sidecar (darktable's and digiKam's naming,
    ``photo.jpg.xmp``) the ``photo.xmp`` naming would give ``image`` (``photo.jpg.jpg`` ->
    ``photo.jpg.xmp``, the sidecar of ``photo.jpg``): its path, or None when there is none."""
    local = to_local_path(image)
    if naming != "photo.xmp" or local is None:
        return None
    stem, dot, _ = Path(local).name.rpartition(".")
    if not dot or "." not in stem:
        return None
    other = Path(local).with_name(stem)
    return str(other) if os.path.isfile(other) else None


def existing_sidecar(target: Path | None) -> Path | None:
    """``target``, or the sidecar already beside it under the same name with its extension in other
    letter case (``photo.XMP``, as some cameras and Windows tools write it, or ``photo.Xmp``) when only
    that one exists (``.XMP`` first): merged into where the person's tools read it, never a second
    sidecar next to it."""
    if target is None or os.path.lexists(target) or not target.name.endswith(".xmp"):
        return target
    stem = target.name[:-len(".xmp")]
    return next((other for ext in _OTHER_CASES if os.path.lexists(other := target.with_name(stem + ext))), target)


def read_sidecar(target: Path) -> tuple[bytes | None, tuple | None]:
    """The sidecar's bytes and identity (None, None when absent); ValueError for a non-regular file.

    Opened without blocking and checked on the open file, so a FIFO or device put in its place (even
    between a look and the read) is refused, never waited on."""
    try:
        fd = os.open(target, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return None, None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError("not a regular file: left alone")
        if st.st_size > MAX_SIDECAR_BYTES:
            raise ValueError(f"larger than {MAX_SIDECAR_BYTES >> 20} MiB: not a sidecar")
        chunks, size = [], 0
        while size <= MAX_SIDECAR_BYTES and (chunk := os.read(fd, 1 << 20)):
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks), (st.st_ino, st.st_size, st.st_mtime_ns, st.st_mode, st.st_uid, st.st_gid)


def _mtime(ident: tuple) -> str | None:
    """When the sidecar last changed (its modification time, UTC), as the record writes times; None (the
    merge takes the current time) for a time the record's four-digit year cannot hold (a file system
    such as tmpfs, NTFS or SMB keeps year 10000, or one before the common era)."""
    try:
        when = datetime.fromtimestamp(ident[2] / 1e9, timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None
    return iso_utc(when) if 1000 <= when.year <= 9999 else None


def _check_writable(target: Path, ident: tuple | None) -> None:
    """ValueError for an existing sidecar marked read-only (no write permission bit, or not writable
    by this user): a person's way of saying "leave this file alone", which a rename would bypass."""
    if ident is not None and (not stat.S_IMODE(ident[3]) & 0o222 or not os.access(target, os.W_OK)):
        raise ValueError("read-only sidecar: left alone (make it writable, or give --mirror DIR)")


def _keep_owner(tmp: Path, ident: tuple | None) -> None:
    """Give the new sidecar the old one's owner and group where this process may (an export run as
    root would otherwise leave the person a sidecar their photo tool cannot save)."""
    if ident is None:
        return
    st = os.stat(tmp)
    if (st.st_uid, st.st_gid) != ident[4:6]:
        with contextlib.suppress(OSError):
            os.chown(tmp, ident[4], ident[5])


def _keep_attrs(tmp: Path, old: Path) -> None:
    """Copy the old sidecar's extended attributes (desktop tags, comments, ACLs) to the new one, where
    the system has them and this process may set them."""
    if not hasattr(os, "listxattr"):
        return
    with contextlib.suppress(OSError):
        for name in os.listxattr(old):
            with contextlib.suppress(OSError):
                os.setxattr(tmp, name, os.getxattr(old, name))


def _replace(target: Path, data: bytes, before: bytes | None, ident: tuple | None, crash: bool) -> None:
    """Write ``data`` beside ``target`` and rename it over, unless ``target`` changed since read."""
    def unchanged(tmp: Path) -> None:
        if crash:
            raise SimulatedCrash(f"export: crash before renaming {tmp.name}")
        _keep_owner(tmp, ident)
        if ident is not None:
            _keep_attrs(tmp, target)
        if read_sidecar(target) != (before, ident):
            raise SidecarChanged("changed by another program while exporting: left as it is")

    mode = None if ident is None else stat.S_IMODE(ident[3])
    with atomic_open(target, parents=False, mode=mode, before_replace=unchanged) as fh:
        fh.write(data)


def _clean_stale(folder: Path, seen: set[Path]) -> None:
    """Remove temp files a killed export left in ``folder`` (their process is gone), once per folder."""
    if folder in seen:
        return
    seen.add(folder)
    with contextlib.suppress(OSError), os.scandir(folder) as it:
        for entry in it:
            m = _STALE_TMP.match(entry.name)
            if m and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1))):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


class _Writer:
    """Counts and state of one export's sidecar writes."""

    def __init__(self, plan: SidecarPlan, run: int | None, crash_after: int | None) -> None:
        self.plan, self.run, self.crash_after = plan, run, crash_after
        self.out: dict[str, Any] = {"written": 0, "unchanged": 0, "no_labels": 0, "remote": 0, "outside_root": 0,
                                    "name_clash": 0, "missing_images": 0, "changed_meanwhile": 0, "failed": 0, "labels_added": 0,
                                    "labels_removed": 0, "labels_declined": 0, "labels_reinstated": 0,
                                    "sidecars_cleared": 0,
                                    "refused_labels": [],
                                    "first_error": None, "first_name_clash": None, "first_changed_meanwhile": None}
        self.targets: set[Path] = set()
        self.folders: set[Path] = set()

    def error(self, key: str, target: Path, why: str) -> None:
        """Count a sidecar not written under ``key``; the first of each kind is kept as its example
        (``first_error`` for ``failed``, ``first_name_clash``, ``first_changed_meanwhile``)."""
        self.out[key] += 1
        first = "first_error" if key == "failed" else f"first_{key}"
        if self.out.get(first) is None:
            self.out[first] = f"{target}: {why}"
        logger.warning("sidecar %s: %s", target, why)

    def target_of(self, uri: str) -> Path | None:
        p = self.plan
        target = existing_sidecar(sidecar_path(uri, p.naming, p.mirror, p.source_root))
        if target is None:
            self.out["remote" if to_local_path(uri) is None else "outside_root"] += 1
            return None
        other = sibling_claims(uri, p.naming)
        if other is not None:
            self.error("name_clash", target, f"the sidecar {other} has under the name photo.jpg.xmp: not written for "
                       f"{uri} (--sidecar-name photo.jpg.xmp gives it its own)")
            return None
        key = Path(os.path.realpath(target))  # one file under two names (a link) is one sidecar
        if key in self.targets:  # photo.jpg and photo.png share photo.xmp: the first image keeps it
            self.error("name_clash", target, f"also the sidecar of another image; written for that one only ({uri})")
            return None
        self.targets.add(key)
        return target

    def merged(self, target: Path, real: Path, before: bytes | None, tags: Sequence[MachineTag], uri: str,
               changed_at: str | None) -> MergeResult:
        """``tags`` merged into the sidecar's bytes ``before``; ValueError when it cannot be (not XMP,
        or any failure of the parser or the merge on a document another program wrote)."""
        try:
            return merge_sidecar(before, tags, run=self.run, parents=self.plan.parents, root=self.plan.root_label,
                                 owner=owner_of(uri, target, self.plan.workspace_id), changed_at=changed_at)
        except ValueError:
            raise
        except Exception as e:  # a document no test foresaw: left alone and reported, never a traceback
            logger.debug("merging into %s failed", real, exc_info=True)
            raise ValueError(f"cannot merge into it ({type(e).__name__}: {e}): left alone") from e

    def one(self, uri: str, tags: Sequence[MachineTag]) -> None:
        target = self.target_of(uri)
        if target is None:
            return
        real = Path(os.path.realpath(target))
        try:
            if self.plan.workspace is not None and workspace_owned(real, self.plan.workspace):
                raise ValueError("a file of the workspace: left alone")
            before, ident = read_sidecar(real)
            if before is None and not tags:
                self.out["no_labels"] += 1
                return
            if before is None and os.path.islink(target):  # never create a file where a dangling link points
                raise ValueError(f"a symbolic link to {real}, which does not exist: left alone")
            res = self.merged(target, real, before, tags, uri, None if ident is None else _mtime(ident))
            self.out["refused_labels"].extend(x for x in res.refused if x not in self.out["refused_labels"])
            if res.data == before:
                self.out["unchanged"] += 1
                return self.declines(target, res)
            if self.plan.mirror is not None:  # folders below the mirror folder only
                real.parent.mkdir(parents=True, exist_ok=True)
            elif not os.path.lexists(to_local_path(uri) or ""):
                self.out["missing_images"] += 1
                return
            _check_writable(real, ident)
            _clean_stale(real.parent, self.folders)
            crash = self.crash_after is not None and self.out["written"] >= self.crash_after
            _replace(real, res.data, before, ident, crash)
        except SidecarChanged as e:
            return self.error("changed_meanwhile", target, str(e))
        except OSError as e:
            return self.error("failed", target, os_reason(e))
        except ValueError as e:
            return self.error("failed", target, str(e))
        self.out["written"] += 1
        for key, items in (("labels_added", res.added), ("labels_removed", res.removed),
                           ("labels_reinstated", res.reinstated)):
            self.out[key] += len(items)
        self.declines(target, res)

    def declines(self, target: Path, res: MergeResult) -> None:
        """Count what a person's deletions hold back, in a sidecar written or left as it was."""
        self.out["labels_declined"] += len(res.declined)
        if res.cleared:
            self.out["sidecars_cleared"] += 1
            logger.warning("sidecar %s: every keyword this workspace wrote was deleted since the last export: "
                           "declined, not written again", target)


def write_sidecars(images: Iterable[tuple[str, Sequence[MachineTag]]], plan: SidecarPlan, *, run: int | None = None,
                   crash_after: int | None = None) -> dict[str, Any]:
    """Write (merge into) the sidecar of each ``(uri, positive tags)``. Returns counts: ``written``,
    ``unchanged``, ``no_labels`` (no positive label and no sidecar: none made), ``remote`` (no mirror),
    ``outside_root``, ``name_clash``, ``changed_meanwhile``, ``failed`` (with the first of each:
    ``first_name_clash``, ``first_changed_meanwhile``, ``first_error``), the
    labels added, removed, declined (wanted, but a person deleted them) and reinstated (a person's
    later accept), ``sidecars_cleared`` (every keyword tagger wrote there deleted at once) and
    ``refused_labels`` (names XML cannot hold).
    ``crash_after`` (tests) stops the process like a kill, the next sidecar's temp file written."""
    w = _Writer(plan, run, crash_after)
    for uri, tags in images:
        w.one(uri, tags)
    return w.out
