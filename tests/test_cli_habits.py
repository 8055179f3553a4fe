"""The CLI's habits: one --json convention (an array for rows, --nl for JSON lines, one object for a
summary), tables that stay whole when piped, summaries in words, `tagger init`, quiet Ray unless -v."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from raytools import ENV, REPO
from tagger.cli import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``tagger ARGS`` in a subprocess whose stdout is a pipe, not a terminal."""
    return subprocess.run([sys.executable, "-m", "tagger.cli", *args], capture_output=True, text=True,
                          timeout=300, cwd=REPO, env={**os.environ, **(env or {})})


@pytest.fixture
def ws(tmp_path) -> Path:
    root = tmp_path / "ws"
    assert invoke("init", str(root)).exit_code == 0
    out = invoke("labels", "add", "--toy", "-p", "shape", "-w", str(root))
    assert out.exit_code == 0, out.output
    return root


ROW_VERBS = [("labels", "list", "--all"), ("sql", "SELECT name, synonyms FROM labels ORDER BY name"),
             ("runs", "list"), ("review", "list")]


@pytest.mark.parametrize("verb", ROW_VERBS, ids=lambda v: " ".join(v[:2]))
def test_row_verbs_print_an_array_with_json_and_lines_with_nl(ws, verb):
    as_array = invoke(*verb, "-w", str(ws), "--json")
    assert as_array.exit_code == 0, as_array.output
    rows = json.loads(as_array.stdout)
    assert isinstance(rows, list) and all(isinstance(r, dict) for r in rows)
    as_lines = invoke(*verb, "-w", str(ws), "--nl")
    assert as_lines.exit_code == 0, as_lines.output
    lines = as_lines.stdout.splitlines()
    assert [json.loads(line) for line in lines] == rows
    assert len(as_array.stdout.splitlines()) == max(len(rows), 1)  # the array: one row per line
    if verb[0] in ("labels", "sql"):
        names = {r["name"] for r in rows}
        assert {"circle", "shape"} <= names and len(rows) == 21  # the toy vocabulary and its parent
    both = invoke(*verb, "-w", str(ws), "--json", "--nl")
    assert both.exit_code == 0 and both.stdout == as_lines.stdout


def test_nl_with_csv_is_one_error_line(ws):
    out = invoke("sql", "SELECT 1", "-w", str(ws), "--nl", "--csv")
    assert out.exit_code == 2 and out.stdout == ""
    assert out.stderr.startswith("error:") and len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_summaries_print_one_json_object_and_words_in_the_table(ws):
    out = invoke("status", "-w", str(ws), "--json")
    assert out.exit_code == 0, out.output
    assert len(out.stdout.splitlines()) == 1 and isinstance(json.loads(out.stdout), dict)
    from tagger.cli.options import print_summary
    summary = {"calibration": {"file": "a.csv", "unknown_uris": [f"/img/{i}.jpg" for i in range(12)]},
               "labels": ["circle", "star"], "groups": [{"id": 1, "n": 2}, {"id": 2, "n": 3}], "score": 0.5}
    table = cli_render(lambda: print_summary("job", summary))
    assert "{" not in table and "[" not in table and "'" not in table, table
    assert "file=a.csv" in table and "unknown_uris=/img/0.jpg" in table and "(+4 more)" in table
    assert "circle, star" in table and "id=1, n=2; id=2, n=3" in table


def cli_render(fn) -> str:
    result = runner.invoke(_one_shot(fn), [])
    assert result.exit_code == 0, result.output
    return result.stdout


def _one_shot(fn):
    import typer
    one = typer.Typer()
    one.command()(lambda: fn())
    return one


def test_piped_tables_are_not_squeezed(ws):
    """With a narrow COLUMNS and stdout a pipe, each row still prints whole on one line."""
    out = cli("labels", "list", "-w", str(ws), env={"COLUMNS": "40"})
    assert out.returncode == 0, out.stderr
    rows = {line.split("│")[2].strip(): line for line in out.stdout.splitlines() if line.count("│") > 3}
    assert len(rows) == 21, out.stdout
    assert "disc, dot, round shape" in rows["circle"] and "active" in rows["circle"] and "shape" in rows["circle"]
    assert all(len(line) > 40 for line in rows.values())


def test_a_terminal_too_narrow_for_the_table_gets_one_block_per_row(ws, monkeypatch):
    """At COLUMNS=20 on a terminal, `runs list` was an empty grid: every cell squeezed to nothing."""
    import io

    from rich.console import Console

    from tagger.cli import options
    for width, records in ((20, True), (300, False)):
        buf = io.StringIO()
        monkeypatch.setattr(options, "console", Console(file=buf, force_terminal=True, width=width, color_system=None))
        options.emit_rows(("label", "synonyms", "status"), [("circle", "disc, dot", "active"), ("star", None, "new")],
                          title="2 label(s)")
        text = buf.getvalue()
        assert ("-- row 2 --" in text) == records, text
        assert "circle" in text and "star" in text and "disc, dot" in text
        if records:
            assert "synonyms  disc, dot" in text and "status    new" in text and "label     star" in text


def test_control_characters_in_the_data_are_shown_escaped_in_tables(ws):
    """An escape sequence or a newline in a value (a file name) never reaches the terminal as such,
    and a row stays one line; the machine formats keep the value as it is."""
    query = "SELECT chr(27) || '[31mRED' AS e, 'new' || chr(10) || 'line.png' AS n"
    out = cli("sql", query, "-w", str(ws))
    assert out.returncode == 0 and "\x1b" not in out.stdout, out.stdout
    row = [line for line in out.stdout.splitlines() if "RED" in line]
    assert len(row) == 1 and "\\x1b[31mRED" in row[0] and "new\\nline.png" in row[0]
    as_json = json.loads(cli("sql", query, "-w", str(ws), "--json").stdout)
    assert as_json == [{"e": "\x1b[31mRED", "n": "new\nline.png"}]


def test_short_help_and_a_closed_stdout(ws):
    assert "labels list [OPTIONS]" in cli("labels", "list", "-h").stdout
    cmd = f"{sys.executable} -m tagger.cli status -w {ws} >&-"
    out = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 2 and out.stderr.startswith("error: standard output is closed"), out.stderr


def test_init_creates_a_workspace_and_names_the_next_command(tmp_path):
    root = tmp_path / "new ws"
    out = cli("init", str(root))
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in root.iterdir()) == ["catalog.duckdb", "workspace.json"]
    assert json.loads((root / "workspace.json").read_text())["model"] == "toy-vit"
    next_line = next(line for line in out.stdout.splitlines() if "tagger labels add" in line)
    assert f"-w '{root}'" in next_line, out.stdout  # quoted for the shell: the path has a space
    again = invoke("init", "-w", str(root), "--json")
    summary = json.loads(again.stdout)
    assert again.exit_code == 0 and summary["created"] is False and summary["workspace"] == str(root)
    assert "tagger labels add --toy" in summary["next"][0]
    assert invoke("labels", "add", "--toy", "-w", str(root)).exit_code == 0
    before = (root / "workspace.json").read_bytes()
    out = invoke("init", str(root), "--model", "toy-rnn")  # an existing workspace keeps its model
    assert out.exit_code == 2 and "already is a workspace" in out.stderr
    assert (root / "workspace.json").read_bytes() == before


def test_init_refuses_a_folder_of_other_files_and_a_bad_model(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.jpg").write_bytes(b"not really")
    out = invoke("init", str(photos))
    assert out.exit_code == 2 and out.stderr.startswith("error:") and "holds files" in out.stderr
    assert [p.name for p in photos.iterdir()] == ["a.jpg"]
    out = invoke("init", str(tmp_path / "ws"), "--model", "no-such-model")
    assert out.exit_code == 2 and out.stderr.startswith("error:")
    assert not (tmp_path / "ws").exists()
    assert invoke("init", str(photos / "a.jpg")).exit_code == 2


def test_verbs_that_make_a_workspace_refuse_a_folder_of_other_files_and_a_database_of_its_own(tmp_path):
    """`labels add` and `encode` make a workspace only where `init` would: never among someone's photos,
    never in a DuckDB file that is not a catalog (both left byte for byte)."""
    import duckdb

    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.jpg").write_bytes(b"not really")
    for args in (("labels", "add", "star"), ("encode", str(photos))):
        out = invoke(*args, "-w", str(photos))
        assert out.exit_code == 2 and out.stderr.startswith("error:") and "holds files" in out.stderr, out.output
        assert [p.name for p in photos.iterdir()] == ["a.jpg"]
    own = tmp_path / "own"
    own.mkdir()
    with duckdb.connect(str(own / "catalog.duckdb")) as con:
        con.execute("CREATE TABLE sales(id INT)")
    before = (own / "catalog.duckdb").read_bytes()
    out = invoke("labels", "add", "star", "-w", str(own))
    assert out.exit_code == 2 and "not a tagger catalog" in out.stderr and out.stderr.count("error:") == 1, out.output
    assert (own / "catalog.duckdb").read_bytes() == before and sorted(p.name for p in own.iterdir()) == ["catalog.duckdb"]
    assert invoke("init", str(own)).exit_code == 2  # nor is it "already a workspace"
    text = tmp_path / "text"
    text.mkdir()
    (text / "catalog.duckdb").write_text("hello")
    out = invoke("init", str(text))
    assert out.exit_code == 2 and "not a valid DuckDB database" in out.stderr and (text / "catalog.duckdb").read_text() == "hello"
    fresh = tmp_path / "fresh"  # a new folder, or one holding only what tagger makes, is fine
    assert invoke("labels", "add", "star", "-w", str(fresh)).exit_code == 0
    (fresh / "catalog.duckdb").unlink()
    for name in ("catalog.duckdb.wal", "catalog.duckdb.job.lock", ".DS_Store", "lost+found"):  # not someone's files
        (fresh / name).mkdir() if name == "lost+found" else (fresh / name).write_bytes(b"")
    assert invoke("labels", "add", "moon", "-w", str(fresh)).exit_code == 0


def test_a_bad_option_value_or_verb_is_one_error_line(tmp_path):
    """Values the option parser refuses (a range, a folder given for a file, an unknown verb) end as every
    other error does: one `error:` line naming the option, status 2, no box."""
    (tmp_path / "d").mkdir()
    for args, said in ((("search", "x", "-k", "0"), "'--k'"), (("review", "import", str(tmp_path / "d")), "is a directory"),
                       (("serve", "--port", "99999"), "'--port'"), (("nosuchverb",), "No such command"),
                       (("generate-text", "--n-sentences", "99999999999"), "'--n-sentences'")):
        out = cli(*args, "-w", str(tmp_path / "ws")) if args[0] != "nosuchverb" else cli(*args)
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:") and said in lines[0], out.stderr
        assert "-h'" in lines[0] and not set("╭│╰") & set(out.stderr)
    alone = cli()  # the bare command still shows its help
    assert alone.returncode == 2 and "Usage:" in alone.stdout and "labels" in alone.stdout
    assert not (tmp_path / "ws").exists()


def test_verbose_and_version_are_global_options(ws):
    import logging
    root = logging.getLogger()
    level = root.level
    try:
        out = invoke("-v", "status", "-w", str(ws))
        assert out.exit_code == 0 and root.level == logging.INFO, out.output
    finally:
        root.setLevel(level)
    out = invoke("--version")
    assert out.exit_code == 0 and out.stdout.startswith("tagger ")


RAY_SCRIPT = textwrap.dedent("""
    import logging, sys
    logging.basicConfig(level=int(sys.argv[1]))
    from tagger.pipeline.raycluster import ray_session
    with ray_session(num_cpus=1) as ray:
        print(sum(r["id"] for r in ray.data.range(10).map_batches(lambda b: b).iter_rows()))
""")


@pytest.mark.ray
def test_ray_is_quiet_unless_the_process_logs_at_info():
    import logging
    quiet, loud = (subprocess.run([sys.executable, "-c", RAY_SCRIPT, str(level)], capture_output=True, text=True,
                                  timeout=300, cwd=REPO, env=ENV) for level in (logging.WARNING, logging.INFO))
    assert quiet.returncode == loud.returncode == 0, quiet.stderr + loud.stderr
    assert quiet.stdout.strip() == loud.stdout.strip() == "45"
    assert "Started a local Ray instance" in loud.stderr and "Progress bars disabled" in loud.stderr
    assert quiet.stderr.strip() == "", quiet.stderr


def test_a_damaged_settings_file_or_a_path_that_is_not_utf8_is_one_error_line(ws, tmp_path):
    for body, why in ((b"", "Expecting value"), (b"[]", "holds a JSON list"), (b'{"model": 5}', "model is not text"),
                      (b"\xff\xfe", "can't decode")):
        (ws / "workspace.json").write_bytes(body)
        out = invoke("status", "-w", str(ws))
        assert out.exit_code == 2 and why in out.stderr and "restore the file" in out.stderr, out.output
    (ws / "workspace.json").unlink()
    (ws / "workspace.json").mkdir()
    done = cli("init", str(ws))  # no verb-level handler: the command line's own turns it into the line
    assert done.returncode == 2 and done.stderr.startswith("error: workspace settings") and "Traceback" not in done.stderr
    bad = tmp_path / os.fsdecode(b"caf\xe9")
    done = cli("init", str(bad))
    assert done.returncode == 2 and "is not UTF-8" in done.stderr and not bad.exists(), done.stderr


def test_flip_lines_are_whole_when_piped(capsys):
    from tagger.cli.options import print_flips
    reason = "its name is the best match of 3 of its 156 images, 'doorbell' of 24 " * 3
    print_flips([{"label": "bell", "before_positives": 150, "after_positives": 0, "reason": reason}], 4)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "1 label(s) whose decision changed from run 4:"
    assert len(lines) == 2 and lines[1].startswith("  bell: 150 -> 0 positives (") and len(lines[1]) > 200


@pytest.mark.skipif(not Path("/usr/bin/script").exists(), reason="needs script(1) for a terminal")
def test_no_color_means_no_escape_codes_on_a_terminal(ws):
    cmd = f"NO_COLOR=1 {sys.executable} -m tagger.cli labels list -w {ws}"
    out = subprocess.run(["script", "-qc", cmd, "/dev/null"], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert "circle" in out.stdout and "\x1b[" not in out.stdout, out.stdout[:300]
    styled = subprocess.run(["script", "-qc", cmd.replace("NO_COLOR=1 ", ""), "/dev/null"], capture_output=True,
                            text=True, timeout=300, cwd=REPO, env={**os.environ, "TERM": "xterm"})
    assert "\x1b[" in styled.stdout  # the test can tell: without it, a terminal gets styles
