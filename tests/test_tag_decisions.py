"""Per-label decisions in the tag stage, without Ray: tag rows with thresholds and confidences,
the catalog's pins, run thresholds and labelled set, the labelled file, and `tagger labels set`."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from tagger.pipeline.calibration import (
    DecisionInputs, decision_rows, decisions_from_rows, read_labelled_file, record_labelled_set,
)
from tagger.catalog import Catalog
from tagger.cli import app
from tagger.errors import CatalogError, ConfigError
from tagger.pipeline.tag import TagConfig, apply_statistics, fit_run_decisions, label_statistics, positive_mask, tag_rows
from tagger.workspace import Workspace

LABELS = ["circle", "square", "star", "absent"]
runner = CliRunner()


def corpus(n: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Scores of three labels shown by ~20 % of images each (a bump above the bulk) and one shown by none."""
    rng = np.random.default_rng(seed)
    y = rng.random((n, 4)) < 0.2
    y[:, 3] = False
    s = rng.normal(0.0, 1.0, (n, 4)) + 4.0 * y
    return s.astype(np.float32), y


@pytest.fixture
def ws(tmp_path):
    return tmp_path / "ws"


@pytest.fixture
def cat(ws):
    with Catalog.open(Workspace.at(ws).catalog) as c:
        c.add_labels(LABELS)
        yield c


# -- tag rows ------------------------------------------------------------------------------------
def test_mixture_rows_carry_confidence_and_per_label_thresholds():
    s, _ = corpus()
    d, _ = fit_run_decisions(s, LABELS, TagConfig(), DecisionInputs({}, {}))
    t = tag_rows(np.arange(len(s)), s, LABELS, TagConfig(top_k=2), d).to_pydict()
    thr = dict(zip(LABELS, d.thresholds()))
    conf = d.confidence(s)
    for i, lab, score, pos, c in zip(t["image_id"], t["label"], t["score"], t["positive"], t["confidence"]):
        assert pos == bool(score >= thr[lab])
        assert 0.0 <= c <= 1.0 and c == pytest.approx(conf[i, LABELS.index(lab)])
    # top-k rows that are not positive keep their confidence too
    assert any(not p and c is not None for p, c in zip(t["positive"], t["confidence"]))
    assert not any(p for lab, p in zip(t["label"], t["positive"]) if lab == "absent")


def test_absent_label_positive_under_the_standardized_rule_not_under_the_mixture():
    s, y = corpus()
    stats = label_statistics(s)
    z = apply_statistics(s, stats)
    d, _ = fit_run_decisions(z, LABELS, TagConfig(), DecisionInputs({}, {}))
    old = positive_mask(z, TagConfig.threshold)
    assert old[:, 3].sum() > 20  # the old rule tags an absent label on many images
    assert d.positive(z)[:, 3].sum() == 0 and not d.present[3] and d.present[:3].all()
    rows = tag_rows(np.arange(len(s)), z, LABELS, TagConfig(decision="standardized"))
    assert rows.column("confidence").null_count == rows.num_rows  # the old rule has no confidence
    cols = [LABELS.index(x) for x in rows.column("label").to_pylist()]
    assert np.array_equal(np.asarray(rows.column("positive")), old[np.asarray(rows.column("image_id")), cols])
    # positives per image follow what the image shows (truth: 0-3), not a share of the vocabulary
    assert abs(d.positive(z).sum(1).mean() - y.sum(1).mean()) < 0.1


def test_pins_and_labelled_images_change_only_their_labels():
    s, y = corpus()
    base, _ = fit_run_decisions(s, LABELS, TagConfig(), DecisionInputs({}, {}))
    pinned, _ = fit_run_decisions(s, LABELS, TagConfig(), DecisionInputs({"square": 9.5}, {}))
    assert pinned.thresholds()[1] == 9.5 and pinned.positive(s)[:, 1].sum() == 0
    np.testing.assert_array_equal(np.delete(pinned.thresholds(), 1), np.delete(base.thresholds(), 1))
    # a few labelled images of "circle" whose positives score lower than the corpus bump suggests
    lab_s, lab_y = s[:40].copy(), y[:40].copy()
    lab_s[lab_y[:, 0], 0] -= 2.0
    inputs = DecisionInputs({}, {i: [LABELS[j] for j in np.flatnonzero(lab_y[i])] for i in range(40)})
    d, refit = fit_run_decisions(s, LABELS, TagConfig(), inputs, (lab_s, inputs.truth(list(range(40)), LABELS)))
    assert "circle" in refit and d.thresholds()[0] < base.thresholds()[0] - 0.5
    rows = {r["label"]: r for r in decision_rows(d, refit)}
    assert rows["circle"]["source"] == "labelled" and rows["absent"]["threshold"] is None


def test_config_refuses_unknown_rules():
    with pytest.raises(ConfigError, match="decision"):
        TagConfig(decision="magic")


# -- catalog -------------------------------------------------------------------------------------
def test_migration_adds_confidence_and_old_tag_files_load_with_null(cat, tmp_path):
    cat.register_images([f"/i/{k}.jpg" for k in range(3)])
    run = cat.start_run("tag", labels=LABELS)
    with_conf, without = tmp_path / "a.parquet", tmp_path / "b.parquet"
    pq.write_table(pa.table({"image_id": [1, 2], "label": ["circle", "star"], "score": [0.9, 0.1],
                             "positive": [True, False], "confidence": pa.array([0.97, 0.02], pa.float32())}), with_conf)
    pq.write_table(pa.table({"image_id": [3], "label": ["circle"], "score": [0.5]}), without)
    cat.load_tags(run, [with_conf, without])
    cat.set_current(run)
    rows = cat.query("SELECT image_id, round(CAST(confidence AS DOUBLE), 2) FROM current_tags ORDER BY 1")
    assert rows == [(1, 0.97), (2, 0.02), (3, None)]
    assert cat.query("SELECT uri FROM current_tags WHERE confidence >= 0.8") == [("/i/0.jpg",)]


def test_pinned_thresholds_are_validated(cat):
    assert cat.set_threshold("star", 1.25) is None
    assert cat.pinned_thresholds() == {"star": 1.25}
    for bad in (float("nan"), float("inf"), "-inf", "abc"):
        with pytest.raises(CatalogError, match="threshold"):
            cat.set_threshold("star", bad)
    with pytest.raises(CatalogError, match="unknown label"):
        cat.set_threshold("nope", 1.0)
    assert cat.set_threshold("star", None) == 1.25 and cat.pinned_thresholds() == {}
    cat.set_threshold("star", 2.0)
    cat.retire_labels(["star"])
    assert cat.pinned_thresholds() == {}  # retired labels are not tagged


def test_stored_run_thresholds_rebuild_the_same_decisions(cat):
    s, _ = corpus()
    d, _ = fit_run_decisions(s, LABELS, TagConfig(), DecisionInputs({"star": 0.5}, {}))
    run = cat.start_run("tag", labels=LABELS)
    cat.save_run_thresholds(run, decision_rows(d, set()))
    stored = cat.run_thresholds(run)
    assert [r["label"] for r in stored] == LABELS and stored[2]["source"] == "pinned"
    again = decisions_from_rows(stored, LABELS, TagConfig().decisions)
    np.testing.assert_array_equal(again.thresholds(), d.thresholds())
    np.testing.assert_array_equal(again.confidence(s), d.confidence(s))


# -- labelled file -------------------------------------------------------------------------------
def test_labelled_file_layouts(tmp_path):
    long = tmp_path / "long.csv"
    long.write_text("uri,label\n/a.jpg,circle\n/a.jpg,star\n/b.jpg,\n")
    wide = tmp_path / "wide.csv"
    wide.write_text("uri,labels\n/a.jpg,circle;star\n/b.jpg,\n")
    par = tmp_path / "l.parquet"
    pq.write_table(pa.table({"uri": ["/a.jpg", "/b.jpg"], "labels": [["star", "circle"], []]}), par)
    for p in (long, wide, par):
        assert read_labelled_file(p) == {"/a.jpg": ["circle", "star"], "/b.jpg": []}
    bad = tmp_path / "bad.csv"
    bad.write_text("path,tag\n/a.jpg,circle\n")
    with pytest.raises(ConfigError, match="uri"):
        read_labelled_file(bad)
    with pytest.raises(ConfigError, match="not found"):
        read_labelled_file(tmp_path / "missing.csv")


def test_labelled_files_as_people_write_them(tmp_path):
    years = tmp_path / "years.csv"
    years.write_text("URI,Label\n/a.jpg,2019\n/b.jpg,007\n")  # capitalised header, labels that look like numbers
    assert read_labelled_file(years) == {"/a.jpg": ["2019"], "/b.jpg": ["007"]}
    numbers = tmp_path / "n.parquet"
    pq.write_table(pa.table({"uri": ["/a.jpg"], "label": [2019]}), numbers)
    assert read_labelled_file(numbers) == {"/a.jpg": ["2019"]}
    for name, body in (("twice.csv", "uri,uri,label\n/a.jpg,/a.jpg,x\n"), ("case.csv", "uri,URI,label\n/a,/a,x\n")):
        (tmp_path / name).write_text(body)
        with pytest.raises(ConfigError, match=r"\['uri'\] more than once"):
            read_labelled_file(tmp_path / name)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ConfigError, match="cannot read"):
        read_labelled_file(tmp_path / "empty.csv")
    trailing = tmp_path / "trailing.csv"  # a spreadsheet's empty trailing columns, a note column twice
    trailing.write_text("uri,label,,,note,note\n/a.jpg,star,,,x,y\n")
    assert read_labelled_file(trailing) == {"/a.jpg": ["star"]}
    raw = tmp_path / "raw.parquet"
    pq.write_table(pa.table({"uri": pa.array([b"/a.jpg"], pa.binary()),
                             "labels": pa.array([[b"cat", b"dog"]], pa.list_(pa.binary())),
                             "label": pa.array([2019.0])}), raw)
    assert read_labelled_file(raw) == {"/a.jpg": ["2019"]}  # 'label' first; a float year written as 2019
    pq.write_table(pa.table({"uri": pa.array([b"/a.jpg"], pa.binary()),
                             "labels": pa.array([[b"cat", b"dog"]], pa.list_(pa.binary()))}), raw)
    assert read_labelled_file(raw) == {"/a.jpg": ["cat", "dog"]}
    nested = tmp_path / "s.parquet"
    pq.write_table(pa.table({"uri": ["/a.jpg"], "label": [{"x": 1}]}), nested)
    with pytest.raises(ConfigError, match="holds dict, not text"):
        read_labelled_file(nested)



def test_labelled_set_reports_unknown_uris_and_refuses_unknown_labels(cat, tmp_path):
    ids = cat.register_images(["/i/a.jpg", "/i/b.jpg", "/i/c.jpg"])
    cat.record_encodings(ids[:2], "m@x", None, "p000")
    f = tmp_path / "l.csv"
    f.write_text("uri,label\n/i/a.jpg,circle\n/i/b.jpg,\n/i/c.jpg,star\n/i/nope.jpg,circle\n")
    report = record_labelled_set(cat, f, "m@x", LABELS)
    assert report["unknown_uris"] == ["/i/nope.jpg"] and report["not_encoded"] == ["/i/c.jpg"]
    assert cat.calibration_images() == {int(ids[0]): ["circle"], int(ids[1]): []}
    f.write_text("uri,label\n/i/a.jpg,hexagon\n")
    with pytest.raises(ConfigError, match="hexagon"):
        record_labelled_set(cat, f, "m@x", LABELS)
    assert len(cat.calibration_images()) == 2  # a refused file changes nothing


# -- CLI -----------------------------------------------------------------------------------------
def test_labels_set_cli(cat, ws):
    cat.close()
    run = lambda *a: runner.invoke(app, ["labels", *a, "-w", str(ws)])  # noqa: E731
    assert run("set", "star", "--threshold", "1.5").exit_code == 0
    for bad in ("nan", "inf", "-Infinity", "x"):
        out = run("set", "star", "--threshold", bad)
        assert out.exit_code == 2 and "threshold" in out.stderr, bad
    out = run("set", "hexagon", "--threshold", "1")
    assert out.exit_code == 2 and "unknown label" in out.stderr
    assert run("set", "star").exit_code == 2  # neither --threshold nor --clear
    listed = {r["name"]: r["threshold"] for r in json.loads(run("list", "--json").stdout)}
    assert listed == {"circle": None, "square": None, "star": 1.5, "absent": None}
    assert run("set", "star", "--threshold", "none").exit_code == 0
    run("set", "circle", "--threshold", "-0.25")
    assert run("set", "circle", "--clear").exit_code == 0
    with Catalog.open(Workspace.at(ws).catalog, read_only=True) as c:
        assert c.pinned_thresholds() == {}


def test_annotations_naming_a_label_added_since_training_say_what_to_run(cat, tmp_path):
    from tagger.pipeline.heads import labelled_ids
    f = tmp_path / "a.csv"
    f.write_text(f"uri,label\n/a.jpg,{LABELS[1]}\n/a.jpg,kite\n")
    with pytest.raises(ConfigError, match=f"{LABELS[1]} added since the text classifier was trained"):
        labelled_ids(cat, f, False, "m", [LABELS[0]])  # the classifier knows only the first label
    with pytest.raises(ConfigError, match="vocabulary: kite$"):
        labelled_ids(cat, f, False, "m", list(LABELS))  # kite is no label at all
    cat.retire_labels([LABELS[1]])
    with pytest.raises(ConfigError, match=f"{LABELS[1]} retired: drop it from the file, or bring it back"):
        labelled_ids(cat, f, False, "m", [LABELS[0]])
