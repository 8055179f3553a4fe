"""A 5-image workspace through the real verbs (local Ray): toy-rn gives 16 patches per image, so
5 images hold 80 patch vectors, fewer than the 256 a PQ codec trains on. Encode keeps the patches
uncompressed, every later verb works (encode again, train, tag, search), and once the corpus is
large enough the next encode switches the patch store to its PQ codec."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tagger.catalog import Catalog
from tagger.cli import app
from tagger.store.updates import STATE_FILE
from tagger.store import PatchStore, index_paths
from tagger.toyworld.export import export_scenes

pytestmark = pytest.mark.ray
runner = CliRunner()


def invoke(*args: str) -> dict:
    """Run a verb with --json; its summary (the last JSON line)."""
    out = runner.invoke(app, [*args, "--json"], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")][-1]


@pytest.fixture(scope="module")
def checkpoint(random_checkpoint) -> Path:
    return random_checkpoint("toy-rn")


def test_five_images_encode_tag_and_search_then_the_codec_trains(local_ray, checkpoint, tmp_path):
    images, ws = tmp_path / "images", str(tmp_path / "ws")
    export_scenes(images, 5)
    runner.invoke(app, ["labels", "add", "circle", "square", "star", "-w", ws], catch_exceptions=False)
    enc = invoke("encode", str(images), "-w", ws, "--model", "toy-rn", "--pretrained", str(checkpoint),
                 "--num-gpus", "0")
    assert enc["encoded"] == 5 and enc["mode"] == "rebuild" and enc["provisional"] == ["patches"]
    _, p_path = index_paths(ws, enc["model_id"])
    assert PatchStore.load(p_path).code_size == 4 * 128  # float32: uncompressed
    assert invoke("encode", "-w", ws)["mode"] == "unchanged"  # a later encode works too

    invoke("generate-text", "-w", ws, "--n-sentences", "200")
    invoke("train", "-w", ws)
    out = runner.invoke(app, ["tag", "-w", ws, "--json"], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    tagged = json.loads(out.stdout.splitlines()[-1])
    assert tagged["n_images"] == 5
    assert re.search(r"^tag: 1 / 1 shard \(100 %\) in \d+ s$", out.stderr, re.M), out.stderr  # progress, not a bar
    with Catalog.open(Path(ws) / "catalog.duckdb", read_only=True) as cat:
        assert cat.query("SELECT count(DISTINCT image_id) FROM current_tags")[0][0] == 5
    for level in ("global", "patch"):
        out = runner.invoke(app, ["search", "a red circle", "-k", "3", "--level", level, "-w", ws, "--device",
                                  "cpu", "--json"], catch_exceptions=False)
        assert out.exit_code == 0 and len(json.loads(out.stdout)) == 3

    export_scenes(images, 15, start=5)  # 20 images x 16 patches = 320 vectors: PQ trains now
    enc = invoke("encode", str(images), "-w", ws)
    assert enc["encoded"] == 15 and enc["mode"] == "rebuild" and enc["provisional"] == []
    assert PatchStore.load(p_path).code_size == 16  # the configured PQ16x8
    state = json.loads((Path(p_path).parent / STATE_FILE).read_text())
    assert state["n_images"] == 20 and state["provisional"] == {}
    assert invoke("tag", "-w", ws)["n_images"] == 20


def test_a_moved_or_copied_workspace_reads_its_own_files(local_ray, checkpoint, tmp_path):
    """The catalog records paths inside the workspace relative to it: a moved workspace keeps working,
    and a copy keeps working after the original is deleted (so it never read the original's files)."""
    import shutil
    images, ws = tmp_path / "images", tmp_path / "ws"
    export_scenes(images, 6)
    runner.invoke(app, ["labels", "add", "circle", "square", "star", "-w", str(ws)], catch_exceptions=False)
    invoke("encode", str(images), "-w", str(ws), "--model", "toy-rn", "--pretrained", str(checkpoint),
           "--num-gpus", "0")
    invoke("generate-text", "-w", str(ws), "--n-sentences", "200")
    trained = invoke("train", "-w", str(ws))
    with Catalog.open(ws / "catalog.duckdb", read_only=True) as cat:
        recorded = [c["path"] for c in cat.classifiers()] + [c["path"] for c in cat.corpora()]
    assert recorded and not any(Path(p).is_absolute() for p in recorded), recorded

    moved = tmp_path / "moved"
    shutil.move(str(ws), moved)
    assert invoke("tag", "-w", str(moved))["n_images"] == 6

    copy = tmp_path / "copy"
    shutil.copytree(moved, copy)
    shutil.rmtree(moved)
    runner.invoke(app, ["labels", "add", "heart", "-w", str(copy)], catch_exceptions=False)
    invoke("generate-text", "-w", str(copy), "--n-sentences", "200")  # extends the copied corpus
    assert invoke("train", "-w", str(copy))["classifier_id"] != trained["classifier_id"]
    assert invoke("tag", "-w", str(copy))["n_images"] == 6
