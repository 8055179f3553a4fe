"""`tagger encode` checks --model and --pretrained before it writes anything: a bad one is one
`error:` line (exit 2), the workspace keeps its settings and images, and later verbs still work
with the workspace's model. The check reads config files and checkpoint headers only (no torch)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tagger.catalog import Catalog
from tagger.cli import app
from tagger.errors import ModelLoadError
from tagger.models.registry import check_model
from tagger.toyworld.export import export_scenes
from tagger.workspace import Workspace

runner = CliRunner()
N, P, D = 6, 16, 128  # toy-vit: 4x4 patches of 128 dims


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def checkpoint(random_checkpoint) -> Path:
    return random_checkpoint("toy-vit")


@pytest.fixture
def ws(tmp_path, checkpoint) -> Workspace:
    """A toy-vit workspace whose images are all encoded (shards from the store API) and indexed."""
    from tagger.store.updates import update_indexes
    from tagger.models.registry import model_id_for
    from tagger.store import shard_name_for, write_shard

    w = Workspace.at(tmp_path / "ws")
    w.update_settings(model="toy-vit", pretrained=str(checkpoint))
    model_id = model_id_for("toy-vit", str(checkpoint))
    rng = np.random.default_rng(0)
    with Catalog.open(w.catalog) as cat:
        ids = cat.register_images([f"/photos/{i}.jpg" for i in range(N)])
        cat.record_encodings(ids, model_id, [f"hash-{i}" for i in ids], shard_name_for(ids))
    write_shard(w.root, model_id, shard_name_for(ids), ids, rng.normal(size=(N, D)).astype(np.float32),
                rng.normal(size=(N, P, D)).astype(np.float32))
    update_indexes(w.root, model_id)
    return w


def _bad_files(tmp: Path, checkpoint: Path) -> dict[str, Path]:
    (tmp / "garbage.pt").write_bytes(b"this is not a checkpoint\n" * 10)
    (tmp / "empty.pt").write_bytes(b"")
    (tmp / "truncated.pt").write_bytes(checkpoint.read_bytes()[:5000])
    return {n: tmp / f"{n}.pt" for n in ("garbage", "empty", "truncated")}


def test_bad_model_or_weights_are_refused_before_anything_is_written(ws, tmp_path, checkpoint):
    images = tmp_path / "new-images"
    export_scenes(images, 2)
    bad = _bad_files(tmp_path, checkpoint)
    cases = [(["--model", "toy-rnn"], "unknown model 'toy-rnn'"),
             (["--model", "ViT-B-23"], "did you mean"),
             (["--pretrained", str(tmp_path / "missing.pt")], "checkpoint file not found"),
             (["--model", "toy-rn", "--pretrained", str(tmp_path / "nope" / "w.pt")], "not found"),
             (["--model", "toy-vit", "--pretrained", "laion2b_s34b_b79k"], "has no hub tags"),
             *[(["--pretrained", str(p)], "not a model checkpoint") for p in bad.values()]]
    settings = ws.settings_path.read_bytes()
    for args, message in cases:
        out = invoke("encode", str(images), "-w", str(ws.root), *args)
        assert out.exit_code == 2, (args, out.output)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], (args, out.stderr)
        assert ws.settings_path.read_bytes() == settings, args
        with Catalog.open(ws.catalog, read_only=True) as cat:
            assert cat.query("SELECT count(*) FROM images")[0][0] == N, args
    fresh = tmp_path / "fresh"
    assert invoke("encode", str(images), "-w", str(fresh), "--model", "toy-rnn").exit_code == 2
    assert not fresh.exists()
    # the workspace still works with its own model: a search, and an encode with nothing new
    out = invoke("search", "a red circle", "-k", "3", "-w", str(ws.root), "--device", "cpu", "--json")
    assert out.exit_code == 0, out.output
    assert len(json.loads(out.stdout)) == 3
    out = invoke("encode", "-w", str(ws.root), "--json")
    assert out.exit_code == 0, out.output
    summary = [line for line in out.stdout.splitlines() if line.startswith("{")][-1]
    assert '"partitions": 0' in summary and '"mode": "unchanged"' in summary
    assert ws.settings_path.read_bytes() == settings


def test_check_model_accepts_what_loads_and_never_imports_torch(tmp_path, checkpoint):
    for name, pretrained in [("toy-vit", None), ("toy-vit", str(checkpoint)), ("ViT-B-32", "openai"),
                             ("hf-hub:org/some-model", None)]:
        check_model(name, pretrained)
    with pytest.raises(ModelLoadError, match="directory"):
        check_model("toy-vit", str(tmp_path))
    code = ("import sys; from tagger.models.registry import check_model; from tagger.errors import ModelLoadError\n"
            f"check_model('toy-rn'); check_model('toy-vit', {str(checkpoint)!r})\n"
            "try: check_model('toy-rnn')\nexcept ModelLoadError: pass\n"
            "assert 'torch' not in sys.modules and 'open_clip' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
