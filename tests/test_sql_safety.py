"""`tagger sql` reaches the catalog's tables and views only: no other file, URL, extension or setting.

Every hostile statement goes through the real CLI path and must be refused with one clear line,
leave no file anywhere (HOME and the working directory point into the test's folder), and print
nothing of what it tried to read.
"""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from tagger.catalog import Catalog
from tagger.cli import app
from tagger.errors import ExternalAccessError
from tagger.workspace import Workspace

SECRET = "TOPSECRET-5f2a"
runner = CliRunner()


@pytest.fixture
def world(tmp_path, monkeypatch) -> dict[str, Path]:
    """A workspace with a current run, secrets beside it, another workspace, an empty HOME."""
    ws = tmp_path / "ws"
    shards = tmp_path / "shards"
    shards.mkdir()
    with Catalog.open(Workspace.at(ws).catalog) as cat:
        ids = cat.register_images(["/img/a.jpg", "/img/b.jpg"])
        cat.add_labels(["star", "moon"])
        run = cat.start_run("tag", labels=["star", "moon"])
        pq.write_table(pa.table({"image_id": [int(ids[0]), int(ids[1])], "label": ["star", "moon"],
                                 "score": [0.9, 0.4], "rank": [1, 1], "positive": [True, False]}),
                       shards / "tags-0.parquet")
        cat.load_tags(run, shards / "tags-0.parquet")
        cat.finish_run(run)
        cat.set_current(run)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.csv").write_text(f"token\n{SECRET}\n")
    (outside / "secret.json").write_text(f'{{"token": "{SECRET}"}}\n')
    (outside / "secret.txt").write_text(SECRET)
    other = tmp_path / "other"
    with Catalog.open(Workspace.at(other).catalog) as cat:
        cat.add_labels([SECRET])
    pq.write_table(pa.table({"label": [SECRET]}), other / "tags.parquet")
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    return {"root": tmp_path, "ws": ws, "outside": outside, "other": other, "home": home}


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def sql(world, statement: str, *extra: str):
    return runner.invoke(app, ["sql", statement, "-w", str(world["ws"]), "--wait", "0", *extra],
                         catch_exceptions=False)


# (statement template, why it is hostile); {o} is the folder of secrets, {x} another workspace
HOSTILE = [
    ("SELECT content FROM read_blob('/etc/passwd')", "reads a system file"),
    ("SELECT * FROM read_blob('/proc/self/environ')", "reads the environment"),
    ("SELECT * FROM read_text('{o}/secret.txt')", "read_text"),
    ("SELECT * FROM read_csv('{o}/secret.csv')", "read_csv"),
    ("SELECT * FROM read_csv_auto('{o}/secret.csv')", "read_csv_auto"),
    ("SELECT * FROM '{o}/secret.csv'", "a file named as a table"),
    ("SELECT * FROM sniff_csv('{o}/secret.csv')", "sniff_csv"),
    ("SELECT * FROM read_json('{o}/secret.json')", "read_json"),
    ("SELECT * FROM read_json_auto('{o}/secret.json')", "read_json_auto"),
    ("SELECT * FROM read_parquet('{x}/tags.parquet')", "another workspace's Parquet"),
    ("SELECT * FROM parquet_metadata('{x}/tags.parquet')", "parquet_metadata"),
    ("SELECT * FROM glob('{o}/*')", "lists a folder"),
    ("SELECT * FROM glob('/root/*')", "lists root's home"),
    ("WITH s AS (SELECT * FROM read_csv('{o}/secret.csv')) SELECT * FROM s", "a file inside a CTE"),
    ("SELECT * FROM query('SELECT * FROM read_text(''{o}/secret.txt'')')", "a file inside query()"),
    ("EXPLAIN ANALYZE SELECT * FROM read_text('{o}/secret.txt')", "EXPLAIN ANALYZE runs its query"),
    ("SELECT * FROM read_csv('https://example.com/data.csv')", "https URL (would install httpfs)"),
    ("SELECT * FROM read_parquet('s3://bucket/tags.parquet')", "object-store URL"),
    ("COPY (SELECT * FROM images) TO '{o}/stolen.csv'", "COPY ... TO a file"),
    ("COPY images TO 'stolen.parquet' (FORMAT parquet)", "COPY to the working directory"),
    ("EXPORT DATABASE '{o}/export'", "EXPORT DATABASE"),
    ("ATTACH '{x}/catalog.duckdb' AS other", "ATTACH another database"),
    ("INSTALL httpfs", "INSTALL an extension"),
    ("LOAD httpfs", "LOAD an extension"),
    ("SET enable_external_access = true", "SET its way back"),
    ("SET lock_configuration = false", "unlock the configuration"),
    ("RESET enable_external_access", "RESET"),
    ("CALL enable_logging(storage_path = '{o}/log')", "logging to a file"),
    ("CREATE PERSISTENT SECRET s (TYPE s3, KEY_ID 'k', SECRET 'v')", "a secret written under HOME"),
    ("SELECT 1; SELECT * FROM read_text('{o}/secret.txt')", "a second statement"),
]


@pytest.mark.parametrize("template,why", HOSTILE, ids=[w for _, w in HOSTILE])
def test_hostile_statement_is_refused_with_one_line(world, template, why):
    statement = template.format(o=world["outside"], x=world["other"])
    before = _files(world["root"])
    out = sql(world, statement, "--json")
    assert out.exit_code == 2, f"{why}: {out.output}"
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), out.stderr
    assert "Traceback" not in out.output
    assert SECRET not in out.output and "root:" not in out.stdout
    assert _files(world["root"]) == before, f"{why} created files"
    assert not (world["home"] / ".duckdb").exists()


@pytest.mark.parametrize("statement", [
    "SELECT content FROM read_blob('/etc/passwd')", "SELECT * FROM glob('/root/*')",
    "SELECT * FROM read_csv('https://example.com/data.csv')"])
def test_file_and_network_refusals_say_why(world, statement):
    out = sql(world, statement)
    assert "refused" in out.stderr and "only the catalog" in out.stderr, out.stderr


@pytest.mark.parametrize("statement", [
    "ATTACH '{x}/catalog.duckdb' AS other", "INSTALL httpfs", "LOAD httpfs", "COPY images TO '{o}/x.csv'",
    "SET enable_external_access = true", "SET lock_configuration = false",
    "SET allowed_directories = ['/']", "SET autoinstall_known_extensions = true",
    "SELECT * FROM read_text('{o}/secret.txt')"])
def test_the_connection_itself_refuses_without_the_statement_check(world, statement):
    """Below the statement check, the sealed DuckDB connection refuses on its own."""
    statement = statement.format(o=world["outside"], x=world["other"])
    with Catalog.open(Workspace(world["ws"]).catalog, read_only=True, external_access=False) as ro:
        with pytest.raises(ExternalAccessError, match="refused"):
            ro.query(statement)
        assert ro.query("SELECT current_setting('enable_external_access')") == [(False,)]
    assert not (world["home"] / ".duckdb").exists()
    assert not (world["outside"] / "x.csv").exists()


def test_ordinary_queries_keep_working(world):
    before = _files(world["root"])
    out = sql(world, "SELECT uri, label, score FROM current_tags WHERE positive ORDER BY uri", "--json")
    assert out.exit_code == 0, out.output
    assert '"uri": "/img/a.jpg"' in out.stdout and '"label": "star"' in out.stdout
    cases = {
        "SELECT count(*) AS n FROM images": '"n": 2',
        "SELECT status FROM runs": '"status": "current"',
        "SELECT label, n_pos FROM current_label_counts ORDER BY label": '"label": "moon"',
        "WITH l AS (SELECT name FROM labels) SELECT string_agg(name, ',' ORDER BY name) AS s FROM l":
            '"s": "moon,star"',
        "SELECT regexp_replace(uri, '^.*/', '') AS f FROM images ORDER BY 1 LIMIT 1": '"f": "a.jpg"',
        "SHOW TABLES": '"name": "tags"',
        "DESCRIBE current_tags": '"column_name": "uri"',
        "SUMMARIZE tags": '"column_name": "score"',
        "SELECT current_setting('enable_external_access') AS ext": '"ext": false',
    }
    for statement, expected in cases.items():
        out = sql(world, statement, "--json")
        assert out.exit_code == 0 and expected in out.stdout, (statement, out.output)
    out = sql(world, "x", "--schema")  # --schema with a query is a usage error, not a crash
    assert out.exit_code == 2
    out = runner.invoke(app, ["sql", "--schema", "-w", str(world["ws"]), "--json"])
    assert out.exit_code == 0 and '"name": "current_tags"' in out.stdout
    assert _files(world["root"]) == before
    assert not (world["home"] / ".duckdb").exists()


# -- the catalog's own files, settings and limits ----------------------------------------------------
def _catalog_file_statements(world) -> list[str]:
    cat = world["ws"] / "catalog.duckdb"
    tmp = world["ws"] / "catalog.duckdb.tmp"
    return [
        f"SELECT * FROM read_csv('{tmp}/planted.csv')",            # DuckDB's default temp folder
        f"SELECT * FROM '{tmp}/planted.csv'",
        f"SELECT * FROM read_text('{tmp}/planted.csv')",
        f"SELECT content FROM read_blob('{cat}')",                   # the catalog's raw bytes
        f"SELECT * FROM read_text('{cat}')",
        f"SELECT * FROM \"read_blob\"('{cat}')",
        f"SELECT * FROM read_blob('{cat}.wal')",
        f"SELECT * FROM query('SELECT * FROM read_bl' || 'ob(''{cat}'')')",
        f"SELECT * FROM query_table('{cat}')",
        f"DESCRIBE SELECT * FROM read_blob('{cat}')",
        f"EXPLAIN ANALYZE SELECT content FROM read_blob('{cat}')",
    ]


def test_the_catalogs_own_files_are_out_of_reach(world):
    tmp = world["ws"] / "catalog.duckdb.tmp"
    tmp.mkdir()
    (tmp / "planted.csv").write_text(f"token\n{SECRET}\n")
    for statement in _catalog_file_statements(world):
        out = sql(world, statement, "--json")
        assert out.exit_code == 2, f"{statement}: {out.output}"
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: refused"), (statement, out.stderr)
        assert SECRET not in out.output and "DUCK" not in out.output, statement
    out = sql(world, f"SELECT * FROM '{world['ws'] / 'catalog.duckdb'}'")  # the catalog named as a table
    assert out.exit_code == 2 and len(out.stderr.strip().splitlines()) == 1 and "DUCK" not in out.output


SETTINGS = ["secret_directory", "home_directory", "temp_directory", "extension_directory",
            "allowed_directories"]


@pytest.mark.parametrize("statement", [
    *(f"SELECT current_setting('{name}') AS v" for name in SETTINGS),
    "SELECT current_setting('temp_' || 'directory') AS v",
    "SELECT * FROM duckdb_settings()",
    "SELECT value FROM duckdb_settings() WHERE name = 'secret_directory'",
    "SELECT * FROM duckdb_temporary_files()",
    "SELECT * FROM duckdb_extensions()",
    "SELECT * FROM duckdb_secrets()",
    "SELECT * FROM which_secret('s3://x', 's3')",
])
def test_settings_that_reveal_the_environment_are_not_readable(world, statement):
    out = sql(world, statement, "--json")
    assert out.exit_code == 2, out.output
    assert out.stderr.startswith("error: refused") and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert str(world["home"]) not in out.output and "/root" not in out.output


def test_pivot_and_harmless_settings_are_queries(world):
    for statement, expected in {
        "PIVOT current_tags ON label USING max(score) GROUP BY uri ORDER BY uri": '"moon": null, "star": 0.89',
        "SELECT * FROM (PIVOT current_tags ON label USING count(*) GROUP BY uri) ORDER BY uri": '"moon": 0',
        "PIVOT current_tags ON label IN ('star') USING max(score) GROUP BY uri ORDER BY uri": '"star": 0.89',
        "SELECT current_setting('threads') > 0 AS t": '"t": true',
        # DuckDB's progress bar writes to stdout (a slow query's --csv began with it): off, and locked off
        "SELECT current_setting('enable_progress_bar') AS bar": '"bar": false',
        "SELECT count(*) AS n FROM range(10)": '"n": 10',
    }.items():
        out = sql(world, statement, "--json")
        assert out.exit_code == 0 and expected in out.stdout, (statement, out.output)
    out = sql(world, "PIVOT current_tags ON label USING max(score); SELECT 1")
    assert out.exit_code == 2 and "one statement" in out.stderr


def test_time_limit_stops_a_slow_query(world, monkeypatch):
    import time
    slow = "SELECT count(*) FROM range(1000000000000)"
    t = time.monotonic()
    out = sql(world, slow, "--timeout", "1")
    assert out.exit_code == 2 and time.monotonic() - t < 120  # generous: without the limit it runs for hours
    assert out.stderr.strip() == ("error: query stopped after its time limit of 1 s (--timeout SECONDS or "
                                  "$TAGGER_SQL_TIMEOUT; 0: no limit)")
    monkeypatch.setenv("TAGGER_SQL_TIMEOUT", "0.5")
    out = sql(world, slow)
    assert out.exit_code == 2 and "time limit of 0.5 s" in out.stderr
    monkeypatch.setenv("TAGGER_SQL_TIMEOUT", "soon")
    out = sql(world, "SELECT 1")
    assert out.exit_code == 2 and "TAGGER_SQL_TIMEOUT must be a number" in out.stderr
    assert sql(world, "SELECT 1", "--timeout", "-1").exit_code == 2


def test_ctrl_c_in_a_query_is_one_line_and_status_130(world, monkeypatch, capsys):
    """DuckDB answers Ctrl-C inside a query with RuntimeError('Query interrupted'): the command line
    ends it as an interrupt (one line, status 130), not a traceback; a time limit stays a time limit."""
    from tagger.catalog import Catalog
    from tagger.cli.app import main

    def interrupted(self, sql, *a, **kw):
        raise RuntimeError("Query interrupted")

    monkeypatch.setattr(Catalog, "query_arrow", interrupted)  # --csv reads the whole result
    monkeypatch.setattr("tagger.catalog.sealed._read_head", interrupted)  # the others its first rows
    for fmt in ("--csv", "--json"):
        with pytest.raises(SystemExit) as done:
            main(["sql", "-w", str(world["ws"]), "--wait", "0", "SELECT 1", fmt])
        assert done.value.code == 130 and capsys.readouterr().err.strip() == "error: interrupted"
    monkeypatch.setattr(Catalog, "query_arrow", lambda self, sql, *a, **kw: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):  # any other error is not taken for an interrupt
        main(["sql", "-w", str(world["ws"]), "--wait", "0", "SELECT 1", "--csv"])


def test_memory_and_temp_space_limits(world, monkeypatch):
    import tempfile
    before = set(Path(tempfile.gettempdir()).glob("tagger-sql-*"))
    monkeypatch.setenv("TAGGER_SQL_MEMORY", "30MB")
    out = sql(world, "SELECT length(list(i)) AS n FROM range(40000000) t(i)")
    assert out.exit_code == 2 and "more than its 30MB of memory ($TAGGER_SQL_MEMORY)" in out.stderr, out.output
    monkeypatch.setenv("TAGGER_SQL_TEMP", "10MB")
    out = sql(world, "SELECT i FROM range(40000000) t(i) ORDER BY hash(i) LIMIT 1 OFFSET 1000000")
    assert out.exit_code == 2 and "more than its 10MB of temp space ($TAGGER_SQL_TEMP)" in out.stderr, out.output
    monkeypatch.setenv("TAGGER_SQL_MEMORY", "lots")
    assert "TAGGER_SQL_MEMORY must be an amount" in sql(world, "SELECT 1").stderr
    left = set(Path(tempfile.gettempdir()).glob("tagger-sql-*")) - before
    assert not left, left  # each call's temp folder is removed (another process's may come and go meanwhile)
    assert not (world["ws"] / "catalog.duckdb.tmp").exists()


def test_names_are_checked_as_calls_only(world):
    """A column or alias may be called `query` or `glob`; a call of either is refused, comments or not."""
    out = sql(world, "SELECT name AS query, 1 AS glob FROM labels ORDER BY 1 LIMIT 1", "--json")
    assert out.exit_code == 0 and '"query": "moon"' in out.stdout, out.output
    cat = world["ws"] / "catalog.duckdb"
    for statement in (f"SELECT * FROM read_text /* c */ ('{cat}')", "SELECT current_setting -- c\n('home_directory')"):
        out = sql(world, statement)
        assert out.exit_code == 2 and out.stderr.startswith("error: refused"), (statement, out.output)
