"""`tagger train --head ... --annotations FILE` on a small workspace (local Ray): each image-trained
head and few-shot CoMC train on the stored embeddings of the annotated images, too few to validate
against the text-only head (which stays in use) unless --force, and then the next tag run uses
them; bad annotation files are one error line; the CoMC head still needs no annotation."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tagger.catalog import Catalog
from tagger.cli import app
from tagger.toyworld.export import export_scenes

pytestmark = pytest.mark.ray
runner = CliRunner()
LABELS = ("circle", "square", "star", "triangle", "heart")


def invoke(*args: str) -> dict:
    """Run a verb with --json; its summary (the last JSON line)."""
    out = runner.invoke(app, [*args, "--json"], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")][-1]


def one_error_line(args: list[str], needle: str) -> str:
    out = runner.invoke(app, args, catch_exceptions=False)
    assert out.exit_code == 2, out.output
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], out.stderr
    return lines[0]


def write_annotations(path: Path, truth: dict[str, list[str]], extra: dict[str, list[str]] | None = None) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["uri", "labels"])
        for uri, labels in {**truth, **(extra or {})}.items():
            w.writerow([uri, ";".join(n for n in labels if n in LABELS or n == "not-a-label")])
    return path


@pytest.fixture(scope="module")
def workspace(local_ray, random_checkpoint, tmp_path_factory) -> tuple[str, dict[str, list[str]], Path]:
    root = tmp_path_factory.mktemp("heads")
    images, ws = root / "images", str(root / "ws")
    truth = export_scenes(images, 12)
    runner.invoke(app, ["labels", "add", *LABELS, "-w", ws], catch_exceptions=False)
    invoke("encode", str(images), "-w", ws, "--model", "toy-rn", "--pretrained", str(random_checkpoint("toy-rn")),
           "--num-gpus", "0")
    invoke("generate-text", "-w", ws, "--n-sentences", "200")  # the text-only head every head is checked against
    labelled = dict(list(truth.items())[:8])  # the other 4 images are only tagged
    return ws, labelled, write_annotations(root / "annotations.csv", labelled)


def test_bad_annotations_are_one_error_line(workspace, tmp_path) -> None:
    ws, labelled, _ = workspace
    bad_label = write_annotations(tmp_path / "a.csv", labelled, {next(iter(labelled)): ["not-a-label"]})
    one_error_line(["train", "-w", ws, "--head", "ovml", "--annotations", str(bad_label)], "not-a-label")
    bad_uri = write_annotations(tmp_path / "b.csv", labelled, {"/nowhere/x.jpg": ["circle"]})
    one_error_line(["train", "-w", ws, "--head", "mkt", "--annotations", str(bad_uri)], "/nowhere/x.jpg")
    one_error_line(["train", "-w", ws, "--head", "clip-decoder"], "--annotations")
    one_error_line(["train", "-w", ws, "--head", "clip-decoder", "--reviewed"], "no labelled image")
    one_error_line(["train", "-w", ws, "--head", "ovml", "--annotations", str(tmp_path / "none.csv")], "not found")


KEPT: list[str] = []  # heads kept with --force by the cases below, in order (they share one workspace)


@pytest.mark.parametrize("head", ["ovml", "mkt", "clip-decoder"])
def test_an_image_trained_head_tags_the_workspace(workspace, head: str) -> None:
    ws, _, annotations = workspace
    refused = invoke("train", "-w", ws, "--head", head, "--annotations", str(annotations))
    assert not refused["kept"] and refused["validation"] is None and "too few" in refused["verdict"]
    with Catalog.open(Path(ws) / "catalog.duckdb", read_only=True) as cat:  # the head in use stays in use: text-only
        before = cat.classifiers()[-1]["classifier_id"]  # at first, then the head an earlier case kept with --force
        assert before == refused["classifier_in_use"] and before in (refused["text_classifier_id"], *KEPT)
    trained = invoke("train", "-w", ws, "--head", head, "--annotations", str(annotations), "--force")
    assert trained["head"] == head and trained["images"] == 8 and trained["labels"] == len(LABELS)
    assert trained["kept"] and 0 < trained["heldout_images"] < trained["images"]
    with Catalog.open(Path(ws) / "catalog.duckdb", read_only=True) as cat:
        rec = cat.classifiers()[-1]
    assert rec["classifier_id"] == trained["classifier_id"] and rec["config"]["head"] == head
    KEPT.append(trained["classifier_id"])
    assert rec["config"]["data_id"] and rec["config"]["guard"]["text"] == trained["text_classifier_id"]
    tagged = invoke("tag", "-w", ws)
    assert tagged["n_images"] == 12
    with Catalog.open(Path(ws) / "catalog.duckdb", read_only=True) as cat:
        run = cat.get_run(tagged["run_id"])
        assert run.classifier_id == trained["classifier_id"]
        labels = {r[0] for r in cat.query("SELECT DISTINCT label FROM current_tags")}
    assert labels <= set(LABELS) and labels


def test_comc_without_and_with_annotations(workspace) -> None:
    ws, _, annotations = workspace
    text = invoke("train", "-w", ws)
    assert text["head"] == "comc"
    few = invoke("train", "-w", ws, "--head", "comc", "--annotations", str(annotations), "--force")
    assert few["text_classifier_id"] == text["classifier_id"] and few["classifier_id"] != text["classifier_id"]
    assert few["images"] == 8
    tagged = invoke("tag", "-w", ws)
    with Catalog.open(Path(ws) / "catalog.duckdb", read_only=True) as cat:
        assert cat.get_run(tagged["run_id"]).classifier_id == few["classifier_id"]
        assert cat.get_classifier(few["classifier_id"])["config"]["head"] == "comc-fewshot"
    assert tagged["n_images"] == 12


def test_reviewed_tags_train_a_head(workspace) -> None:
    """`train --reviewed` learns from the images people reviewed: their tags after the decisions."""
    ws, labelled, annotations = workspace
    invoke("tag", "-w", ws)
    uris = sorted(labelled)[:3]
    for uri, verb in zip(uris, ("accept", "accept", "reject")):
        out = runner.invoke(app, ["review", verb, uri, "star", "-w", ws], catch_exceptions=False)
        assert out.exit_code == 0, out.output
    only = invoke("train", "-w", ws, "--head", "mkt", "--reviewed", "--force")
    assert only["images"] == 3 and only["head"] == "mkt"
    both = invoke("train", "-w", ws, "--head", "mkt", "--reviewed", "--annotations", str(annotations), "--force")
    assert both["images"] == len(labelled) and both["classifier_id"] != only["classifier_id"]
    with Catalog.open(Path(ws) / "catalog.duckdb", read_only=True) as cat:
        cat_ids = dict(cat.query("SELECT uri, image_id FROM images"))
        assert cat.reviewed_labels()[cat_ids[uris[0]]].count("star") == 1
        assert "star" not in cat.reviewed_labels()[cat_ids[uris[2]]]


def test_nightly_keeps_the_head_in_use(workspace) -> None:
    """After a label is added, the nightly job tags with the same kind of head: the text-only head
    trained on the new corpus, the guarded head carried over onto it (the new label scored by the
    text head), for an image-trained head and for few-shot CoMC."""
    ws, _, annotations = workspace
    db = Path(ws) / "catalog.duckdb"
    for head, added in (("ovml", "diamond"), ("comc", "hexagon")):
        trained = invoke("train", "-w", ws, "--head", head, "--annotations", str(annotations), "--force")
        invoke("tag", "-w", ws)
        runner.invoke(app, ["labels", "add", added, "-w", ws], catch_exceptions=False)
        night = invoke("nightly", "-w", ws, "--n-sentences", "200")
        with Catalog.open(db, read_only=True) as cat:
            rec = cat.get_classifier(night["classifier"])
            assert cat.get_run(night["run_id"]).classifier_id == night["classifier"]
            text = cat.get_classifier(rec["config"]["guard"]["text"])
        assert added in rec["labels"] and night["classifier"] != trained["classifier_id"]
        assert rec["config"]["head"] == trained["head"] and rec["config"]["relabelled_from"] == trained["classifier_id"]
        assert added not in rec["config"]["seen"] and added in text["labels"]
        assert rec["config"]["guard"]["text"] != trained["text_classifier_id"]
        runner.invoke(app, ["labels", "retire", added, "-w", ws], catch_exceptions=False)
