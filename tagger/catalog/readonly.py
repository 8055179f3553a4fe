"""Statement checks for the read-only SQL interface, built on DuckDB's own parser and planner.

:func:`check_read_only` accepts exactly one read-only statement (the parser's statement type);
:func:`check_names` refuses, before anything is bound, the table functions that read files, run SQL
from a string or list settings; :func:`check_plan` looks at DuckDB's plan of the statement (whatever
the syntax, a file read shows there as its table function) and refuses any table function outside
:data:`SAFE_TABLE_FUNCTIONS`, and any value of the connection's private folder (what a setting such
as ``temp_directory`` or ``secret_directory`` would reveal).
"""
from __future__ import annotations

import json
import logging
import re
from typing import Any

import duckdb

from ..errors import ExternalAccessError, ReadOnlyQueryError

__all__ = ["READ_ONLY_PRAGMAS", "SAFE_TABLE_FUNCTIONS", "SCHEMA_OVERVIEW_SQL", "check_names", "check_plan",
           "check_read_only", "explained_statement"]

logger = logging.getLogger(__name__)

#: Table functions a query may use: the catalog's own metadata (what SHOW, DESCRIBE, SUMMARIZE and
#: information_schema read), generators, and JSON over values. Everything else (read_csv, read_blob,
#: glob, parquet_*, query(), duckdb_settings(), duckdb_secrets()...) is refused.
SAFE_TABLE_FUNCTIONS = frozenset({
    "duckdb_columns", "duckdb_constraints", "duckdb_databases", "duckdb_dependencies", "duckdb_functions",
    "duckdb_indexes", "duckdb_keywords", "duckdb_schemas", "duckdb_sequences", "duckdb_tables", "duckdb_types",
    "duckdb_views", "generate_series", "range", "repeat", "repeat_row", "unnest", "summary", "json_each",
    "json_tree", "pg_timezone_names", "icu_calendar_names", "pragma_collations", "pragma_database_size",
    "pragma_metadata_info", "pragma_platform", "pragma_show", "pragma_storage_info", "pragma_table_info",
    "pragma_user_agent", "pragma_version", "seq_scan",
})
#: Table functions refused by name even when DuckDB does not list them (they run SQL given as text).
_DYNAMIC = frozenset({"query", "query_table", "json_execute_serialized_sql"})
#: Settings that name folders or files of the machine (``secret_directory``, ``home_directory``...).
_PATH_SETTING = re.compile(r"dir|path|file|secret|home|repositor|log|agent", re.IGNORECASE)
_REFUSED = ("refused: SQL here reads only the catalog's own tables and views (no other file, URL, "
            "extension or setting)")

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
        sql.encode("utf-8")
    except UnicodeEncodeError as e:  # bytes of another encoding given on the command line
        raise ReadOnlyQueryError(f"the query is not UTF-8 text (position {e.start}): write it in UTF-8") from None
    try:
        return list(duckdb.extract_statements(sql))
    except duckdb.Error as e:
        raise ReadOnlyQueryError(f"could not parse the query: {e}") from e


def _tokens(sql: str) -> list[tuple[str, str]]:
    """``(type, text)`` of each token of ``sql`` but comments (DuckDB's tokenizer); identifiers lose their quotes."""
    found = duckdb.tokenize(sql)
    ends = [start for start, _ in found[1:]] + [len(sql)]
    out = []
    for (start, kind), end in zip(found, ends):
        text = sql[start:end].strip()
        name = str(kind).rsplit(".", 1)[-1]
        if name == "identifier" and len(text) > 1 and text[0] == text[-1] == '"':
            text = text[1:-1].replace('""', '"')
        if name != "comment":
            out.append((name, text))
    return out


def _is_pivot(sql: str) -> bool:
    """Whether ``sql`` holds a PIVOT (DuckDB parses a PIVOT without an ``IN`` list as several statements)."""
    return any(kind == "keyword" and text.lower() == "pivot" for kind, text in _tokens(sql))


def check_read_only(sql: str, _depth: int = 0) -> str:
    """Return ``sql`` when it is exactly one read-only statement, else raise ReadOnlyQueryError.

    The statement type comes from DuckDB's parser (``duckdb.extract_statements``); ``EXPLAIN``
    (which runs its query when it says ``ANALYZE``) is accepted only around a read-only statement,
    and a PIVOT whose columns come from the data (which DuckDB parses as a MULTI statement) is a query.
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
    if kind == "SELECT" or (kind == "MULTI" and _is_pivot(sql)):
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


def explained_statement(sql: str) -> str | None:
    """The statement inside ``EXPLAIN [ANALYZE]`` (None when ``sql`` is no EXPLAIN)."""
    statements = _parse(sql)
    if len(statements) != 1 or _type_name(statements[0]) != "EXPLAIN":
        return None
    return _EXPLAIN.sub("", statements[0].query, count=1)


def _setting_refusal(tokens: list[tuple[str, str]], at: int) -> str | None:
    """Why the ``current_setting`` call at token ``at`` is refused: its argument is not a literal
    name, or it names a setting that holds a path of the machine (None: allowed)."""
    call = [text for _, text in tokens[at + 1:at + 4]]
    literal = len(call) == 3 and call[0] == "(" and call[2] == ")" and tokens[at + 2][0] == "string_const"
    if not literal:
        return "current_setting() takes a setting's name as a literal here"
    name = call[1].strip("'").lower()
    if _PATH_SETTING.search(name):
        return f"the setting {name!r} names a folder or file of the machine"
    return None


def check_names(sql: str, table_functions: frozenset[str]) -> None:
    """Raise ExternalAccessError when ``sql`` names a table function outside :data:`SAFE_TABLE_FUNCTIONS`
    (of ``table_functions``, the connection's own list) or one that runs SQL given as text, or reads a
    setting that names a folder or file (``current_setting('secret_directory')``); nothing is bound,
    so no file is touched."""
    tokens = _tokens(sql)
    for at, (kind, text) in enumerate(tokens):
        name = text.lower()
        if kind not in ("identifier", "keyword") or at + 1 >= len(tokens) or tokens[at + 1][1] != "(":
            continue  # only a call names a function: a column or alias may be called `query`
        if name in _DYNAMIC or (name in table_functions and name not in SAFE_TABLE_FUNCTIONS):
            raise ExternalAccessError(f"{_REFUSED}; {name}() is not available here")
        why = _setting_refusal(tokens, at) if name == "current_setting" else None
        if why:
            raise ExternalAccessError(f"{_REFUSED}; {why}")


def _plan_nodes(node: Any) -> list[dict]:
    if isinstance(node, list):
        return [n for x in node for n in _plan_nodes(x)]
    if not isinstance(node, dict):
        return []
    return [node, *_plan_nodes(node.get("children", []))]


def check_plan(con: duckdb.DuckDBPyConnection, sql: str, table_functions: frozenset[str],
               private: str | None = None) -> None:
    """Raise ExternalAccessError when DuckDB's plan of ``sql`` (a query) uses a table function outside
    :data:`SAFE_TABLE_FUNCTIONS` or holds ``private`` (a folder only the connection's settings name:
    a query that would show it reveals a setting). Binding and planning read no row."""
    try:
        rows = con.execute("EXPLAIN (FORMAT json) " + sql).fetchall()
    except duckdb.InterruptException:
        raise
    except duckdb.Error:
        return  # the statement itself fails the same way, with DuckDB's own message
    for _, plan in rows:
        text = str(plan)
        if private and private in text:
            raise ExternalAccessError(f"{_REFUSED}; the query shows a setting of the environment "
                                      "(a folder of this connection)")
        try:
            nodes = _plan_nodes(json.loads(text))
        except ValueError:
            continue
        for node in nodes:
            extra = node.get("extra_info")
            extra = extra if isinstance(extra, dict) else {}
            for name in (str(node.get("name", "")), str(extra.get("Function", ""))):
                low = name.lower()
                if low in table_functions and low not in SAFE_TABLE_FUNCTIONS:
                    raise ExternalAccessError(f"{_REFUSED}; {low}() is not available here")


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
