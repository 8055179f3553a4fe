"""The top-level schemas/ folder: the catalog DDL (one copy, found in a checkout and in an installed
wheel, $TAGGER_SCHEMA_DIR still first) and the JSON Schemas of the files a user writes or reads,
which accept the example files the code reads and what the code writes, and refuse what it refuses."""
from __future__ import annotations

import csv
import json
import math
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tagger.catalog.migrations import SCHEMA_DIR_ENV, default_schema_dir, load_migrations

jsonschema = pytest.importorskip("jsonschema")

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT / "schemas"
EXAMPLES = Path(__file__).resolve().parent / "examples"
JSON_SCHEMAS = ("labelled-images", "review-decisions", "export-row", "workspace-settings")


def schema(name: str) -> dict:
    return json.loads((SCHEMAS / f"{name}.schema.json").read_text(encoding="utf-8"))


def errors(name: str, doc: object) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema(name))
    return [e.message for e in validator.iter_errors(doc)]


def csv_rows(path: Path, columns: tuple[str, ...] | None = None) -> list[dict[str, str]]:
    """A CSV file as the list of rows its JSON Schema describes (headerless files get ``columns``)."""
    with open(path, newline="", encoding="utf-8") as fh:
        if columns is None:
            return list(csv.DictReader(fh))
        return [dict(zip(columns, row)) for row in csv.reader(fh)]


# --- the DDL ------------------------------------------------------------------------------------
def test_one_copy_of_the_ddl_at_the_top_level(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SCHEMA_DIR_ENV, raising=False)
    assert default_schema_dir() == SCHEMAS
    names = [m.name for m in load_migrations()]
    assert names and names == sorted(p.name for p in SCHEMAS.glob("[0-9]*_*.sql"))
    assert sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "tagger").rglob("*.sql")) == []


def test_the_environment_variable_still_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "001_only.sql").write_text("CREATE TABLE only_this (x INTEGER);")
    monkeypatch.setenv(SCHEMA_DIR_ENV, str(tmp_path))
    assert default_schema_dir() == tmp_path
    assert [m.name for m in load_migrations()] == ["001_only.sql"]


def test_pyproject_lists_every_folder_and_maps_the_schemas() -> None:
    """The packages are listed (a mapped folder cannot be found): every folder of tagger/ and jobs/."""
    from setuptools import find_namespace_packages
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = set(find_namespace_packages(where=str(ROOT), include=["tagger*", "jobs*"]))
    assert set(cfg["packages"]) == found | {"tagger.schemas"}, "list new folders in pyproject.toml"
    assert cfg["package-dir"] == {"tagger.schemas": "schemas"}
    assert cfg["package-data"]["tagger.schemas"] == ["*.sql", "*.schema.json"]


def _source_tree(dest: Path) -> Path:
    """What ``pip wheel`` builds from, copied (so the build leaves nothing in the checkout)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("tagger", "jobs", "schemas"):
        shutil.copytree(ROOT / folder, dest / folder, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, dest / name)
    return dest


def test_the_wheel_ships_the_schemas_and_the_installed_package_finds_them(tmp_path: Path) -> None:
    pytest.importorskip("setuptools")
    src = _source_tree(tmp_path / "src")
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                          "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("tagger-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        shipped = {n for n in zf.namelist() if n.startswith("tagger/schemas/")}
        zf.extractall(tmp_path / "site")
    want = {f"tagger/schemas/{p.name}" for p in SCHEMAS.iterdir() if p.suffix in (".sql", ".json")}
    assert shipped == want and any(n.endswith(".schema.json") for n in shipped)
    code = ("import duckdb; from tagger.catalog.migrations import default_schema_dir, apply_migrations; "
            "print(default_schema_dir()); print(len(apply_migrations(duckdb.connect())))")
    env = {k: v for k, v in os.environ.items() if k != SCHEMA_DIR_ENV}
    env["PYTHONPATH"] = str(tmp_path / "site")
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert ran.returncode == 0, ran.stderr[-2000:]
    where, applied = ran.stdout.split()
    assert Path(where) == tmp_path / "site" / "tagger" / "schemas"
    assert int(applied) == len(load_migrations(SCHEMAS))


# --- the JSON Schemas ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", JSON_SCHEMAS)
def test_each_json_schema_is_valid(name: str) -> None:
    jsonschema.Draft202012Validator.check_schema(schema(name))
    assert schema(name)["$id"] == f"{name}.schema.json"


def test_labelled_images_examples(tmp_path: Path) -> None:
    from tagger.pipeline.calibration import read_labelled_file
    par = tmp_path / "l.parquet"
    pq.write_table(pa.table({"uri": ["/a.jpg", "/b.jpg"], "labels": [["star", "circle"], []]}), par)
    for path, rows in ((EXAMPLES / "labelled-long.csv", csv_rows(EXAMPLES / "labelled-long.csv")),
                       (EXAMPLES / "labelled-wide.csv", csv_rows(EXAMPLES / "labelled-wide.csv")),
                       (par, pq.read_table(par).to_pylist())):
        assert errors("labelled-images", rows) == [], path
        assert read_labelled_file(path) == {"/a.jpg": ["circle", "star"], "/b.jpg": []}
    assert errors("labelled-images", [{"path": "/a.jpg", "tag": "circle"}])  # the reader refuses it too
    assert errors("labelled-images", [])


def test_review_decisions_examples_and_what_the_report_writes() -> None:
    from tagger.report.review_file import decisions_document, read_decisions
    for path, rows in ((EXAMPLES / "decisions.csv", csv_rows(EXAMPLES / "decisions.csv")),
                       (EXAMPLES / "decisions-no-header.csv",
                        csv_rows(EXAMPLES / "decisions-no-header.csv", ("uri", "label", "decision")))):
        assert errors("review-decisions", rows) == [], path
        assert [tuple(r.values()) for r in rows] == read_decisions(path)[0]
    doc = decisions_document(7, [{"uri": "/img/2.jpg", "label": "dog", "decision": "accept"}])
    assert errors("review-decisions", doc) == []
    assert errors("review-decisions", doc["decisions"]) == []
    assert errors("review-decisions", {**doc, "format": "other"})
    assert errors("review-decisions", [{"uri": "/img/0.jpg", "label": "cat"}])  # a short row
    assert errors("review-decisions", [{"uri": "/img/0.jpg", "label": "cat", "decision": "maybe"}])


def test_export_rows_as_the_exporter_writes_them(tmp_path: Path) -> None:
    from tagger.export.tables import EXPORT_SCHEMA, write_table_export
    assert list(schema("export-row")["properties"]) == EXPORT_SCHEMA.names
    batch = pa.RecordBatch.from_pydict({
        "uri": ["/a.jpg", "/b.jpg"], "run": [3, 3], "label": ["circle", "star"], "score": [0.7, math.nan],
        "confidence": [0.9, None], "positive": [True, False], "provenance": ["model", "person"]}, schema=EXPORT_SCHEMA)
    out = tmp_path / "tags.jsonl"
    assert write_table_export([batch], "jsonl", out)["rows"] == 2
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [errors("export-row", r) for r in rows] == [[], []]
    assert errors("export-row", {**rows[0], "extra": 1}) and errors("export-row", {**rows[0], "run": "3"})


def test_workspace_settings_as_the_workspace_writes_them(tmp_path: Path) -> None:
    from tagger.workspace import Workspace
    ws = Workspace.at(tmp_path / "ws")
    ws.update_settings(model="toy-vit", pretrained=None)
    assert errors("workspace-settings", json.loads(ws.settings_path.read_text())) == []
    assert errors("workspace-settings", {"model": ""}) and errors("workspace-settings", {"pretrained": 3})
