"""`tagger import-keywords`: a person's keywords in sidecars (both names) and embedded XMP / IPTC
(written here with exiftool) map to labels exactly, case-folded, through synonyms, hierarchy paths
and a mapping file; tagger's own keywords are left out; unmapped keywords are counted; the file it
writes is read by --calibrate-with, --annotations and `review import`."""
from __future__ import annotations

import csv
import json
import os
import sys
from collections import Counter
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from tagger.catalog import Catalog
from tagger.export.keywords import Keywords
from tagger.export.kwmap import KeywordMap
from tagger.pipeline.calibration import read_labelled_file
from tagger.report.review_file import read_decisions
from tagger.workspace import Workspace
from xmpcases import DIGIKAM, EXIFTOOL, invoke, tag_run

pytestmark = pytest.mark.skipif(EXIFTOOL is None, reason="exiftool (Debian: libimage-exiftool-perl) is not installed")
LABELS = ["circle", "shape", "star", "tree", "sun"]


def test_the_keyword_map_rules():
    kmap = KeywordMap({lab: [] for lab in LABELS} | {"car": ["automobile"]}, {"star": ["shape"], "circle": ["shape"]},
                      {"Sonne": ("sun",), "places|Paris": (), "Baum": ("tree",)})
    assert kmap.one("star") == ("star",) and kmap.one("STAR") == ("star",) and kmap.one("Automobile") == ("car",)
    assert kmap.one("sonne") == ("sun",) and kmap.one("places|Paris") == () and kmap.one("holiday") is None
    unmapped: Counter = Counter()
    kw = Keywords({"Star", "holiday", "Paris", "Baum"}, {("places", "Paris"), ("objects", "round", "Circle"),
                                                        ("events", "wedding")})
    assert kmap.labels_of(kw, unmapped) == ["circle", "shape", "star", "tree"]  # ancestors of star and circle
    assert unmapped == Counter({"holiday": 1, "events|wedding": 1})  # Paris: under an ignored path
    unmapped.clear()  # a root the map ignores leaves what is below it reported
    kmap = KeywordMap({lab: [] for lab in LABELS}, {}, {"Places": (), "Places|Paris|Louvre": ()})
    kw = Keywords({"Paris"}, {("Places", "Paris"), ("Places", "France", "Paris"), ("Places",),
                              ("Places", "Paris", "Louvre"), ("Places", "Star")})
    assert kmap.labels_of(kw, unmapped) == ["star"]
    assert unmapped == Counter({"Places|Paris": 1, "Places|France|Paris": 1})


def test_a_path_row_in_the_mapping_covers_the_path_names_written_flat():
    """Lightroom, digiKam and darktable write a hierarchical keyword's names into dc:subject too: a row
    that ignores or redirects the path decides those flat words, and a flat keyword on no path still maps."""
    kmap = KeywordMap({lab: [] for lab in ["bell", "ring", "diamond", "sounds"]}, {},
                      {"Sounds|Bell": (), "Jewellery|Ring": ("diamond",)})
    unmapped: Counter = Counter()
    assert kmap.labels_of(Keywords({"Bell", "Sounds"}, {("Sounds", "Bell")}), unmapped) == []
    assert kmap.labels_of(Keywords({"Ring", "jewellery"}, {("Jewellery", "Ring")}), unmapped) == ["diamond"]
    assert kmap.labels_of(Keywords({"Bell", "Ring"}, {("Sounds", "Bell")}), unmapped) == ["ring"]
    assert kmap.labels_of(Keywords({"bell"}, {("Animals", "Bell")}), unmapped) == ["bell"]  # by the path's names
    assert not unmapped


def test_keywords_spelled_as_the_vocabulary_compares_names_map():
    kmap = KeywordMap({"lightning bolt": [], "tree": [], "car": ["motor bike"]})
    for keyword, label in [("lightning-bolt", "lightning bolt"), ("Lightning_Bolts", "lightning bolt"),
                           ("Trees", "tree"), ("Motorbike", "car")]:
        assert kmap.one(keyword) == (label,), keyword
    assert kmap.one("treehouse") is None and kmap.one("bolt") is None
    for wordless in ("", "   ", "-", "_", "!!!"):  # a person's stray keyword names no label, and stops nothing
        assert kmap.one(wordless) is None, repr(wordless)
    assert kmap.labels_of(Keywords({"-", "Trees"}, set())) == ["tree"]


def test_a_keyword_on_several_rows_of_the_mapping_gets_each_label(tmp_path):
    from tagger.export.kwmap import read_mapping
    path = tmp_path / "map.csv"
    path.write_text("keyword,label\nHoliday,star\nHoliday,sun\nholiday,tree\nHoliday,star\nBeach,-\nBeach,sun\nJunk,\n")
    mapping = read_mapping(path, LABELS)
    assert mapping == {"Holiday": ("star", "sun"), "holiday": ("tree",), "Beach": ("sun",), "Junk": ()}
    kmap = KeywordMap({lab: [] for lab in LABELS}, {}, mapping)
    assert kmap.labels_of(Keywords({"Holiday"}, set())) == ["star", "sun"]  # the exact spelling first
    assert kmap.labels_of(Keywords({"HOLIDAY", "beach", "junk"}, set())) == ["star", "sun", "tree"]  # folded: all


def _jpeg(path: Path) -> Path:
    Image.new("RGB", (8, 8), (200, 30, 30)).save(path)
    return path


@pytest.fixture
def library(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    a, b, c, d, e = (_jpeg(folder / f"{n}.jpg") for n in "abcde")
    Path(f"{a}.xmp").write_text(DIGIKAM.replace("<rdf:li>holiday</rdf:li>", "<rdf:li>Star</rdf:li>"
                                                "<rdf:li>holiday</rdf:li>"), encoding="utf-8")
    subprocess.run([EXIFTOOL, "-q", "-overwrite_original", "-IPTC:Keywords=Tree", "-IPTC:Keywords=holiday",
                    "-XMP-dc:Subject=circle", str(b)], check=True, timeout=60)
    (folder / "c.xmp").write_text(  # Lightroom's name, a hierarchical keyword only
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:lr="http://ns.adobe.com/lightroom/1.0/"><lr:hierarchicalSubject>'
        '<rdf:Bag><rdf:li>objects|round|circle</rdf:li></rdf:Bag></lr:hierarchicalSubject></rdf:Description>'
        '</rdf:RDF></x:xmpmeta>', encoding="utf-8")
    Path(f"{e}.xmp").write_text(DIGIKAM.replace("holiday", "Sonne"), encoding="utf-8")
    root = tmp_path / "ws"
    tag_run(root, {str(d): {"star"}, str(a): set(), str(b): set(), str(c): set(), str(e): set()}, LABELS)
    with Catalog.open(Workspace.at(root).catalog) as cat:
        cat.add_parents(["star", "circle"], ["shape"])
    # tagger's own keywords (d's sidecar only has them) are no person's keywords
    assert invoke("export", "-f", "xmp", "-w", str(root)).exit_code == 0
    assert Path(f"{d}.xmp").is_file()
    mapping = tmp_path / "map.csv"
    mapping.write_text("keyword,label\nSonne,sun\nplaces|Paris,\n", encoding="utf-8")
    return root, folder, mapping


def _rows(path: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    with path.open() as fh:
        for row in csv.DictReader(fh):
            assert row["decision"] == "accept"
            out.setdefault(Path(row["uri"]).name, []).append(row["label"])
    return out


def test_import_keywords_maps_sidecars_and_embedded_metadata(library, tmp_path):
    root, folder, mapping = library
    out = tmp_path / "labelled.csv"
    res = invoke("import-keywords", "-w", str(root), "--map", str(mapping), "--out", str(out), "--json")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.splitlines()[-1])
    assert _rows(out) == {"a.jpg": ["shape", "star"], "b.jpg": ["circle", "shape", "tree"],
                          "c.jpg": ["circle", "shape"], "e.jpg": ["sun"]}
    assert summary["images"] == 5 and summary["with_keywords"] == 4 and summary["labelled"] == 4
    assert summary["unmapped"] == {"family": 2, "holiday": 2}  # places|Paris ignored by the map
    assert summary["labels"]["shape"] == 3
    # the same file is a labelled set, annotations and review decisions
    assert read_labelled_file(out)[str(folder / "b.jpg")] == ["circle", "shape", "tree"]
    rows, _ = read_decisions(out)
    assert (str(folder / "a.jpg"), "star", "accept") in rows
    res = invoke("review", "import", str(out), "-w", str(root), "--json")
    assert res.exit_code == 0, res.output
    # without the map, without embedded metadata: fewer labels, the unmapped listed
    res = invoke("import-keywords", "-w", str(root), "--out", str(out), "--force", "--no-embedded", "--json")
    assert res.exit_code == 0, res.output
    assert "b.jpg" not in _rows(out) and "e.jpg" not in _rows(out)
    assert json.loads(res.stdout.splitlines()[-1])["unmapped"]["places|Paris"] == 2
    photo = (folder / "a.jpg").read_bytes()  # --force never replaces a photo with the CSV
    res = invoke("import-keywords", "-w", str(root), "--out", str(folder / "a.jpg"), "--force")
    assert res.exit_code == 2 and "is named like an image or a sidecar (.jpg)" in res.stderr
    assert (folder / "a.jpg").read_bytes() == photo
    (folder / "raw.DNG").write_bytes(b"II*\x00raw")  # a camera raw file encode does not read
    res = invoke("import-keywords", "-w", str(root), "--out", str(folder / "raw.DNG"), "--force")
    assert res.exit_code == 2 and "is named like an image or a sidecar (.DNG)" in res.stderr
    assert (folder / "raw.DNG").read_bytes() == b"II*\x00raw"


def test_special_files_never_block_the_import(library, tmp_path):
    root, folder, mapping = library
    (folder / "b.jpg").unlink()
    os.mkfifo(folder / "b.jpg")  # the registered image is now a FIFO
    os.mkfifo(folder / "c.jpg.xmp")  # and a FIFO where a sidecar would be
    out = subprocess.run([sys.executable, "-m", "tagger.cli", "import-keywords", "-w", str(root), "--out",
                          str(tmp_path / "l.csv"), "--json"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.splitlines()[-1])
    assert summary["unreadable_sidecars"] == 1 and "c.jpg.xmp" in summary["first_error"]
    assert "b.jpg" not in _rows(tmp_path / "l.csv") and "c.jpg" in _rows(tmp_path / "l.csv")


def test_import_keywords_errors_are_one_line(library, tmp_path):
    root, folder, mapping = library
    (tmp_path / "link").symlink_to(folder)  # the encoded folder under another name: read, not refused
    res = invoke("import-keywords", "-w", str(root), "--out", str(tmp_path / "via.csv"), str(tmp_path / "link"))
    assert res.exit_code == 0 and "a.jpg" in _rows(tmp_path / "via.csv"), res.output
    bad = tmp_path / "bad.csv"
    bad.write_text("Sonne,moon\n", encoding="utf-8")
    empty = tmp_path / "empty"
    empty.mkdir()
    for args, needle in [(("--map", str(bad)), "not an active label"),
                         (("--map", str(tmp_path / "none.csv")), "cannot read mapping file"),
                         (("--map", str(tmp_path)), "is not a regular file"),
                         ((str(tmp_path / "elsewhere"),), "is not a folder: give the folder of the photos"),
                         ((str(empty),), "no registered local image")]:
        res = invoke("import-keywords", "-w", str(root), "--out", str(tmp_path / "o.csv"), *args)
        assert res.exit_code == 2 and needle in res.stderr and res.stderr.count("\n") == 1, res.output
        assert not (tmp_path / "o.csv").exists()


def test_exiftool_only_reads_whatever_the_names_hold(tmp_path):
    """A name holding newlines reaches exiftool as one file name, never as options (an argument file
    line each would make ``-XMP-dc:Subject=X`` write into the other photos); names that are not UTF-8 and
    numbers as keywords are read as they are."""
    from tagger.export.keywords import embedded_keywords, image_keywords
    from tagger.uris import local_uri
    folder = tmp_path / "p"
    folder.mkdir()
    victim, plain = _jpeg(folder / "victim.jpg"), _jpeg(folder / "plain.jpg")
    hostile = _jpeg(folder / "x\n-XMP-dc:Subject=INJECTED\n-overwrite_original\n.jpg")
    odd = os.fsdecode(bytes(folder) + b"/caf\xe9.jpg")
    _jpeg(Path(odd))
    for path, words in ((plain, ("1.50", "007", "1e3", "star")), (hostile, ("moon",)), (Path(odd), ("sun",))):
        subprocess.run([EXIFTOOL, "-q", "-q", "-overwrite_original", *(f"-XMP-dc:Subject={w}" for w in words),
                        "--", os.fsencode(path)], check=True, timeout=60)
    before = victim.read_bytes()
    found = embedded_keywords([str(victim), str(plain), str(hostile), odd])
    assert victim.read_bytes() == before and sorted(os.listdir(folder)) == sorted(
        ["victim.jpg", "plain.jpg", hostile.name, os.path.basename(odd)])  # nothing written, no *_original
    assert found[str(plain)].flat == {"1.50", "007", "1e3", "star"}
    assert found[str(hostile)].flat == {"moon"} and found[odd].flat == {"sun"}
    assert str(victim) not in found or not found[str(victim)]
    by_uri = dict(image_keywords([local_uri(odd)]))  # the catalog keeps such a name as a file:// URI
    assert by_uri[local_uri(odd)].flat == {"sun"}


def test_tagger_keywords_a_photo_tool_embedded_in_the_image_are_left_out(tmp_path):
    """digiKam's "write metadata to files" or ``exiftool -tagsfromfile x.jpg.xmp -xmp:all x.jpg`` copy the
    sidecar's keywords into the image but not tagger's record: the record in the sidecar still marks them
    as tagger's. A whole packet copied in (``-xmp<=x.jpg.xmp``) carries the record itself."""
    folder = tmp_path / "photos"
    folder.mkdir()
    a, b = _jpeg(folder / "a.jpg"), _jpeg(folder / "b.jpg")
    root = tmp_path / "ws"
    tag_run(root, {str(a): {"star", "tree"}, str(b): {"star"}}, LABELS)
    with Catalog.open(Workspace.at(root).catalog) as cat:
        cat.add_parents(["star"], ["shape"])
    assert invoke("export", "-f", "xmp", "-w", str(root)).exit_code == 0
    for args in (["-tagsfromfile", f"{a}.xmp", "-xmp:all", "-XMP-dc:Subject+=circle", "-IPTC:Keywords=tree", str(a)],
                 [f"-xmp<={b}.xmp", str(b)]):
        subprocess.run([EXIFTOOL, "-q", "-overwrite_original", *args], check=True, timeout=60)
    Path(f"{b}.xmp").unlink()  # b: the record is in the image only
    out = tmp_path / "l.csv"
    res = invoke("import-keywords", "-w", str(root), "--out", str(out), "--json")
    assert res.exit_code == 0, res.output
    assert _rows(out) == {"a.jpg": ["circle"]}  # the person's own keyword only
    assert json.loads(res.stdout.splitlines()[-1])["unmapped"] == {}
