"""The limits of the read-only SQL interface (``tagger sql``): a query may take some time, memory
and temp space, and no more, so that an ad-hoc query never holds the catalog long enough to stall a
job, nor fills the memory or the disk.

:func:`open_sealed` opens the catalog read-only and sealed (no other file, URL or extension) with a
memory limit, a temp-space limit and a private temp folder of its own (made for the call, removed
after it; the catalog's ``catalog.duckdb.tmp`` is not reachable), whose path stands in for every
folder setting, so that no setting names a folder of the machine. :meth:`SealedSession.query` checks
one statement (:mod:`tagger.catalog.readonly`) and runs it under the time limit; :meth:`SealedSession.head`
does the same but reads the result in batches and keeps only its first rows (and counts the others), so
that a large result is neither held in memory nor turned into rows it will not print.
"""
from __future__ import annotations

import logging
import math
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import duckdb
import pyarrow as pa

from ..errors import CatalogError, ConfigError, QueryLimitError
from .base import SEALED_CONFIG, _query_error, first_row
from .readonly import check_names, check_plan, check_read_only, explained_statement

if TYPE_CHECKING:
    from . import Catalog

__all__ = ["SQL_MEMORY_ENV", "SQL_TEMP_ENV", "SQL_TIMEOUT_ENV", "Head", "SealedSession", "SqlLimits", "open_sealed"]

logger = logging.getLogger(__name__)
T = TypeVar("T")
#: Rows per batch of a streamed result at least (DuckDB's own vector size): the rows after the first
#: ones are counted in batches this large.
STREAM_BATCH = 2048

SQL_TIMEOUT_ENV = "TAGGER_SQL_TIMEOUT"
SQL_MEMORY_ENV = "TAGGER_SQL_MEMORY"
SQL_TEMP_ENV = "TAGGER_SQL_TEMP"
_AMOUNT = re.compile(r"^\d+(\.\d+)?\s*([KMGT]i?B|[KMGT]|B)$", re.IGNORECASE)


def _amount(env: str, default: str) -> str:
    raw = os.environ.get(env, "").strip() or default
    if not _AMOUNT.match(raw):
        raise ConfigError(f"${env} must be an amount such as 512MB or 2GB, got {raw!r}")
    return raw


@dataclass(frozen=True)
class SqlLimits:
    """What one query may use: seconds (0: no time limit), memory and temp space (DuckDB amounts)."""

    timeout_s: float = 60.0
    memory: str = "1GB"
    temp: str = "1GB"

    def __post_init__(self) -> None:
        if not math.isfinite(self.timeout_s) or self.timeout_s < 0:
            raise ConfigError(f"the SQL time limit must be a number of seconds >= 0, got {self.timeout_s}")

    @classmethod
    def from_env(cls, timeout_s: float | None = None) -> "SqlLimits":
        """Limits from ``timeout_s`` or ``$TAGGER_SQL_TIMEOUT``, ``$TAGGER_SQL_MEMORY``, ``$TAGGER_SQL_TEMP``."""
        if timeout_s is None:
            raw = os.environ.get(SQL_TIMEOUT_ENV, "").strip()
            try:
                timeout_s = float(raw) if raw else cls.timeout_s
            except ValueError:
                raise ConfigError(f"${SQL_TIMEOUT_ENV} must be a number of seconds, got {raw!r}") from None
        return cls(float(timeout_s), _amount(SQL_MEMORY_ENV, cls.memory), _amount(SQL_TEMP_ENV, cls.temp))

    def settings(self, private: str) -> dict[str, Any]:
        """DuckDB settings of the sealed connection, its folders all inside ``private``."""
        return {"memory_limit": self.memory, "max_temp_directory_size": self.temp, "temp_directory": private,
                "home_directory": private, "secret_directory": os.path.join(private, "secrets"),
                "extension_directory": os.path.join(private, "extensions")}


@dataclass
class SealedSession:
    """A sealed, limited read-only catalog (:func:`open_sealed`) and the private folder of its connection."""

    catalog: "Catalog"
    limits: SqlLimits
    private: str

    def query(self, sql: str) -> pa.Table:
        """Check ``sql`` and run it, stopped after ``limits.timeout_s`` seconds (QueryLimitError);
        the checks count towards the time too."""
        return _run(self, sql, lambda checked, fired: self.catalog.query_arrow(checked))

    def head(self, sql: str, max_rows: int) -> "Head":
        """As :meth:`query`, but only the first ``max_rows`` rows are kept: the result is read in batches
        of ``max_rows + 1`` rows and the rows after them only counted (until the time limit)."""
        if max_rows < 1:
            raise ConfigError(f"max_rows must be >= 1, got {max_rows}")
        return _run(self, sql, lambda checked, fired: _read_head(self.catalog.con, checked, max_rows, fired))


@dataclass(frozen=True)
class Head:
    """The first rows of a result, and how many came after them (``counted`` False: at least that many,
    the count stopped at the time limit)."""

    table: pa.Table
    left_out: int = 0
    counted: bool = True


@contextmanager
def open_sealed(path: str | os.PathLike, limits: SqlLimits, *, wait: float = 0.0) -> Iterator[SealedSession]:
    """The catalog at ``path``, read-only, sealed and limited by ``limits``; its private temp folder is
    removed when the block ends."""
    from . import Catalog
    private = tempfile.mkdtemp(prefix="tagger-sql-")
    try:
        # the folders are set when connecting, the seal right after (DuckDB refuses a folder setting once
        # external access is off, and applies connect-time settings in no fixed order)
        with Catalog.open(path, read_only=True, wait=wait, settings=limits.settings(private)) as cat:
            _seal(cat.con)
            yield SealedSession(cat, limits, private)
    finally:
        shutil.rmtree(private, ignore_errors=True)


def _seal(con: duckdb.DuckDBPyConnection) -> None:
    """Apply :data:`~tagger.catalog.base.SEALED_CONFIG` to an open connection, the lock last."""
    items = sorted(SEALED_CONFIG.items(), key=lambda kv: kv[0] == "lock_configuration")
    for name, value in items:
        literal = str(value).lower() if isinstance(value, bool) else "'" + str(value).replace("'", "''") + "'"
        con.execute(f"SET {name} = {literal}")
    if first_row(con.execute("SELECT current_setting('enable_external_access')"))[0] is not False:
        raise CatalogError("could not seal the SQL connection")


def _table_functions(con: duckdb.DuckDBPyConnection) -> frozenset[str]:
    return frozenset(r[0].lower() for r in con.execute(
        "SELECT DISTINCT function_name FROM duckdb_functions() WHERE function_type = 'table'").fetchall())


def _limit_error(e: BaseException, limits: SqlLimits) -> QueryLimitError | None:
    """The QueryLimitError for a DuckDB error that a memory or temp-space limit caused (None otherwise)."""
    text = str(e)
    if "max_temp_directory_size" in text or "temp directory" in text.lower():
        return QueryLimitError(f"query stopped: it needed more than its {limits.temp} of temp space "
                               f"(${SQL_TEMP_ENV})")
    if isinstance(e, duckdb.OutOfMemoryException) or "Out of Memory" in text:
        return QueryLimitError(f"query stopped: it needed more than its {limits.memory} of memory "
                               f"(${SQL_MEMORY_ENV}); aggregate more, or select fewer rows or columns")
    return None


def _checked(session: SealedSession, sql: str) -> str:
    """``sql`` when it is one read-only statement that reads only the catalog (ReadOnlyQueryError else)."""
    check_read_only(sql)
    con = session.catalog.con
    functions = _table_functions(con)
    check_names(sql, functions)
    inner = explained_statement(sql)
    if not sql.lstrip().lower().startswith("pragma"):
        check_plan(con, inner if inner is not None else sql, functions, session.private)
    return sql


@contextmanager
def _streamed() -> Iterator[None]:
    """An error a result stream meets part-way (pyarrow's OSError around DuckDB's message) as DuckDB's own."""
    try:
        yield
    except OSError as e:
        text = " ".join(str(e).split())
        raise (duckdb.InterruptException(text) if "interrupt" in text.lower() else duckdb.Error(text)) from e


def _read_head(con: duckdb.DuckDBPyConnection, sql: str, max_rows: int, fired: threading.Event) -> Head:
    """The first ``max_rows`` rows of ``sql`` and a count of the others; an interrupt at the time limit
    (``fired``) while counting ends the count, not the query."""
    try:
        reader = con.sql(sql).to_arrow_reader(max(max_rows + 1, STREAM_BATCH))
    except duckdb.Error as e:  # refused by the sealed connection, or failed as it started
        raise _query_error(e) from e
    batches: list[pa.RecordBatch] = []
    kept = left = 0
    with _streamed():
        for batch in reader:
            take = min(batch.num_rows, max_rows - kept)
            batches.append(batch.slice(0, take))
            kept, left = kept + take, left + batch.num_rows - take
            if left:
                break
    table = pa.Table.from_batches(batches, schema=reader.schema)
    if not left:
        return Head(table)
    try:
        with _streamed():
            for batch in reader:
                left += batch.num_rows
    except duckdb.Error:
        if not fired.is_set():
            raise
        return Head(table, left, counted=False)
    return Head(table, left)


def _time_limit(limits: SqlLimits) -> QueryLimitError:
    return QueryLimitError(f"query stopped after its time limit of {limits.timeout_s:g} s "
                           f"(--timeout SECONDS or ${SQL_TIMEOUT_ENV}; 0: no limit)")


def _run(session: SealedSession, sql: str, fetch: Callable[[str, threading.Event], T]) -> T:
    cat, limits = session.catalog, session.limits
    con = cat.con
    fired = threading.Event()

    def stop() -> None:
        fired.set()
        con.interrupt()

    timer = threading.Timer(limits.timeout_s, stop) if limits.timeout_s > 0 else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    try:
        checked = _checked(session, sql)
        if fired.is_set():
            raise duckdb.InterruptException("interrupted between the checks and the query")
        return fetch(checked, fired)
    except RuntimeError as e:  # DuckDB's answer to Ctrl-C in the middle of a query: the interrupt it was
        if not fired.is_set() and "interrupted" in str(e).lower():
            raise KeyboardInterrupt from e
        raise
    except duckdb.InterruptException as e:  # the same, met part-way through a streamed result
        if not fired.is_set():
            raise KeyboardInterrupt from e
        raise _time_limit(limits) from e
    except (CatalogError, duckdb.Error) as e:
        if fired.is_set():
            raise _time_limit(limits) from e
        cause = e.__cause__ if isinstance(e, CatalogError) and e.__cause__ is not None else e
        limited = _limit_error(cause, limits)
        if limited is not None:
            raise limited from e
        if isinstance(e, duckdb.Error):
            raise CatalogError(f"query failed: {e}") from e
        raise
    finally:
        if timer is not None:
            timer.cancel()
