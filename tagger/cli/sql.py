"""``tagger sql``: one read-only statement over the catalog, within its limits (docs/sql.md)."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from ..catalog.readonly import SCHEMA_OVERVIEW_SQL
from .options import (
    DEFAULT_WORKSPACE, QUICK_WAIT, CsvOpt, NlOpt, RowsJsonOpt, WaitOpt, WorkspaceOpt, emit_rows, err_console, fail,
    finite_non_negative, output_format, reported, workspace_at,
)

__all__ = ["SQL_MAX_ROWS", "sql_cmd"]

#: Rows `tagger sql` prints as a table, --json or --nl unless --max-rows says otherwise (--csv prints all).
SQL_MAX_ROWS = 1000
MaxRowsOpt = Annotated[int, typer.Option(
    "--max-rows", min=1, metavar="N", help=(
        f"print at most N rows as a table, --json or --nl (default {SQL_MAX_ROWS}; a line on stderr says how "
        "many were left out); --csv prints every row"))]


def sql_cmd(
    query: Annotated[Optional[str], typer.Argument(help="one read-only statement (SELECT, WITH, SHOW, ...)")] = None,
    schema: Annotated[bool, typer.Option("--schema", help="list the tables and views with their columns")] = False,
    workspace: WorkspaceOpt = DEFAULT_WORKSPACE,
    wait: WaitOpt = QUICK_WAIT,
    timeout: Annotated[Optional[float], typer.Option(
        "--timeout", metavar="SECONDS", callback=finite_non_negative, help=(
            "stop the query after this long (default $TAGGER_SQL_TIMEOUT or 60; 0: no limit), so that it never "
            "holds the catalog long enough to stall a job"))] = None,
    as_json: RowsJsonOpt = False,
    as_nl: NlOpt = False,
    as_csv: CsvOpt = False,
    max_rows: MaxRowsOpt = SQL_MAX_ROWS,
) -> None:
    """Run a read-only SQL query on the catalog (e.g. over the current_tags view).

    The query sees the catalog's tables and views only: no other file, URL, extension or setting; it
    is stopped at its time limit, and at its memory and temp-space limits ($TAGGER_SQL_MEMORY,
    $TAGGER_SQL_TEMP, 1GB each by default). A table, --json and --nl print the first --max-rows rows;
    --csv prints them all.
    """
    from ..catalog.sealed import Head, SqlLimits, open_sealed
    fmt = output_format(as_json, as_csv, nl=as_nl)
    if schema == (query is not None):
        fail("give either a QUERY or --schema")
    with reported():
        limits = SqlLimits.from_env(timeout)
        statement = SCHEMA_OVERVIEW_SQL if schema or query is None else query
        with open_sealed(workspace_at(workspace).catalog, limits, wait=wait) as session:
            head = Head(session.query(statement)) if fmt == "csv" else session.head(statement, max_rows)
    emit_rows(head.table.column_names, [tuple(r.values()) for r in head.table.to_pylist()], fmt)
    if head.left_out:
        more = f"{head.left_out} more" if head.counted else f"at least {head.left_out} more (counted until --timeout)"
        err_console.print(f"warning: printed the first {max_rows} rows, {more} left out: --max-rows N prints more, "
                          "--csv prints every row", markup=False)
