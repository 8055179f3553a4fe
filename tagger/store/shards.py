"""Embedding shards: the source of truth that encode workers write, one directory per shard.

Layout: ``<root>/embeddings/<model_id>/<shard>/{ids.npy,global.npy,patches.npy,meta.json,_DONE}``.

A shard is written into a temp directory beside its final name, renamed into place in one
step, and only then given its ``_DONE`` marker. Readers see only directories that carry the
marker, so a crash at any point leaves nothing half-written visible. A rerun with the same shard
name skips a done shard (or replaces it with ``overwrite=True``) and replaces one that was
renamed but never marked; it never produces a second copy. Shard names are chosen by the caller
from its input partition (see :func:`shard_name_for`), so reruns map to the same names.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tagger.errors import ShardError, SimulatedCrash
from tagger.atomic import TMP_PREFIX, atomic_write_bytes, commit_dir, temp_name
from tagger.workspace import Workspace

logger = logging.getLogger(__name__)

DONE_MARKER = "_DONE"
META_FILE = "meta.json"
#: Temp and trash prefixes of earlier versions, still cleaned by :func:`remove_stale_temp`.
LEGACY_PREFIXES = (".tmp-", ".trash-")
SHARD_FORMAT = 1
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+=-]*$")

ShardPart = tuple[np.ndarray, np.ndarray, "np.ndarray | None"]


@dataclass(frozen=True)
class Shard:
    """One done shard; arrays are memory-mapped (read-only) unless loaded with ``mmap=False``."""

    name: str
    path: Path
    ids: np.ndarray
    global_vecs: np.ndarray
    patches: np.ndarray | None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        """Number of images in the shard."""
        return int(self.ids.shape[0])

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return int(self.global_vecs.shape[1])

    @property
    def patches_per_image(self) -> int | None:
        """Patch vectors per image, or None for a shard without patches."""
        return None if self.patches is None else int(self.patches.shape[1])


def _check_name(kind: str, name: str) -> str:
    if not _NAME_RE.match(name):
        raise ShardError(f"{kind} {name!r} must match {_NAME_RE.pattern} (one path component)")
    return name


def model_dir(root: str | os.PathLike[str], model_id: str) -> Path:
    """Directory holding every shard of ``model_id`` (:meth:`~tagger.workspace.Workspace.embeddings_dir`)."""
    return Workspace(Path(root)).embeddings_dir(_check_name("model_id", model_id))


def index_paths(root: str | os.PathLike[str], model_id: str) -> tuple[Path, Path]:
    """Workspace locations of the built stores: ``indexes/<model_id>/{global.faiss,patches.tgp}``.

    ``global.faiss`` is a plain FAISS index file; ``patches.tgp`` is the patch store container
    of :mod:`tagger.store.patch_store_file` (ids, the raw codes, then the trained FAISS codec).
    """
    directory = Workspace(Path(root)).index_dir(_check_name("model_id", model_id))
    return directory / "global.faiss", directory / "patches.tgp"


def shard_name_for(image_ids: np.ndarray) -> str:
    """Deterministic shard name of a partition: first id, count and a hash of all ids.

    Zero padding makes lexical order follow the first id, so shards list in id order.
    """
    ids = _as_ids(image_ids)
    digest = hashlib.sha1(ids.astype("<i8").tobytes()).hexdigest()[:12]
    return f"{int(ids[0]):019d}-{ids.size:08d}-{digest}"


def exists_done(root: str | os.PathLike[str], model_id: str, shard_name: str) -> bool:
    """True when the shard was fully written and marked done."""
    return (model_dir(root, model_id) / _check_name("shard", shard_name) / DONE_MARKER).is_file()


def _as_ids(image_ids: np.ndarray) -> np.ndarray:
    ids = np.asarray(image_ids)
    if ids.ndim != 1 or ids.size == 0 or not np.issubdtype(ids.dtype, np.integer):
        raise ShardError(f"image_ids must be a non-empty 1-D integer array, got {ids.dtype}{ids.shape}")
    ids = ids.astype(np.int64, copy=False)
    if (ids < 0).any():
        raise ShardError("image_ids must be non-negative")
    if np.unique(ids).size != ids.size:
        raise ShardError("image_ids contain duplicates")
    return ids


def _validate(ids: np.ndarray, global_vecs: np.ndarray,
              patches: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    g = np.asarray(global_vecs)
    if g.ndim != 2 or g.shape[0] != ids.size:
        raise ShardError(f"global must be [n={ids.size}, d], got {g.shape}")
    if g.dtype not in (np.float16, np.float32):
        g = g.astype(np.float32)
    if patches is None:
        return g, None
    p = np.asarray(patches)
    if p.ndim != 3 or p.shape[0] != ids.size or p.shape[2] != g.shape[1] or p.shape[1] < 1:
        raise ShardError(f"patches must be [n={ids.size}, P, d={g.shape[1]}], got {p.shape}")
    return g, p.astype(np.float16, copy=False)


def _fill_temp(tmp: Path, meta: dict[str, Any], ids: np.ndarray, g: np.ndarray,
               p: np.ndarray | None) -> None:
    """Write a shard's files into the temp folder ``tmp`` (:func:`~tagger.atomic.commit_dir` fsyncs them)."""
    tmp.mkdir(parents=True)
    np.save(tmp / "ids.npy", np.ascontiguousarray(ids), allow_pickle=False)
    np.save(tmp / "global.npy", np.ascontiguousarray(g), allow_pickle=False)
    if p is not None:
        np.save(tmp / "patches.npy", np.ascontiguousarray(p), allow_pickle=False)
    (tmp / META_FILE).write_text(json.dumps(meta, sort_keys=True))


def write_shard(root: str | os.PathLike[str], model_id: str, shard_name: str,
                image_ids: np.ndarray, global_vecs: np.ndarray,
                patches: np.ndarray | None = None, *, overwrite: bool = False,
                _before_commit: Callable[[], None] | None = None) -> Path:
    """Write one shard atomically and mark it done; returns its directory.

    ``global_vecs`` is stored as float16 or float32 (other float types become float32),
    ``patches`` as float16. A done shard with the same name is skipped unless ``overwrite``.
    ``_before_commit`` is a test hook called after the temp dir is complete, before the rename.
    """
    directory = model_dir(root, model_id)
    final = directory / _check_name("shard", shard_name)
    if (final / DONE_MARKER).is_file() and not overwrite:
        logger.info("shard %s/%s is done; skipping", model_id, shard_name)
        return final
    ids = _as_ids(image_ids)
    g, p = _validate(ids, global_vecs, patches)
    ids_sha1 = hashlib.sha1(ids.astype("<i8").tobytes()).hexdigest()
    meta = {"format": SHARD_FORMAT, "model_id": model_id, "shard": shard_name, "n": int(ids.size),
            "dim": int(g.shape[1]), "patches_per_image": None if p is None else int(p.shape[1]),
            "global_dtype": str(g.dtype), "ids_sha1": ids_sha1}
    tmp = temp_name(final)
    try:
        _fill_temp(tmp, meta, ids, g, p)
        if _before_commit is not None:
            _before_commit()
    except SimulatedCrash:
        raise  # leave the temp directory behind, as a killed worker would
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if commit_dir(tmp, final):  # a stale (unmarked or replaced) one is moved aside first
        atomic_write_bytes(final / DONE_MARKER, json.dumps({"ids_sha1": ids_sha1}).encode())
        logger.debug("wrote shard %s/%s (%d images)", model_id, shard_name, ids.size)
    return final


class ShardWriter:
    """Writes shards of one model under one workspace root (a thin holder of both)."""

    def __init__(self, root: str | os.PathLike[str], model_id: str) -> None:
        self.root = Path(root)
        self.model_id = _check_name("model_id", model_id)

    def exists_done(self, shard_name: str) -> bool:
        """True when ``shard_name`` is done."""
        return exists_done(self.root, self.model_id, shard_name)

    def write(self, shard_name: str, image_ids: np.ndarray, global_vecs: np.ndarray,
              patches: np.ndarray | None = None, *, overwrite: bool = False) -> Path:
        """See :func:`write_shard`."""
        return write_shard(self.root, self.model_id, shard_name, image_ids, global_vecs,
                           patches, overwrite=overwrite)


def _crash_hook(i: int, name: str) -> Callable[[], None]:
    def hook() -> None:
        raise SimulatedCrash(f"simulated crash while writing shard {i} ({name})")
    return hook


def write_shards(root: str | os.PathLike[str], model_id: str, parts: Iterable[ShardPart], *,
                 overwrite: bool = False, crash_at: int | None = None) -> list[str]:
    """Write one shard per ``(image_ids, global, patches)`` part, named by :func:`shard_name_for`.

    Done shards are skipped, so calling this again after a crash resumes the work. With
    ``crash_at=k`` (a test hook) parts ``0..k-1`` are handled, part ``k`` is written to its
    temp directory and then :class:`SimulatedCrash` is raised before the rename, leaving that
    half-written temp directory behind exactly as a killed worker would.
    """
    names: list[str] = []
    for i, (ids, g, p) in enumerate(parts):
        name = shard_name_for(ids)
        hook = _crash_hook(i, name) if crash_at is not None and i == crash_at else None
        write_shard(root, model_id, name, ids, g, p, overwrite=overwrite, _before_commit=hook)
        names.append(name)
    return names


def list_done_shards(root: str | os.PathLike[str], model_id: str) -> list[str]:
    """Names of done shards in lexical order; temp, trash and unmarked directories are ignored."""
    directory = model_dir(root, model_id)
    if not directory.is_dir():
        return []
    return sorted(e.name for e in directory.iterdir()
                  if e.is_dir() and _NAME_RE.match(e.name) and (e / DONE_MARKER).is_file())


def load_shard(path: str | os.PathLike[str], *, mmap: bool = True) -> Shard:
    """Load a done shard directory (memory-mapped by default) and check it against its meta."""
    path = Path(path)
    if not (path / DONE_MARKER).is_file():
        raise ShardError(f"{path} is not a done shard (no {DONE_MARKER})")
    mode: Literal["r"] | None = "r" if mmap else None
    try:
        meta = json.loads((path / META_FILE).read_text())
        ids = np.load(path / "ids.npy", mmap_mode=mode, allow_pickle=False)
        g = np.load(path / "global.npy", mmap_mode=mode, allow_pickle=False)
        pfile = path / "patches.npy"
        p = np.load(pfile, mmap_mode=mode, allow_pickle=False) if pfile.exists() else None
    except (OSError, ValueError) as exc:
        raise ShardError(f"cannot read shard {path}: {exc}") from exc
    n, dim, pp = meta.get("n"), meta.get("dim"), meta.get("patches_per_image")
    if ids.shape != (n,) or g.shape != (n, dim) or (p is None) != (pp is None) or (
            p is not None and p.shape != (n, pp, dim)):
        raise ShardError(f"shard {path} does not match its {META_FILE}")
    return Shard(name=path.name, path=path, ids=ids, global_vecs=g, patches=p, meta=meta)


def iter_shards(root: str | os.PathLike[str], model_id: str, *,
                mmap: bool = True) -> Iterator[Shard]:
    """Yield the done shards of ``model_id`` in lexical name order."""
    directory = model_dir(root, model_id)
    for name in list_done_shards(root, model_id):
        yield load_shard(directory / name, mmap=mmap)


def remove_stale_temp(root: str | os.PathLike[str], model_id: str, *,
                      older_than_s: float = 24 * 3600.0) -> int:
    """Delete temp/trash directories older than ``older_than_s``; returns how many.

    Call it only when no writer can still be working on them (e.g. at the start of a job).
    """
    directory = model_dir(root, model_id)
    if not directory.is_dir():
        return 0
    cutoff, removed = time.time() - older_than_s, 0
    for entry in directory.iterdir():
        if entry.name.startswith((TMP_PREFIX, *LEGACY_PREFIXES)) and entry.stat().st_mtime < cutoff:
            shutil.rmtree(entry, ignore_errors=True)
            removed += 1
    return removed
