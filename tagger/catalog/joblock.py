"""One job driver per catalog at a time, without keeping the catalog itself locked.

Job drivers (encode, tag, generate-text, train, nightly) open the DuckDB catalog only for their
short write transactions, so that readers can query between them. What keeps two drivers from
interleaving is this lock: an exclusive ``flock`` on ``<catalog>.job.lock``, held for the whole
job and released by the kernel when the process ends, however it ends. Readers never take it.
"""
from __future__ import annotations

import fcntl
import functools
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from ..errors import CatalogError, ConfigError, JobLockedError

logger = logging.getLogger(__name__)

#: Seconds a job waits for the catalog file by default while another process (a long query)
#: holds it; ``$TAGGER_WAIT`` overrides it.
JOB_LOCK_WAIT = 600.0
WAIT_ENV = "TAGGER_WAIT"
_F = TypeVar("_F", bound=Callable[..., Any])


@dataclass
class _Held:
    fd: int
    wait: float
    depth: int = 1


_held: dict[str, _Held] = {}  # lock file -> what this process holds (nightly runs the other jobs inside)
_guard = threading.Lock()


def job_lock_path(catalog_path: str | os.PathLike) -> Path:
    """The job lock file of the catalog at ``catalog_path``."""
    return Path(f"{os.fspath(catalog_path)}.job.lock")


def default_job_wait() -> float:
    """``$TAGGER_WAIT`` seconds when set, else :data:`JOB_LOCK_WAIT`."""
    raw = os.environ.get(WAIT_ENV, "").strip()
    if not raw:
        return JOB_LOCK_WAIT
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"${WAIT_ENV} must be a number of seconds, got {raw!r}") from None
    if not value >= 0:
        raise ConfigError(f"${WAIT_ENV} must be >= 0, got {raw!r}")
    return value


def job_wait(catalog_path: str | os.PathLike) -> float:
    """How long the job this process runs on the catalog waits for the file (the default if none)."""
    with _guard:
        held = _held.get(_key(catalog_path))
    return held.wait if held is not None else default_job_wait()


def running_job(catalog_path: str | os.PathLike) -> str | None:
    """What the job lock names while a job (of any process) holds it; None: no job runs now, so a
    run still marked 'running' was left by a job that ended."""
    try:
        fd = os.open(job_lock_path(catalog_path), os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return os.pread(fd, 400, 0).decode("utf-8", "replace").strip() or "a job"
    finally:
        os.close(fd)
    return None


def holds_job_lock(catalog_path: str | os.PathLike) -> bool:
    """True when this process holds the job lock of the catalog at ``catalog_path`` (so no other
    job runs on it)."""
    with _guard:
        return _key(catalog_path) in _held


def _key(catalog_path: str | os.PathLike) -> str:
    return str(job_lock_path(catalog_path).resolve())


class JobLock:
    """The catalog's job lock, re-entrant within one process; the outermost holder sets ``wait``.

    Acquiring raises JobLockedError at once (no waiting: jobs take minutes to hours) when
    another process holds it, naming that process and its job.
    """

    def __init__(self, catalog_path: str | os.PathLike, job: str, wait: float | None = None) -> None:
        self.catalog, self.path = os.fspath(catalog_path), job_lock_path(catalog_path)
        self.job, self._wait = job, wait
        self._key = _key(catalog_path)
        self._acquired = False

    def acquire(self) -> "JobLock":
        with _guard:
            held = _held.get(self._key)
            if held is not None:
                held.depth += 1
            else:
                wait = default_job_wait() if self._wait is None else max(0.0, float(self._wait))
                _held[self._key] = _Held(_take(self.path, self.catalog, self.job), wait)
        self._acquired = True
        return self

    def release(self) -> None:
        if not self._acquired:
            return
        self._acquired = False
        with _guard:
            held = _held[self._key]
            held.depth -= 1
            if held.depth:
                return
            del _held[self._key]
        os.ftruncate(held.fd, 0)
        os.close(held.fd)  # closing releases the flock
        logger.debug("job lock %s released", self.path)

    def __enter__(self) -> "JobLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def job_driver(job: str) -> Callable[[_F], _F]:
    """Decorate a driver ``fn(workspace, ...)`` to run holding ``workspace.catalog``'s job lock."""
    def wrap(fn: _F) -> _F:
        @functools.wraps(fn)
        def run(workspace, *args: Any, **kwargs: Any) -> Any:
            with JobLock(workspace.catalog, job):
                return fn(workspace, *args, **kwargs)
        return run  # type: ignore[return-value]
    return wrap


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 400, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    return text or "a process that did not say which"


def _take(path: Path, catalog: str, job: str) -> int:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise CatalogError(f"cannot create the job lock {path}: {e}") from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise JobLockedError(f"another job is running on catalog {catalog} "
                             f"({holder}); one job at a time: wait for it to finish (queries work "
                             "meanwhile), or stop it") from None
    since = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{job}, PID {os.getpid()}, since {since}\n".encode(), 0)
    logger.debug("job lock %s taken for %s", path, job)
    return fd
