"""`tagger export -f xmp` into sidecars in forms no photo tool writes but a file may hold: a keyword
list carrying an RDF marker (``rdf:resource``, ``rdf:parseType="Literal"`` ...), comments inside
values, a modification time no date can hold, two ``rdf:RDF`` elements or a typed node, and a
sidecar extension in mixed case. A value a person wrote reads the same afterwards (to a plain XML
parser and to exiftool), the RDF stays valid, and a sidecar tagger cannot merge into is one
``error:`` line and left byte for byte."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path

import pytest

from tagger.errors import SidecarError
from tagger.export.keywords import image_keywords
from tagger.export.record import read_record
from tagger.export.xmp import SUBJECT, merge_sidecar
from tagger.export.xmpdoc import XmpDoc
from xmpcases import DARKTABLE, EXIFTOOL, as_set, exif, invoke, photo_library, tag_run

LABELS = ["circle", "star", "tree"]
RDF, XMP = "http://www.w3.org/1999/02/22-rdf-syntax-ns#", "http://ns.adobe.com/xap/1.0/"
DC, DK = "http://purl.org/dc/elements/1.1/", "http://www.digikam.org/ns/1.0/"
HEAD = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:my="urn:my" '
        'xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmlns:lr="http://ns.adobe.com/lightroom/1.0/" '
        'xmlns:digiKam="http://www.digikam.org/ns/1.0/" xmp:Rating="4">')
TAIL = "</rdf:Description></rdf:RDF></x:xmpmeta>"


def _library(tmp_path: Path, sidecars: dict[str, bytes | None], positives: set[str],
             ext: str = ".xmp") -> tuple[Path, dict[str, Path]]:
    return photo_library(tmp_path, sidecars, positives, LABELS, ext)


def _export(root: Path, code: int = 0, *extra: str) -> tuple[dict, list[str]]:
    out = invoke("export", "-f", "xmp", "-w", str(root), "--json", *extra)
    assert out.exit_code == code, out.output
    assert "Traceback" not in out.stderr
    return json.loads(out.stdout.splitlines()[-1]), [x for x in out.stderr.splitlines() if x.startswith("error:")]


def _values(data: bytes) -> dict[str, list[str]]:
    """Each property's values as a conforming XML parser reads them (comments dropped), by tag."""
    out: dict[str, list[str]] = {}
    for d in ET.fromstring(data.lstrip()).iter(f"{{{RDF}}}Description"):
        for e in d:
            lis = list(e.iter(f"{{{RDF}}}li"))
            out.setdefault(e.tag, []).extend([li.text or "" for li in lis] if lis else [e.text or ""])
    return out


MARKED = {  # a keyword list property carrying an RDF marker (the last two: beside a plain dc:subject)
    "resource": '<dc:subject rdf:resource="http://example.com/kw/boat"/>',
    "literal": '<dc:subject rdf:parseType="Literal">plain words</dc:subject>',
    "literal-markup": '<dc:subject rdf:parseType="Literal">a, <b>b</b></dc:subject>',
    "literal-bag": '<dc:subject rdf:parseType="Literal"><rdf:Bag><rdf:li>x</rdf:li></rdf:Bag></dc:subject>',
    "datatype": '<dc:subject rdf:datatype="http://www.w3.org/2001/XMLSchema#string">typed</dc:subject>',
    "node-id": '<dc:subject rdf:nodeID="b1"/>',
    "empty-resource": '<dc:subject rdf:parseType="Resource"/>',
    "collection": '<dc:subject rdf:parseType="Collection"><rdf:Description rdf:about="urn:k"/></dc:subject>',
    "property-attribute": '<dc:subject xmp:Label="x"/>',
    "hierarchy": '<dc:subject><rdf:Bag><rdf:li>boat</rdf:li></rdf:Bag></dc:subject>'
                 '<lr:hierarchicalSubject rdf:datatype="urn:t">places|Paris</lr:hierarchicalSubject>',
    "tags-list": '<dc:subject><rdf:Bag><rdf:li>boat</rdf:li></rdf:Bag></dc:subject>'
                 '<digiKam:TagsList rdf:datatype="urn:t">places/Paris</digiKam:TagsList>',
}


@pytest.mark.parametrize("form", list(MARKED))
def test_a_keyword_list_carrying_an_rdf_marker_is_refused_and_left_as_it_was(tmp_path, form):
    """Writing a list into such a property made invalid RDF, and exiftool then read tagger's keywords
    in place of the person's value: the sidecar is refused instead, the others written."""
    data = (HEAD + MARKED[form] + TAIL).encode()
    root, paths = _library(tmp_path, {"odd": data, "good": DARKTABLE.encode()}, {"circle"})
    summary, errors = _export(root, code=2)
    assert (summary["failed"], summary["written"]) == (1, 1)
    assert len(errors) == 1 and "odd.jpg.xmp" in errors[0] and "rdf:Bag" in errors[0], errors
    assert paths["odd"].read_bytes() == data and "circle" in XmpDoc(paths["good"].read_bytes()).items(SUBJECT)
    if form in ("resource", "datatype", "literal"):
        assert "carries rdf:" in errors[0], errors


def test_a_marked_keyword_list_is_never_removed_with_tagger_s_keywords():
    """Taking out tagger's keyword from a dc:subject split over two descriptions dropped the other
    one, holding no list, and with it the person's value (here a resource): refused, the value kept."""
    first = merge_sidecar((HEAD + TAIL).encode(), ["star"], run=1).data.decode()
    marked = first.replace("</rdf:RDF>", '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/">'
                           '<dc:subject rdf:resource="http://example.com/kw/boat"/></rdf:Description></rdf:RDF>')
    with pytest.raises(SidecarError, match="rdf:resource"):
        merge_sidecar(marked.encode(), [], run=2)


@pytest.mark.skipif(EXIFTOOL is None, reason="exiftool (Debian: libimage-exiftool-perl) is not installed")
def test_a_keyword_list_with_only_xml_lang_is_merged_as_before(tmp_path):
    data = (HEAD + '<dc:subject xml:lang="en">word</dc:subject>' + TAIL).encode()
    root, paths = _library(tmp_path, {"p": data}, {"star"})
    _export(root)
    assert as_set(exif(paths["p"])["Subject"]) == {"word", "star"}


COMMENTED = (HEAD + "<dc:subject><rdf:Bag><rdf:li>foo<!-- c --></rdf:li><rdf:li>bar</rdf:li></rdf:Bag></dc:subject>"
             "<xmp:Nickname>nick<!-- x --></xmp:Nickname><xmp:Label><!-- none --></xmp:Label>"
             "<my:pi>ab<?pi x?>cd</my:pi><my:spaced> <!-- c --> </my:spaced>"
             "<dc:title><rdf:Alt><rdf:li xml:lang=\"x-default\">Sun<!-- set? --></rdf:li></rdf:Alt></dc:title>" + TAIL)


def test_a_comment_or_processing_instruction_inside_a_value_leaves_the_value_as_it_was(tmp_path):
    """The re-indenting added white space after a comment ending a value (``foo`` read as ``foo\\n  ``)
    and into an element holding only a comment (empty read as white space)."""
    root, paths = _library(tmp_path, {"p": COMMENTED.encode()}, {"star"})
    before_exif = exif(paths["p"]) if EXIFTOOL else {}
    assert _export(root)[0]["written"] == 1
    data = paths["p"].read_bytes()
    after, before = _values(data), _values(COMMENTED.encode())
    assert after.pop(f"{{{DC}}}subject") == ["foo", "bar", "star"]
    before.pop(f"{{{DC}}}subject")
    assert {k: v for k, v in after.items() if k in before} == before
    assert "<!-- none -->" in data.decode() and "<?pi x?>" in data.decode()
    assert _export(root)[0]["unchanged"] == 1 and paths["p"].read_bytes() == data
    if EXIFTOOL:
        after_exif = exif(paths["p"])
        assert {k: after_exif.get(k) for k in before_exif if k != "Subject"} == {
            k: v for k, v in before_exif.items() if k != "Subject"}


def _unrepresentable(path: Path, seconds: int) -> bool:
    """Set ``path``'s modification time to ``seconds``; whether the file system kept it."""
    os.utime(path, ns=(seconds * 10**9,) * 2)
    return os.stat(path).st_mtime_ns == seconds * 10**9


@pytest.fixture
def scratch_dirs():
    """Folders a test makes outside ``tmp_path``, removed after it."""
    made: list[Path] = []
    yield made
    for folder in made:
        shutil.rmtree(folder, ignore_errors=True)


def _keeping(tmp_path: Path, seconds: int, made: list[Path]) -> Path:
    """A folder whose file system keeps a modification time of ``seconds`` (ext4 clamps to 2446, tmpfs
    does not): in ``tmp_path`` or /dev/shm (put in ``made``); the test is skipped where there is none."""
    for parent in (tmp_path, Path("/dev/shm")):
        if parent.is_dir() and os.access(parent, os.W_OK):
            where = Path(tempfile.mkdtemp(dir=parent))
            made.append(where)
            (where / "probe").write_bytes(b"")
            if _unrepresentable(where / "probe", seconds):
                return where
    pytest.skip("no file system here keeps such a modification time")


@pytest.mark.parametrize("seconds", [253402300801, 2**62, -2**40], ids=["year-10000", "2^62", "year-minus-32873"])
def test_a_sidecar_whose_modification_time_no_date_holds_is_merged_and_the_decline_timed_now(tmp_path, seconds,
                                                                                             scratch_dirs):
    """``datetime`` cannot hold the time (tmpfs, NTFS and SMB keep it): the export refused such a
    sidecar with "year 10000 is out of range"; it merges, a deletion found in it recorded at the export."""
    where = _keeping(tmp_path, seconds, scratch_dirs)
    real = where / "real.xmp"
    real.write_bytes(DARKTABLE.encode())
    root, paths = _library(tmp_path, {"p": None}, {"star", "circle"})
    paths["p"].symlink_to(real)
    assert _export(root)[0]["written"] == 1 and "circle" in XmpDoc(real.read_bytes()).items(SUBJECT)
    doc = XmpDoc(real.read_bytes())
    doc.edit_list(SUBJECT, ["circle"], [])  # the person deletes tagger's keyword
    real.write_bytes(doc.to_bytes())
    assert _unrepresentable(real, seconds)
    started = datetime.now(timezone.utc).replace(tzinfo=None)
    time.sleep(0.01)
    summary, errors = _export(root)
    assert errors == [] and summary["written"] == 1 and summary["labels_declined"] == 1
    record = read_record(XmpDoc(real.read_bytes()))
    assert record.declined == {"circle"}
    when = datetime.strptime(record.declined_at["circle"], "%Y-%m-%dT%H:%M:%S.%fZ")
    assert started <= when <= datetime.now(timezone.utc).replace(tzinfo=None)


TWO_RDF = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
           '<rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:Rating="3"/></rdf:RDF>'
           '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description rdf:about="" '
           'xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:subject><rdf:Bag><rdf:li>second</rdf:li></rdf:Bag>'
           "</dc:subject></rdf:Description></rdf:RDF></x:xmpmeta>")
TYPED = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
         '<xmp:Thing rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/" '
         'xmp:Rating="3"><dc:subject><rdf:Bag><rdf:li>typed</rdf:li></rdf:Bag></dc:subject></xmp:Thing>'
         "</rdf:RDF></x:xmpmeta>")


@pytest.mark.parametrize("form", ["two-rdf", "typed-node"])
def test_two_rdf_elements_or_a_typed_node_are_refused_never_given_a_second_subject(tmp_path, form):
    """tagger added a dc:subject beside the person's, which exiftool then hid (a duplicate property;
    the XMP Toolkit refuses the packet): such a sidecar is refused, the others written."""
    data = (TWO_RDF if form == "two-rdf" else TYPED).encode()
    root, paths = _library(tmp_path, {"odd": data, "good": DARKTABLE.encode()}, {"circle"})
    summary, errors = _export(root, code=2)
    assert (summary["failed"], summary["written"]) == (1, 1)
    assert "circle" in XmpDoc(paths["good"].read_bytes()).items(SUBJECT)
    assert len(errors) == 1 and "odd.jpg.xmp" in errors[0], errors
    assert ("2 rdf:RDF" if form == "two-rdf" else "typed node") in errors[0], errors
    assert paths["odd"].read_bytes() == data


def test_an_rdf_element_inside_an_xml_literal_is_a_value_not_a_second_packet(tmp_path):
    data = (HEAD + '<dc:rights rdf:parseType="Literal"><rdf:RDF><rdf:Description><dc:subject>v</dc:subject>'
            "</rdf:Description></rdf:RDF></dc:rights><dc:subject><rdf:Bag><rdf:li>lit</rdf:li></rdf:Bag>"
            "</dc:subject>" + TAIL).encode()
    root, paths = _library(tmp_path, {"p": data}, {"star"})
    assert _export(root)[0]["written"] == 1
    assert XmpDoc(paths["p"].read_bytes()).items(SUBJECT) == ["lit", "star"]


@pytest.mark.parametrize("ext", [".Xmp", ".xmP", ".XMP"])
@pytest.mark.parametrize("naming", ["photo.jpg.xmp", "photo.xmp"])
def test_a_sidecar_whose_extension_differs_in_case_is_merged_into_not_doubled(tmp_path, ext, naming):
    root, paths = _library(tmp_path, {"p": None}, {"circle"})
    side = paths["p"].with_name(("p.jpg" if naming == "photo.jpg.xmp" else "p") + ext)
    side.write_bytes(DARKTABLE.encode())
    summary, _ = _export(root, 0, "--sidecar-name", naming)
    assert summary["written"] == 1
    assert sorted(p.name for p in side.parent.iterdir()) == sorted(["p.jpg", side.name])
    assert set(XmpDoc(side.read_bytes()).items(SUBJECT)) == {"holiday", "star", "circle"}
    [(_, kw)] = image_keywords([str(side.parent / "p.jpg")], embedded=False)  # import-keywords reads it too
    assert {"holiday", "star"} <= kw.flat and "circle" not in kw.flat
