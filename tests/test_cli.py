"""The `tagger` command line: help texts, read-only SQL, labels, run diffs and search.

The Ray-based verbs (encode, train, tag) are exercised by the job tests; here the workspace for
search is built directly from shards written with the store API.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import typer
from typer.testing import CliRunner

from tagger.catalog import Catalog
from tagger.catalog.diff import run_diff
from tagger.cli import app
from tagger.pipeline.encode import EncodeConfig
from tagger.pipeline.tag import TagConfig
from tagger.workspace import Workspace

README = Path(__file__).resolve().parents[1] / "README.md"
NASTY = ['say "cheese"', "it's", "Straße ☕ 猫"]

runner = CliRunner()


def invoke(*args: str, env: dict[str, str] | None = None):
    return runner.invoke(app, list(args), env=env, catch_exceptions=False)


def json_rows(output: str) -> list[dict]:
    """The rows a listing verb prints with ``--json``: one JSON array."""
    rows = json.loads(output)
    assert isinstance(rows, list), output
    return rows


@pytest.fixture
def ws(tmp_path) -> Path:
    """A workspace whose catalog holds two labels."""
    root = tmp_path / "ws"
    with Catalog.open(Workspace.at(root).catalog) as cat:
        cat.add_labels(["cat", "dog"], {"cat": ["kitten"]})
    return root


# -- help ----------------------------------------------------------------------------------------
def _commands(group, prefix: tuple[str, ...] = ()):
    """(path, command) of every command and sub-command of a group, depth first."""
    for name, cmd in group.commands.items():
        yield prefix + (name,), cmd
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, prefix + (name,))


def test_every_command_and_option_has_help():
    root = typer.main.get_command(app)
    found = dict(_commands(root))
    assert {("encode",), ("generate-text",), ("train",), ("tag",), ("sql",), ("search",), ("eval",),
            ("labels", "add"), ("labels", "list"), ("labels", "retire"), ("runs", "list"),
            ("runs", "diff")} <= set(found)
    for path, cmd in found.items():
        assert (cmd.help or "").strip(), f"{' '.join(path)} has no help"
        for param in cmd.params:
            if param.name != "help":
                assert (getattr(param, "help", None) or "").strip(), f"{' '.join(path)}: {param.name} has no help"
        out = invoke(*path, "--help")
        assert out.exit_code == 0 and "Usage" in out.output, path
    for info in app.registered_commands:  # the typer registrations themselves carry docstrings
        assert (info.callback.__doc__ or "").strip()


def test_workspace_option_everywhere_except_eval():
    for path, cmd in _commands(typer.main.get_command(app)):
        if hasattr(cmd, "commands") or path == ("eval",):
            continue
        opt = next(p for p in cmd.params if p.name == "workspace")
        assert "-w" in opt.opts and opt.envvar == "TAGGER_WORKSPACE" and str(opt.default) == "workspace"


def test_pipeline_defaults_match_the_library():
    cmds = typer.main.get_command(app).commands
    enc = {p.name: p.default for p in cmds["encode"].params}
    assert (enc["partition_size"], enc["batch_size"], enc["concurrency"]) == (
        EncodeConfig.partition_size, EncodeConfig.batch_size, EncodeConfig.concurrency)
    tag = {p.name: p for p in cmds["tag"].params}
    assert (tag["top_k"].default, tag["patch_source"].default.value) == (TagConfig.top_k, TagConfig.patch_source)
    assert tag["threshold"].default is None and f"default {TagConfig.threshold}" in tag["threshold"].help  # given only
    # with --decision standardized, whose default threshold the help names


@pytest.mark.skipif(not README.exists(), reason="README.md not written yet")
def test_readme_mentions_every_verb():
    text = README.read_text()
    for name in typer.main.get_command(app).commands:
        assert f"tagger {name}" in text, name


# -- sql -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("statement", ["INSERT INTO labels (label_id, name) VALUES (99, 'x')",
                                       "DROP TABLE labels", "SELECT 1; DROP TABLE labels"])
def test_sql_refuses_writes(ws, statement):
    out = invoke("sql", statement, "-w", str(ws))
    assert out.exit_code == 2
    assert out.stderr.startswith("error:") and len(out.stderr.strip().splitlines()) == 1
    with Catalog.open(Workspace.at(ws).catalog, read_only=True) as cat:
        assert cat.active_labels() == ["cat", "dog"]


def test_sql_select_json_csv_and_table(ws):
    q = "SELECT name, synonyms FROM labels ORDER BY label_id"
    out = invoke("sql", q, "-w", str(ws), "--json")
    assert out.exit_code == 0, out.output
    assert json_rows(out.stdout) == [{"name": "cat", "synonyms": ["kitten"]}, {"name": "dog", "synonyms": []}]
    out = invoke("sql", "SELECT label_id, name FROM labels ORDER BY 1", "-w", str(ws), "--csv")
    assert list(csv.reader(io.StringIO(out.stdout))) == [["label_id", "name"], ["1", "cat"], ["2", "dog"]]
    out = invoke("sql", q, "-w", str(ws))
    assert out.exit_code == 0 and "kitten" in out.stdout and "dog" in out.stdout


def test_sql_schema_and_usage_errors(ws, tmp_path):
    out = invoke("sql", "--schema", "-w", str(ws), "--json")
    rows = {r["name"]: r for r in json_rows(out.stdout)}
    assert rows["current_tags"]["type"] == "view" and "positive BOOLEAN" in rows["tags"]["columns"]
    assert invoke("sql", "-w", str(ws)).exit_code == 2  # neither a query nor --schema
    assert invoke("sql", "SELECT 1", "-w", str(ws), "--json", "--csv").exit_code == 2
    assert invoke("sql", "SELECT * FROM nope", "-w", str(ws)).exit_code == 2
    missing = tmp_path / "missing"
    out = invoke("sql", "SELECT 1", "-w", str(missing))
    assert out.exit_code == 2 and "no workspace at" in out.stderr and not missing.exists()


# -- labels --------------------------------------------------------------------------------------
def test_labels_add_list_retire_round_trip(tmp_path):
    ws = str(tmp_path / "ws")
    out = invoke("labels", "add", *NASTY, "plain", "-s", f"{NASTY[0]}=smile", "-s", f"{NASTY[0]}=Käse", "-w", ws)
    assert out.exit_code == 0, out.output
    listed = json_rows(invoke("labels", "list", "-w", ws, "--json").stdout)
    assert [r["name"] for r in listed] == NASTY + ["plain"]
    assert listed[0]["synonyms"] == ["smile", "Käse"] and listed[1]["synonyms"] == []
    assert invoke("labels", "retire", NASTY[0], NASTY[2], "-w", ws).exit_code == 0
    env = {"TAGGER_WORKSPACE": ws}  # the environment variable picks the workspace
    active = [r["name"] for r in json_rows(invoke("labels", "list", "--json", env=env).stdout)]
    assert active == [NASTY[1], "plain"]
    every = json_rows(invoke("labels", "list", "--all", "--json", env=env).stdout)
    assert [r["status"] for r in every] == ["retired", "active", "retired", "active"]
    table = invoke("labels", "list", "--all", env=env).stdout
    assert all(name in table for name in NASTY)
    assert invoke("labels", "add", NASTY[0], "-w", ws).exit_code == 0  # re-activated
    assert NASTY[0] in [r["name"] for r in json_rows(invoke("labels", "list", "--json", env=env).stdout)]


def test_labels_errors_and_toy(tmp_path):
    ws = str(tmp_path / "ws")
    out = invoke("labels", "retire", "unknown", "-w", ws)
    assert out.exit_code == 2 and out.stderr.startswith("error: no workspace at") and not Path(ws).exists()
    assert invoke("init", ws).exit_code == 0
    out = invoke("labels", "retire", "unknown", "-w", ws)
    assert out.exit_code == 2 and out.stderr.startswith("error:") and "unknown" in out.stderr
    assert invoke("labels", "add", "-w", ws).exit_code == 2
    assert invoke("labels", "add", "a", "-s", "b=c", "-w", ws).exit_code == 2  # synonym of a label not added
    assert invoke("labels", "add", "a", "-s", "a", "-w", ws).exit_code == 2  # no '='
    assert invoke("labels", "add", "--toy", "-w", ws).exit_code == 0
    from tagger.toyworld import LABEL_SYNONYMS, LABELS
    with Catalog.open(Path(ws) / "catalog.duckdb", read_only=True) as cat:
        labels = {lab.name: lab.synonyms for lab in cat.list_labels()}
    assert list(labels) == list(LABELS)
    assert all(labels[n] == list(s) for n, s in LABEL_SYNONYMS.items())


# -- runs ----------------------------------------------------------------------------------------
def _tag_file(path: Path, rows: list[tuple[int, str, float, bool]]) -> Path:
    ids, labels, scores, positive = zip(*rows)
    pq.write_table(pa.table({"image_id": pa.array(ids, pa.int64()), "label": pa.array(labels, pa.string()),
                             "score": pa.array(scores, pa.float32()), "positive": pa.array(positive)}), path)
    return path


@pytest.fixture
def two_runs(tmp_path) -> tuple[Path, int, int]:
    root = tmp_path / "ws"
    with Catalog.open(Workspace.at(root).catalog) as cat:
        i1, i2, i3, i4 = (int(i) for i in cat.register_images([f"/img/{n}.jpg" for n in range(4)]))
        a = cat.start_run("tag", model_id="m", labels=["cat", "dog", "bird"])
        cat.load_tags(a, _tag_file(tmp_path / "a.parquet", [
            (i1, "cat", 3.0, True), (i2, "cat", 2.5, True), (i4, "cat", 0.1, False),
            (i3, "dog", 2.2, True), (i3, "bird", 2.1, True)]))
        cat.finish_run(a)
        b = cat.start_run("tag", model_id="m", labels=["cat", "dog", "fish"])
        cat.load_tags(b, _tag_file(tmp_path / "b.parquet", [
            (i2, "cat", 2.6, True), (i4, "cat", 2.4, True), (i1, "cat", 1.0, False),
            (i3, "dog", 2.3, True), (i1, "dog", 2.0, True), (i1, "fish", 2.9, True)]))
        cat.finish_run(b)
        cat.set_current(b)
    return root, a, b


def test_run_diff_counts(two_runs):
    root, a, b = two_runs
    with Catalog.open(root / "catalog.duckdb", read_only=True) as cat:
        d = run_diff(cat, a, b)
    assert d["labels_added"] == ["fish"] and d["labels_removed"] == ["bird"]
    per = {r["label"]: (r["a_positive"], r["b_positive"], r["gained"], r["lost"]) for r in d["labels"]}
    assert per == {"bird": (1, 0, 0, 1), "cat": (2, 2, 1, 1), "dog": (1, 2, 1, 0), "fish": (0, 1, 1, 0)}
    assert (d["gained"], d["lost"]) == (3, 2)


def test_run_diff_compares_a_renamed_label_under_its_new_name(tmp_path):
    root = tmp_path / "ws"
    with Catalog.open(Workspace.at(root).catalog) as cat:
        i1, i2, i3 = (int(i) for i in cat.register_images([f"/img/{n}.jpg" for n in range(3)]))
        a = cat.start_run("tag", model_id="m", labels=["Triangle", "dog"])
        cat.load_tags(a, _tag_file(tmp_path / "a.parquet", [(i1, "Triangle", 3.0, True), (i2, "Triangle", 2.0, True),
                                                           (i3, "dog", 2.0, True)]))
        cat.finish_run(a)
        b = cat.start_run("tag", model_id="m", labels=["triangles", "dog"])
        cat.load_tags(b, _tag_file(tmp_path / "b.parquet", [(i1, "triangles", 3.0, True), (i3, "triangles", 2.0, True),
                                                           (i3, "dog", 2.0, True)]))
        cat.finish_run(b)
        cat.set_current(b)
        d = run_diff(cat, a, b)
    assert d["renamed"] == {"triangles": "Triangle"} and d["labels_added"] == d["labels_removed"] == []
    per = {r["label"]: (r["a_positive"], r["b_positive"], r["gained"], r["lost"]) for r in d["labels"]}
    assert per == {"triangles": (2, 2, 1, 1), "dog": (1, 1, 0, 0)}
    table = invoke("runs", "diff", str(a), str(b), "-w", str(root)).stdout
    assert "renamed: Triangle -> triangles" in table


def test_runs_cli_list_and_diff(two_runs):
    root, a, b = two_runs
    runs = json_rows(invoke("runs", "list", "-w", str(root), "--json").stdout)
    assert [(r["run_id"], r["status"], r["n_tags"]) for r in runs] == [(a, "loaded", 5), (b, "current", 6)]
    out = invoke("runs", "diff", str(b), str(a), "-w", str(root), "--json")
    d = json.loads(out.stdout)
    assert (d["labels_added"], d["labels_removed"], d["gained"], d["lost"]) == (["bird"], ["fish"], 2, 3)
    table = invoke("runs", "diff", str(a), str(b), "-w", str(root)).stdout
    assert "added: fish" in table and "removed: bird" in table and "+1" in table
    out = invoke("runs", "diff", str(a), "99", "-w", str(root))
    assert out.exit_code == 2 and "unknown run 99" in out.stderr


# -- search --------------------------------------------------------------------------------------
N_IMAGES, PATCHES, DIM = 40, 16, 128


@pytest.fixture(scope="module")
def search_ws(tmp_path_factory) -> tuple[Path, str, np.ndarray, np.ndarray]:
    """A workspace with the toy ViT (random weights), shards of random unit vectors and built indexes."""
    import open_clip

    from tagger.store.updates import update_indexes
    from tagger.models.registry import model_id_for, register_configs
    from tagger.store import shard_name_for, write_shard

    register_configs()  # the toy configs, for open_clip.create_model below

    tmp = tmp_path_factory.mktemp("search")
    ckpt = tmp / "ckpt.pt"
    import torch
    torch.manual_seed(0)
    torch.save(open_clip.create_model("toy-vit").state_dict(), ckpt)
    ws = Workspace.at(tmp / "ws")
    ws.update_settings(model="toy-vit", pretrained=str(ckpt))
    model_id = model_id_for("toy-vit", str(ckpt))
    rng = np.random.default_rng(0)
    g = rng.standard_normal((N_IMAGES, DIM)).astype(np.float32)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    p = rng.standard_normal((N_IMAGES, PATCHES, DIM)).astype(np.float32)
    p /= np.linalg.norm(p, axis=2, keepdims=True)
    with Catalog.open(ws.catalog) as cat:
        ids = cat.register_images([f"/photos/{i:03d}.jpg" for i in range(N_IMAGES)])
    for part in (slice(0, 25), slice(25, N_IMAGES)):
        write_shard(ws.root, model_id, shard_name_for(ids[part]), ids[part], g[part], p[part])
    assert update_indexes(ws.root, model_id)["indexed"] == N_IMAGES
    return ws.root, model_id, ids, g


def test_search_vector_matches_brute_force(search_ws):
    from tagger.pipeline.search import search_vector
    from tagger.store import PatchStore, index_paths
    root, model_id, ids, g = search_ws
    ws = Workspace.at(root)
    q = np.random.default_rng(1).standard_normal(DIM).astype(np.float32)
    hits = search_vector(ws, model_id, q, k=5)
    qn = q / np.linalg.norm(q)
    order = np.argsort(-(g @ qn))[:5]
    assert [h.image_id for h in hits] == ids[order].tolist()
    assert [h.rank for h in hits] == [1, 2, 3, 4, 5]
    assert np.allclose([h.score for h in hits], (g @ qn)[order], atol=1e-5)
    assert hits[0].uri == f"/photos/{order[0]:03d}.jpg"
    store = PatchStore.load(index_paths(root, model_id)[1])  # brute force over the stored codes
    best = (store.decode(ids) @ qn).max(axis=1)
    phits = search_vector(ws, model_id, q, k=3, level="patch")
    assert [h.image_id for h in phits] == ids[np.argsort(-best)[:3]].tolist()
    assert all(0 <= h.patch < PATCHES for h in phits)
    assert len(search_vector(ws, model_id, q, k=N_IMAGES + 5)) == N_IMAGES  # missing slots dropped


def test_search_cli(search_ws):
    from tagger.models import load_clip
    root, model_id, ids, g = search_ws
    out = invoke("search", "a red circle", "-k", "4", "-w", str(root), "--device", "cpu", "--json")
    assert out.exit_code == 0, out.output
    rows = json_rows(out.stdout)
    assert len(rows) == 4 and set(r["image_id"] for r in rows) <= set(ids.tolist())
    assert all(r["uri"] == f"/photos/{ids.tolist().index(r['image_id']):03d}.jpg" for r in rows)
    s = Workspace.at(root).settings()
    q = load_clip(s["model"], s["pretrained"], device="cpu").encode_text(["a red circle"])[0]
    assert rows[0]["image_id"] == int(ids[np.argmax(g @ q)])
    out = invoke("search", "a red circle", "--level", "patch", "-k", "2", "-w", str(root), "--device", "cpu")
    assert out.exit_code == 0 and "patch" in out.stdout and "/photos/" in out.stdout


def test_search_without_index_fails_cleanly(tmp_path, search_ws):
    root, *_ = search_ws
    ws = tmp_path / "empty"
    Workspace.at(ws).update_settings(**Workspace.at(root).settings())
    with Catalog.open(Workspace(ws).catalog):
        pass
    out = invoke("search", "anything", "-w", str(ws), "--device", "cpu")
    assert out.exit_code == 2 and "run `tagger encode` first" in out.stderr
    assert invoke("search", "x", "--level", "nope", "-w", str(ws)).exit_code == 2
