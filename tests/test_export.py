"""`tagger export`: CSV, JSON lines and Parquet tables equal the catalog's rows (provenance included),
a large run's export streams (memory flat from 10,000 to 100,000 tags), and XMP sidecars read back
with a real XMP reader (exiftool) carry flat and hierarchical keywords and keep a person's fields.
The merge itself is tested in test_xmp_merge.py, hostile targets in test_hostile_paths.py."""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from tagger.catalog import Catalog
from tagger.cli import app
from tagger.workspace import Workspace

runner = CliRunner()
EXIFTOOL = shutil.which("exiftool")
RATED = """<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="XMP Core 5.5.0">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    xmlns:dc="http://purl.org/dc/elements/1.1/" xmp:Rating="4">
   <dc:subject><rdf:Bag><rdf:li>stale keyword</rdf:li></rdf:Bag></dc:subject>
   <dc:title><rdf:Alt><rdf:li xml:lang="x-default">Sunset</rdf:li></rdf:Alt></dc:title>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
<?xpacket end="w"?>
"""


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def build_run(root: Path, uris: list[str], labels: list[str], rng_seed: int = 0) -> int:
    """A current run tagging every image with every label (random scores, ~30 % positive)."""
    rng = np.random.default_rng(rng_seed)
    with Catalog.open(Workspace.at(root).catalog) as cat:
        ids = np.asarray(cat.register_images(uris), np.int64)
        cat.add_labels(labels)
        run = cat.start_run("tag", model_id="m", labels=labels)
        n = len(uris) * len(labels)
        path = root / "tags.parquet"
        pq.write_table(pa.table({
            "image_id": np.repeat(ids, len(labels)), "label": pa.array(labels * len(uris)),
            "score": rng.normal(size=n).astype(np.float32), "confidence": rng.random(n).astype(np.float32),
            "positive": rng.random(n) < 0.3}), path)
        cat.load_tags(run, path)
        cat.finish_run(run)
        cat.set_current(run)
        return run


@pytest.fixture
def small(tmp_path) -> Path:
    root = tmp_path / "ws"
    build_run(root, [f"/img/{i}.jpg" for i in range(5)], ["cat", "dog", "bird"])
    assert invoke("review", "reject", "/img/0.jpg", "cat", "-w", str(root)).exit_code == 0
    return root


def catalog_rows(root: Path, positive_only: bool = False) -> list[tuple]:
    with Catalog.open(root / "catalog.duckdb", read_only=True) as cat:
        rows = cat.query("SELECT uri, run_id, label, score, confidence, positive, provenance FROM current_tags"
                         + (" WHERE positive" if positive_only else ""))
    return sorted((u, r, lab, round(s, 5), round(c, 5), p, prov) for u, r, lab, s, c, p, prov in rows)


def _norm(row: dict) -> tuple:
    return (row["uri"], int(row["run"]), row["label"], round(float(row["score"]), 5),
            round(float(row["confidence"]), 5), row["positive"] in (True, "true"), row["provenance"])


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_table_exports_equal_the_catalog(small, tmp_path, fmt):
    out = tmp_path / f"tags.{fmt}"
    res = invoke("export", "--format", fmt, "--out", str(out), "-w", str(small), "--json")
    assert res.exit_code == 0, res.output
    if fmt == "csv":
        with out.open() as fh:
            rows = list(csv.DictReader(fh))
    elif fmt == "jsonl":
        rows = [json.loads(line) for line in out.read_text().splitlines()]
    else:
        rows = pq.read_table(out).to_pylist()
    assert sorted(_norm(r) for r in rows) == catalog_rows(small)
    assert ("/img/0.jpg", 1, "cat") in {r[:3] for r in catalog_rows(small) if r[6] == "person"}
    pos = tmp_path / f"pos.{fmt}"
    assert invoke("export", "-f", fmt, "-o", str(pos), "--positive-only", "-w", str(small)).exit_code == 0
    n = pq.read_table(pos).num_rows if fmt == "parquet" else len(pos.read_text().splitlines()) - (fmt == "csv")
    assert n == len(catalog_rows(small, positive_only=True))


def test_export_errors_are_one_line(small, tmp_path):
    for args, message in [(("-f", "csv", "--run", "99"), "unknown run 99"),
                          (("-f", "xmp", "--out", str(tmp_path / "x")), "--out is for table formats"),
                          (("-f", "csv", "--mirror", str(tmp_path)), "--mirror is for --format xmp"),
                          (("-f", "csv", "--out", str(tmp_path / "t.parquet")), "named as a parquet file"),
                          (("-f", "parquet", "-o", str(tmp_path / "t.JSONL")), "give --format jsonl")]:
        out = invoke("export", *args, "-w", str(small))
        assert out.exit_code == 2 and message in out.stderr and out.stderr.count("\n") == 1, out.output


MEASURE = """
import json, resource, sys, tracemalloc
import pyarrow as pa
from tagger.catalog import Catalog
from tagger.export import ExportOptions, export_run
with Catalog.open(sys.argv[1], read_only=True) as cat:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    rows = export_run(cat, sys.argv[2], options=ExportOptions(out=sys.argv[3]))["rows"]
    peak = tracemalloc.get_traced_memory()[1]
print(json.dumps({"rows": rows, "python": peak, "arrow": pa.default_memory_pool().max_memory(),
                  "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss}))
"""


def test_a_large_export_streams_with_flat_memory(tmp_path):
    """2,000 images x 5 labels against x 50 labels: Python's and Arrow's peak memory (and the growth
    of the process's peak RSS) stay about the same, where a whole-run read would grow tenfold."""
    uris = [f"/data/photos/img-{i:06d}.jpg" for i in range(2000)]
    sizes = {}
    for n_labels in (5, 50):
        root = tmp_path / f"ws{n_labels}"
        build_run(root, uris, [f"label{j:03d}" for j in range(n_labels)])
        for fmt in ("jsonl", "parquet"):
            out = subprocess.run([sys.executable, "-c", MEASURE, str(root / "catalog.duckdb"), fmt,
                                  str(tmp_path / f"out{n_labels}.{fmt}")], capture_output=True, text=True, timeout=300)
            assert out.returncode == 0, out.stderr[-2000:]
            sizes[n_labels, fmt] = json.loads(out.stdout.splitlines()[-1])
    for fmt in ("jsonl", "parquet"):
        small, large = sizes[5, fmt], sizes[50, fmt]
        assert (small["rows"], large["rows"]) == (10_000, 100_000)
        assert large["python"] < 1.5 * small["python"], (fmt, small, large)
        assert large["arrow"] < 1.5 * max(small["arrow"], 1 << 20), (fmt, small, large)
        assert large["rss"] < 2.5 * max(small["rss"], 16 << 10), (fmt, small, large)  # KiB


# -- XMP -----------------------------------------------------------------------------------------
def exif(path: Path) -> dict:
    out = subprocess.run([EXIFTOOL, "-j", "-XMP:all", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)[0]


def as_list(value) -> list[str]:
    return [] if value is None else [str(v) for v in (value if isinstance(value, list) else [value])]


@pytest.fixture
def photos(tmp_path) -> tuple[Path, Path, list[str]]:
    folder = tmp_path / "photos"
    folder.mkdir()
    uris = []
    for name in ("a.jpg", "b.png", "c.jpg"):
        (folder / name).write_bytes(b"not decoded here")
        uris.append(str(folder / name))
    root = tmp_path / "ws"
    build_run(root, uris, ["circle", "star", "shape"], rng_seed=3)
    with Catalog.open(root / "catalog.duckdb") as cat:
        cat.add_parents(["circle", "star"], ["shape"])
        run = cat.current_run()
        cat.query("UPDATE tags SET positive = (label <> 'shape' OR image_id = 1) WHERE run_id = ?", [run])
    return root, folder, uris


NEEDS_EXIFTOOL = pytest.mark.skipif(EXIFTOOL is None, reason="exiftool (Debian: libimage-exiftool-perl) is not installed")


@NEEDS_EXIFTOOL
def test_xmp_sidecars_read_back_with_exiftool_and_keep_other_fields(photos):
    root, folder, uris = photos
    (folder / "a.jpg.xmp").write_text(RATED, encoding="utf-8")
    out = invoke("export", "--format", "xmp", "-w", str(root), "--json")
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout.splitlines()[-1])["written"] == 3
    a, b = exif(folder / "a.jpg.xmp"), exif(folder / "b.png.xmp")
    assert a["Rating"] == 4 and a["Title"] == "Sunset"  # kept
    assert sorted(as_list(a["Subject"])) == ["circle", "shape", "stale keyword", "star"]  # a person's stays
    assert sorted(as_list(a["HierarchicalSubject"])) == ["shape", "shape|circle", "shape|star"]
    assert sorted(as_list(b["Subject"])) == ["circle", "star"]
    assert sorted(as_list(b["HierarchicalSubject"])) == ["shape|circle", "shape|star"]
    # a rejected tag leaves the sidecar at the next export; the rating and the person's keyword stay
    assert invoke("review", "reject", uris[0], "star", "-w", str(root)).exit_code == 0
    assert invoke("export", "-f", "xmp", "-w", str(root)).exit_code == 0
    a = exif(folder / "a.jpg.xmp")
    assert sorted(as_list(a["Subject"])) == ["circle", "shape", "stale keyword"] and a["Rating"] == 4
    assert "shape|star" not in as_list(a["HierarchicalSubject"])


@NEEDS_EXIFTOOL
def test_xmp_into_a_mirror_folder_relative_to_the_source_root(photos, tmp_path):
    root, folder, uris = photos
    mirror = tmp_path / "mirror"
    (folder / "c.jpg.xmp").write_text("this is not xml")
    out = invoke("export", "-f", "xmp", "--mirror", str(mirror), "-w", str(root), "--json")
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout.splitlines()[-1])["source_root"] == str(folder)
    assert not (folder / "a.jpg.xmp").exists()
    assert sorted(as_list(exif(mirror / "a.jpg.xmp")["Subject"])) == ["circle", "shape", "star"]
    assert sorted(p.name for p in mirror.iterdir()) == [".tagger-mirror.json", "a.jpg.xmp", "b.png.xmp", "c.jpg.xmp"]
    # a later image in a sub-folder keeps the layout the mirror recorded
    (folder / "2024").mkdir()
    (folder / "2024" / "d.jpg").write_bytes(b"x")
    with Catalog.open(root / "catalog.duckdb") as cat:
        (new_id,) = cat.register_images([str(folder / "2024" / "d.jpg")])
        run = cat.current_run()
        cat.query("INSERT INTO tags (run_id, image_id, label, score, positive) VALUES (?, ?, 'star', 1, true)",
                  [run, int(new_id)])
    assert invoke("export", "-f", "xmp", "--mirror", str(mirror), "-w", str(root)).exit_code == 0
    assert as_list(exif(mirror / "2024" / "d.jpg.xmp")["Subject"]) == ["star"]
    assert (mirror / "a.jpg.xmp").exists() and not (mirror / "photos").exists()
    out = invoke("export", "-f", "xmp", "-w", str(root))  # beside: c.jpg.xmp cannot be parsed
    assert out.exit_code == 2 and "1 sidecar(s) not written" in out.stderr and "c.jpg.xmp" in out.stderr
    assert (folder / "c.jpg.xmp").read_text() == "this is not xml"
    assert (folder / "a.jpg.xmp").exists()
    other = tmp_path / "mirror2"  # a source root that is no folder: one error line, nothing recorded
    out = invoke("export", "-f", "xmp", "--mirror", str(other), "--source-root", str(tmp_path / "nowhere"), "-w", str(root))
    assert out.exit_code == 2 and out.stderr.count("error:") == 1 and "not a folder" in out.stderr, out.output
    assert not other.exists()


@pytest.mark.parametrize("marker", ['{"source_root": 5}', '["a"]', '{"source_root": "relative/x"}', "not json"],
                         ids=["number", "list", "relative", "text"])
def test_a_mirror_marker_recording_no_source_root_is_ignored_with_a_warning(photos, tmp_path, marker, caplog):
    root, folder, _ = photos
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / ".tagger-mirror.json").write_text(marker)
    out = invoke("export", "-f", "xmp", "--mirror", str(mirror), "-w", str(root), "--json")
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout.splitlines()[-1])["source_root"] == str(folder) and (mirror / "a.jpg.xmp").is_file()
    assert json.loads((mirror / ".tagger-mirror.json").read_text()) == {"source_root": str(folder)}
    assert [r.message for r in caplog.records if r.levelname == "WARNING"][0].startswith("ignoring ")


@NEEDS_EXIFTOOL
def test_sidecar_naming_and_a_root_for_the_machine_keywords(photos):
    root, folder, uris = photos
    out = invoke("export", "-f", "xmp", "--sidecar-name", "photo.xmp", "--root", "auto", "-w", str(root))
    assert out.exit_code == 0, out.output
    assert sorted(p.name for p in folder.iterdir()) == ["a.jpg", "a.xmp", "b.png", "b.xmp", "c.jpg", "c.xmp"]
    a = exif(folder / "a.xmp")
    assert sorted(as_list(a["HierarchicalSubject"])) == ["auto|shape", "auto|shape|circle", "auto|shape|star"]
    assert sorted(as_list(a["Subject"])) == ["circle", "shape", "star"]  # flat keywords stay the labels
    for name in ("a|b", "a\tb", "a\nb"):  # what a label name cannot hold, a root cannot either
        bad = invoke("export", "-f", "xmp", "--root", name, "-w", str(root))
        assert bad.exit_code == 2 and "--root" in bad.stderr and bad.stderr.count("\n") == 1, bad.output


def test_sidecar_paths_and_hierarchical_keywords(tmp_path):
    from tagger.export import label_paths, merge_sidecar, sidecar_path
    assert sidecar_path("/photos/a.jpg") == Path("/photos/a.jpg.xmp")
    assert sidecar_path("/photos/a.jpg", "photo.xmp") == Path("/photos/a.xmp")
    assert sidecar_path("/photos/.hidden", "photo.xmp") == Path("/photos/.hidden.xmp")
    assert sidecar_path("file:///photos/b%20c.png") == Path("/photos/b c.png.xmp")
    assert sidecar_path("s3://bucket/x/y.jpg") is None  # remote: only into a mirror
    assert sidecar_path("s3://bucket/x/y.jpg", mirror=tmp_path) == tmp_path / "s3" / "bucket" / "x" / "y.jpg.xmp"
    assert sidecar_path("/photos/a.jpg", mirror=tmp_path) == tmp_path / "photos" / "a.jpg.xmp"
    assert sidecar_path("/photos/2024/a.jpg", mirror=tmp_path, source_root="/photos") == tmp_path / "2024" / "a.jpg.xmp"
    assert sidecar_path("/other/a.jpg", mirror=tmp_path, source_root="/photos") is None
    parents = {"star": ["shape", "symbol"], "shape": ["thing"]}
    assert label_paths("star", parents) == ["symbol|star", "thing|shape|star"]
    assert label_paths("star", parents, "auto") == ["auto|symbol|star", "auto|thing|shape|star"]
    assert label_paths("moon", parents) == ["moon"]
    assert label_paths("a|b", {}) == []  # never read as a hierarchy
    with pytest.raises(ValueError, match="not XML"):
        merge_sidecar(b"<unclosed", ["star"])
    with pytest.raises(ValueError, match="rdf:RDF"):
        merge_sidecar(b"<a/>", ["star"])
    assert b"<dc:subject>" not in merge_sidecar(merge_sidecar(None, ["star"]).data, []).data
