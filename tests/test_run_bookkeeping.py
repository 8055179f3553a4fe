"""Run bookkeeping (issue 11, defect 9): pruned runs lose their folders, killed runs are marked
failed, ``--keep-runs`` counts the current run, images wait as 'pending' until encoded, error rows
have no size, a crash's unrecorded shards are reused, and ``--top-k`` says positives are kept too.

Real DuckDB catalogs, real files and real processes; only the last test starts Ray."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import typer
from imagecases import write_cases
from typer.testing import CliRunner

from tagger.catalog import Catalog
from tagger.catalog.migrations import apply_migrations
from tagger.cli import app
from tagger.errors import CatalogError
from tagger.models.pixels import PixelSpec
from tagger.pipeline import decode, encode
from tagger.pipeline.decode import Decoder, DecodePartitions
from tagger.pipeline.tag import TagConfig, _resume_or_start
from tagger.store.shards import write_shard
from tagger.workspace import Workspace

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"
README = Path(__file__).resolve().parents[1] / "README.md"
MODEL = "m"


@pytest.fixture
def ws(tmp_path) -> Workspace:
    return Workspace.at(tmp_path / "ws")


def _tag_file(path: Path, image_id: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"image_id": pa.array([image_id], pa.int64()), "label": ["cat"],
                             "score": pa.array([0.9], pa.float32())}), path)
    return path


def _tag_runs(ws: Workspace, cat: Catalog, n: int) -> list[int]:
    """``n`` tag runs, each loaded from its own runs/<id>/ folder and made current in turn."""
    (image_id,) = cat.register_images(["/i/1.jpg"])
    runs = []
    for _ in range(n):
        run_id = cat.start_run("tag")
        cat.load_tags(run_id, [_tag_file(ws.run_dir(str(run_id)) / "tags-s.parquet", int(image_id))])
        cat.finish_run(run_id)
        cat.set_current(run_id)
        runs.append(run_id)
    return runs


# -- pruning deletes the pruned runs' folders ----------------------------------------------------
def test_pruning_deletes_the_folders_of_pruned_runs(ws):
    from tagger.pipeline.nightly import prune_runs
    with Catalog.open(ws.catalog) as cat:
        runs = _tag_runs(ws, cat, 4)
        assert prune_runs(ws, cat, keep=2) == runs[:2]
        assert [ws.run_dir(str(r)).exists() for r in runs] == [False, False, True, True]
        # a folder a killed prune left behind (catalog committed, folder not yet deleted) goes next time
        _tag_file(ws.run_dir(str(runs[0])) / "tags-s.parquet", 1)
        assert prune_runs(ws, cat, keep=2) == []
        assert not ws.run_dir(str(runs[0])).exists() and ws.run_dir(str(runs[2])).exists()


# -- --keep-runs counts the current run ----------------------------------------------------------
def test_keep_runs_one_keeps_only_the_current_run(ws):
    with Catalog.open(ws.catalog) as cat:
        runs = _tag_runs(ws, cat, 3)
        assert cat.prune_runs(keep=1) == runs[:2]
        assert {r for (r,) in cat.query("SELECT DISTINCT run_id FROM tags")} == {runs[-1]}
        assert cat.current_run() == runs[-1]
        with pytest.raises(CatalogError, match=">= 1"):
            cat.prune_runs(keep=0)
    option = _option("nightly", "keep_runs")
    assert option.min == 1 and "current one included" in " ".join(option.help.split())


# -- a killed run is marked failed when the next tag job starts ---------------------------------
def _killed_tag_run(ws: Workspace) -> int:
    """A process that starts a tag run and dies (os._exit) without finishing it: its run id."""
    code = textwrap.dedent(f"""
        import os
        from tagger.catalog import Catalog
        with Catalog.for_job({str(ws.catalog)!r}, "tag") as cat:
            print(cat.start_run("tag", model_id="m", classifier_id="c", config={{"tag": {{"top_k": 9}}}}),
                  flush=True)
            os._exit(9)
        """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 9, out.stderr
    return int(out.stdout.strip())


def test_a_killed_run_is_marked_failed_when_a_later_tag_job_starts(ws):
    killed = _killed_tag_run(ws)
    with Catalog.open(ws.catalog, read_only=True) as cat:
        assert cat.get_run(killed).status == "running"
    with Catalog.for_job(ws.catalog, "tag") as cat:  # a later tag run with other settings
        new, status = _resume_or_start(cat, "m", "c", ["cat"], TagConfig(top_k=3), "0:x", None)
    assert status == "running" and new != killed
    with Catalog.open(ws.catalog, read_only=True) as cat:
        run = cat.get_run(killed)
    assert run.status == "failed" and run.finished_at is not None
    assert run.error == "abandoned: the process that ran it ended"
    out = CliRunner().invoke(app, ["runs", "list", "-w", str(ws.root), "--json"], catch_exceptions=False)
    listed = {r["run_id"]: r for r in json.loads(out.stdout)}
    assert (listed[killed]["status"], listed[killed]["error"]) == ("failed", run.error)
    assert listed[new]["status"] == "interrupted"  # the job that started it has ended (its lock is free)
    with Catalog.open(ws.catalog) as cat, pytest.raises(CatalogError, match="job lock"):
        cat.abandon_runs()  # without the job lock another job may still be running a run


def test_a_killed_run_with_the_same_settings_is_resumed_not_abandoned(ws):
    with Catalog.for_job(ws.catalog, "tag") as cat:
        old = cat.start_run("tag", model_id="m", classifier_id="c")  # left behind by an older setting
        cfg = TagConfig(top_k=3)
        first, _ = _resume_or_start(cat, "m", "c", ["cat"], cfg, "0:x", None)
        again, status = _resume_or_start(cat, "m", "c", ["cat"], cfg, "0:x", None)  # the killed run's rerun
        assert (again, status) == (first, "running")
        assert [(r.run_id, r.status) for r in cat.runs()] == [(old, "failed"), (first, "running")]


# -- images are 'pending' until encoded ----------------------------------------------------------
def test_registered_images_are_pending_until_encoded(ws):
    with Catalog.open(ws.catalog) as cat:
        a, b = (int(i) for i in cat.register_images(["/i/a.jpg", "/i/b.jpg"]))
        assert cat.query("SELECT status FROM images ORDER BY image_id") == [("pending",), ("pending",)]
        assert [i for i, _ in cat.pending_images(MODEL)] == [a, b]
        cat.update_images({"image_id": [a], "content_hash": ["h1"], "width": [4], "height": [3],
                           "status": ["ok"], "error": [""]})
        cat.record_encodings([a], MODEL, ["h1"], "shard-1")
        cat.mark_errors([b], "not an image")
        assert cat.query("SELECT image_id, status FROM images ORDER BY 1") == [(a, "ok"), (b, "error")]
        assert cat.pending_images(MODEL) == []
        cat.register_images([{"uri": "/i/a.jpg", "content_hash": "h2"}])  # its content changed
        assert cat.query("SELECT status FROM images WHERE image_id = ?", [a]) == [("pending",)]
        assert [i for i, _ in cat.pending_images(MODEL)] == [a]
        cat.record_encodings([a], MODEL, ["h2"], "shard-2")  # e.g. a manifest gave the hash
        assert cat.query("SELECT status FROM images WHERE image_id = ?", [a]) == [("ok",)]


def test_the_migration_marks_unencoded_images_pending_and_error_rows_sizeless(tmp_path):
    old_schemas = tmp_path / "schemas"
    old_schemas.mkdir()
    for f in sorted(SCHEMAS.glob("00[1-4]_*.sql")):
        shutil.copy(f, old_schemas / f.name)
    path = tmp_path / "catalog.duckdb"
    con = duckdb.connect(str(path))  # a catalog as the code before 005 wrote it
    apply_migrations(con, old_schemas)
    con.execute("INSERT INTO images (image_id, uri, content_hash, width, height, status, error) VALUES "
                "(1, '/i/enc.jpg', 'h', 4, 3, 'ok', NULL), (2, '/i/new.jpg', NULL, NULL, NULL, 'ok', NULL), "
                "(3, '/i/changed.jpg', 'h3new', 5, 5, 'ok', NULL), (4, '/i/bad.jpg', 'hb', 64, 48, 'error', 'truncated')")
    con.execute("INSERT INTO encodings (image_id, model_id, content_hash, shard) VALUES (1, 'm', 'h', 's'), "
                "(3, 'm', 'h3old', 's')")
    con.execute("UPDATE settings SET value = '5' WHERE key = 'next_image_id'")
    con.close()
    with Catalog.open(path) as cat:
        rows = cat.query("SELECT image_id, status, width, height, error FROM images ORDER BY 1")
        assert rows == [(1, "ok", 4, 3, None), (2, "pending", None, None, None), (3, "pending", 5, 5, None),
                        (4, "error", None, None, "truncated")]
        assert cat.query("SELECT count(*) FROM current_tags") == [(0,)]  # the views still read images
        assert [i for i, _ in cat.pending_images("m")] == [2, 3]
        assert list(cat.register_images(["/i/later.jpg"])) == [5]
        assert cat.query("SELECT status FROM images WHERE image_id = 5") == [("pending",)]


# -- an image that fails to decode has no size ---------------------------------------------------
def test_a_truncated_image_error_row_has_no_width_or_height(ws, tmp_path):
    files = write_cases(tmp_path / "images")
    with Catalog.open(ws.catalog) as cat:
        ids = cat.register_images([files["good.jpg"], files["truncated.jpg"]])
        out = Decoder(size=32)({"image_id": ids, "uri": np.array([files["good.jpg"], files["truncated.jpg"]])})
        assert list(out["status"]) == ["ok", "error"] and out["width"][1] > 0  # the header had a size
        row = {"partition": "p", "image_ids": ids, **{k: out[k] for k in
                                                      ("status", "error", "content_hash", "width", "height")}}
        assert encode._record(cat, row, MODEL) == (1, 1)
        rows = cat.query("SELECT status, width, height FROM images ORDER BY image_id")
    assert rows == [("ok", 120, 90), ("error", None, None)]


# -- a crash's written but unrecorded shard is reused ---------------------------------------------
def _partition_batch(parts: list[dict]) -> dict[str, np.ndarray]:
    col = {k: np.empty(len(parts), dtype=object) for k in parts[0]}
    for i, part in enumerate(parts):
        for k, v in part.items():
            col[k][i] = v
    return col


def test_a_shard_written_but_not_recorded_is_reused_not_decoded_again(ws, tmp_path, monkeypatch):
    files = write_cases(tmp_path / "images")
    names = ["good.jpg", "good.PNG", "truncated.jpg", "grey.jpg"]
    with Catalog.open(ws.catalog) as cat:
        cat.register_images([files[n] for n in names])
        parts = encode.plan_partitions(cat.pending_images(MODEL), 8)
        ids = cat.image_ids([files[n] for n in names])
        ok_ids = np.array(sorted(ids[files[n]] for n in names if n != "truncated.jpg"))
        # a crashed run wrote the shard of the partition's good images ...
        write_shard(ws.root, MODEL, parts[0]["partition"], ok_ids, np.ones((3, 4), np.float32))
        # ... and died before the catalog recorded it: a rerun plans the same partition
        parts = encode.plan_partitions(cat.pending_images(MODEL), 8)
        assert encode.mark_reusable(parts, str(ws.root), MODEL) == 1
        assert list(parts[0]["reuse_ids"]) == list(ok_ids)
        decoded = []
        real = decode.decode_one
        monkeypatch.setattr(decode, "decode_one", lambda data, **kw: decoded.append(len(data)) or real(data, **kw))
        out = DecodePartitions(PixelSpec(image_size=32))(_partition_batch(parts))
        assert len(decoded) == 1  # only the image the shard lacks (truncated.jpg) is decoded
        row = {k: out[k][0] for k in ("partition", "image_ids", "status", "error", "content_hash", "width", "height")}
        assert encode._record(cat, row, MODEL) == (3, 1)
        assert cat.pending_images(MODEL) == []
        assert cat.shards_of(MODEL, ok_ids.tolist()) == [(int(i), parts[0]["partition"]) for i in ok_ids]
        got = cat.query("SELECT uri, content_hash, width, height, status FROM images ORDER BY image_id")
    uris = sorted(files[n] for n in names)  # image ids follow the URIs
    fresh = Decoder(size=32)({"image_id": np.arange(4), "uri": np.array(uris)})
    want = [(u, fresh["content_hash"][i], int(fresh["width"][i]), int(fresh["height"][i]), fresh["status"][i])
            if fresh["status"][i] == "ok" else (u, fresh["content_hash"][i], None, None, "error")
            for i, u in enumerate(uris)]
    assert got == want  # as a clean run records them


# -- --top-k says positives beyond it are kept -----------------------------------------------------
def _option(verb: str, name: str):
    command = typer.main.get_command(app).commands[verb]
    return next(p for p in command.params if p.name == name)


def test_top_k_help_says_positives_beyond_it_are_kept():
    help_text = " ".join(_option("tag", "top_k").help.split())
    assert "positive" in help_text and "more than K" in help_text
    readme = " ".join(README.read_text(encoding="utf-8").split())
    assert "top-k labels plus every *positive*" in readme


# -- the whole encode job reuses unrecorded shards -------------------------------------------------
@pytest.mark.ray
def test_encode_reuses_the_shards_a_crashed_run_left_unrecorded(tmp_path, local_ray):
    import open_clip
    import torch

    from tagger.models.registry import register_configs
    from tagger.store import list_done_shards

    register_configs()
    torch.manual_seed(0)
    ckpt = tmp_path / "toy-vit-random.pt"
    torch.save(open_clip.create_model("toy-vit").state_dict(), ckpt)
    cfg = encode.EncodeConfig(model="toy-vit", pretrained=str(ckpt), partition_size=4)
    folder = tmp_path / "images"
    write_cases(folder)
    clean, crashed = Workspace.at(tmp_path / "clean"), Workspace.at(tmp_path / "crashed")
    first = encode.run_encode(clean, str(folder), cfg, progress=False)
    assert first["reused_shards"] == 0 and first["partitions"] > 1
    # a crashed run: every shard written and done, nothing recorded in its catalog
    shutil.copytree(clean.root / "embeddings", crashed.root / "embeddings")
    model_id = first["model_id"]
    shards = list_done_shards(crashed.root, model_id)
    again = encode.run_encode(crashed, str(folder), cfg, progress=False)
    assert again["reused_shards"] == len(shards) and again["partitions"] == first["partitions"]
    assert list_done_shards(crashed.root, model_id) == shards
    snap = []
    for w in (clean, crashed):
        with Catalog.open(w.catalog, read_only=True) as cat:
            snap.append((cat.query("SELECT image_id, uri, content_hash, status, error, width, height FROM images "
                                   "ORDER BY image_id"),
                         cat.query("SELECT image_id, content_hash, shard FROM encodings ORDER BY image_id")))
    assert snap[0] == snap[1]
    assert (again["encoded"], again["errors"]) == (first["encoded"], first["errors"])


# -- pruning deletes the states of trainings not resumed since the oldest kept run ---------------
def test_pruning_deletes_states_of_abandoned_trainings_only(ws):
    import os
    from datetime import timezone
    from tagger.pipeline.nightly import prune_runs
    with Catalog.open(ws.catalog) as cat:
        runs = _tag_runs(ws, cat, 3)
        stale, recent = ws.train_checkpoint("aaa"), ws.train_checkpoint("bbb")
        for path in (stale, recent):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"state")
        started = {r.run_id: r.started_at.replace(tzinfo=timezone.utc) for r in cat.runs(kind="tag")}
        kept_start = started[runs[1]].timestamp()  # the oldest run keep=2 keeps (naive UTC in the catalog)
        os.utime(stale, (kept_start - 3600, kept_start - 3600))  # written an hour before the oldest kept run
        assert ws.training_states() == [stale, recent]
        failed = cat.start_run("tag")  # an abandoned run, older than the state: pruning does not count it
        cat.query("UPDATE runs SET status = 'failed', started_at = started_at - INTERVAL 2 HOUR WHERE run_id = ?",
                  [failed])
        assert prune_runs(ws, cat, keep=2) == runs[:1]
        assert not stale.exists() and recent.exists()
        assert ws.training_states() == [recent]
