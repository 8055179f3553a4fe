"""Review decisions: `tagger review accept|reject|import|list` record them with who, when and source,
the current run's tags follow at once with provenance 'person', bad input is one line and exit 2,
and the decisions survive a nightly run (a rejected tag stays off, an accepted one stays on, and is
added with the model's score when the run would not have kept it)."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from tagger.catalog import Catalog
from tagger.cli import app
from tagger.report import decisions_document
from tagger.workspace import Workspace

runner = CliRunner()
LABELS = ["cat", "dog", "bird"]


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def current(root: Path) -> dict[tuple[str, str], tuple[bool, str]]:
    with Catalog.open(root / "catalog.duckdb", read_only=True) as cat:
        rows = cat.query("SELECT uri, label, positive, provenance FROM current_tags")
    return {(u, lab): (p, prov) for u, lab, p, prov in rows}


@pytest.fixture
def ws(tmp_path) -> Path:
    """A catalog with four images and one current run (no model: the tags are written directly)."""
    root = tmp_path / "ws"
    with Catalog.open(Workspace.at(root).catalog) as cat:
        ids = [int(i) for i in cat.register_images([f"/img/{n}.jpg" for n in range(4)])]
        cat.add_labels(LABELS, {"cat": ["kitty"]})
        run = cat.start_run("tag", model_id="m", labels=LABELS)
        pq.write_table(pa.table({
            "image_id": pa.array([ids[0], ids[1], ids[2], ids[3]], pa.int64()),
            "label": ["cat", "cat", "dog", "dog"], "score": pa.array([3.0, 1.0, 2.0, 0.5], pa.float32()),
            "positive": [True, False, True, False]}), tmp_path / "t.parquet")
        cat.load_tags(run, tmp_path / "t.parquet")
        cat.finish_run(run)
        cat.set_current(run)
    return root


def test_accept_and_reject_change_the_current_run_with_provenance(ws):
    before = current(ws)
    assert before[("/img/0.jpg", "cat")] == (True, "model")
    out = invoke("review", "reject", "/img/0.jpg", "cat", "--who", "ann", "-w", str(ws), "--json")
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout.splitlines()[-1])["applied"] == 1
    out = invoke("review", "accept", "/img/1.jpg", "cat", "-w", str(ws), "--json")
    assert out.exit_code == 0 and json.loads(out.stdout.splitlines()[-1])["applied"] == 1  # this one, not 2 so far
    again = invoke("review", "accept", "/img/1.jpg", "cat", "-w", str(ws), "--json")
    assert json.loads(again.stdout.splitlines()[-1])["applied"] == 0  # already so
    after = current(ws)
    assert after[("/img/0.jpg", "cat")] == (False, "person")
    assert after[("/img/1.jpg", "cat")] == (True, "person")
    assert after[("/img/2.jpg", "dog")] == (True, "model")
    with Catalog.open(ws / "catalog.duckdb", read_only=True) as cat:
        counts = dict(cat.query("SELECT label, n_pos FROM current_label_counts"))
        assert counts == {"cat": 1, "dog": 1}
        who = cat.query("SELECT who, source FROM reviews WHERE label = 'cat' ORDER BY uri")
    assert who[0] == ("ann", "cli") and who[1][1] == "cli" and who[1][0]
    listed = json.loads(invoke("review", "list", "-w", str(ws), "--json").stdout)
    assert [(r["uri"], r["decision"]) for r in listed] == [("/img/0.jpg", "reject"), ("/img/1.jpg", "accept")]
    # a later decision on the same pair replaces the earlier one
    assert invoke("review", "accept", "/img/0.jpg", "cat", "-w", str(ws)).exit_code == 0
    assert current(ws)[("/img/0.jpg", "cat")] == (True, "person")
    assert len(json.loads(invoke("review", "list", "-w", str(ws), "--json").stdout)) == 2


def test_reviewed_images_become_training_labels(ws):
    """An image a person reviewed is labelled by its current positive tags, decisions applied; an
    image nobody reviewed is not a training image."""
    assert invoke("review", "reject", "/img/0.jpg", "cat", "-w", str(ws)).exit_code == 0
    assert invoke("review", "accept", "/img/1.jpg", "dog", "-w", str(ws)).exit_code == 0
    assert invoke("review", "accept", "/img/2.jpg", "bird", "-w", str(ws)).exit_code == 0
    with Catalog.open(ws / "catalog.duckdb", read_only=True) as cat:
        uri = dict(cat.query("SELECT image_id, uri FROM images"))
        got = {uri[i]: labels for i, labels in cat.reviewed_labels().items()}
    assert got == {"/img/0.jpg": [], "/img/1.jpg": ["dog"], "/img/2.jpg": ["bird", "dog"]}


@pytest.mark.parametrize("args, message", [
    (("accept", "/img/9.jpg", "cat"), "unknown image '/img/9.jpg'"),
    (("reject", "/img/0.jpg", "cow"), "unknown label 'cow'"),
    (("accept", "/img/0.jpg", "Dog"), "unknown label 'Dog' (did you mean 'dog'?)"),
    (("accept", "/img/0.jpg", "Kitty"), "unknown label 'Kitty' (did you mean 'cat'?)"),  # a synonym of cat's
])
def test_unknown_image_or_label_is_one_line_and_exit_2(ws, args, message):
    out = invoke("review", *args, "-w", str(ws))
    assert out.exit_code == 2
    assert out.stderr.startswith("error: ") and message in out.stderr and out.stderr.count("\n") == 1


def test_import_csv_and_the_report_json(ws, tmp_path):
    csv_file = tmp_path / "d.csv"
    csv_file.write_text("uri,label,decision\n/img/2.jpg,dog,reject\n/img/3.jpg,dog,ACCEPT\n")
    out = invoke("review", "import", str(csv_file), "--who", "bob", "-w", str(ws), "--json")
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout.splitlines()[-1])["decisions"] == 2
    assert current(ws)[("/img/3.jpg", "dog")] == (True, "person")
    doc = decisions_document(1, [{"uri": "/img/2.jpg", "label": "dog", "decision": "accept"}])
    (tmp_path / "d.json").write_text(json.dumps(doc))
    assert invoke("review", "import", str(tmp_path / "d.json"), "-w", str(ws)).exit_code == 0
    with Catalog.open(ws / "catalog.duckdb", read_only=True) as cat:
        assert cat.query("SELECT decision, source FROM reviews WHERE uri = '/img/2.jpg'") == [("accept", "report")]
    # all or nothing: one unknown label stores none of the file's decisions
    (tmp_path / "bad.csv").write_text("/img/0.jpg,cat,reject\n/img/1.jpg,cow,accept\n")
    out = invoke("review", "import", str(tmp_path / "bad.csv"), "-w", str(ws))
    assert out.exit_code == 2 and "unknown label 'cow'" in out.stderr
    assert current(ws)[("/img/0.jpg", "cat")] == (True, "model")
    (tmp_path / "short.csv").write_text("/img/0.jpg,cat\n")
    out = invoke("review", "import", str(tmp_path / "short.csv"), "-w", str(ws))
    assert out.exit_code == 2 and "row 1 has 2 column(s)" in out.stderr
    out = invoke("review", "import", str(tmp_path / "missing.csv"), "-w", str(ws))
    assert out.exit_code == 2 and "missing.csv" in out.stderr


def test_the_review_key_changes_with_the_decisions(ws):
    with Catalog.open(ws / "catalog.duckdb") as cat:
        assert cat.review_key() is None
        cat.record_decisions([("/img/0.jpg", "cat", "reject")], who="a", source="cli")
        first = cat.review_key()
        cat.record_decisions([("/img/0.jpg", "cat", "accept")], who="a", source="cli")
        assert first is not None and cat.review_key() not in (None, first)


def test_an_accept_the_run_did_not_keep_shows_at_once_and_a_reject_removes_it(ws, tmp_path):
    """`/img/2.jpg` has no `cat` row in the current run (the run kept only its top tags): an accept adds
    it to current_tags and to an export at once, unscored, with provenance 'person'; a reject then
    takes it off at once."""
    assert ("/img/2.jpg", "cat") not in current(ws)
    out = invoke("review", "accept", "/img/2.jpg", "cat", "-w", str(ws), "--json")
    assert out.exit_code == 0, out.output
    summary = json.loads(out.stdout.splitlines()[-1])
    assert summary["applied"] == 1 and "pending" not in summary, summary
    assert current(ws)[("/img/2.jpg", "cat")] == (True, "person")
    with Catalog.open(ws / "catalog.duckdb", read_only=True) as cat:
        assert cat.query("SELECT score, rank FROM current_tags WHERE uri = '/img/2.jpg' AND label = 'cat'") == \
            [(None, None)]
        assert dict(cat.query("SELECT label, n_pos FROM current_label_counts"))["cat"] == 2
        run = cat.current_run()
        exported = {(r["uri"], r["label"]) for b in cat.tag_batches(run, positive_only=True) for r in b.to_pylist()}
        keywords = {r["uri"]: r["labels"] for b in cat.keyword_batches(run) for r in b.to_pylist()}
    assert ("/img/2.jpg", "cat") in exported and keywords["/img/2.jpg"] == ["dog", "cat"]
    assert invoke("review", "reject", "/img/2.jpg", "cat", "-w", str(ws)).exit_code == 0
    assert current(ws)[("/img/2.jpg", "cat")] == (False, "person")
    with Catalog.open(ws / "catalog.duckdb", read_only=True) as cat:
        assert dict(cat.query("SELECT label, n_pos FROM current_label_counts"))["cat"] == 1


def test_decisions_that_cannot_apply_are_refused_or_reported(ws):
    with Catalog.open(ws / "catalog.duckdb") as cat:
        ids = [int(i) for i in cat.register_images(["/img/broken.jpg", "/img/new.jpg"])]
        cat.update_images(pa.table({"image_id": pa.array(ids[:1], pa.int64()), "status": ["error"],
                                    "error": ["not an image (PIL cannot identify it)"]}))
        cat.add_labels(["fish"])  # added after the current run
        cat.retire_labels(["bird"])
        before = cat.review_decisions()
    for args, message in [
        (("accept", "/img/broken.jpg", "cat"), "image '/img/broken.jpg' could not be decoded (not an image"),
        (("accept", "/img/0.jpg", "bird"), "label 'bird' is retired"),
        (("accept", "", "star"), "empty image URI"),
        (("reject", "  ", "cat"), "empty image URI"),
    ]:
        out = invoke("review", *args, "-w", str(ws))
        assert out.exit_code == 2 and out.stderr.startswith("error: ") and message in out.stderr, (args, out.output)
        assert out.stderr.count("\n") == 1
    with Catalog.open(ws / "catalog.duckdb", read_only=True) as cat:
        assert cat.review_decisions() == before  # nothing stored
    # stored, but the current run does not cover them: said so, with the reason
    out = invoke("review", "accept", "/img/new.jpg", "cat", "-w", str(ws), "--json")
    summary = json.loads(out.stdout.splitlines()[-1])
    assert out.exit_code == 0 and summary["applied"] == 0 and summary["pending"] == 1, summary
    assert "1 of images run 1 did not tag" in summary["pending_why"] and "next tag run" in summary["pending_why"]
    out = invoke("review", "accept", "/img/0.jpg", "fish", "-w", str(ws), "--json")
    summary = json.loads(out.stdout.splitlines()[-1])
    assert summary["pending"] == 1 and "1 of labels run 1 was made without" in summary["pending_why"], summary
    assert ("/img/0.jpg", "fish") not in current(ws)


# -- a real nightly run ----------------------------------------------------------------------------
def _nightly(ws: Path, source: Path) -> dict:
    from raytools import ENV
    cmd = [sys.executable, "-m", "jobs.nightly", "--workspace", str(ws), "--model", "toy-vit",
           "--n-sentences", "300", "--partition-size", "16", "--source", str(source), "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=ENV)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.ray
def test_decisions_survive_a_nightly_run(tmp_path):
    from tagger.toyworld import LABEL_SYNONYMS
    from tagger.toyworld import LABELS as TOY
    from tagger.toyworld.export import export_scenes

    images, ws = tmp_path / "images", tmp_path / "ws"
    export_scenes(images, 8)
    labels = list(TOY[:8])  # more labels than the top-5 kept per image: some pairs have no tag row
    with Catalog.open(Workspace.at(ws).catalog) as cat:
        cat.add_labels(labels, {n: list(LABEL_SYNONYMS[n]) for n in labels})
        cat.set_threshold(labels[0], -1e6)  # every kept tag of this label is positive
    first = _nightly(ws, images)
    with Catalog.open(ws / "catalog.duckdb", read_only=True) as cat:
        rows = cat.query("SELECT uri, label, positive FROM current_tags")
    kept = {(u, lab) for u, lab, _ in rows}
    uris = sorted({u for u, _ in kept})
    rejected = next((u, lab) for u, lab, pos in sorted(rows) if pos and lab == labels[0])
    accepted = next((u, lab) for u in uris for lab in labels if (u, lab) not in kept)
    assert invoke("review", "reject", *rejected, "-w", str(ws)).exit_code == 0
    assert invoke("review", "accept", *accepted, "--who", "ann", "-w", str(ws)).exit_code == 0
    assert current(ws)[rejected] == (False, "person")  # at once in the current run
    assert current(ws)[accepted] == (True, "person")  # at once too, unscored until the next run scores it

    second = _nightly(ws, images)
    assert second["run_id"] != first["run_id"]  # the decisions are inputs of the run
    after = current(ws)
    assert after[rejected] == (False, "person")
    assert after[accepted] == (True, "person")
    with Catalog.open(ws / "catalog.duckdb", read_only=True) as cat:
        score, conf, rank = cat.query("SELECT score, confidence, rank FROM current_tags WHERE uri = ? AND label = ?",
                                      list(accepted))[0]
        n_pos = dict(cat.query("SELECT label, n_pos FROM current_label_counts"))
        n_sql = dict(cat.query("SELECT label, count(*) FILTER (WHERE positive) FROM current_tags GROUP BY 1"))
    assert math.isfinite(score) and rank is None and (conf is None or 0 <= conf <= 1)
    assert n_pos == n_sql  # the run's counts include the decisions
    assert sum(prov == "person" for _, prov in after.values()) == 2


def test_an_unscored_accept_shows_in_the_report_and_the_eval_reads(ws, tmp_path):
    """The report's pages and the catalog evaluation read a run holding a person's unscored accept."""
    from tagger.evaluate.catalog_eval import score_current_tags
    from tagger.report.site import ReportConfig, build_report
    assert invoke("review", "accept", "/img/2.jpg", "cat", "-w", str(ws)).exit_code == 0
    with Catalog.open(ws / "catalog.duckdb", read_only=True) as cat:
        summary = build_report(cat, ws, tmp_path / "report", cfg=ReportConfig(max_images=4))
    assert summary["pages"] >= 3
    page = next((tmp_path / "report").glob("label-*-cat.html")).read_text()
    assert "not scored · person" in page
    truth = {f"/img/{n}.jpg": ["cat"] for n in range(4)}
    assert score_current_tags(ws / "catalog.duckdb", truth)["images_tagged"] == 4


def test_a_csv_header_is_read_by_column_name(ws, tmp_path):
    """A header may list uri, label and decision in any order, with other columns beside them (ignored);
    a header lacking one of the three is one error line naming it, and nothing is recorded."""
    moved = tmp_path / "moved.csv"
    moved.write_text("Label,note,URI,decision\ndog,looks like one,/img/3.jpg,accept\ncat,,/img/0.jpg,reject\n")
    out = invoke("review", "import", str(moved), "-w", str(ws), "--json")
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout.splitlines()[-1])["decisions"] == 2
    assert current(ws)[("/img/3.jpg", "dog")] == (True, "person")
    assert current(ws)[("/img/0.jpg", "cat")] == (False, "person")
    for header, missing in (("label,uri", "decision"), ("uri,decision,verdict", "label"), ("uri,label,uri,decision",
                                                                                            "twice")):
        bad = tmp_path / "bad.csv"
        bad.write_text(f"{header}\n/img/1.jpg,cat,accept\n")
        out = invoke("review", "import", str(bad), "-w", str(ws))
        assert out.exit_code == 2 and out.stderr.startswith("error: ") and out.stderr.count("\n") == 1, out.output
        assert missing in out.stderr and "header" in out.stderr, out.stderr
    (tmp_path / "ragged.csv").write_text("label,uri,decision\ndog,/img/1.jpg\n")
    out = invoke("review", "import", str(tmp_path / "ragged.csv"), "-w", str(ws))
    assert out.exit_code == 2 and "row 1 has 2 column(s)" in out.stderr and "header" in out.stderr, out.stderr
    assert current(ws)[("/img/1.jpg", "cat")] == (False, "model")
