"""The carried nightly: no label changed, a few images added or review decisions made since. The new
run keeps the current run's tags and decisions, tags only the new images with them, and a nightly
killed anywhere reruns to the same tags; many new images, or a decision under a hierarchy, tag every
image again (one Ray for the module)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tagger.catalog import Catalog
from tagger.errors import SimulatedCrash
from tagger.pipeline.encode import EncodeConfig
from tagger.pipeline.nightly import CRASH_POINTS, NightlyConfig, run_nightly
from tagger.pipeline.raycluster import ray_session
from tagger.toyworld import LABEL_SYNONYMS, LABELS
from tagger.toyworld.export import export_scenes
from tagger.workspace import Workspace

pytestmark = pytest.mark.ray
ENC = EncodeConfig(model="toy-vit", partition_size=16)
CFG = NightlyConfig(n_sentences=3000)
N = 48
COLS = "i.uri, t.label, t.score, t.rank, t.positive, t.confidence, t.provenance"


def tags(ws: Path, run_id: int) -> list[tuple]:
    with Catalog.open(ws / "catalog.duckdb", read_only=True) as cat:
        return cat.query(f"SELECT {COLS} FROM tags AS t JOIN images AS i USING (image_id) "
                         "WHERE t.run_id = ? ORDER BY 1, 2", [run_id])


@pytest.fixture(scope="module")
def ray():
    with ray_session() as r:
        yield r


@pytest.fixture(scope="module")
def tagged(ray, tmp_path_factory) -> tuple[Path, int]:
    """A workspace of 48 toy images tagged in full with the 20 toy labels; returns it and its run."""
    root = tmp_path_factory.mktemp("carried")
    export_scenes(root / "images", N)
    ws = Workspace.at(root / "ws")
    with Catalog.open(ws.catalog) as cat:
        cat.add_labels(list(LABELS), {n: list(LABEL_SYNONYMS[n]) for n in LABELS})
    first = run_nightly(ws, str(root / "images"), ENC, CFG)
    assert first["mode"] == "full"
    return ws.root, first["run_id"]


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_new_images_are_tagged_with_the_current_decisions_and_the_rest_carried(tagged, tmp_path):
    src, base = tagged
    ws = _copy(src, tmp_path / "ws")
    export_scenes(tmp_path / "more", 4, start=N)  # under 10 % of the run's images
    out = run_nightly(Workspace.at(ws), str(tmp_path / "more"), ENC, CFG)
    assert (out["mode"], out["encoded"]) == ("unchanged", 4)
    assert "4 images added" in out["mode_reason"] and "carried over" in out["mode_reason"]
    before, after = tags(ws, base), tags(ws, out["run_id"])
    old = {r[0] for r in before}
    assert [r for r in after if r[0] in old] == before  # every old image's tags as they were
    new = {r[0] for r in after} - old
    assert len(new) == 4
    with Catalog.open(ws / "catalog.duckdb", read_only=True) as cat:
        run = cat.get_run(out["run_id"])
        stored = {r["label"]: r for r in cat.run_thresholds(out["run_id"])}
        kept = {r["label"]: r for r in cat.run_thresholds(base)}
    assert (run.mode, run.base_run, run.status) == ("carried", base, "current")
    assert {n: r["threshold"] for n, r in stored.items()} == {n: r["threshold"] for n, r in kept.items()}
    for uri, label, score, _, positive, _, _ in after:  # the new images decided by the same thresholds
        if uri in new and kept[label]["present"]:
            assert positive == (score >= kept[label]["threshold"]), (uri, label, score)
    assert any(r[4] for r in after if r[0] in new)
    assert len(list((ws / "runs" / str(out["run_id"])).glob("tags-*.parquet"))) == \
        len(list((ws / "runs" / str(base)).glob("tags-*.parquet"))) + 1
    # nothing new since: the carried run stays
    again = run_nightly(Workspace.at(ws), None, ENC, CFG)
    assert (again["mode"], again["run_id"]) == ("unchanged", out["run_id"])


def test_a_carried_nightly_killed_anywhere_reruns_to_the_same_tags(tagged, tmp_path):
    src, _ = tagged
    export_scenes(tmp_path / "more", 4, start=N)
    clean, crashed = _copy(src, tmp_path / "clean"), _copy(src, tmp_path / "crashed")
    want = run_nightly(Workspace.at(clean), str(tmp_path / "more"), ENC, CFG)
    for point in CRASH_POINTS:
        with pytest.raises(SimulatedCrash):
            run_nightly(Workspace.at(crashed), str(tmp_path / "more"), ENC, CFG, crash_at=point)
    got = run_nightly(Workspace.at(crashed), str(tmp_path / "more"), ENC, CFG)
    assert tags(crashed, got["run_id"]) == tags(clean, want["run_id"])
    with Catalog.open(crashed / "catalog.duckdb", read_only=True) as cat:
        runs = cat.runs(kind="tag")
    assert [r.status for r in runs].count("current") == 1 and "running" not in [r.status for r in runs]
    assert runs[-1].mode == "carried"


def test_a_review_decision_is_scored_in_a_carried_run(tagged, tmp_path):
    src, base = tagged
    ws = _copy(src, tmp_path / "ws")
    before = tags(ws, base)
    kept = {(r[0], r[1]) for r in before}
    uri = before[0][0]
    label = next(n for n in LABELS if (uri, n) not in kept)
    with Catalog.open(ws / "catalog.duckdb") as cat:
        cat.record_decisions([(uri, label, "accept")], who="ann", source="cli")
    out = run_nightly(Workspace.at(ws), None, ENC, CFG)
    assert out["mode"] == "unchanged" and out["run_id"] != base
    after = {(r[0], r[1]): r for r in tags(ws, out["run_id"])}
    score, rank, positive, provenance = (after[uri, label][k] for k in (2, 3, 4, 6))
    assert score is not None and rank is None and positive and provenance == "person"
    assert {k: r for k, r in after.items() if k != (uri, label)} == {(r[0], r[1]): r for r in before}
    with Catalog.open(ws / "catalog.duckdb", read_only=True) as cat:
        assert cat.get_run(out["run_id"]).mode == "carried"


def test_many_new_images_tag_every_image_again(tagged, tmp_path):
    src, base = tagged
    ws = _copy(src, tmp_path / "ws")
    export_scenes(tmp_path / "more", 8, start=N)  # over 10 % of the run's 48
    out = run_nightly(Workspace.at(ws), str(tmp_path / "more"), ENC, CFG)
    assert out["mode"] == "unchanged" and "more than 10%" in out["mode_reason"]
    with Catalog.open(ws / "catalog.duckdb") as cat:
        assert cat.get_run(out["run_id"]).mode == "full"


def test_a_decision_under_a_hierarchy_re_tags_only_its_image(tagged, tmp_path):
    """An accepted child raises its parent in a carried run, a withdrawn one no longer does; every other
    image keeps its tags (the nightly tagged every image again for it)."""
    from tagger.catalog.undo import decide, undo_last
    src, _ = tagged
    ws = _copy(src, tmp_path / "ws")
    child, parent = LABELS[0], LABELS[1]
    with Catalog.open(ws / "catalog.duckdb") as cat:
        cat.add_parents(child, parent)
    edit = run_nightly(Workspace.at(ws), None, ENC, CFG)  # the parent edit itself (its parent trained again)
    before = tags(ws, edit["run_id"])
    quiet = next(u for u in sorted({r[0] for r in before})
                 if not any(r[0] == u and r[1] in (child, parent) and r[4] for r in before))
    with Catalog.open(ws / "catalog.duckdb") as cat:
        image_id = cat.query("SELECT image_id FROM images WHERE uri = ?", [quiet])[0][0]
        decide(cat, image_id, child, "accept", who="ann")
    out = run_nightly(Workspace.at(ws), None, ENC, CFG)
    assert (out["mode"], out["run_id"] != edit["run_id"]) == ("unchanged", True), out["mode_reason"]
    assert "tagged again" in out["mode_reason"]
    after = tags(ws, out["run_id"])
    with Catalog.open(ws / "catalog.duckdb") as cat:
        assert cat.get_run(out["run_id"]).mode == "carried"
    assert [r for r in after if r[0] != quiet] == [r for r in before if r[0] != quiet]
    assert any(r[:2] == (quiet, parent) and r[4] for r in after)
    with Catalog.open(ws / "catalog.duckdb") as cat:
        undo_last(cat, image_id, child)
    again = run_nightly(Workspace.at(ws), None, ENC, CFG)
    with Catalog.open(ws / "catalog.duckdb") as cat:
        assert cat.get_run(again["run_id"]).mode == "carried"
    now = tags(ws, again["run_id"])
    assert [r for r in now if r[0] != quiet] == [r for r in before if r[0] != quiet]
    mine = [(r[1], r[3], r[4]) for r in now if r[0] == quiet]  # the image scored alone: the same to float error
    assert mine == [(r[1], r[3], r[4]) for r in before if r[0] == quiet]
    np.testing.assert_allclose([r[2] for r in now if r[0] == quiet], [r[2] for r in before if r[0] == quiet],
                               rtol=1e-5)
    # an incremental nightly (a label retired) carries the parent's tags and re-tags the reviewed image too
    with Catalog.open(ws / "catalog.duckdb") as cat:
        decide(cat, image_id, child, "accept", who="ann")
        cat.retire_labels([LABELS[5]])
    inc = run_nightly(Workspace.at(ws), None, ENC, CFG)
    assert inc["mode"] == "incremental" and parent not in inc["vocabulary"].get("hierarchy_refit", [])
    assert any(r[:2] == (quiet, parent) and r[4] for r in tags(ws, inc["run_id"]))
