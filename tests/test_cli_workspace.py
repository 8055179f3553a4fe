"""Which verbs start a workspace, and which need one: `init`, `encode` and `labels add` make one in a new
or empty folder; every other verb, given a folder that holds no workspace (a mistyped `-w`), is one
`error: no workspace at PATH (start one with: tagger init PATH)` line, exit 2, and creates nothing. A blank
`-w` or $TAGGER_WORKSPACE is refused. A workspace keeps its model: `encode` or `nightly` with another one,
once the workspace holds what its own model made, is refused and writes nothing."""
from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import tagger
from tagger.catalog import Catalog
from tagger.cli import app
from tagger.errors import ModelChangeError
from tagger.workspace import Workspace

runner = CliRunner()


def invoke(*args: str, env: dict[str, str] | None = None):
    return runner.invoke(app, list(args), catch_exceptions=False, env=env)


def one_error(out) -> str:
    assert out.exit_code == 2, out.output
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), out.stderr
    return lines[0]


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


NEEDS_ONE = [("train",), ("generate-text",), ("tag",), ("nightly",), ("nightly", "{images}"), ("heads", "use", "text"),
             ("dedup",), ("search", "a red star"), ("review", "accept", "/x.jpg", "star"),
             ("review", "reject", "/x.jpg", "star"), ("review", "import", "{decisions}"), ("review", "list"),
             ("labels", "set", "star", "--synonym", "sun"), ("labels", "retire", "star"), ("labels", "list"),
             ("runs", "list"), ("runs", "show"), ("runs", "diff", "1", "2"), ("sql", "SELECT 1"), ("status",),
             ("export", "-f", "csv", "--out", "{out}/tags.csv"), ("import-keywords", "-o", "{out}/kw.csv"),
             ("report", "--out", "{out}/site"), ("serve",)]


@pytest.fixture
def inputs(tmp_path) -> dict[str, str]:
    """Files and folders the verbs read or write, outside the mistyped workspace."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "decisions.csv").write_text("uri,label,decision\n/x.jpg,star,accept\n")
    (tmp_path / "in" / "images").mkdir()
    return {"images": str(tmp_path / "in" / "images"), "decisions": str(tmp_path / "in" / "decisions.csv"),
            "out": str(tmp_path / "in")}


@pytest.mark.parametrize("verb", NEEDS_ONE, ids=lambda v: " ".join(v[:2]))
def test_a_verb_given_no_workspace_says_so_and_creates_nothing(tmp_path, inputs, verb):
    args = [a.format(**inputs) for a in verb]
    typo = tmp_path / "typo" / "ws"  # missing parent folders too
    empty = tmp_path / "empty"
    empty.mkdir()
    before = tree(tmp_path)
    for where in (typo, empty):
        line = one_error(invoke(*args, "-w", str(where)))
        assert line == f"error: no workspace at {where} (start one with: tagger init {shlex.quote(str(where))})"
    assert tree(tmp_path) == before


def test_a_job_entry_point_given_no_workspace_says_so(tmp_path, capsys):
    from jobs import train as train_job
    with pytest.raises(SystemExit) as done:
        train_job.main(["--workspace", str(tmp_path / "typo")])
    assert done.value.code == 2 and "error: no workspace at" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_init_labels_add_and_encode_still_start_a_workspace(tmp_path):
    (tmp_path / "images").mkdir()
    for args, root in ((("init", str(tmp_path / "a")), tmp_path / "a"),
                       (("labels", "add", "star", "-w", str(tmp_path / "b")), tmp_path / "b"),
                       (("encode", str(tmp_path / "images"), "-w", str(tmp_path / "c"), "--json"), tmp_path / "c")):
        out = invoke(*args)
        assert out.exit_code == 0, out.output
        assert (root / "catalog.duckdb").is_file()
        assert invoke("status", "-w", str(root)).exit_code == 0


@pytest.mark.parametrize("blank", ["", "   ", "\t"])
def test_a_blank_workspace_is_refused(tmp_path, monkeypatch, capsys, blank):
    from tagger.cli import main
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TAGGER_WORKSPACE", raising=False)
    runs = [(["labels", "add", "star", "-w", blank], None), (["status", "-w", blank], None), (["init", blank], None),
            (["tag"], blank or " "), (["labels", "add", "star"], blank or " ")]
    for argv, env in runs:
        if env is not None:
            monkeypatch.setenv("TAGGER_WORKSPACE", env)
        with pytest.raises(SystemExit) as done:
            main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert done.value.code == 2 and len(err) == 1 and "is empty: give the workspace folder" in err[0], (argv, err)
    assert list(tmp_path.iterdir()) == []


# -- a workspace keeps its model -----------------------------------------------------------------
@pytest.fixture
def encoded(tmp_path, random_checkpoint) -> Workspace:
    """A toy-vit workspace with one encoded shard (written through the store API: no Ray)."""
    from tagger.models.registry import model_id_for
    from tagger.store import shard_name_for, write_shard
    ws = Workspace.at(tmp_path / "ws")
    ckpt = str(random_checkpoint("toy-vit"))
    ws.update_settings(model="toy-vit", pretrained=ckpt)
    model_id = model_id_for("toy-vit", ckpt)
    with Catalog.open(ws.catalog) as cat:
        cat.add_labels(["star", "moon"])
        ids = cat.register_images([f"/photos/{i}.jpg" for i in range(4)])
        cat.record_encodings(ids, model_id, [f"hash-{i}" for i in ids], shard_name_for(ids))
    rng = np.random.default_rng(0)
    write_shard(ws.root, model_id, shard_name_for(ids), ids, rng.normal(size=(4, 128)).astype(np.float32),
                rng.normal(size=(4, 16, 128)).astype(np.float32))
    return ws


def test_encode_or_nightly_with_another_model_is_refused_and_writes_nothing(encoded, tmp_path, random_checkpoint):
    (tmp_path / "images").mkdir()
    other = tmp_path / "other.pt"  # the same architecture, other weights
    shutil.copy(random_checkpoint("toy-vit"), other)
    cases = [("encode", str(tmp_path / "images"), "--model", "toy-rn"), ("nightly", "--model", "toy-rn"),
             ("encode", str(tmp_path / "images"), "--model", "toy-vit"),  # its shipped weights
             ("encode", str(tmp_path / "images"), "--pretrained", str(other)), ("nightly", "--pretrained", str(other))]
    before = tree(encoded.root), encoded.settings_path.read_bytes()
    for args in cases:
        line = one_error(invoke(*args, "-w", str(encoded.root)))
        assert f"uses model toy-vit (weights {encoded.settings()['pretrained']})" in line, line
        assert "tagger init NEW_FOLDER --model" in line, line
        assert (tree(encoded.root), encoded.settings_path.read_bytes()) == before, args
    line = one_error(invoke("nightly", "--model", "toy-rnn", "-w", str(encoded.root)))  # a bad model: named first
    assert "unknown model 'toy-rnn'" in line, line
    with pytest.raises(ModelChangeError, match="uses model toy-vit"):  # the Python verbs alike
        tagger.encode(encoded, str(tmp_path / "images"), model="toy-rn")
    assert (tree(encoded.root), encoded.settings_path.read_bytes()) == before
    out = invoke("encode", str(tmp_path / "images"), "-w", str(encoded.root), "--json")  # its own model: fine
    assert out.exit_code == 0, out.output
    assert json.loads(encoded.settings_path.read_text())["model"] == "toy-vit"


def test_a_workspace_with_nothing_encoded_takes_the_model_of_its_first_encode(tmp_path):
    (tmp_path / "images").mkdir()
    root = tmp_path / "ws"
    assert invoke("init", str(root)).exit_code == 0  # records toy-vit
    out = invoke("encode", str(tmp_path / "images"), "-w", str(root), "--model", "toy-rn", "--json")
    assert out.exit_code == 0, out.output
    assert json.loads((root / "workspace.json").read_text())["model"] == "toy-rn"
    line = one_error(invoke("init", str(root), "--model", "toy-vit"))
    assert "already is a workspace (model toy-rn)" in line and "first `tagger encode SOURCE --model" in line
