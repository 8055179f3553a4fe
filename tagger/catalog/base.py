"""Connection handling shared by every part of the catalog: open, lock errors, transactions, SQL."""
from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import pyarrow as pa

from ..errors import CatalogError, CatalogLockedError, ExternalAccessError
from .migrations import apply_migrations, applied_migrations, pending_migrations, utcnow
from .readonly import check_read_only

logger = logging.getLogger(__name__)

_C = TypeVar("_C", bound="CatalogBase")
_LOCK_HOLDER = re.compile(r"held in (.*?) \(PID (\d+)\)")

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


def _lock_error(path: str, err: duckdb.Error) -> CatalogLockedError:
    m = _LOCK_HOLDER.search(str(err))
    holder = f"process {m.group(2)} ({m.group(1)})" if m else "another process"
    return CatalogLockedError(
        f"catalog {path} is locked by {holder}. DuckDB allows one writing process at a time "
        "(and no reader while it writes): wait for that job to finish, or stop it, then retry.")


def _connect(path: str, read_only: bool, config: dict[str, Any]) -> duckdb.DuckDBPyConnection:
    try:
        return duckdb.connect(path, read_only=read_only, config=config)
    except duckdb.IOException as e:
        if "lock" in str(e).lower():
            raise _lock_error(path, e) from e
        raise CatalogError(f"cannot open catalog {path}: {e}") from e
    except duckdb.ConnectionException as e:
        raise CatalogError(
            f"cannot open catalog {path}: this process already has it open in another mode "
            f"(read-only vs writable); reuse that Catalog instead ({e})") from e
    except duckdb.Error as e:
        raise CatalogError(f"cannot open catalog {path}: {e}") from e


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
    """An open DuckDB catalog file: one connection, guarded by a lock for use from threads."""

    def __init__(self, con: duckdb.DuckDBPyConnection, path: str, read_only: bool) -> None:
        self._con: duckdb.DuckDBPyConnection | None = con
        self.path = path
        self.read_only = read_only
        self._lock = threading.RLock()

    @classmethod
    def open(cls: type[_C], path: str | os.PathLike, read_only: bool = False, *,
             schema_dir: str | os.PathLike | None = None, threads: int | None = None,
             external_access: bool = True) -> _C:
        """Open (and when writable, create and migrate) the catalog at ``path``.

        ``external_access=False`` seals the connection (:data:`SEALED_CONFIG`): SQL cannot read
        or write any other file (``read_csv``, ``read_blob``, ``glob``, ``COPY``, ``ATTACH``...),
        reach a URL, install or load an extension, or ``SET`` any of this back; for a SQL
        endpoint serving untrusted users.
        Raises CatalogLockedError when another process holds the write lock, CatalogError when
        a read-only open finds no catalog or an unmigrated one.
        """
        spath = str(path)
        config: dict[str, Any] = {}
        if threads:
            config["threads"] = int(threads)
        if not external_access:
            config.update(SEALED_CONFIG)
        if spath != ":memory:":
            p = Path(spath)
            if read_only and not p.exists():
                raise CatalogError(f"no catalog at {spath}; open it writable once to create it")
            if not read_only:
                p.parent.mkdir(parents=True, exist_ok=True)
        con = _connect(spath, read_only, config)
        try:
            if read_only:
                if not applied_migrations(con):
                    raise CatalogError(f"{spath} is not a tagger catalog (no schema_migrations table)")
                _warn_if_behind(con, spath, schema_dir)
            else:
                apply_migrations(con, schema_dir)
        except BaseException:
            con.close()
            raise
        logger.debug("opened catalog %s (%s)", spath, "read-only" if read_only else "writable")
        return cls(con, spath, read_only)

    # -- lifecycle -----------------------------------------------------------------------------
    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        """The underlying connection (raises once closed)."""
        if self._con is None:
            raise CatalogError(f"catalog {self.path} is closed")
        return self._con

    def close(self) -> None:
        """Close the connection; a closed catalog refuses every call. Idempotent."""
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None

    @property
    def closed(self) -> bool:
        return self._con is None

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
        with self._lock:
            con = self.con
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
        with self._lock:
            try:
                cur = self.con.execute(sql, params) if params is not None else self.con.execute(sql)
                return cur.fetchall() if cur.description else []
            except duckdb.Error as e:
                raise _query_error(e) from e

    def query_arrow(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> pa.Table:
        """Run a query and return a pyarrow Table."""
        with self._lock:
            try:
                return self.con.sql(sql, params=params).to_arrow_table()
            except duckdb.Error as e:
                raise _query_error(e) from e

    def query_df(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None):
        """Run a query and return a pandas DataFrame (pandas must be installed)."""
        with self._lock:
            try:
                return self.con.sql(sql, params=params).df()
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
