"""Undo after a tag run became current: the pair returns to what a run made without the decision holds."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from tagger.catalog import Catalog
from tagger.catalog.undo import decide, undo_last


def _run(cat, tmp_path, name: str, image_id: int) -> int:
    path = tmp_path / f"{name}.parquet"
    pq.write_table(pa.table({"image_id": pa.array([image_id], pa.int64()), "label": ["star"],
                             "score": pa.array([2.0], pa.float32()), "confidence": pa.array([0.9], pa.float32()),
                             "positive": [True]}), path)
    run = cat.start_run("tag", model_id="m", labels=["star", "moon"], config={"tag": {"top_k": 1, "name": name}})
    cat.save_run_thresholds(run, [{"label": lab, "threshold": 0.0, "present": True, "source": "fit", "mu0": 0.0,
                                   "sd0": 1.0, "mu1": 2.0, "sd1": 1.0, "prior": 0.3} for lab in ("star", "moon")])
    cat.load_tags(run, path)
    return run


def test_undo_after_a_new_run_drops_the_row_only_the_accept_had_added(tmp_path):
    with Catalog.open(tmp_path / "catalog.duckdb") as cat:
        cat.add_labels(["star", "moon"])
        (image_id,) = (int(i) for i in cat.register_images([{"uri": str(tmp_path / "a.jpg")}]))
        first = _run(cat, tmp_path, "first", image_id)
        cat.finish_run(first)
        cat.set_current(first)
        decide(cat, image_id, "moon", "accept", who="tester")  # outside the run's top-1: a row is added
        second = _run(cat, tmp_path, "second", image_id)
        scored = pa.table({"image_id": pa.array([image_id], pa.int64()), "label": ["moon"],
                           "score": pa.array([-1.0], pa.float32())})
        cat.apply_review(second, scored)  # as a tag run scores the accepted pair it did not keep
        cat.finish_run(second)
        cat.set_current(second)
        assert cat.query("SELECT positive, provenance, rank FROM tags WHERE run_id = ? AND label = 'moon'",
                         [second]) == [(True, "person", None)]
        undo_last(cat, image_id, "moon")
        assert cat.query("SELECT count(*) FROM tags WHERE run_id = ? AND label = 'moon'", [second]) == [(0,)]
        assert cat.query("SELECT label FROM tags WHERE run_id = ?", [second]) == [("star",)]
