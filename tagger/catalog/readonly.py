"""Statement checks for the read-only SQL interface, built on DuckDB's own parser."""
from __future__ import annotations

import logging
import re

import duckdb

from ..errors import ReadOnlyQueryError

logger = logging.getLogger(__name__)

#: PRAGMAs that only report information.
READ_ONLY_PRAGMAS = frozenset({
    "table_info", "show", "show_tables", "show_tables_expanded", "show_databases",
    "database_list", "database_size", "storage_info", "metadata_info", "version",
    "platform", "functions", "collations", "user_agent", "index_info",
})

_ALLOWED = "SELECT, WITH, FROM, VALUES, SHOW, DESCRIBE, SUMMARIZE, EXPLAIN or an informational PRAGMA"
_EXPLAIN = re.compile(r"^\s*explain\s+(?:analy[sz]e\s+)?(?:\([^)]*\)\s*)?", re.IGNORECASE)
_PRAGMA = re.compile(r"^\s*pragma\s+([a-z_][a-z0-9_]*)", re.IGNORECASE)


def _type_name(statement: object) -> str:
    return str(getattr(statement, "type", "UNKNOWN")).rsplit(".", 1)[-1]


def _parse(sql: str) -> list:
    try:
        return list(duckdb.extract_statements(sql))
    except duckdb.Error as e:
        raise ReadOnlyQueryError(f"could not parse the query: {e}") from e


def check_read_only(sql: str, _depth: int = 0) -> str:
    """Return ``sql`` when it is exactly one read-only statement, else raise ReadOnlyQueryError.

    The statement type comes from DuckDB's parser (``duckdb.extract_statements``); ``EXPLAIN``
    (which runs its query when it says ``ANALYZE``) is accepted only around a read-only statement.
    """
    if not isinstance(sql, str) or not sql.strip():
        raise ReadOnlyQueryError("empty query: send one read-only statement, e.g. SELECT ...")
    statements = _parse(sql)
    if not statements:
        raise ReadOnlyQueryError("empty query: send one read-only statement, e.g. SELECT ...")
    if len(statements) > 1:
        kinds = ", ".join(_type_name(s) for s in statements)
        raise ReadOnlyQueryError(
            f"only one statement per query is allowed, got {len(statements)} ({kinds})")
    statement = statements[0]
    kind = _type_name(statement)
    text = statement.query
    if kind == "SELECT":
        return sql
    if kind == "EXPLAIN" and _depth == 0:
        inner = _EXPLAIN.sub("", text, count=1)
        if inner == text or not inner.strip():
            raise ReadOnlyQueryError("could not find the statement inside EXPLAIN")
        try:
            check_read_only(inner, _depth + 1)
        except ReadOnlyQueryError as e:
            raise ReadOnlyQueryError(f"EXPLAIN of a statement that is not read-only: {e}") from e
        return sql
    if kind == "PRAGMA":
        m = _PRAGMA.match(text)
        name = m.group(1).lower() if m else "?"
        if name in READ_ONLY_PRAGMAS:
            return sql
        raise ReadOnlyQueryError(
            f"PRAGMA {name} is not allowed here; informational pragmas are: "
            + ", ".join(sorted(READ_ONLY_PRAGMAS)))
    raise ReadOnlyQueryError(
        f"this interface is read-only: a {kind} statement was refused; allowed are {_ALLOWED}")


#: The tables and views of the catalog with their columns (``tagger sql --schema``).
SCHEMA_OVERVIEW_SQL = """
SELECT t.table_name AS name, lower(t.table_type) AS type,
       string_agg(c.column_name || ' ' || c.data_type, ', ' ORDER BY c.ordinal_position) AS columns
FROM information_schema.tables AS t
JOIN information_schema.columns AS c
  ON c.table_catalog = t.table_catalog AND c.table_schema = t.table_schema AND c.table_name = t.table_name
WHERE t.table_catalog = current_database() AND t.table_schema = 'main'
GROUP BY ALL ORDER BY type, name
"""
