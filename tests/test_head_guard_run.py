"""The guard in a real workspace (local Ray, toy-rn, 260 toy scenes, the toy labels plus `car`, which
no scene shows): `tagger train --head ovml --annotations` on 200 annotated images prints the
validation table and its verdict; forced, the head's tag run gives `car` no positive and runs
list/show name the head; annotations with shuffled labels keep the text-only head; `tagger heads
use text` goes back to it."""
from __future__ import annotations

import csv
import json
import random
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tagger.catalog import Catalog
from tagger.cli import app
from tagger.toyworld import LABEL_SYNONYMS, LABELS
from tagger.toyworld.export import export_scenes

pytestmark = pytest.mark.ray
runner = CliRunner()
ABSENT = "car"  # occurs in no toy scene and has no annotated image


def run(*args: str) -> str:
    out = runner.invoke(app, list(args), catch_exceptions=False)
    assert out.exit_code == 0, out.output
    return out.stdout


def invoke(*args: str) -> dict:
    """Run a verb with --json; its summary (the last JSON line)."""
    return [json.loads(line) for line in run(*args, "--json").splitlines() if line.startswith("{")][-1]


def write(path: Path, truth: dict[str, list[str]]) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["uri", "labels"])
        for uri, labels in truth.items():
            w.writerow([uri, ";".join(labels)])
    return path


@pytest.fixture(scope="module")
def trained(local_ray, tmp_path_factory) -> tuple[Path, dict[str, list[str]], str]:
    """260 encoded scenes, the text corpus and the text-only classifier; 200 scenes' truth."""
    base = tmp_path_factory.mktemp("guard")
    truth = export_scenes(base / "images", 260)
    ws = base / "ws"
    with Catalog.open(ws / "catalog.duckdb") as cat:
        cat.add_labels([*LABELS, ABSENT], {k: list(v) for k, v in LABEL_SYNONYMS.items()})
    invoke("encode", str(base / "images"), "-w", str(ws), "--model", "toy-rn", "--partition-size", "64",
           "--num-gpus", "0")
    invoke("generate-text", "-w", str(ws), "--n-sentences", "4000")
    text = invoke("train", "-w", str(ws))
    annotated = dict(sorted(truth.items())[:200])
    return ws, annotated, text["classifier_id"]


@pytest.fixture
def ws(trained, tmp_path) -> Path:
    shutil.copytree(trained[0], tmp_path / "ws")
    return tmp_path / "ws"


def newest(ws: Path) -> str:
    with Catalog.open(ws / "catalog.duckdb", read_only=True) as cat:
        return cat.classifiers()[-1]["classifier_id"]


def run_head(ws: Path, run_id: int) -> str:
    return next(r["head"] for r in json.loads(run("runs", "list", "-w", str(ws), "--json"))
                if r["run_id"] == run_id)


def test_an_image_head_on_200_annotations_tags_no_absent_label(trained, ws, tmp_path) -> None:
    _, annotated, text_id = trained
    out = run("train", "-w", str(ws), "--head", "ovml", "--annotations", str(write(tmp_path / "a.csv", annotated)),
              "--force")
    assert re.search(r"validation on \d\d held-out annotated images", out), out
    assert "text-only comc" in out and "ovml (guarded)" in out and "kept" in out
    head_id = newest(ws)
    assert head_id != text_id
    bad = write(tmp_path / "bad.csv", {**annotated, "/nowhere/x.png": ["circle"]})
    out = runner.invoke(app, ["train", "-w", str(ws), "--head", "mkt", "--annotations", str(bad)],
                        catch_exceptions=False)
    assert out.exit_code == 2 and "/nowhere/x.png" in out.stderr
    assert newest(ws) == head_id  # a failed train leaves the head in use alone
    tagged = invoke("tag", "-w", str(ws))
    with Catalog.open(ws / "catalog.duckdb", read_only=True) as cat:
        assert cat.get_run(tagged["run_id"]).classifier_id == head_id
        pos = dict(cat.query("SELECT label, n_pos FROM run_label_counts WHERE run_id = ?", [tagged["run_id"]]))
        rec = cat.get_classifier(head_id)
    assert pos.get(ABSENT, 0) <= 2  # of 260 images (the unguarded head tagged it on over a third)
    seen = rec["config"]["seen"]
    assert seen and ABSENT not in seen and all(pos.get(n, 0) > 0 for n in seen)  # the head's labels are tagged
    assert run_head(ws, tagged["run_id"]) == "ovml"
    assert f"head ovml (classifier {head_id})" in " ".join(run("runs", "show", "-w", str(ws)).split())


def test_a_head_worse_than_text_only_is_not_used_unless_forced(trained, ws, tmp_path) -> None:
    _, annotated, text_id = trained
    rng = random.Random(0)
    uris, labels = list(annotated), list(annotated.values())
    rng.shuffle(labels)  # every image gets another image's labels
    shuffled = write(tmp_path / "shuffled.csv", dict(zip(uris, labels)))
    out = run("train", "-w", str(ws), "--head", "ovml", "--annotations", str(shuffled))
    assert "validation on" in out and "text-only head kept" in out
    assert newest(ws) == text_id
    tagged = invoke("tag", "-w", str(ws))
    assert run_head(ws, tagged["run_id"]) == "text"
    forced = invoke("train", "-w", str(ws), "--head", "ovml", "--annotations", str(shuffled), "--force")
    assert forced["kept"] and newest(ws) == forced["classifier_id"] != text_id
    again = invoke("train", "-w", str(ws), "--head", "ovml", "--annotations", str(shuffled))  # not kept: the
    assert not again["kept"] and newest(ws) == forced["classifier_id"]  # head in use stays, not text-only
    assert again["classifier_in_use"] == forced["classifier_id"] and "the head in use" in again["verdict"]


def test_heads_use_text_goes_back_to_the_text_only_head(trained, ws, tmp_path) -> None:
    _, annotated, text_id = trained
    few = invoke("train", "-w", str(ws), "--head", "comc", "--annotations", str(write(tmp_path / "a.csv", annotated)),
                 "--force")
    assert few["kept"] and few["head"] == "comc-fewshot" and newest(ws) == few["classifier_id"]
    assert invoke("heads", "use", "text", "-w", str(ws))["classifier_id"] == text_id
    assert newest(ws) == text_id
    tagged = invoke("tag", "-w", str(ws))
    assert run_head(ws, tagged["run_id"]) == "text"
    assert invoke("heads", "use", few["classifier_id"], "-w", str(ws))["head"] == "comc-fewshot"
    out = runner.invoke(app, ["heads", "use", "nope", "-w", str(ws)], catch_exceptions=False)
    assert out.exit_code == 2 and out.stderr.strip().startswith("error:") and "nope" in out.stderr
