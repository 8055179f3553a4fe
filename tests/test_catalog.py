"""Catalog: migrations, image identity, labels, runs/tags, read-only access and the write lock."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tagger.catalog import Catalog, check_read_only, load_migrations
from tagger.errors import CatalogError, CatalogLockedError, ReadOnlyQueryError

NASTY = ["it's", 'say "cheese"', "'; DROP TABLE labels; --", "Straße ☕ 猫", "a\\b%_", "🙂 emoji"]


@pytest.fixture
def path(tmp_path):
    return tmp_path / "ws" / "catalog.duckdb"


@pytest.fixture
def cat(path):
    with Catalog.open(path) as c:
        yield c


def _tags(tmp_path, name, rows):
    """Write a tag shard from (image_id, label, score) rows."""
    p = tmp_path / name
    ids, labels, scores = zip(*rows) if rows else ((), (), ())
    pq.write_table(pa.table({"image_id": pa.array(ids, pa.int64()), "label": pa.array(labels, pa.string()),
                             "score": pa.array(scores, pa.float32()),
                             "positive": pa.array([s > 0.5 for s in scores], pa.bool_())}), p)
    return p


# -- migrations ----------------------------------------------------------------------------------
def test_migrations_recorded_and_idempotent(path):
    names = [m.name for m in load_migrations()]
    assert names == sorted(names) and names[0].startswith("001_")
    with Catalog.open(path) as c:
        rows = c.query("SELECT name FROM schema_migrations ORDER BY name")
        assert [r[0] for r in rows] == names
        c.register_images(["/x/a.jpg"])
    with Catalog.open(path) as c:  # reopening applies nothing and keeps data
        assert c.query("SELECT count(*) FROM schema_migrations")[0][0] == len(names)
        assert c.query("SELECT uri FROM images") == [("/x/a.jpg",)]
        tables = {r[0] for r in c.query("SELECT table_name FROM information_schema.tables")}
    assert {"images", "encodings", "labels", "text_corpora", "classifiers", "runs", "tags",
            "current_run", "current_tags", "run_label_counts", "current_label_counts", "schema_migrations"} <= tables


def test_failed_migration_rolls_back(tmp_path):
    schemas = tmp_path / "schemas"
    schemas.mkdir()
    (schemas / "001_ok.sql").write_text("CREATE TABLE a (x INTEGER);")
    (schemas / "002_bad.sql").write_text("CREATE TABLE b (x INTEGER); SELECT * FROM no_such_table;")
    db = tmp_path / "c.duckdb"
    with pytest.raises(CatalogError, match="002_bad.sql"):
        Catalog.open(db, schema_dir=schemas)
    (schemas / "002_bad.sql").write_text("CREATE TABLE b (x INTEGER);")
    with Catalog.open(db, schema_dir=schemas) as c:  # b was rolled back, so it can be created now
        assert [r[0] for r in c.query("SELECT name FROM schema_migrations ORDER BY 1")] == \
            ["001_ok.sql", "002_bad.sql"]


# -- images --------------------------------------------------------------------------------------
def test_stable_ids_and_incremental_pending(cat):
    ids = cat.register_images([("/d/b.jpg", 20), ("/d/a.jpg", 10), ("/d/c.jpg", 30)])
    assert list(ids) == [2, 1, 3]  # assigned in URI order, returned in input order
    assert [u for _, u in cat.pending_images("m1")] == ["/d/a.jpg", "/d/b.jpg", "/d/c.jpg"]
    cat.record_encodings([1, 2, 3], "m1", ["h1", "h2", "h3"], "shard-0")
    assert cat.pending_images("m1") == []
    assert len(cat.pending_images("m2")) == 3  # other model: everything pending

    again = cat.register_images(pa.table({"uri": ["/d/e.jpg", "/d/c.jpg", "/d/a.jpg"], "size": [5, 30, 10]}))
    assert list(again) == [4, 3, 1]  # known ids never change, new one gets the next id
    assert cat.pending_images("m1") == [(4, "/d/e.jpg")]

    cat.register_images([{"uri": "/d/b.jpg", "size": 21}])  # content changed (size)
    cat.register_images([{"uri": "/d/c.jpg", "content_hash": "h3-new"}])  # content changed (hash)
    assert cat.pending_images("m1") == [(2, "/d/b.jpg"), (3, "/d/c.jpg"), (4, "/d/e.jpg")]
    assert cat.register_images(["/d/b.jpg"])[0] == 2

    cat.mark_errors([4], "decode failed: truncated")
    assert (4, "/d/e.jpg") not in cat.pending_images("m1")
    assert cat.query("SELECT status, error FROM images WHERE image_id = 4") == [("error", "decode failed: truncated")]


def test_an_edit_in_place_that_keeps_the_size_is_seen_by_its_modification_time(cat):
    ids = cat.register_images([("/d/a.bmp", 100, 1_000), ("/d/b.bmp", 100, 1_000), ("/d/old.bmp", 50)])
    cat.record_encodings(list(ids), "m1", ["ha", "hb", "hold"], "shard-0")
    assert cat.pending_images("m1") == []
    cat.register_images([("/d/a.bmp", 100, 1_000), ("/d/b.bmp", 100, 2_000), ("/d/old.bmp", 50, 7_000)])
    assert cat.pending_images("m1") == [(2, "/d/b.bmp")]  # same size, later time: read again
    # a row listed before times were kept gets its time without being read again, then compares
    assert cat.query("SELECT modified_ns FROM images WHERE uri = '/d/old.bmp'") == [(7_000,)]
    cat.register_images([("/d/a.bmp", 100), {"uri": "/d/a.bmp", "content_hash": "ha", "modified_ns": 5}])
    assert cat.pending_images("m1") == [(2, "/d/b.bmp")]  # no time, or the same hash: unchanged
    cat.register_images([("/d/old.bmp", 50, 8_000)])
    assert [u for _, u in cat.pending_images("m1")] == ["/d/b.bmp", "/d/old.bmp"]


def test_an_image_that_could_not_be_read_is_read_again_when_listed_again(cat):
    ids = cat.register_images([("/d/gone.jpg", None), ("/d/bad.jpg", 10), ("/d/locked.jpg", 12), ("/d/big.jpg", 9)])
    cat.mark_errors(list(ids), ["read failed: cannot read /d/gone.jpg: No such file or directory",
                                "not an image, or an unsupported or corrupt format (PIL cannot identify it)",
                                "read failed: cannot read /d/locked.jpg: Permission denied",
                                "read failed: /d/big.jpg is 9 bytes, over the per-image limit of 8 bytes"])
    assert cat.pending_images("m1") == []
    cat.register_images([("/d/bad.jpg", 10)])  # a file that did not decode, unchanged: stays an error
    assert cat.pending_images("m1") == []
    cat.register_images([("/d/gone.jpg", 40), ("/d/bad.jpg", 10), ("/d/locked.jpg", 12), ("/d/big.jpg", 9)])
    assert [u for _, u in cat.pending_images("m1")] == ["/d/gone.jpg", "/d/locked.jpg"]
    assert cat.query("SELECT uri, status, error FROM images ORDER BY uri")[0] == \
        ("/d/bad.jpg", "error", "not an image, or an unsupported or corrupt format (PIL cannot identify it)")


def test_a_tag_run_leaves_out_images_whose_file_could_not_be_read(cat, tmp_path):
    a, b, c = (int(i) for i in cat.register_images(["/d/a.jpg", "/d/b.jpg", "/d/c.jpg"]))
    cat.record_encodings([a, b, c], "m1", ["h1", "h2", "h3"], "shard-0")
    rows = [(i, lab, 0.9) for i in (a, b, c) for lab in ("cat", "dog")]
    r1 = cat.start_run(model_id="m1")
    assert cat.load_tags(r1, [_tags(tmp_path, "r1.parquet", rows)]) == 6
    cat.mark_errors([b], "read failed: /d/b.jpg is gone (not found when /d was listed)")
    assert cat.unreadable_ids() == [b]
    r2 = cat.start_run(model_id="m1")  # its scores came from the stores, where b's embedding stays
    assert cat.load_tags(r2, [_tags(tmp_path, "r2.parquet", rows)]) == 4
    assert sorted(cat.query("SELECT DISTINCT image_id FROM tags WHERE run_id = ?", [r2])) == [(a,), (c,)]
    assert cat.query("SELECT count(*) FROM tags WHERE run_id = ?", [r1]) == [(6,)]  # an earlier run is kept
    cat.register_images([("/d/b.jpg", 10)])  # back: pending, read again, tagged again
    cat.record_encodings([b], "m1", ["h2"], "shard-1")
    assert cat.unreadable_ids() == [] and cat.load_tags(r2, [_tags(tmp_path, "r2.parquet", rows)]) == 6


def test_ids_never_reused_and_pending_table(cat):
    cat.register_images(["/a.png", "/b.png"])
    cat.query("DELETE FROM images WHERE image_id = 2")  # even if a row vanished
    assert list(cat.register_images(["/c.png"])) == [3]
    t = cat.pending_table("m")
    assert t.column_names == ["image_id", "uri"] and t.num_rows == 2


def test_duplicates_get_two_ids(cat):
    ids = cat.register_images([{"uri": "/p/1.jpg", "content_hash": "same"},
                               {"uri": "/q/1-copy.jpg", "content_hash": "same"},
                               {"uri": "/p/2.jpg", "content_hash": "other"}])
    assert len(set(ids)) == 3
    assert cat.duplicates() == [("same", [int(ids[0]), int(ids[1])], ["/p/1.jpg", "/q/1-copy.jpg"])]


def test_update_images_from_decode(cat):
    ids = cat.register_images(["/u/a.jpg", "/u/b.jpg"])
    cat.update_images({"image_id": list(ids), "content_hash": ["ha", "hb"], "width": [10, 0],
                       "height": [20, 0], "status": ["ok", "error"], "error": ["", "not an image"]})
    rows = cat.query("SELECT uri, content_hash, width, status, error FROM images ORDER BY image_id")
    assert rows == [("/u/a.jpg", "ha", 10, "ok", None), ("/u/b.jpg", "hb", None, "error", "not an image")]
    assert cat.pending_images("m") == [(int(ids[0]), "/u/a.jpg")]


# -- labels --------------------------------------------------------------------------------------
def test_labels_round_trip_nasty_names(cat, path):
    ids = cat.add_labels(NASTY, {NASTY[0]: ["it is", "'quoted'"]})
    assert ids == list(range(1, len(NASTY) + 1))
    assert cat.active_labels() == NASTY
    assert cat.list_labels()[0].synonyms == ["it is", "'quoted'"]
    assert cat.retire_labels([NASTY[2], NASTY[3]]) == 2
    assert cat.active_labels() == [n for n in NASTY if n not in NASTY[2:4]]
    assert cat.add_labels([NASTY[2]]) == [3]  # re-activated with its old id
    assert NASTY[2] in cat.active_labels()
    assert cat.query("SELECT count(*) FROM labels")[0][0] == len(NASTY)  # the table survived
    with pytest.raises(CatalogError, match="unknown label"):
        cat.retire_labels(["no such label"])
    cat.close()
    with Catalog.open(path, read_only=True) as ro:
        assert [lab.name for lab in ro.list_labels()] == NASTY
        assert ro.safe_query("SELECT name FROM labels WHERE name = ?", [NASTY[2]]) == [(NASTY[2],)]


def test_corpus_and_classifier(cat):
    cat.add_corpus("c1", 100, labels=["cat", "dog"], config={"seed": 1})
    cat.add_classifier("k1", model_id="toy-vit@x", labels=["cat", "dog"], corpus_id="c1",
                       metrics={"mAP": 0.5})
    assert cat.corpora()[0]["config"] == {"seed": 1}
    assert cat.get_classifier("k1")["metrics"] == {"mAP": 0.5}
    cat.add_corpus("c1", 120)
    assert cat.corpora()[0]["n_sentences"] == 120


def test_a_corpus_made_again_becomes_the_newest(cat):
    """Settings A, then B, then A again: A's corpus is the latest, so `train` picks it."""
    cat.add_corpus("a", 10)
    cat.add_corpus("b", 10)
    cat.add_corpus("a", 10)
    assert [c["corpus_id"] for c in cat.corpora()] == ["b", "a"]


# -- runs and tags -------------------------------------------------------------------------------
def test_load_tags_one_transaction_and_idempotent(cat, tmp_path):
    cat.register_images(["/i/1.jpg", "/i/2.jpg", "/i/3.jpg"])
    run = cat.start_run(model_id="m", labels=["cat", "dog"])
    shards = [_tags(tmp_path, "a.parquet", [(1, "cat", 0.9), (2, "dog", 0.2)]),
              _tags(tmp_path, "b.parquet", [(3, "cat", 0.7), (1, "dog", 0.6)])]
    assert cat.load_tags(run, shards) == 4
    assert cat.load_tags(run, shards) == 4  # reload replaces, never doubles
    assert cat.query("SELECT count(*) FROM tags")[0][0] == 4
    # stored sorted by (label, score DESC) for zone-map pruning
    assert cat.query("SELECT label, score FROM tags") == [
        ("cat", pytest.approx(0.9)), ("cat", pytest.approx(0.7)),
        ("dog", pytest.approx(0.6)), ("dog", pytest.approx(0.2))]
    r = cat.get_run(run)
    assert (r.status, r.n_tags, r.n_images) == ("loaded", 4, 3)
    counts = "SELECT label, n, n_pos FROM run_label_counts WHERE run_id = ? ORDER BY label"
    assert cat.query(counts, [run]) == cat.query(
        "SELECT label, count(*), count(*) FILTER (WHERE positive) FROM tags WHERE run_id = ? "
        "GROUP BY label ORDER BY label", [run]) == [("cat", 2, 2), ("dog", 2, 1)]
    cat.set_current(run)
    assert cat.query("SELECT * FROM current_label_counts ORDER BY label") == [("cat", 2, 2), ("dog", 2, 1)]

    bad = _tags(tmp_path, "bad.parquet", [(99, "cat", 0.5)])  # unknown image id, in the 2nd file
    with pytest.raises(CatalogError, match="unknown image ids"):
        cat.load_tags(run, [shards[0], bad])
    assert cat.query("SELECT count(*) FROM tags")[0][0] == 4  # the delete was rolled back too
    assert cat.query(counts, [run]) == [("cat", 2, 2), ("dog", 2, 1)]


def test_set_current_atomic_and_failed_load_keeps_current(cat, tmp_path):
    cat.register_images(["/i/1.jpg", "/i/2.jpg"])
    r1 = cat.start_run()
    cat.load_tags(r1, [_tags(tmp_path, "r1.parquet", [(1, "cat", 0.9)])])
    assert cat.set_current(r1) is None
    before = cat.query("SELECT uri, label FROM current_tags")
    assert before == [("/i/1.jpg", "cat")]

    r2 = cat.start_run()
    with pytest.raises(CatalogError, match="only a loaded run"):
        cat.set_current(r2)  # still running: refused
    missing_col = tmp_path / "nolabel.parquet"
    pq.write_table(pa.table({"image_id": [2], "score": [0.3]}), missing_col)
    with pytest.raises(CatalogError):
        cat.load_tags(r2, [_tags(tmp_path, "r2.parquet", [(2, "dog", 0.8)]), missing_col])
    with pytest.raises(CatalogError):
        cat.load_tags(r2, [tmp_path / "does-not-exist.parquet"])
    assert cat.query("SELECT uri, label FROM current_tags") == before
    assert cat.query("SELECT count(*) FROM tags WHERE run_id = ?", [r2])[0][0] == 0

    # a failure inside the switch itself leaves everything as it was
    cat.load_tags(r2, [_tags(tmp_path, "r2.parquet", [(2, "dog", 0.8)])])
    # the pointer update is the last statement of the switch: make exactly it fail
    cat.query("ALTER TABLE current_run RENAME TO current_run_saved")
    cat.query(f"CREATE TABLE current_run (singleton BOOLEAN, run_id BIGINT CHECK (run_id <> {r2}), "
              "switched_at TIMESTAMP)")
    cat.query("INSERT INTO current_run SELECT * FROM current_run_saved")
    with pytest.raises(CatalogError, match="rolled back"):
        cat.set_current(r2)
    cat.query("DROP TABLE current_run")
    cat.query("ALTER TABLE current_run_saved RENAME TO current_run")
    assert [(r.run_id, r.status) for r in cat.runs()] == [(r1, "current"), (r2, "loaded")]
    assert cat.query("SELECT uri, label FROM current_tags") == before

    assert cat.set_current(r2) == r1
    assert cat.current_run() == r2
    assert [(r.run_id, r.status) for r in cat.runs()] == [(r1, "superseded"), (r2, "current")]
    assert cat.query("SELECT uri, label FROM current_tags") == [("/i/2.jpg", "dog")]


def test_finish_and_prune_runs(cat, tmp_path):
    cat.register_images(["/i/1.jpg"])
    shard = _tags(tmp_path, "t.parquet", [(1, "cat", 0.9)])
    runs = []
    for _ in range(4):
        r = cat.start_run()
        cat.load_tags(r, [shard])
        cat.finish_run(r, n_images=1, timings={"tag_s": 1.5})
        cat.set_current(r)
        runs.append(r)
    failed = cat.start_run()
    cat.finish_run(failed, error="boom")
    assert cat.get_run(failed).status == "failed"
    assert cat.get_run(runs[0]).timings == {"tag_s": 1.5}
    with pytest.raises(CatalogError, match="current"):
        cat.finish_run(runs[-1], failed=True)
    assert cat.prune_runs(keep=2) == runs[:2]  # the current run and the newest superseded one stay
    left = {r for (r,) in cat.query("SELECT DISTINCT run_id FROM tags")}
    assert left == set(runs[2:]) == {r for (r,) in cat.query("SELECT run_id FROM run_label_counts")}
    assert cat.get_run(runs[0]).pruned_at is not None
    with pytest.raises(CatalogError, match="pruned"):
        cat.set_current(runs[0])
    assert cat.prune_runs(keep=2) == []


# -- read-only access ----------------------------------------------------------------------------
@pytest.mark.parametrize("sql,kind", [
    ("INSERT INTO labels VALUES (9, 'x', [], now(), NULL)", "INSERT"),
    ("DELETE FROM images", "DELETE"),
    ("DROP TABLE tags", "DROP"),
    ("CREATE TABLE t (x INT)", "CREATE"),
    ("ATTACH 'other.duckdb' AS o", "ATTACH"),
    ("COPY images TO 'out.csv'", "COPY"),
    ("UPDATE runs SET status = 'failed'", "UPDATE"),
    ("SELECT 1; DROP TABLE tags", "only one statement"),
    ("EXPLAIN ANALYZE DELETE FROM images", "EXPLAIN"),
    ("PRAGMA enable_profiling", "PRAGMA"),
    ("SET threads = 1", "SET"),
    ("CALL checkpoint()", "CALL"),
    ("", "empty"),
    ("SELEC 1", "parse"),
])
def test_read_only_refusals(sql, kind):
    with pytest.raises(ReadOnlyQueryError, match=kind):
        check_read_only(sql)


def test_read_only_catalog(path, tmp_path):
    with Catalog.open(path) as c:
        c.register_images(["/a.jpg"])
    with Catalog.open(path, read_only=True) as ro:
        for sql in ["SELECT count(*) FROM images", "WITH x AS (SELECT 1) SELECT * FROM x", "SHOW TABLES",
                    "DESCRIBE images", "EXPLAIN SELECT * FROM tags", "PRAGMA table_info('images')",
                    "SUMMARIZE images", "FROM images"]:
            ro.safe_query(sql)
        assert ro.safe_query_arrow("SELECT uri FROM images").column("uri").to_pylist() == ["/a.jpg"]
        with pytest.raises(ReadOnlyQueryError, match="read-only"):
            ro.safe_query("DELETE FROM images")
        with pytest.raises(CatalogError):  # even the raw path is refused by the connection
            ro.query("DELETE FROM images")
        with pytest.raises(CatalogError, match="read-only"):
            ro.register_images(["/b.jpg"])
    with Catalog.open(path, read_only=True) as ro:
        assert ro.query("SELECT count(*) FROM images") == [(1,)]
    with pytest.raises(CatalogError, match="no catalog"):
        Catalog.open(tmp_path / "missing.duckdb", read_only=True)


def test_read_only_without_external_access(path, tmp_path, monkeypatch):
    with Catalog.open(path) as c:
        c.register_images(["/a.jpg"])
    (tmp_path / "secret.csv").write_text("x\n1\n")
    monkeypatch.setenv("TAGGER_SCHEMA_DIR", str(tmp_path / "no-schemas"))  # readers need no DDL
    with Catalog.open(path, read_only=True, external_access=False) as ro:
        assert ro.safe_query("SELECT count(*) FROM images") == [(1,)]
        with pytest.raises(CatalogError):
            ro.safe_query(f"SELECT * FROM read_csv('{tmp_path / 'secret.csv'}')")


# -- the write lock ------------------------------------------------------------------------------
def test_second_writer_gets_clear_error(path):
    Catalog.open(path).close()
    holder = textwrap.dedent(f"""
        import sys, time
        from tagger.catalog import Catalog
        c = Catalog.open({str(path)!r})
        print("ready", flush=True)
        sys.stdin.readline()
        c.close()
    """)
    proc = subprocess.Popen([sys.executable, "-c", holder], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        with pytest.raises(CatalogLockedError, match=r"locked by a writer, process \d+ \(.*one writing process"):
            Catalog.open(path)
        with pytest.raises(CatalogLockedError):
            Catalog.open(path, read_only=True)
    finally:
        proc.communicate("done\n", timeout=60)
    with Catalog.open(path) as c:  # released once the other writer is gone
        assert c.query("SELECT 1") == [(1,)]


def test_the_memory_limit_comes_from_the_environment(tmp_path, monkeypatch):
    from tagger.errors import ConfigError
    monkeypatch.setenv("TAGGER_CATALOG_MEMORY", "300MB")
    with Catalog.open(tmp_path / "m.duckdb") as cat:
        assert cat.query("SELECT current_setting('memory_limit')")[0][0] == "286.1 MiB"  # 300 MB in MiB
    monkeypatch.setenv("TAGGER_CATALOG_MEMORY", "lots")
    with pytest.raises(ConfigError, match="TAGGER_CATALOG_MEMORY"):
        Catalog.open(tmp_path / "m.duckdb")
