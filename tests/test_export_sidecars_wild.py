"""`tagger export -f xmp` into sidecars as other programs write them: Lightroom/ACR, darktable (CRLF),
digiKam (xpacket padding), exiftool, a UTF-8 BOM, UTF-16, dc bound to another prefix, several
rdf:Description blocks, a simple or split dc:subject, comments. Every field and keyword of the person's
survives (checked with a plain XML parse, and with exiftool where installed), re-exporting changes no
byte, a later run takes out only tagger's keywords; a sidecar that cannot be merged is one `error:`
line and stays byte-identical while the other sidecars are written."""
from __future__ import annotations

import json
import os
import subprocess
import unicodedata
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from xmpcases import EXIFTOOL, as_set, exif, invoke, photo_library, tag_run

LABELS = ["circle", "star", "tree"]
RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
DC, LR, DK = "http://purl.org/dc/elements/1.1/", "http://ns.adobe.com/lightroom/1.0/", "http://www.digikam.org/ns/1.0/"
XMP = "http://ns.adobe.com/xap/1.0/"
KEYWORD_TAGS = {f"{{{DC}}}subject", f"{{{LR}}}hierarchicalSubject", f"{{{DK}}}TagsList"}
HEAD = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/" '
        'xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmlns:lr="http://ns.adobe.com/lightroom/1.0/"')
TAIL = "</rdf:Description></rdf:RDF></x:xmpmeta>"

LIGHTROOM = """<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="Adobe XMP Core 7.0-c000 1.000000">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmlns:xmpMM="http://ns.adobe.com/xap/1.0/mm/"
    xmlns:stEvt="http://ns.adobe.com/xap/1.0/sType/ResourceEvent#" xmlns:dc="http://purl.org/dc/elements/1.1/"
    xmlns:crs="http://ns.adobe.com/camera-raw-settings/1.0/" xmlns:lr="http://ns.adobe.com/lightroom/1.0/"
   xmp:Rating="5" xmp:Label="Green" crs:Version="15.3" crs:Exposure2012="+0.35" crs:HasSettings="True">
   <dc:subject><rdf:Bag><rdf:li>Smith, John</rdf:li><rdf:li>Rock &amp; Roll</rdf:li><rdf:li>Z\u00fcrich</rdf:li>
    <rdf:li>\u6771\u4eac</rdf:li></rdf:Bag></dc:subject>
   <dc:description><rdf:Alt><rdf:li xml:lang="x-default">Line one&#xD;
Line two</rdf:li></rdf:Alt></dc:description>
   <lr:hierarchicalSubject><rdf:Bag><rdf:li>People|Smith, John</rdf:li><rdf:li>Music|Rock &amp; Roll</rdf:li>
    </rdf:Bag></lr:hierarchicalSubject>
   <xmpMM:History><rdf:Seq><rdf:li stEvt:action="saved" stEvt:when="2023-05-01T10:11:12+02:00"
     stEvt:softwareAgent="Adobe Photoshop Lightroom Classic 12.3 (Windows)" stEvt:changed="/metadata"/></rdf:Seq>
   </xmpMM:History>
   <crs:ToneCurvePV2012><rdf:Seq><rdf:li>0, 0</rdf:li><rdf:li>255, 255</rdf:li></rdf:Seq></crs:ToneCurvePV2012>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
"""
DARKTABLE = """<?xml version="1.0" encoding="UTF-8"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="XMP Core 4.4.0-Exiv2">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/"
    xmlns:lr="http://ns.adobe.com/lightroom/1.0/" xmlns:darktable="http://darktable.sf.net/"
   xmp:Rating="1" darktable:xmp_version="5" darktable:history_end="1">
   <darktable:masks_history><rdf:Seq/></darktable:masks_history>
   <dc:subject><rdf:Bag><rdf:li>darktable|format|jpg</rdf:li><rdf:li>tree</rdf:li></rdf:Bag></dc:subject>
   <lr:hierarchicalSubject><rdf:Bag><rdf:li>darktable|format|jpg</rdf:li><rdf:li>nature|tree</rdf:li></rdf:Bag>
   </lr:hierarchicalSubject>
   <darktable:history><rdf:Seq><rdf:li darktable:num="0" darktable:operation="flip" darktable:enabled="1"
     darktable:params="ffffffff" darktable:multi_name=""/></rdf:Seq></darktable:history>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
"""
DIGIKAM = ("""<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="XMP Core 4.4.0-Exiv2">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about="" xmlns:digiKam="http://www.digikam.org/ns/1.0/" xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    xmlns:DC="http://purl.org/dc/elements/1.1/" xmlns:lr="http://ns.adobe.com/lightroom/1.0/" xmp:Rating="3">
   <digiKam:TagsList><rdf:Seq><rdf:li>Family/Anna</rdf:li><rdf:li>Holiday</rdf:li></rdf:Seq></digiKam:TagsList>
   <lr:hierarchicalSubject><rdf:Bag><rdf:li>Family|Anna</rdf:li><rdf:li>Holiday</rdf:li></rdf:Bag>
   </lr:hierarchicalSubject>
   <DC:subject><rdf:Bag><rdf:li>Anna</rdf:li><rdf:li>Holiday</rdf:li></rdf:Bag></DC:subject>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
""" + (" " * 99 + "\n") * 20 + '<?xpacket end="w"?>')
# exiftool's own layout: one rdf:Description per namespace, single quotes
EXIFTOOL_STYLE = """<?xpacket begin='\ufeff' id='W5M0MpCehiHzreSzNTczkc9d'?>
<x:xmpmeta xmlns:x='adobe:ns:meta/' x:xmptk='Image::ExifTool 12.57'>
<rdf:RDF xmlns:rdf='http://www.w3.org/1999/02/22-rdf-syntax-ns#'>
 <rdf:Description rdf:about='' xmlns:Iptc4xmpExt='http://iptc.org/std/Iptc4xmpExt/2008-02-29/'>
  <Iptc4xmpExt:PersonInImage><rdf:Bag><rdf:li>John</rdf:li></rdf:Bag></Iptc4xmpExt:PersonInImage>
 </rdf:Description>
 <rdf:Description rdf:about='' xmlns:dc='http://purl.org/dc/elements/1.1/'>
  <dc:subject><rdf:Bag><rdf:li>boat</rdf:li><rdf:li>Smith, John</rdf:li></rdf:Bag></dc:subject>
 </rdf:Description>
 <rdf:Description rdf:about='' xmlns:exif='http://ns.adobe.com/exif/1.0/'>
  <exif:GPSLatitude>59,54.0N</exif:GPSLatitude>
 </rdf:Description>
</rdf:RDF>
</x:xmpmeta>
<?xpacket end='w'?>"""

FORMS = {
    "lightroom": LIGHTROOM.encode(),
    "darktable-crlf": DARKTABLE.replace("\n", "\r\n").encode(),
    "digikam-padded": DIGIKAM.encode(),
    "exiftool": EXIFTOOL_STYLE.encode(),
    "bom": b"\xef\xbb\xbf" + LIGHTROOM.encode(),
    "utf16": DARKTABLE.replace('encoding="UTF-8"', 'encoding="UTF-16"').encode("utf-16"),
    "blank-lines-first": b"\r\n\n  " + DARKTABLE.encode(),
}


# -- an XML reader independent of tagger's ---------------------------------------------------------
def _descriptions(data: bytes) -> list[ET.Element]:
    return ET.fromstring(data.lstrip()).findall(f".//{{{RDF}}}Description")


def keywords(path: Path, tag: str = f"{{{DC}}}subject") -> list[str]:
    """Every item of list property ``tag``, as a reader of all descriptions sees them."""
    out = []
    for d in _descriptions(path.read_bytes()):
        out += [d.attrib[tag]] if tag in d.attrib else []
        for e in d.findall(tag):
            out += [li.text or "" for li in e.iter(f"{{{RDF}}}li")] or [e.text or ""]
    return [v.strip() for v in out if v.strip()]


def fields(data: bytes) -> list[tuple]:
    """Every element, attribute and text below the descriptions but the keyword lists and tagger's own."""
    out = []

    def walk(e: ET.Element, where: tuple) -> None:
        for c in e:
            if c.tag in KEYWORD_TAGS or c.tag.startswith("{urn:x-tagger"):
                continue
            here = (*where, c.tag)
            out.append((here, tuple(sorted(c.attrib.items())), (c.text or "").strip() if not len(c) else ""))
            walk(c, here)
    for d in _descriptions(data):
        out.append(("attributes", tuple(sorted((k, v) for k, v in d.attrib.items() if k not in KEYWORD_TAGS))))
        walk(d, ())
    return sorted(out, key=repr)


def _library(tmp_path: Path, sidecars: dict[str, bytes | None], positives: set[str],
             ext: str = ".xmp") -> tuple[Path, dict[str, Path]]:
    return photo_library(tmp_path, sidecars, positives, LABELS, ext)


def _export(root: Path, code: int = 0) -> tuple[dict, str]:
    out = invoke("export", "-f", "xmp", "-w", str(root), "--json")
    assert out.exit_code == code, out.output
    return json.loads(out.stdout.splitlines()[-1]), out.stderr


@pytest.mark.parametrize("form", list(FORMS))
def test_a_tools_sidecar_keeps_every_field_and_keyword_across_runs(tmp_path, form):
    root, paths = _library(tmp_path, {"p": FORMS[form]}, {"star", "tree"})
    side, original = paths["p"], FORMS[form]
    mine = set(keywords(side))
    before_exif = exif(side) if EXIFTOOL else {}
    assert _export(root)[0]["written"] == 1
    assert fields(side.read_bytes()) == fields(original)
    assert set(keywords(side)) == mine | {"star", "tree"}
    if before_exif.get("FileType") == "XMP":  # exiftool sees the same person's values (a CR in a caption too)
        after = exif(side)
        for key, value in before_exif.items():
            if key not in ("Subject", "HierarchicalSubject", "TagsList"):
                assert after.get(key) == value, key
    data = side.read_bytes()
    assert _export(root)[0]["unchanged"] == 1 and side.read_bytes() == data
    tag_run(root, {str(side.with_suffix("")): {"circle"}}, LABELS)
    _export(root)
    assert fields(side.read_bytes()) == fields(original)  # the second rewrite loses nothing either
    assert set(keywords(side)) == mine | {"circle"}  # tagger's own went, a person's "tree" stayed


def test_a_carriage_return_in_a_caption_survives_repeated_rewrites(tmp_path):
    root, paths = _library(tmp_path, {"p": LIGHTROOM.encode()}, {"star"})
    for positives in ({"star"}, {"tree"}, {"circle"}):
        tag_run(root, {str(paths["p"].with_suffix("")): positives}, LABELS)
        _export(root)
        captions = [li.text for d in _descriptions(paths["p"].read_bytes())
                    for li in d.iter(f"{{{RDF}}}li") if li.text and li.text.startswith("Line one")]
        assert captions == ["Line one\r\nLine two"], positives


def test_a_keyword_the_person_has_in_another_case_or_form_is_not_added_twice(tmp_path):
    nfd_tree = unicodedata.normalize("NFD", "tr\u00e9e")
    side = HEAD + f"><dc:subject><rdf:Bag><rdf:li>Star</rdf:li><rdf:li>{nfd_tree}</rdf:li></rdf:Bag></dc:subject>"
    side += TAIL
    folder = tmp_path / "photos"
    root, paths = _library(tmp_path, {"p": side.encode()}, set())
    tag_run(root, {str(folder / "p.jpg"): {"star", "tr\u00e9e"}}, [*LABELS, "tr\u00e9e"])
    _export(root)
    assert sorted(keywords(paths["p"])) == sorted(["Star", nfd_tree])
    tag_run(root, {str(folder / "p.jpg"): {"circle"}}, [*LABELS, "tr\u00e9e"])
    _export(root)  # the person's own are never taken out
    assert sorted(keywords(paths["p"])) == sorted(["Star", nfd_tree, "circle"])


def test_a_subject_split_over_descriptions_ends_as_one_list_holding_every_item(tmp_path):
    """An attribute in one description and a list in another: readers see only one of them, so the
    person's items and tagger's go together into a single dc:subject."""
    data = (HEAD + ' dc:subject="dog"/><rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/">'
            "<dc:subject><rdf:Bag><rdf:li>cat</rdf:li></rdf:Bag></dc:subject>" + TAIL)
    root, paths = _library(tmp_path, {"p": data.encode()}, {"star"})
    _export(root)
    subjects = [e for d in _descriptions(paths["p"].read_bytes()) for e in d.findall(f"{{{DC}}}subject")]
    assert len(subjects) == 1 and sorted(keywords(paths["p"])) == ["cat", "dog", "star"]
    if EXIFTOOL:
        assert as_set(exif(paths["p"])["Subject"]) == {"cat", "dog", "star"}


def test_comments_and_processing_instructions_in_the_packet_survive(tmp_path):
    data = (HEAD + "><!-- reviewed by Anna --><?editor keep?><dc:subject><rdf:Bag><rdf:li>dog</rdf:li>"
            "<!-- second opinion --></rdf:Bag></dc:subject>" + TAIL)
    root, paths = _library(tmp_path, {"p": data.encode()}, {"star"})
    _export(root)
    text = paths["p"].read_text(encoding="utf-8")
    assert "<!-- reviewed by Anna -->" in text and "<?editor keep?>" in text and "<!-- second opinion -->" in text
    assert sorted(keywords(paths["p"])) == ["dog", "star"]


def test_an_empty_sidecar_without_labels_is_not_rewritten(tmp_path):
    root, paths = _library(tmp_path, {"p": b""}, set())
    summary, _ = _export(root)
    assert summary["unchanged"] == 1 and paths["p"].read_bytes() == b""


def test_a_record_naming_a_persons_keyword_never_takes_it_out(tmp_path):
    """A record edited by hand (or copied from another photo's sidecar) claiming the person's keyword
    for a label: tagger only ever removes the label's own keyword and paths."""
    record = ('<tagger:machineTags xmlns:tagger="urn:x-tagger:xmp:1.0#"><rdf:Bag><rdf:li rdf:parseType="Resource">'
              "<tagger:label>star</tagger:label><tagger:keyword>holiday</tagger:keyword><tagger:paths><rdf:Bag>"
              "<rdf:li>places|Paris</rdf:li><rdf:li>star</rdf:li></rdf:Bag></tagger:paths></rdf:li></rdf:Bag>"
              "</tagger:machineTags>")
    data = (HEAD + "><dc:subject><rdf:Bag><rdf:li>holiday</rdf:li><rdf:li>star</rdf:li></rdf:Bag></dc:subject>"
            "<lr:hierarchicalSubject><rdf:Bag><rdf:li>places|Paris</rdf:li><rdf:li>star</rdf:li></rdf:Bag>"
            "</lr:hierarchicalSubject>" + record + TAIL)
    root, paths = _library(tmp_path, {"p": data.encode()}, {"circle"})  # star no longer positive
    _export(root)
    assert sorted(keywords(paths["p"])) == ["circle", "holiday", "star"]
    assert sorted(keywords(paths["p"], f"{{{LR}}}hierarchicalSubject")) == ["circle", "places|Paris"]


def test_an_upper_case_xmp_sidecar_is_merged_not_doubled(tmp_path):
    root, paths = _library(tmp_path, {"p": None}, {"star"})
    upper = paths["p"].with_name("p.jpg.XMP")
    upper.write_bytes(DARKTABLE.encode())
    _export(root)
    assert not paths["p"].exists() or paths["p"].samefile(upper)
    assert set(keywords(upper)) == {"darktable|format|jpg", "tree", "star"}


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")
def test_an_export_run_as_root_keeps_the_sidecars_owner(tmp_path):
    root, paths = _library(tmp_path, {"p": DARKTABLE.encode()}, {"star"})
    os.chown(paths["p"], 1234, 2345)
    os.chmod(paths["p"], 0o640)
    _export(root)
    st = paths["p"].stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (1234, 2345, 0o640) and "star" in keywords(paths["p"])


def test_a_symlinked_sidecar_is_written_through_its_link(tmp_path):
    real = tmp_path / "elsewhere.xmp"
    real.write_bytes(DARKTABLE.encode())
    root, paths = _library(tmp_path, {"p": None}, {"star"})
    paths["p"].symlink_to(real)
    _export(root)
    assert paths["p"].is_symlink() and "star" in keywords(real)


def test_a_sidecar_shared_through_a_link_is_one_sidecar_and_keeps_its_extended_attributes(tmp_path):
    """p's sidecar and q's (a link to it) are one file: merged for p only (name clash for q), so a second
    export of the same run changes nothing; the person's extended attributes (desktop tags) stay."""
    root, paths = _library(tmp_path, {"p": DARKTABLE.encode(), "q": None}, {"star"})
    paths["q"].symlink_to(paths["p"])
    try:
        os.setxattr(paths["p"], "user.xdg.tags", b"red")
    except (AttributeError, OSError):
        pytest.skip("no user extended attributes on this file system")
    first, _ = _export(root)
    assert (first["written"], first["name_clash"]) == (1, 1) and "star" in keywords(paths["p"])
    second, _ = _export(root)
    assert second["written"] == 0 and second["unchanged"] == 1 and paths["q"].is_symlink()
    assert os.getxattr(paths["p"], "user.xdg.tags") == b"red"


def test_qualified_keywords_literals_and_empty_packets(tmp_path):
    """A keyword written as a qualified value is the person's (read, never doubled, qualifiers kept);
    an XML literal keeps its white space; an empty packet is a sidecar to merge into, not an error."""
    from tagger.export.keywords import sidecar_keywords
    from tagger.export.xmp import merge_sidecar
    qualified = (HEAD + '><dc:subject><rdf:Bag><rdf:li rdf:parseType="Resource"><rdf:value>Star</rdf:value>'
                 '<xmp:Label>q</xmp:Label></rdf:li><rdf:li><rdf:Description rdf:value="moon"/></rdf:li></rdf:Bag>'
                 '</dc:subject><dc:rights rdf:parseType="Literal"><b>bold</b> <i>it</i>\n  x</dc:rights>' + TAIL)
    side = tmp_path / "q.jpg.xmp"
    side.write_bytes(qualified.encode())
    assert sidecar_keywords(side).flat == {"Star", "moon"}
    out = merge_sidecar(qualified.encode(), ["star", "moon", "tree"], run=1)
    desc = _descriptions(out.data)[0]
    items = desc.find(f"{{{DC}}}subject")[0].findall(f"{{{RDF}}}li")
    assert [li.text for li in items][2:] == ["tree"] and items[0].find(f"{{{XMP}}}Label").text == "q"
    assert "<b>bold</b> <i>it</i>\n  x</dc:rights>" in out.data.decode()
    for empty in (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"/>', b'\xef\xbb\xbf<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?>'
                  b'\n<?xpacket end="w"?>', b'<?xml version="1.0"?>\n'):
        assert b"<rdf:li>star</rdf:li>" in merge_sidecar(empty, ["star"], run=1).data, empty


def _bad(kind: str, side: Path) -> None:
    """Put a sidecar at ``side`` that no export may change."""
    deep = "<a:x>" * 3000 + "v" + "</a:x>" * 3000
    data = {
        "truncated": DARKTABLE[:-60].encode(),
        "not-xml": b"\0" * 64,
        "unknown-encoding": DARKTABLE.replace("UTF-8", "x-made-up").encode(),
        "doctype-utf16": ('<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE x [<!ENTITY a "aaaa">]>'
                          + HEAD + '><dc:subject><rdf:Bag><rdf:li>&a;</rdf:li></rdf:Bag></dc:subject>' + TAIL
                          ).encode("utf-16"),
        "deep": (HEAD + ' xmlns:a="urn:a">' + deep + TAIL).encode(),
        "structured-subject": (HEAD + '><dc:subject rdf:parseType="Resource"><xmp:Label>x</xmp:Label></dc:subject>'
                               + TAIL).encode(),
        "read-only": DARKTABLE.encode(),
    }.get(kind)
    if data is not None:
        side.write_bytes(data)
    if kind == "read-only":
        side.chmod(0o444)
    elif kind == "directory":
        side.mkdir()
    elif kind == "dangling-link":  # a share's sidecar, the share not mounted: its mount point is empty
        (side.parent / "mnt").mkdir()
        side.symlink_to(side.parent / "mnt" / "x.xmp")


@pytest.mark.parametrize("kind", ["truncated", "not-xml", "unknown-encoding", "doctype-utf16", "deep",
                                  "structured-subject", "read-only", "directory", "dangling-link"])
def test_a_sidecar_that_cannot_be_merged_is_one_error_line_and_left_as_it_was(tmp_path, kind):
    root, paths = _library(tmp_path, {"bad": None, "good": DARKTABLE.encode()}, {"star"})
    _bad(kind, paths["bad"])
    before = paths["bad"].read_bytes() if paths["bad"].is_file() else None
    listing = sorted(paths["bad"].parent.rglob("*"))
    summary, err = _export(root, code=2)
    assert summary["failed"] == 1 and summary["written"] == 1 and "star" in keywords(paths["good"])
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "bad.jpg.xmp" in errors[0] and "Traceback" not in err, err
    assert (paths["bad"].read_bytes() if paths["bad"].is_file() else None) == before
    assert sorted(paths["bad"].parent.rglob("*")) == listing  # no file made, no temp file left


def test_a_failure_nobody_foresaw_in_one_sidecar_is_reported_not_a_traceback(tmp_path, monkeypatch):
    from tagger.export import sidecars
    root, paths = _library(tmp_path, {"p": DARKTABLE.encode()}, {"star"})

    def broken(*_args, **_kwargs):
        raise RecursionError("maximum recursion depth exceeded")
    monkeypatch.setattr(sidecars, "merge_sidecar", broken)
    summary, err = _export(root, code=2)
    assert summary["failed"] == 1 and "RecursionError" in summary["first_error"]
    assert paths["p"].read_bytes() == DARKTABLE.encode()


@pytest.mark.skipif(EXIFTOOL is None, reason="exiftool (Debian: libimage-exiftool-perl) is not installed")
def test_a_sidecar_exiftool_writes_from_a_photo_keeps_its_fields(tmp_path):
    from PIL import Image
    photo = tmp_path / "src.jpg"
    Image.new("RGB", (8, 8)).save(photo)
    subprocess.run([EXIFTOOL, "-q", "-overwrite_original", "-Make=Nikon", "-XMP-dc:Subject=boat", "-XMP-xmp:Rating=3",
                    "-GPSLatitude=59.9", "-GPSLatitudeRef=N", str(photo)], check=True, timeout=60)
    root, paths = _library(tmp_path, {"p": None}, {"star"})
    subprocess.run([EXIFTOOL, "-q", "-o", str(paths["p"]), str(photo)], check=True, timeout=60)
    before = exif(paths["p"])
    _export(root)
    after = exif(paths["p"])
    assert {k: after.get(k) for k in before if k != "Subject"} == {k: v for k, v in before.items() if k != "Subject"}
    assert as_set(after["Subject"]) == {"boat", "star"}


def test_thousands_of_namespace_declarations_keep_every_value_and_the_registry_small():
    """ElementTree's prefix registry is global and each registration scans it: a sidecar declaring
    thousands of prefixes made one merge take seconds (and more with each such file). Only a bounded
    number of a document's own prefixes is registered; the rest are written ns0 ..., values whole."""
    from tagger.export.xmp import merge_sidecar
    decl = " ".join(f'xmlns:p{i}="urn:x{i}"' for i in range(3000))
    data = (HEAD + f' {decl}><p1:rating>5</p1:rating><p2999:note>kept</p2999:note><dc:subject><rdf:Bag>'
            "<rdf:li>dog</rdf:li></rdf:Bag></dc:subject>" + TAIL).encode()
    before = len(ET._namespace_map)  # the registry the fix keeps small
    out = merge_sidecar(data, ["star"], run=1).data
    assert len(ET._namespace_map) < before + 300
    (desc,) = _descriptions(out)
    assert desc.find("{urn:x1}rating").text == "5" and desc.find("{urn:x2999}note").text == "kept"
    assert sorted(li.text for li in desc.find(f"{{{DC}}}subject").iter(f"{{{RDF}}}li")) == ["dog", "star"]


def test_the_error_line_names_the_sidecar_that_failed_not_an_earlier_name_clash(tmp_path):
    root, paths = _library(tmp_path, {"a": DARKTABLE.encode(), "b": None, "c": b"garbage, not XML"}, {"star"})
    paths["b"].symlink_to(paths["a"])  # b's sidecar is a's: a name clash, met before c's failure
    summary, err = _export(root, code=2)
    assert (summary["written"], summary["name_clash"], summary["failed"]) == (1, 1, 1)
    assert summary["first_error"].startswith(str(paths["c"])) and "not XML" in summary["first_error"]
    assert summary["first_name_clash"].startswith(str(paths["b"]))
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "c.jpg.xmp" in errors[0], err
    assert any(line.startswith("warning: 1 image(s) share a sidecar name") and "b.jpg.xmp" in line
               for line in err.splitlines()), err
