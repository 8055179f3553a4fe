"""Bad input to the job verbs is one `error:` line (exit 2), never a traceback: a missing or
garbage checkpoint on the tag path (CLI and job entry point), a manifest that is not UTF-8, an
unknown --classifier-id, a workspace the user cannot write, non-finite float options and a
--node-resource that names no custom resource; a relative checkpoint reaches the actors absolute."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from jobs import tag as tag_job
from tagger.catalog import Catalog
from tagger.cli import app
from tagger.pipeline.encode import EncodeConfig
from tagger.errors import ConfigError
from tagger.toyworld.export import export_scenes
from tagger.workspace import Workspace

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def one_error_line(out, needle: str) -> str:
    assert out.exit_code == 2, out.output
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), out.stderr
    assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def ws(labelled_workspace) -> Path:
    return labelled_workspace(["cat", "dog"])


def test_tag_checks_the_checkpoint_before_anything(ws, tmp_path, capsys):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint\n" * 8)
    for path, needle in [(tmp_path / "missing.pt", "checkpoint file not found"),
                         (garbage, "not a model checkpoint")]:
        one_error_line(invoke("tag", "-w", str(ws), "--pretrained", str(path)), needle)
        with pytest.raises(SystemExit) as exc:  # the `ray job submit` entry point says the same
            tag_job.main(["--workspace", str(ws), "--pretrained", str(path)])
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and needle in err[0], err


def test_unknown_classifier_id(ws):
    one_error_line(invoke("tag", "-w", str(ws), "--classifier-id", "deadbeef"), "unknown classifier 'deadbeef'")


def test_manifest_that_is_not_utf8(tmp_path):
    manifest = tmp_path / "images.txt"
    manifest.write_bytes("/photos/caf\u00e9.jpg\n".encode("latin-1"))
    line = one_error_line(invoke("encode", str(manifest), "-w", str(tmp_path / "ws")), "is not UTF-8")
    assert "line 1" in line


@pytest.mark.parametrize("args", [
    ["tag", "--threshold", "nan"], ["tag", "--threshold", "inf"], ["tag", "--wait", "inf"],
    ["generate-text", "--max-missing", "inf"], ["nightly", "--max-missing", "inf"],
    ["encode", "--num-gpus", "nan"],
])
def test_non_finite_floats_are_refused(ws, args):
    out = invoke(*args, "-w", str(ws))
    text = " ".join(out.output.replace("\u2502", " ").split())  # the usage box wraps long lines
    assert out.exit_code == 2 and f"Invalid value for '{args[1]}'" in text, out.output
    assert "is not a finite number" in text or "greater than or equal to 0" in text, out.output


def _as_user_cmd() -> list[str]:
    """Prefix that runs a command as an unprivileged user (root writes read-only folders)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv to drop root")
    return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def test_encode_on_a_read_only_workspace():
    top = Path(tempfile.mkdtemp(prefix="tagger-ro-"))
    try:
        top.chmod(0o755)
        ws = Workspace.at(top / "ws")
        ws.update_settings(model="toy-vit")
        with Catalog.open(ws.catalog) as cat:
            cat.add_labels(["cat"])
        export_scenes(top / "images", 2)
        for p in [top, *top.rglob("*")]:
            p.chmod(0o555 if p.is_dir() else 0o444)
        env = {**os.environ, "HOME": str(top), "RAY_USAGE_STATS_ENABLED": "0"}
        out = subprocess.run([*_as_user_cmd(), sys.executable, "-m", "tagger.cli", "encode", str(top / "images"),
                              "-w", str(ws.root)], capture_output=True, text=True, timeout=300, env=env)
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 2 and len(lines) == 1, out.stderr[-3000:]
        assert lines[0].startswith("error:") and "is not writable" in lines[0], lines
        assert sorted(p.name for p in ws.root.iterdir()) == ["catalog.duckdb", "workspace.json"]
    finally:
        for p in [top, *top.rglob("*")]:
            p.chmod(0o755)
        shutil.rmtree(top)


def test_encode_of_an_empty_source_says_so(tmp_path, caplog):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "scan.cr2").write_bytes(b"x")  # a raw camera file: not listed
    (docs / "notes.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty.txt").write_text("# nothing yet\n")
    ws = str(tmp_path / "ws")
    for source, skipped in [(docs, 2), (tmp_path / "empty", 0), (tmp_path / "*.jpg", 0), (tmp_path / "empty.txt", 0)]:
        caplog.clear()
        with caplog.at_level("WARNING", logger="tagger.pipeline.sources"):
            out = invoke("encode", str(source), "-w", ws, "--json")
        assert out.exit_code == 0, out.output
        summary = json.loads([x for x in out.stdout.splitlines() if x.startswith("{")][-1])
        assert summary["listed"] == 0 and summary["skipped"] == skipped and summary["partitions"] == 0, summary
        assert summary["warning"].startswith(f"no images in {source}"), summary
        assert f"no images in {source}" in caplog.text
    assert summary_of(invoke("encode", str(docs), "-w", ws, "--json"))["skipped_why"] == \
        "1 with extension .cr2, 1 with extension .txt"


def summary_of(out) -> dict:
    return json.loads([x for x in out.stdout.splitlines() if x.startswith("{")][-1])


def test_job_entry_points_refuse_non_finite_floats(tmp_path, capsys):
    from jobs import encode as encode_job
    for option in ("--encode-cpus", "--decode-cpus", "--num-gpus"):
        with pytest.raises(SystemExit) as exc:
            encode_job.main(["--workspace", str(tmp_path / "ws"), option, "nan"])
        assert exc.value.code == 2
        assert "nan is not a finite number" in capsys.readouterr().err  # the CLI verb's own check
    with pytest.raises(ConfigError, match="encode_cpus must be a finite number >= 0"):
        EncodeConfig(encode_cpus=float("inf"))


def test_job_entry_points_refuse_an_unknown_classifier_and_non_finite_values(ws, capsys):
    with pytest.raises(SystemExit) as exc:
        tag_job.main(["--workspace", str(ws), "--classifier-id", "deadbeef"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown classifier 'deadbeef'" in err[0], err
    from jobs import nightly as nightly_job
    for main, option in ((tag_job.main, "--threshold"), (nightly_job.main, "--max-missing")):
        with pytest.raises(SystemExit) as exc:
            main(["--workspace", str(ws), option, "nan"])
        assert exc.value.code == 2
        assert "nan is not a finite number" in capsys.readouterr().err  # the CLI verb's own check


@pytest.mark.parametrize("verb", ["encode", "tag", "nightly"])
@pytest.mark.parametrize("name", ["GPU", "CPU", "node:10.0.0.5", " gpu_node", ""])
def test_node_resource_must_name_a_custom_resource(ws, verb, name):
    out = invoke(verb, "-w", str(ws), "--node-resource", name)
    text = " ".join(out.output.replace("\u2502", " ").split())
    assert out.exit_code == 2 and "Invalid value for '--node-resource'" in text, out.output
    assert not (ws / "workspace.json").exists()  # refused before the model is recorded
    with pytest.raises(ConfigError, match="node resource"):
        EncodeConfig(node_resource=name)


def test_encode_hands_its_actors_an_absolute_checkpoint(tmp_path, monkeypatch):
    """A checkpoint given relative to the driver's directory (nightly passes --pretrained as given)
    is made absolute before the encoder actors get it: on a cluster they run in other directories."""
    from tagger.models import registry
    from tagger.pipeline.encode import run_encode
    seen = []
    monkeypatch.setattr(registry, "check_model", lambda name, pretrained=None: seen.append(pretrained))
    (tmp_path / "ckpt.pt").write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    run_encode(Workspace.at(tmp_path / "ws"), None, EncodeConfig(pretrained="ckpt.pt"), progress=False)
    assert seen == [str(tmp_path / "ckpt.pt")]
    assert registry.absolute_checkpoint("laion2b_s34b_b79k") == "laion2b_s34b_b79k"


@pytest.mark.parametrize("error,says", [
    (OSError("2744320 requested and 41952 written"), "No space left on device"),  # numpy on a full disk
    (PermissionError(13, "Permission denied", "/ws/classifiers/x.npy"), "Permission denied (/ws/classifiers/x.npy)"),
])
def test_an_os_error_a_verb_did_not_expect_is_one_line(monkeypatch, capsys, error, says):
    """The machine refusing a write (a full disk, a permission) ends in one line and status 2."""
    cli_app = sys.modules["tagger.cli.app"]  # the package's `app` attribute is the Typer app

    def refuse(*_a, **_k):
        raise error
    monkeypatch.setattr(cli_app.typer.main, "get_command", lambda _app: type("C", (), {"main": refuse})())
    with pytest.raises(SystemExit) as done:
        cli_app.main(["status"])
    err = capsys.readouterr().err.strip().splitlines()
    assert done.value.code == 2 and len(err) == 1 and err[0].startswith("error:") and says in err[0], err


def test_a_threshold_for_another_decision_rule_is_refused_not_ignored(ws):
    out = invoke("tag", "-w", str(ws), "--threshold", "0.5")
    assert "--threshold is for --decision standardized" in one_error_line(out, "--decision anchored")
    out = invoke("tag", "-w", str(ws), "--decision", "mixture", "--threshold", "0.5")
    assert out.exit_code == 2 and "--decision mixture fits each label's own threshold" in out.stderr
    out = invoke("tag", "-w", str(ws), "--decision", "standardized", "--threshold", "0.5")
    assert "--threshold" not in out.stderr  # taken (it then needs a classifier: none was trained here)
