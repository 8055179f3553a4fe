"""`tagger sql` prints at most --max-rows rows as a table, --json or --nl (the rest counted, said on
stderr), reading the result in batches, so a large result takes neither minutes nor gigabytes (a million
rows took 117 s and 1.8 GB, three million never finished); --csv still prints every row."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tagger.catalog import Catalog
from tagger.catalog.sealed import SqlLimits, open_sealed
from tagger.cli import app
from tagger.cli.sql import SQL_MAX_ROWS
from tagger.workspace import Workspace

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


@pytest.fixture
def ws(tmp_path) -> Path:
    with Catalog.open(Workspace.at(tmp_path / "ws").catalog) as cat:
        cat.add_labels(["star", "moon"])
    return tmp_path / "ws"


def sql(ws: Path, statement: str, *extra: str):
    return runner.invoke(app, ["sql", statement, "-w", str(ws), "--wait", "0", *extra], catch_exceptions=False)


def test_a_large_result_prints_its_first_rows_and_says_how_many_were_left_out(ws):
    t0 = time.monotonic()
    out = sql(ws, "SELECT range AS n FROM range(1000000)", "--timeout", "30")
    assert out.exit_code == 0, out.output
    rows = [ln for ln in out.stdout.splitlines() if ln.startswith("│")]  # the header row is drawn with ┃
    assert len(rows) == SQL_MAX_ROWS and rows[-1].split()[1] == str(SQL_MAX_ROWS - 1)
    assert out.stderr.strip() == (f"warning: printed the first {SQL_MAX_ROWS} rows, {1000000 - SQL_MAX_ROWS} more "
                                  "left out: --max-rows N prints more, --csv prints every row")
    assert time.monotonic() - t0 < 60  # generous: it took 117 s


def test_json_and_nl_are_capped_and_stay_valid(ws):
    out = sql(ws, "SELECT range AS n FROM range(100000)", "--json", "--max-rows", "5")
    assert out.exit_code == 0 and json.loads(out.stdout) == [{"n": i} for i in range(5)], out.output
    assert "99995 more left out" in out.stderr
    out = sql(ws, "SELECT range AS n FROM range(7)", "--nl", "--max-rows", "3")
    assert [json.loads(ln) for ln in out.stdout.splitlines()] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert "4 more left out" in out.stderr
    out = sql(ws, "SELECT name FROM labels ORDER BY name", "--json", "--max-rows", "2")  # exactly N: no line
    assert json.loads(out.stdout) == [{"name": "moon"}, {"name": "star"}] and not out.stderr
    assert sql(ws, "SELECT 1", "--max-rows", "0").exit_code == 2


def test_csv_prints_every_row(ws):
    out = sql(ws, "SELECT range AS n FROM range(5000)", "--csv", "--max-rows", "10")
    assert out.exit_code == 0 and out.stdout.splitlines() == ["n", *map(str, range(5000))] and not out.stderr


def test_the_count_stops_at_the_time_limit_the_rows_are_printed(ws):
    endless = "SELECT range AS n, repeat('x', 100) AS s FROM range(1000000000000)"
    out = sql(ws, endless, "--timeout", "1", "--nl", "--max-rows", "2")
    assert out.exit_code == 0, out.output
    assert [json.loads(ln)["n"] for ln in out.stdout.splitlines()] == [0, 1]
    assert "warning: printed the first 2 rows, at least " in out.stderr and "(counted until --timeout)" in out.stderr
    out = sql(ws, "SELECT count(*) FROM range(1000000000000)", "--timeout", "1")  # no row yet: the time limit
    assert out.exit_code == 2 and "time limit of 1 s" in out.stderr


def test_head_keeps_only_its_rows(ws):
    with open_sealed(Workspace.at(ws).catalog, SqlLimits(timeout_s=30)) as session:
        head = session.head("SELECT range AS n FROM range(10000)", 3)
        assert head.table.to_pylist() == [{"n": 0}, {"n": 1}, {"n": 2}] and head.left_out == 9997 and head.counted
        empty = session.head("SELECT name FROM labels WHERE false", 3)
        assert empty.table.num_rows == 0 and empty.table.column_names == ["name"] and empty.left_out == 0
        with pytest.raises(Exception, match="query failed: .*Could not convert"):  # an error part-way still fails
            session.head("SELECT CASE WHEN range = 5000 THEN 'a' ELSE '1' END::INT AS v FROM range(10000)", 3)


def _peak_rss_kb(ws: Path, statement: str) -> int:
    """The largest resident size of `tagger sql STATEMENT` run in a process of its own."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "tagger.cli", "sql", statement, "-w", str(ws), "--timeout", "60"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        proc.returncode = 0  # reaped above
    assert os.waitstatus_to_exitcode(status) == 0
    return usage.ru_maxrss


def test_memory_stays_that_of_a_small_query(ws):
    small = _peak_rss_kb(ws, "SELECT 1")
    large = _peak_rss_kb(ws, "SELECT range AS n, range::VARCHAR AS s FROM range(3000000)")
    assert large - small < 200_000, (small, large)  # kB; it grew by gigabytes
