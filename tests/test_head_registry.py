"""One registry of head kinds: a head registered there (one file plus its registration) is a ``--head``
choice of ``tagger train``, is checked, fitted, saved and loaded by the heads code, is relabelled by the
nightly retrain and evaluated on the seen/unseen split, and no other module lists the kinds."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "tagger"
TESTS = Path(__file__).resolve().parent

#: Run in a fresh process: the dummy head is registered before the CLI and the stages are imported.
_PROBE = r"""
import json, sys, tempfile
import numpy as np
sys.path.insert(0, {tests!r})
import dummyhead
dummyhead.register()
from typer.testing import CliRunner
from tagger.cli.app import app
from tagger.cli.options import HeadKind
refused = CliRunner().invoke(app, ["train", "--head", "nope"], env={{"COLUMNS": "300"}})
ws = tempfile.mkdtemp()
assert CliRunner().invoke(app, ["init", ws]).exit_code == 0
taken = CliRunner().invoke(app, ["train", "--head", "dummy", "-w", ws], env={{"COLUMNS": "300"}})
from tagger.method.headkinds import image_heads
from tagger.method.heads import IMAGE_HEADS, fit_head, load_head
from tagger.pipeline.heads import _check_head
from tagger.evaluate.seen_unseen import seen_unseen_heads
rng = np.random.default_rng(0)
g = rng.normal(size=(40, 8)).astype(np.float32)
emb = rng.normal(size=(3, 8)).astype(np.float32)
y = (g @ emb.T > 0)[:, :2]
head = fit_head("dummy", g, None, y, emb, labels=["a", "b", "c"])
d = tempfile.mkdtemp()
head.save(d)
again = load_head(d)
print(json.dumps({{"choices": [k.value for k in HeadKind], "refused": " ".join(refused.output.split()),
                  "taken": [taken.exit_code, " ".join(taken.output.split())], "image_heads": list(image_heads()),
                  "package": list(IMAGE_HEADS), "checked": _check_head("dummy", "a.csv", False),
                  "seen_unseen": list(seen_unseen_heads()), "kind": again.kind,
                  "same_scores": bool(np.allclose(head.scores(g, None), again.scores(g, None)))}}))
"""


def test_a_registered_head_is_everywhere_a_head_is_read() -> None:
    run = subprocess.run([sys.executable, "-c", _PROBE.format(tests=str(TESTS))], capture_output=True, text=True,
                         cwd=ROOT, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    assert seen["choices"] == ["comc", "ovml", "mkt", "clip-decoder", "dummy"]
    assert "'clip-decoder', 'dummy'" in seen["refused"]  # the CLI's own message names the choices
    assert seen["taken"][0] == 2 and "--head dummy learns from labelled images" in seen["taken"][1]
    assert seen["image_heads"][-1] == "dummy" and seen["package"][-1] == "dummy"
    assert seen["checked"] == "dummy"
    assert "dummy" in seen["seen_unseen"]
    assert seen["kind"] == "dummy" and seen["same_scores"]


def test_an_unregistered_head_is_refused_everywhere() -> None:
    import pytest

    from tagger.errors import ConfigError
    from tagger.method.headkinds import head_classes, register_kind
    from tagger.pipeline.heads import _check_head
    with pytest.raises(ConfigError, match="unknown head 'dummy'"):
        head_classes("dummy")
    with pytest.raises(ConfigError, match="unknown head 'dummy'"):
        _check_head("dummy", "a.csv", False)
    with pytest.raises(ConfigError, match="other than 'comc'"):
        register_kind("comc", "x", "a second text head")


def _head_name_literals(path: Path, names: set[str]) -> list[str]:
    """``line: name`` for each string (docstrings aside) that is exactly a registered image head's name."""
    tree = ast.parse(path.read_text())
    docs = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
            and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    return [f"{n.lineno}: {n.value}" for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value in names and id(n) not in docs]


def test_no_module_but_the_registry_and_each_head_names_the_heads(tmp_path: Path) -> None:
    from tagger.method.headkinds import image_heads, spec
    names = set(image_heads())
    own = {Path(*spec(k).module.split(".")[1:]).with_suffix(".py") for k in names}
    found = [f"{f.relative_to(PKG)}:{hit}" for f in sorted(PKG.rglob("*.py"))
             if f.relative_to(PKG) not in own | {Path("method/headkinds.py")} for hit in _head_name_literals(f, names)]
    assert found == []
    probe = tmp_path / "probe.py"
    probe.write_text('"""ovml in prose."""\nKINDS = ("ovml", "mkt")\n')
    assert _head_name_literals(probe, names) == ["2: ovml", "2: mkt"]
