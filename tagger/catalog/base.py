"""Connection handling shared by every part of the catalog: open, lock errors, transactions, SQL."""
from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import pyarrow as pa

from ..errors import CatalogError, CatalogLockedError, ConfigError, ExternalAccessError
from .joblock import JobLock, job_wait
from .migrations import apply_migrations, applied_migrations, pending_migrations, utcnow
from .readonly import check_read_only

logger = logging.getLogger(__name__)

_C = TypeVar("_C", bound="CatalogBase")
_LOCK_HOLDER = re.compile(r"held in (.*?) \(PID (\d+)\)")
_READER_HINT = "would be able to open this database in read-only mode"
#: DuckDB ``memory_limit`` of every catalog connection (e.g. ``1GB``); beyond it sorts, such as a
#: run's tag load, spill to disk. Unset: DuckDB's default (80 % of the machine's memory).
MEMORY_ENV = "TAGGER_CATALOG_MEMORY"
_MEMORY = re.compile(r"^\d+(\.\d+)?\s*([KMGT]i?B|[KMGT]|B)$", re.IGNORECASE)

#: DuckDB settings of a connection that may run untrusted SQL: no file but the catalog itself,
#: no network, no extension installed or loaded, no persistent secret, and no ``SET`` to undo it.
SEALED_CONFIG: dict[str, Any] = {
    "enable_external_access": False,
    "autoload_known_extensions": False,
    "autoinstall_known_extensions": False,
    "allow_community_extensions": False,
    "allow_extension_repositories": "forbidden",
    "allow_persistent_secrets": False,
    "lock_configuration": True,
}
_SEALED_REFUSALS = ("disabled by configuration", "disabled through configuration",
                    "configuration has been locked", "Cannot enable external access")


def _command_line(pid: str) -> str | None:
    """The command line of process ``pid`` (Linux ``/proc``), shortened; None if unreadable."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    text = " ".join(raw.replace(b"\0", b" ").decode("utf-8", "replace").split())
    return (text[:117] + "...") if len(text) > 120 else (text or None)


def _lock_error(path: str, err: duckdb.Error, read_only: bool, waited: float) -> CatalogLockedError:
    """A CatalogLockedError that names the holder: reader or writer, PID and command line."""
    msg = str(err)
    m = _LOCK_HOLDER.search(msg)
    # a read-only open is refused only by a writer; DuckDB tells a writable open when readers hold it
    role = "a writer" if read_only or _READER_HINT not in msg else "a reader"
    if m:
        holder = f"{role}, process {m.group(2)} ({_command_line(m.group(2)) or m.group(1)})"
    else:
        holder = f"{role} (DuckDB did not say which process)"
    after = f" after waiting {waited:g} s" if waited > 0 else ""
    if role == "a reader":
        why = "Nothing can write while a query reads it: retry when that query ends"
    else:
        why = ("DuckDB allows one writing process at a time (and no reader while it writes); jobs hold "
               "it only for short transactions: retry")
    return CatalogLockedError(f"catalog {path} is locked by {holder}{after}. {why}, or wait longer "
                              "(--wait SECONDS).")


def _connect(path: str, read_only: bool, config: dict[str, Any]) -> duckdb.DuckDBPyConnection:
    """Connect with ``config``; DuckDB's progress bar is turned off first (it writes to stdout, into a
    CSV or JSON printed there), then the configuration locked where ``config`` asks for it."""
    lock = bool(config.get("lock_configuration"))
    try:
        con = duckdb.connect(path, read_only=read_only, config={k: v for k, v in config.items()
                                                                 if k != "lock_configuration"})
        try:
            con.execute("SET enable_progress_bar = false")
            if lock:
                con.execute("SET lock_configuration = true")
        except BaseException:
            con.close()
            raise
        return con
    except duckdb.IOException as e:
        if "lock" in str(e).lower():
            raise _lock_error(path, e, read_only, 0.0) from e
        raise CatalogError(f"cannot open catalog {path}: {e}") from e
    except duckdb.ConnectionException as e:
        raise CatalogError(
            f"cannot open catalog {path}: this process already has it open in another mode "
            f"(read-only vs writable); reuse that Catalog instead ({e})") from e
    except duckdb.Error as e:
        raise CatalogError(f"cannot open catalog {path}: {e}") from e


def _refuse_foreign(con: duckdb.DuckDBPyConnection, path: str) -> None:
    """A DuckDB file holding tables or views of its own but no migrations is someone else's database:
    refused, never given tagger's schema."""
    if applied_migrations(con):
        return
    row = con.execute("SELECT count(*) FROM duckdb_tables() WHERE NOT internal "
                      "AND table_name <> 'schema_migrations'").fetchone()
    views = con.execute("SELECT count(*) FROM duckdb_views() WHERE NOT internal").fetchone()
    if (row and row[0]) or (views and views[0]):
        raise CatalogError(f"{path} is a DuckDB database of its own, not a tagger catalog (no schema_migrations "
                           "table): left as it is; give a new or empty folder for the workspace")


def _connect_waiting(path: str, read_only: bool, config: dict[str, Any],
                     wait: float) -> duckdb.DuckDBPyConnection:
    """``_connect``, retrying for up to ``wait`` seconds while another process holds the lock."""
    deadline = time.monotonic() + wait
    delay = 0.02
    while True:
        try:
            return _connect(path, read_only, config)
        except CatalogLockedError as e:
            left = deadline - time.monotonic()
            if left <= 0:
                if wait > 0 and isinstance(e.__cause__, duckdb.Error):  # say how long it waited
                    raise _lock_error(path, e.__cause__, read_only, wait) from e.__cause__
                raise
            logger.debug("catalog %s is locked; retrying for %.1f s more", path, left)
            time.sleep(min(delay, left))
            delay = min(delay * 2, 0.25)


def memory_limit() -> str | None:
    """``$TAGGER_CATALOG_MEMORY`` when set (ConfigError unless it reads like ``512MB`` or ``2GiB``)."""
    raw = os.environ.get(MEMORY_ENV, "").strip()
    if raw and not _MEMORY.match(raw):
        raise ConfigError(f"${MEMORY_ENV} must be an amount of memory such as 512MB or 2GB, got {raw!r}")
    return raw or None


def _query_error(e: duckdb.Error) -> CatalogError:
    """The named error for a failed statement: ExternalAccessError when a sealed connection refused it."""
    msg = str(e)
    if isinstance(e, (duckdb.PermissionException, duckdb.InvalidInputException)) and \
            any(r in msg for r in _SEALED_REFUSALS):
        first = msg.strip().splitlines()[0]
        return ExternalAccessError(
            "refused: SQL here reads only the catalog's own tables and views (no other file, URL, "
            f"extension or setting); {first}")
    return CatalogError(f"query failed: {e}")


def first_row(cur: duckdb.DuckDBPyConnection) -> tuple:
    """The first row of an executed statement that always returns one (a count, a max, a setting)."""
    row = cur.fetchone()
    if row is None:
        raise CatalogError("the catalog returned no row where one is always returned")
    return row


def to_json(value: Any) -> str | None:
    """Serialise a config/metrics/timings value for a JSON column."""
    return None if value is None else json.dumps(value, sort_keys=True, default=str)


def from_json(value: Any) -> Any:
    """Parse a JSON column value (DuckDB returns JSON as text)."""
    return json.loads(value) if isinstance(value, str) else value


def _warn_if_behind(con: duckdb.DuckDBPyConnection, path: str, schema_dir: str | os.PathLike | None) -> None:
    try:
        missing = pending_migrations(con, schema_dir)
    except CatalogError as e:  # readers do not need the DDL files
        logger.debug("cannot compare catalog %s with the schema files: %s", path, e)
        return
    if missing:
        logger.warning("catalog %s lacks migrations %s; open it writable to apply them",
                       path, ", ".join(missing))


class CatalogBase:
    """An open DuckDB catalog file: one connection, guarded by a lock for use from threads.

    A catalog opened with ``hold=False`` keeps no connection between calls: each query or
    transaction connects, runs and disconnects, so other processes can open the file between.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection | None, path: str, read_only: bool,
                 reconnect: Callable[[], duckdb.DuckDBPyConnection] | None = None) -> None:
        self._con: duckdb.DuckDBPyConnection | None = con
        self.path = path
        self.read_only = read_only
        self._reconnect = reconnect  # set when the catalog connects per call (hold=False)
        self._depth = 0
        self._closed = False
        self._job: JobLock | None = None  # the job lock a ``for_job`` catalog releases at close
        self._lock = threading.RLock()

    @classmethod
    def open(cls: type[_C], path: str | os.PathLike, read_only: bool = False, *,
             schema_dir: str | os.PathLike | None = None, threads: int | None = None,
             external_access: bool = True, wait: float = 0.0, hold: bool = True,
             settings: dict[str, Any] | None = None) -> _C:
        """Open (and when writable, create and migrate) the catalog at ``path``.

        ``external_access=False`` seals the connection (:data:`SEALED_CONFIG`): SQL cannot read
        or write any other file (``read_csv``, ``read_blob``, ``glob``, ``COPY``, ``ATTACH``...),
        reach a URL, install or load an extension, or ``SET`` any of this back; for a SQL
        endpoint serving untrusted users. ``wait`` retries for up to that many seconds while
        another process holds the file (at this open, and with ``hold=False`` at every call).
        ``hold=False`` connects only for each call (see the class). ``$TAGGER_CATALOG_MEMORY`` bounds
        DuckDB's memory (:data:`MEMORY_ENV`); ``settings`` adds DuckDB settings, applied last. Raises CatalogLockedError
        (naming the holder: reader or writer, and its PID) when the file stays held,
        CatalogError when a read-only open finds no catalog or an unmigrated one.
        """
        spath = str(path)
        config: dict[str, Any] = {}
        if threads:
            config["threads"] = int(threads)
        memory = memory_limit()
        if memory:
            config["memory_limit"] = memory
        if not external_access:
            config.update(SEALED_CONFIG)
        config.update(settings or {})
        if spath != ":memory:":
            p = Path(spath)
            if read_only and not p.exists():
                raise CatalogError(f"no catalog at {spath}: nothing is registered there yet; start with "
                                  f"`tagger encode SOURCE -w {p.parent}` (or `tagger labels add --toy -w {p.parent}`)")
            if not read_only:
                p.parent.mkdir(parents=True, exist_ok=True)
        wait = max(0.0, float(wait))
        con = _connect_waiting(spath, read_only, config, wait)
        try:
            if read_only:
                if not applied_migrations(con):
                    raise CatalogError(f"{spath} is not a tagger catalog (no schema_migrations table)")
                _warn_if_behind(con, spath, schema_dir)
            else:
                _refuse_foreign(con, spath)
                apply_migrations(con, schema_dir)
        except BaseException:
            con.close()
            raise
        logger.debug("opened catalog %s (%s%s)", spath, "read-only" if read_only else "writable",
                     "" if hold else ", connected per call")
        if hold or spath == ":memory:":
            return cls(con, spath, read_only)
        con.close()
        return cls(None, spath, read_only, lambda: _connect_waiting(spath, read_only, config, wait))

    @classmethod
    def for_job(cls: type[_C], path: str | os.PathLike, job: str) -> _C:
        """The catalog as a job driver uses it, from the job's start to its end.

        Takes the catalog's job lock (:class:`~tagger.catalog.joblock.JobLock`: JobLockedError
        at once if another job runs) until ``close()``, and connects writable only for each
        call (``hold=False``), waiting up to the job's wait (``$TAGGER_WAIT``, default 600 s)
        while a reader holds the file.
        """
        lock = JobLock(path, job).acquire()
        try:
            cat = cls.open(path, hold=False, wait=job_wait(path))
        except BaseException:
            lock.release()
            raise
        cat._job = lock
        return cat

    # -- lifecycle -----------------------------------------------------------------------------
    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        """The underlying connection (raises once closed, and between calls of a ``hold=False`` one)."""
        if self._closed:
            raise CatalogError(f"catalog {self.path} is closed")
        if self._con is None:
            raise CatalogError(f"catalog {self.path} connects per call (hold=False); it has no connection now")
        return self._con

    @contextmanager
    def _connected(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """The connection for one call; a ``hold=False`` catalog connects here and disconnects after."""
        with self._lock:
            if self._closed:
                raise CatalogError(f"catalog {self.path} is closed")
            if self._con is None and self._reconnect is not None:
                self._con = self._reconnect()
            self._depth += 1
            try:
                yield self.con
            finally:
                self._depth -= 1
                if self._depth == 0 and self._reconnect is not None and self._con is not None:
                    con, self._con = self._con, None
                    con.close()

    def close(self) -> None:
        """Close the connection; a closed catalog refuses every call. Idempotent."""
        with self._lock:
            self._closed = True
            if self._con is not None:
                self._con.close()
                self._con = None
            if self._job is not None:
                self._job.release()
                self._job = None

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self: _C) -> _C:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "closed" if self.closed else ("read-only" if self.read_only else "writable")
        return f"{type(self).__name__}({self.path!r}, {mode})"

    # -- transactions --------------------------------------------------------------------------
    def _require_writable(self, what: str) -> None:
        if self.read_only:
            raise CatalogError(f"cannot {what}: catalog {self.path} is open read-only")

    @contextmanager
    def _transaction(self, what: str) -> Iterator[duckdb.DuckDBPyConnection]:
        """One write transaction; any error rolls everything back and surfaces as CatalogError."""
        self._require_writable(what)
        with self._connected() as con:
            con.begin()
            try:
                yield con
                con.commit()
            except duckdb.Error as e:
                self._rollback(con)
                raise CatalogError(f"{what} failed and was rolled back: {e}") from e
            except BaseException:
                self._rollback(con)
                raise

    @staticmethod
    def _rollback(con: duckdb.DuckDBPyConnection) -> None:
        try:
            con.rollback()
        except duckdb.Error:  # the failed commit already ended the transaction
            pass

    @staticmethod
    def _now():
        return utcnow()

    # -- SQL -----------------------------------------------------------------------------------
    def query(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> list[tuple]:
        """Run any statement on this connection and return all rows (writer's own use)."""
        with self._connected() as con:
            try:
                cur = con.execute(sql, params) if params is not None else con.execute(sql)
                return cur.fetchall() if cur.description else []
            except duckdb.Error as e:
                raise _query_error(e) from e

    def query_arrow(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> pa.Table:
        """Run a query and return a pyarrow Table."""
        with self._connected() as con:
            try:
                return con.sql(sql, params=params).to_arrow_table()
            except duckdb.Error as e:
                raise _query_error(e) from e

    def safe_query(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> list[tuple]:
        """Run one read-only statement (refuses anything else with ReadOnlyQueryError)."""
        return self.query(check_read_only(sql), params)

    def safe_query_arrow(self, sql: str,
                         params: Sequence[Any] | dict[str, Any] | None = None) -> pa.Table:
        """``safe_query`` returning a pyarrow Table (column names included)."""
        return self.query_arrow(check_read_only(sql), params)

    def _register(self, name: str, table: pa.Table) -> None:
        self.con.register(name, table)

    def _unregister(self, name: str) -> None:
        try:
            self.con.unregister(name)
        except duckdb.Error:
            pass
