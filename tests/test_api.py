"""The public API and the CLI run the same stage for each verb, and the verbs share one shape.

Each stage is replaced by a recorder (so no model is trained): ``tagger.train(ws, ...)`` and ``tagger
train ...`` must reach the same stage function with the same arguments; the same for ``tag``.
"""
from __future__ import annotations

import ast
import importlib
import inspect
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import tagger
from tagger import api
from tagger.cli.app import app
from tagger.workspace import Workspace

APP = Path(api.__file__).parent / "cli" / "app.py"


def _record(monkeypatch: pytest.MonkeyPatch, verb: str) -> list[tuple[tuple, dict]]:
    module, name = api.STAGES[verb]
    calls: list[tuple[tuple, dict]] = []

    def stage(*args, **kwargs):
        calls.append((args[1:], kwargs))  # the workspace aside: the CLI makes its own object
        return {"classifier_id": "c0", "run_id": 1, "n_tags": 0, "n_images": 0, "head": "comc"}
    monkeypatch.setattr(importlib.import_module(module), name, stage)
    return calls


def _workspace(tmp_path: Path) -> Workspace:
    """A new workspace with its catalog (the CLI's verbs other than init, encode and labels add need one)."""
    from tagger.catalog import Catalog
    ws = Workspace.at(tmp_path / "ws")
    with Catalog.open(ws.catalog):
        pass
    return ws


def test_the_python_train_and_the_cli_train_run_one_stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _record(monkeypatch, "train")
    ws = _workspace(tmp_path)
    ann = tmp_path / "a.csv"
    tagger.train(ws, model="toy-rn", head="ovml", annotations=ann, reviewed=True)
    out = CliRunner().invoke(app, ["train", "-w", str(ws.root), "--model", "toy-rn", "--head", "ovml",
                                   "--annotations", str(ann), "--reviewed", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout.strip().splitlines()[-1])["classifier_id"] == "c0"
    assert len(calls) == 2 and calls[0] == calls[1], calls
    assert calls[0][0][:3] == ("toy-rn", None, "ovml")


def test_the_python_tag_and_the_cli_tag_run_one_stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tagger.models.registry import model_id_for
    from tagger.pipeline.tag import TagConfig
    calls = _record(monkeypatch, "tag")
    ws = _workspace(tmp_path)
    tagger.tag(ws, TagConfig(top_k=4), model="toy-rn")
    out = CliRunner().invoke(app, ["tag", "-w", str(ws.root), "--model", "toy-rn", "--top-k", "4", "--json"])
    assert out.exit_code == 0, out.output
    assert len(calls) == 2
    (args_api, kw_api), (args_cli, kw_cli) = calls
    assert args_api[0] == args_cli[0] == model_id_for("toy-rn")  # the model id, resolved the same way
    assert args_api[1].top_k == args_cli[1].top_k == 4
    assert kw_api == kw_cli


def test_the_tag_checks_run_once_at_the_seam_for_both_callers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad model is refused by the API (so the Python call and the CLI alike) before the stage runs."""
    from tagger.errors import ModelLoadError
    calls = _record(monkeypatch, "tag")
    ws = _workspace(tmp_path)
    missing = tmp_path / "missing.pt"
    with pytest.raises(ModelLoadError, match="checkpoint file not found"):
        tagger.tag(ws, model="toy-rn", pretrained=str(missing))
    out = CliRunner().invoke(app, ["tag", "-w", str(ws.root), "--model", "toy-rn", "--pretrained", str(missing)])
    assert out.exit_code == 2 and "checkpoint file not found" in out.output
    assert calls == []
    cli_tag = next(n for n in ast.parse(APP.read_text()).body if isinstance(n, ast.FunctionDef) and n.name == "tag")
    assert "check_model" not in ast.unparse(cli_tag)  # the CLI leaves the check to the API


@pytest.mark.parametrize("verb", sorted(api.STAGES))
def test_each_cli_verb_calls_the_api_and_the_api_calls_the_stage(verb: str) -> None:
    """Statically: the CLI verb's function calls ``api.<verb>`` and never the stage itself; the API
    function calls the stage of :data:`tagger.api.STAGES`."""
    tree = ast.parse(APP.read_text())
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == verb)
    called = {ast.unparse(c.func) for c in ast.walk(fn) if isinstance(c, ast.Call)}
    stage = api.STAGES[verb][1]
    assert f"api.{verb}" in called and stage not in called
    api_fn = next(n for n in ast.parse(Path(api.__file__).read_text()).body
                  if isinstance(n, ast.FunctionDef) and n.name == verb)
    assert stage in {ast.unparse(c.func) for c in ast.walk(api_fn) if isinstance(c, ast.Call)}


def test_the_verbs_share_one_shape() -> None:
    """``verb(ws, [input,] cfg=None, *, model=None, pretrained=None, ...)``; ``tagger.<verb>`` is the API's."""
    for verb in api.STAGES:
        fn = getattr(tagger, verb)
        assert fn is getattr(api, verb)
        params = inspect.signature(fn).parameters
        names = list(params)
        assert names[0] == "ws"
        assert "cfg" in names and params["cfg"].default is None
        assert params["model"].kind is inspect.Parameter.KEYWORD_ONLY and params["model"].default is None
        assert params["pretrained"].kind is inspect.Parameter.KEYWORD_ONLY


def test_python_encode_records_a_checked_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tagger.errors import ModelLoadError
    calls = _record(monkeypatch, "encode")
    ws = Workspace.at(tmp_path / "ws")
    tagger.encode(ws, "photos/", model="toy-rn")
    assert ws.settings()["model"] == "toy-rn" and calls[0][0][1].model == "toy-rn"
    tagger.encode(ws, None)  # no model given: the workspace's
    assert calls[1][0][1].model == "toy-rn"
    before = ws.settings_path.read_bytes()
    with pytest.raises(ModelLoadError, match="unknown model 'toy-rnn'"):
        tagger.encode(ws, "photos/", model="toy-rnn")
    assert ws.settings_path.read_bytes() == before and len(calls) == 2


def test_python_nightly_records_the_model_it_encodes_with(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _record(monkeypatch, "nightly")
    ws = Workspace.at(tmp_path / "ws")
    tagger.nightly(ws, "photos/", model="toy-rn")
    assert ws.settings()["model"] == "toy-rn" and calls[0][0][1].model == "toy-rn"
    tagger.nightly(ws, None)  # no model given: the workspace's, not the default one
    assert calls[1][0][1].model == "toy-rn"
