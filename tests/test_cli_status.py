"""`tagger --version`, `tagger status` (counts equal the catalog's, a running job named, disk used) and the
first-run error that names the command to start with."""
from __future__ import annotations

import json
import re
import tomllib

import pytest
from servetools import ROOT, make_workspace, sql
from typer.testing import CliRunner

from tagger.catalog import JobLock
from tagger.cli import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("status"), n=12, runs=2)[0]


def test_version_is_the_package_version():
    out = invoke("--version")
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert out.exit_code == 0 and out.stdout.strip() == f"tagger {version}"


def test_status_counts_what_the_catalog_holds(ws):
    out = invoke("status", "-w", str(ws.root), "--json")
    assert out.exit_code == 0, out.output
    got = json.loads(out.stdout)
    assert got["images"] == sql(ws, "SELECT count(*) FROM images")[0][0] == 12
    assert got["labels"] == sql(ws, "SELECT count(*) FROM labels WHERE retired_at IS NULL")[0][0]
    assert got["current_run"] == sql(ws, "SELECT run_id FROM current_run")[0][0]
    assert got["current_tags"] == sql(ws, "SELECT count(*) FROM current_tags")[0][0]
    assert got["last_tag_run"] == got["current_run"] and got["job_running"] is None
    number, unit = got["disk_used"].split()
    assert float(number) > 0 and unit in ("KB", "MB")
    with JobLock(ws.catalog, "nightly"):
        busy = json.loads(invoke("status", "-w", str(ws.root), "--json").stdout)
    assert busy["job_running"].startswith("nightly, PID")
    table = invoke("status", "-w", str(ws.root)).stdout
    assert re.search(r"current_run\s*│\s*%d" % got["current_run"], table)


@pytest.mark.parametrize("verb", [("status",), ("sql", "SELECT 1"), ("labels", "list"), ("serve",)])
def test_a_first_run_names_the_command_to_start_with(tmp_path, verb):
    out = invoke(*verb, "-w", str(tmp_path / "new"))
    assert out.exit_code == 2
    line = out.stderr.strip()
    assert line.startswith("error:") and "\n" not in line and f"start one with: tagger init {tmp_path / 'new'}" in line
    assert not (tmp_path / "new").exists()


def test_a_run_whose_job_ended_reads_interrupted_not_running(ws, tmp_path):
    """A killed job's run stayed 'running' in `status` and `runs list` until the next job marked it."""
    import shutil

    from tagger.catalog import Catalog
    root = tmp_path / "ws"
    shutil.copytree(ws.root, root)
    with Catalog.open(root / "catalog.duckdb") as cat:
        left = cat.start_run("tag", model_id="toy-vit", labels=["star"], config={})
    got = json.loads(invoke("status", "-w", str(root), "--json").stdout)
    assert got["last_tag_run"] == left and got["last_tag_status"].startswith("interrupted: its job ended")
    runs = {r["run_id"]: r for r in json.loads(invoke("runs", "list", "-w", str(root), "--json").stdout)}
    assert runs[left]["status"] == "interrupted" and "next tag or nightly" in runs[left]["error"]
    assert {r["status"] for k, r in runs.items() if k != left} <= {"current", "superseded"}
    with JobLock(root / "catalog.duckdb", "tag"):  # while a job runs, its run is running
        assert json.loads(invoke("status", "-w", str(root), "--json").stdout)["last_tag_status"] == "running"
        runs = {r["run_id"]: r for r in json.loads(invoke("runs", "list", "-w", str(root), "--json").stdout)}
        assert runs[left]["status"] == "running" and runs[left]["error"] is None
