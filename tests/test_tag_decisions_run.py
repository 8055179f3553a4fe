"""Per-label decisions in real tag runs (local Ray, toy-rn, 256 toy scenes): thresholds and
confidences stored with the run and queried through `tagger sql`, a label that occurs in no image,
thresholds pinned with `tagger labels set` kept by `tagger tag` and `tagger nightly`, and a labelled
calibration file."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tagger.catalog import Catalog
from tagger.cli import app
from tagger.toyworld import LABEL_SYNONYMS, LABELS
from tagger.method.keep import KEEP
from tagger.toyworld.export import export_scenes

pytestmark = pytest.mark.ray
runner = CliRunner()
ABSENT = "saxophone"  # occurs in no toy scene
N_SENTENCES = "4000"


def invoke(*args: str) -> dict:
    """Run a verb with --json; its summary (the last JSON line)."""
    out = runner.invoke(app, [*args, "--json"], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")][-1]


def rows(*args: str) -> list[dict]:
    """A row-listing verb's rows (``--nl``: one JSON object a line)."""
    out = runner.invoke(app, [*args, "--nl"], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def trained(local_ray, tmp_path_factory) -> tuple[Path, dict]:
    """A workspace with 256 encoded toy scenes, the toy labels plus one absent label, and a classifier."""
    base = tmp_path_factory.mktemp("decisions")
    truth = export_scenes(base / "images", 256)
    ws = base / "ws"
    with Catalog.open(ws / "catalog.duckdb") as cat:
        cat.add_labels([*LABELS, ABSENT], {k: list(v) for k, v in LABEL_SYNONYMS.items()})
    invoke("encode", str(base / "images"), "-w", str(ws), "--model", "toy-rn", "--partition-size", "64",
           "--num-gpus", "0")
    invoke("generate-text", "-w", str(ws), "--n-sentences", N_SENTENCES)
    invoke("train", "-w", str(ws))
    return ws, truth


@pytest.fixture
def ws(trained, tmp_path) -> Path:
    shutil.copytree(trained[0], tmp_path / "ws")
    return tmp_path / "ws"


def thresholds(ws: Path, run_id: int) -> dict[str, dict]:
    return {r["label"]: r for r in rows("runs", "show", str(run_id), "-w", str(ws))}


def test_run_stores_thresholds_and_confidences_and_an_absent_label_gets_no_positives(ws):
    old = invoke("tag", "-w", str(ws), "--decision", "standardized")
    new = invoke("tag", "-w", str(ws))
    assert new["run_id"] != old["run_id"] and new["decision"] == "anchored"
    shown = thresholds(ws, new["run_id"])
    assert set(shown) == {*LABELS, ABSENT}
    assert not shown[ABSENT]["present"] and shown[ABSENT]["threshold"] is None
    assert sum(r["present"] for r in shown.values()) >= 1  # the toy classifier separates a few labels
    with Catalog.open(ws / "catalog.duckdb", read_only=True) as cat:
        counts = dict(cat.query("SELECT run_id, n_pos FROM run_label_counts WHERE label = ?", [ABSENT]))
        # every positive reaches its label's stored threshold; every row has a confidence in [0, 1]
        bad = cat.query("SELECT count(*) FROM current_tags AS t JOIN current_thresholds AS h USING (label) "
                        "WHERE t.positive <> coalesce(t.score >= h.threshold, false) "
                        "OR t.confidence IS NULL OR t.confidence NOT BETWEEN 0 AND 1")[0][0]
        old_conf = cat.query("SELECT count(*) FROM tags WHERE run_id = ? AND confidence IS NOT NULL",
                             [old["run_id"]])[0][0]
    assert bad == 0 and old_conf == 0
    assert counts.get(old["run_id"], 0) > 0  # the per-image rule tags a label no image shows ...
    assert counts.get(new["run_id"], 0) == 0  # ... the per-label decision does not
    assert shown[ABSENT]["positives"] == 0
    sure = rows("sql", "SELECT uri, label, confidence FROM current_tags WHERE confidence >= 0.8", "-w", str(ws))
    assert sure and all(r["confidence"] >= 0.8 and r["label"] != ABSENT for r in sure)


def test_pinned_threshold_applied_by_tag_and_still_after_nightly(ws):
    first = invoke("tag", "-w", str(ws))
    with Catalog.open(ws / "catalog.duckdb", read_only=True) as cat:
        pin = round(cat.query("SELECT quantile_cont(score, 0.5) FROM current_tags WHERE label = 'circle'")[0][0], 3)
    assert runner.invoke(app, ["labels", "set", "circle", "--threshold", str(pin), "-w", str(ws)]).exit_code == 0
    pinned = invoke("tag", "-w", str(ws))
    assert pinned["run_id"] != first["run_id"]  # a changed pin makes a new run
    row = thresholds(ws, pinned["run_id"])["circle"]
    assert (row["threshold"], row["source"]) == (pin, "pinned")
    with Catalog.open(ws / "catalog.duckdb", read_only=True) as cat:
        n_over = cat.query("SELECT count(*) FROM current_tags WHERE label = 'circle' AND score >= ?", [pin])[0][0]
        assert row["positives"] == n_over > 0
    runner.invoke(app, ["labels", "set", "star", "--threshold", "5", "-w", str(ws)])
    night = invoke("nightly", "-w", str(ws), "--n-sentences", N_SENTENCES)
    after = thresholds(ws, night["run_id"])
    assert night["run_id"] not in (first["run_id"], pinned["run_id"])
    assert (after["circle"]["threshold"], after["circle"]["source"]) == (pin, "pinned")
    assert (after["star"]["threshold"], after["star"]["source"]) == (5.0, "pinned")
    listed = {r["name"]: r["threshold"] for r in rows("labels", "list", "-w", str(ws))}
    assert listed["circle"] == pin and listed["star"] == 5.0  # the pins outlive the nightly run
    # star pinned out of reach lost its positives: the nightly and `runs diff` list it, with the reason
    (flip,) = [f for f in night["flips"] if f["label"] == "star"]
    assert flip["before_positives"] > 0 == flip["after_positives"] and "threshold" in flip["reason"]
    diff = invoke("runs", "diff", str(pinned["run_id"]), str(night["run_id"]), "-w", str(ws))
    assert [f for f in diff["flips"] if f["label"] == "star"] == [flip]


def test_calibration_file_changes_the_thresholds_it_covers_and_reports_unknown_uris(ws, trained, tmp_path):
    truth = trained[1]
    first_run = invoke("tag", "-w", str(ws))["run_id"]
    first = thresholds(ws, first_run)
    labelled = tmp_path / "labelled.csv"
    lines = ["uri,labels"] + [f"{u},{';'.join(v)}" for u, v in sorted(truth.items())[:40]]
    labelled.write_text("\n".join([*lines, "/nowhere/scene.png,circle"]) + "\n")
    out = runner.invoke(app, ["tag", "-w", str(ws), "--calibrate-with", str(labelled), "--json"],
                        catch_exceptions=False)
    assert out.exit_code == 0, out.output
    assert "/nowhere/scene.png" in out.stderr and "not in the catalog" in out.stderr
    summary = json.loads([ln for ln in out.stdout.splitlines() if ln.startswith("{")][-1])
    assert summary["calibration"]["unknown_uris"] == ["/nowhere/scene.png"]
    assert summary["calibration"]["images"] == 40
    after = thresholds(ws, summary["run_id"])
    covered = {lab for lab in LABELS
               if 2 <= sum(lab in v for v in list(dict(sorted(truth.items())[:40]).values())) <= 38}
    assert covered and {lab for lab, r in after.items() if r["source"] == "labelled"} == covered
    with Catalog.open(ws / "catalog.duckdb", read_only=True) as cat:
        fit = {r["label"]: r for r in cat.run_thresholds(first_run)}
        refit = {r["label"]: r for r in cat.run_thresholds(summary["run_id"])}
    # each covered label's components come from its labelled images; most thresholds move with them
    assert all(refit[lab]["mu1"] != fit[lab]["mu1"] and refit[lab]["present"] for lab in covered)
    assert sum(after[lab]["threshold"] != first[lab]["threshold"] for lab in covered) >= len(covered) // 2
    assert after[ABSENT] == first[ABSENT]  # no labelled image shows it: its fit is unchanged
    # the labelled set lives in the catalog: a later run without the file still uses it
    again = thresholds(ws, invoke("tag", "-w", str(ws), "--top-k", "3")["run_id"])
    assert {lab for lab, r in again.items() if r["source"] == "labelled"} == covered


def test_a_retrain_whose_fit_collapses_an_unchanged_label_holds_its_positives(ws, monkeypatch):
    """The second tag run's fit loses `arrow` (its prior collapsed, as an unrelated edit's retrain did:
    40 positives -> 0): arrow, unchanged since the current run, is held to the positives it had there."""
    from tagger.pipeline import tag as tag_module
    first = invoke("tag", "-w", str(ws))
    had = thresholds(ws, first["run_id"])
    label = max((n for n in LABELS if had[n]["present"]), key=lambda n: had[n]["positives"])
    real = tag_module.fit_run_decisions

    def collapsing(sample, labels, *args, **kw):
        d, refit = real(sample, labels, *args, **kw)
        j = labels.index(label)
        d.present[j], d.prior[j], d.reasons[j] = False, 1e-4, "no sample image reaches its threshold"
        return d, refit

    monkeypatch.setattr(tag_module, "fit_run_decisions", collapsing)
    second = invoke("tag", "-w", str(ws), "--top-k", "4")  # another run (the same settings would resume the first)
    assert second["run_id"] != first["run_id"]
    now = thresholds(ws, second["run_id"])[label]
    assert now["present"], now["reason"]
    assert KEEP * had[label]["positives"] <= now["positives"] <= had[label]["positives"] / KEEP
    assert f"unchanged since run {first['run_id']}" in now["reason"]
    assert not thresholds(ws, second["run_id"])[ABSENT]["present"]
