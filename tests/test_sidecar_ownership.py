"""Whose keywords a sidecar export may take out, and when a person's "no" or "yes" wins.

An export takes out only what its own workspace wrote for this image: another workspace's keywords,
and a record copied with another photo's sidecar, are left alone. ``photo.jpg.jpg`` never gets
``photo.jpg``'s sidecar. A person's accept in tagger made after they deleted a keyword writes it back;
a deletion under one ``--root`` holds under another; an empty digiKam TagsList is not filled; a sidecar
that lost every keyword tagger wrote is reported; a legacy Latin-1 IPTC keyword is read as text."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tagger.export.keywords import _iptc_text, embedded_keywords, image_keywords
from tagger.export.record import Owner, read_record
from tagger.export.sidecars import SidecarPlan, write_sidecars
from tagger.export.xmp import HIERARCHY, SUBJECT, TAGS_LIST, MachineTag, merge_sidecar
from tagger.export.xmpdoc import XmpDoc, qname
from xmpcases import DARKTABLE, EXIFTOOL, invoke, tag_run

W1, W2 = Owner("ws-one", "a.jpg"), Owner("ws-two", "a.jpg")
T0, T1, T2 = "2026-12-01T10:00:00.000000Z", "2026-12-02T10:00:00.000000Z", "2026-12-03T10:00:00.000000Z"
EMPTY_TAGSLIST = DARKTABLE.replace(
    "<dc:subject>", '<digiKam:TagsList xmlns:digiKam="http://www.digikam.org/ns/1.0/"><rdf:Seq/></digiKam:TagsList>'
    "<dc:subject>")


def items(data: bytes, prop: str = SUBJECT) -> set[str]:
    return set(XmpDoc(data).items(prop))


def without(data: bytes, item: str) -> bytes:
    """The sidecar with ``item`` deleted from every keyword list (not from tagger's record), as a
    person's photo tool would."""
    doc = XmpDoc(data)
    for prop in (SUBJECT, HIERARCHY, TAGS_LIST):
        doc.edit_list(prop, [item], [])
    return doc.to_bytes()


def test_another_workspaces_keywords_are_never_taken_out():
    one = merge_sidecar(DARKTABLE.encode(), ["star", "tree"], run=1, owner=W1).data
    two = merge_sidecar(one, ["circle"], run=1, owner=W2)
    assert two.removed == [] and items(two.data) >= {"star", "tree", "circle", "holiday"}
    back = merge_sidecar(two.data, ["star"], run=2, owner=W1)  # W1's tree goes, W2's circle stays
    assert back.removed == ["tree"] and items(back.data) >= {"star", "circle", "holiday"} and "tree" not in items(back.data)
    gone = merge_sidecar(back.data, [], run=2, owner=W2)
    assert gone.removed == ["circle"] and items(gone.data) >= {"star", "holiday"} and "circle" not in items(gone.data)
    assert merge_sidecar(gone.data, ["star"], run=2, owner=W1).data == gone.data  # settled: nothing to change


def test_a_keyword_two_workspaces_want_is_handed_over_not_declined():
    one = merge_sidecar(None, ["heart"], run=1, owner=W1).data
    two = merge_sidecar(one, ["heart"], run=1, owner=W2).data  # W1 wrote it: W2 owns no item of it
    assert [e.keyword for e in read_record(XmpDoc(two), W2).entries.values()] == [None]
    dropped = merge_sidecar(two, [], run=2, owner=W1).data  # W1 no longer wants it: W2 still does
    assert "heart" in items(dropped)
    again = merge_sidecar(dropped, ["heart"], run=2, owner=W2)
    assert again.declined == [] and "heart" in items(again.data)
    assert merge_sidecar(again.data, [], run=3, owner=W2).removed == ["heart"]


def test_a_record_copied_with_another_photos_sidecar_takes_nothing_out(tmp_path):
    """b.jpg got a.jpg's sidecar (a duplicated photo): what tagger wrote for a.jpg is b's person's now."""
    a = merge_sidecar(DARKTABLE.encode(), ["flower"], run=1, owner=W1).data
    res = merge_sidecar(a, [], run=2, owner=Owner("ws-one", "b.jpg"))  # a remote image: taken for a copy
    assert res.removed == [] and items(res.data) >= {"flower", "holiday"}
    assert read_record(XmpDoc(res.data)).entries == {}  # the stray record is gone
    for name in ("a.jpg", "b.jpg"):
        (tmp_path / name).write_bytes(b"jpeg")
    (tmp_path / "b.jpg.xmp").write_bytes(a)  # as copied, before any export
    [(_, kw)] = image_keywords([str(tmp_path / "b.jpg")], embedded=False)
    assert {"flower", "holiday"} <= kw.flat
    (tmp_path / "a.jpg").unlink()  # a.jpg renamed b.jpg with its sidecar: the same photo, tagger's flower
    [(_, kw)] = image_keywords([str(tmp_path / "b.jpg")], embedded=False)
    assert "holiday" in kw.flat and "flower" not in kw.flat
    out = write_sidecars([(str(tmp_path / "b.jpg"), [])], SidecarPlan(workspace_id="ws-one"))
    assert out["labels_removed"] == 1 and "flower" not in items((tmp_path / "b.jpg.xmp").read_bytes())


def test_a_raw_and_its_jpeg_sharing_photo_xmp_read_tagger_keywords_as_tagger_s(tmp_path):
    raw, jpg = tmp_path / "IMG_1.CR2", tmp_path / "IMG_1.JPG"
    for p in (raw, jpg):
        p.write_bytes(b"image")
    out = write_sidecars([(str(raw), [MachineTag("star")]), (str(jpg), [MachineTag("tree")])],
                         SidecarPlan(naming="photo.xmp", workspace_id="ws-one"))
    assert (out["written"], out["name_clash"]) == (1, 1)
    kw = dict(image_keywords([str(raw), str(jpg)], embedded=False))
    assert "star" not in kw[str(raw)].flat and "star" not in kw[str(jpg)].flat
    again = write_sidecars([(str(jpg), [])], SidecarPlan(naming="photo.xmp", workspace_id="ws-one"))
    assert again["labels_removed"] == 1 and "star" not in items((tmp_path / "IMG_1.xmp").read_bytes())


@pytest.mark.parametrize("name", ["ctl\x01.jpg", " spaced .jpg", "Zürich.jpg", "bad-\udcff-byte.jpg"])
def test_any_file_name_is_recorded_so_that_it_reads_back(tmp_path, name):
    photo = tmp_path / name
    photo.write_bytes(b"jpeg")
    plan = SidecarPlan(workspace_id="ws-one")
    assert write_sidecars([(str(photo), [MachineTag("tree"), MachineTag("star")])], plan)["written"] == 1
    side = tmp_path / (name + ".xmp")
    rec = read_record(XmpDoc(side.read_bytes()))
    assert {e.label for e in rec.entries.values()} == {"tree", "star"}
    out = write_sidecars([(str(photo), [MachineTag("star")])], plan)
    assert out["labels_removed"] == 1 and items(side.read_bytes()) == {"star"}


def test_a_keyword_a_person_puts_back_after_a_deletion_stays():
    one = merge_sidecar(None, ["heart", "star"], run=1, owner=W1).data
    seen = merge_sidecar(without(one, "heart"), ["circle"], run=1, owner=W2, changed_at=T1)  # W2 finds the "no"
    assert read_record(XmpDoc(seen.data), W2).declined == {"heart"}
    doc = XmpDoc(seen.data)
    doc.edit_list(SUBJECT, [], ["heart"])  # the person changes their mind, in their photo tool
    back = merge_sidecar(doc.to_bytes(), ["star"], run=2, owner=W1)
    assert "heart" in items(back.data)


def test_the_hand_over_compares_labels_as_keywords_are_compared():
    one = merge_sidecar(None, ["dog"], run=1, owner=W1).data
    two = merge_sidecar(one, ["Dog"], run=1, owner=W2).data
    dropped = merge_sidecar(two, [], run=2, owner=W1)
    assert dropped.removed == [] and "dog" in items(dropped.data)
    assert merge_sidecar(dropped.data, ["Dog"], run=2, owner=W2).declined == []


def test_a_deletion_recorded_without_a_time_yields_to_a_later_accept():
    one = merge_sidecar(None, ["heart"], run=1).data
    declined = merge_sidecar(without(one, "heart"), ["heart"], run=2, changed_at=T0).data
    doc = XmpDoc(declined)
    doc.replace_properties([qname("tagger", "declinedAt")], [])  # as written before times were kept
    legacy = doc.to_bytes()
    assert read_record(XmpDoc(legacy)).declined_at == {}
    seen = merge_sidecar(legacy, ["heart"], run=3, changed_at=T1)  # the sidecar's time: the latest it went
    assert read_record(XmpDoc(seen.data)).declined_at == {"heart": T1}
    res = merge_sidecar(legacy, [MachineTag("heart", 1.0, "person", T2)], run=3, changed_at=T1)
    assert res.reinstated == ["heart"] and "heart" in items(res.data)


def test_legacy_entries_belong_to_the_next_workspace_that_exports():
    legacy = merge_sidecar(None, ["star", "tree"], run=1).data  # no workspace recorded
    res = merge_sidecar(legacy, ["star"], run=2, owner=W2)
    assert res.removed == ["tree"]
    assert {e.workspace for e in read_record(XmpDoc(res.data)).entries.values()} == {"ws-two"}


def test_an_export_from_a_second_workspace_leaves_the_firsts_keywords(tmp_path):
    photo = tmp_path / "photos" / "p.jpg"
    photo.parent.mkdir()
    photo.write_bytes(b"jpeg")
    tag_run(tmp_path / "ws1", {str(photo): {"star", "tree"}}, ["star", "tree"])
    tag_run(tmp_path / "ws2", {str(photo): {"circle"}}, ["circle", "star"])
    for ws in ("ws1", "ws2", "ws2"):
        out = invoke("export", "-f", "xmp", "-w", str(tmp_path / ws), "--json")
        assert out.exit_code == 0, out.output
        assert json.loads(out.stdout.splitlines()[-1])["labels_removed"] == 0
    side = Path(str(photo) + ".xmp")
    assert items(side.read_bytes()) == {"star", "tree", "circle"}
    ids = {json.loads((tmp_path / ws / "workspace.json").read_text())["id"] for ws in ("ws1", "ws2")}
    assert len(ids) == 2 and {e.workspace for e in read_record(XmpDoc(side.read_bytes())).entries.values()} <= ids


def test_a_persons_later_accept_overrules_their_earlier_deletion():
    one = merge_sidecar(None, ["heart", "star"], run=1).data
    declined = merge_sidecar(without(one, "heart"), ["heart", "star"], run=2, changed_at=T1)
    assert declined.declined == ["heart"] and read_record(XmpDoc(declined.data)).declined_at == {"heart": T1}
    earlier = merge_sidecar(declined.data, [MachineTag("heart", 1.0, "person", T0), "star"], run=3, changed_at=T2)
    assert earlier.declined == ["heart"] and "heart" not in items(earlier.data)  # accepted before deleting it
    model = merge_sidecar(declined.data, [MachineTag("heart", 0.9, "model"), "star"], run=3, changed_at=T2)
    assert model.declined == ["heart"]
    later = merge_sidecar(declined.data, [MachineTag("heart", 1.0, "person", T2), "star"], run=3, changed_at=T2)
    assert later.reinstated == ["heart"] and later.declined == [] and "heart" in items(later.data)
    assert read_record(XmpDoc(later.data)).declined == set()


def test_review_accept_after_a_deletion_writes_the_keyword_back(tmp_path):
    photo = tmp_path / "photos" / "p.jpg"
    photo.parent.mkdir()
    photo.write_bytes(b"jpeg")
    root = tmp_path / "ws"
    tag_run(root, {str(photo): {"heart", "star"}}, ["heart", "star"])
    side = Path(str(photo) + ".xmp")

    def export() -> dict:
        out = invoke("export", "-f", "xmp", "-w", str(root), "--json")
        assert out.exit_code == 0, out.output
        return json.loads(out.stdout.splitlines()[-1])
    export()
    side.write_bytes(without(side.read_bytes(), "heart"))
    first = export()
    assert first["labels_declined"] == 1 and "heart" not in items(side.read_bytes())
    assert export()["labels_declined"] == 1  # counted though the sidecar is unchanged
    out = invoke("review", "accept", str(photo), "heart", "--who", "jo", "-w", str(root))
    assert out.exit_code == 0, out.output
    back = export()
    assert back["labels_reinstated"] == 1 and "heart" in items(side.read_bytes())


def test_every_keyword_gone_at_once_is_reported(tmp_path):
    one = merge_sidecar(DARKTABLE.encode(), ["star", "tree", "circle"], run=1, owner=W1).data
    wiped = without(without(without(one, "star"), "tree"), "circle")
    assert merge_sidecar(wiped, ["star", "tree", "circle"], run=2, owner=W1).cleared
    assert not merge_sidecar(without(one, "star"), ["star", "tree", "circle"], run=2, owner=W1).cleared
    photo = tmp_path / "a.jpg"  # the image the record was written for
    photo.write_bytes(b"jpeg")
    (tmp_path / "a.jpg.xmp").write_bytes(wiped)
    out = write_sidecars([(str(photo), [MachineTag(x) for x in ("star", "tree", "circle")])],
                         SidecarPlan(workspace_id="ws-one"))
    assert out["sidecars_cleared"] == 1 and out["labels_declined"] == 3


def test_a_deleted_path_stays_deleted_under_another_root():
    parents = {"bell": ("object",)}
    one = merge_sidecar(None, ["bell"], run=1, parents=parents).data
    gone = without(one, "object|bell")
    rooted = merge_sidecar(gone, ["bell"], run=2, parents=parents, root="auto").data
    assert items(rooted, HIERARCHY) == set() and "bell" in items(rooted)
    two = merge_sidecar(None, ["bell"], run=1, parents=parents, root="auto").data
    plain = merge_sidecar(without(two, "auto|object|bell"), ["bell"], run=2, parents=parents).data
    assert items(plain, HIERARCHY) == set()
    same = merge_sidecar(gone, ["bell"], run=2, parents=parents, root="object").data  # a root named as a parent
    assert items(same, HIERARCHY) == set()


def test_a_deleted_path_does_not_hold_back_the_labels_new_paths():
    """pets|dog deleted; pets leaves the hierarchy: the path dog is another path, written."""
    one = merge_sidecar(None, ["dog"], run=1, parents={"dog": ("pets",)}).data
    res = merge_sidecar(without(one, "pets|dog"), ["dog"], run=2, parents={}).data
    assert items(res, HIERARCHY) == {"dog"}


def test_an_empty_tagslist_is_not_filled():
    res = merge_sidecar(EMPTY_TAGSLIST.encode(), ["star", "circle"], run=1)
    assert items(res.data, TAGS_LIST) == set() and "circle" in items(res.data, HIERARCHY)


def test_double_extensions_never_share_a_sidecar(tmp_path):
    """photo.jpg.jpg's photo.xmp-named sidecar would be photo.jpg.xmp: photo.jpg's own (darktable)."""
    first, second = tmp_path / "photo.jpg", tmp_path / "photo.jpg.jpg"
    for p in (first, second):
        p.write_bytes(b"jpeg")
    side = tmp_path / "photo.jpg.xmp"
    side.write_text(DARKTABLE)
    out = write_sidecars([(str(second), [MachineTag("circle")])], SidecarPlan(naming="photo.xmp"))
    assert out["name_clash"] == 1 and out["written"] == 0 and side.read_text() == DARKTABLE
    kw = dict(image_keywords([str(first), str(second)], embedded=False))
    assert "holiday" in kw[str(first)].flat and not kw[str(second)]
    alone = tmp_path / "other"
    alone.mkdir()
    (alone / "x.y.jpg").write_bytes(b"jpeg")  # no file x.y beside it: its photo.xmp name is its own
    assert write_sidecars([(str(alone / "x.y.jpg"), [MachineTag("star")])], SidecarPlan(naming="photo.xmp"))["written"] == 1


def test_legacy_iptc_keywords_are_read_as_text(tmp_path):
    assert _iptc_text("base64:" + "SG9jaHplaXQgTfxsbGVy") == "Hochzeit Müller"  # Latin-1 bytes
    assert _iptc_text("base64:" + "TcO8bGxlcg==") == "Müller" and _iptc_text("plain") == "plain"
    if EXIFTOOL is None:
        pytest.skip("exiftool is not installed")
    photo = tmp_path / "p.jpg"
    from PIL import Image
    Image.new("RGB", (8, 8)).save(photo)
    subprocess.run([EXIFTOOL, "-q", "-overwrite_original", "-charset", "iptc=latin1", "-IPTC:Keywords=Hochzeit Müller",
                    str(photo)], check=True)
    assert b"Hochzeit M\xfcller" in photo.read_bytes()
    assert "Hochzeit Müller" in embedded_keywords([str(photo)])[str(photo)].flat


def test_a_persons_keyword_in_the_other_sidecar_is_read(tmp_path):
    """Tagger wrote hexagon into photo.jpg.xmp; the person's Lightroom photo.xmp holds hexagon too."""
    photo = tmp_path / "p.jpg"
    photo.write_bytes(b"jpeg")
    (tmp_path / "p.jpg.xmp").write_bytes(merge_sidecar(None, ["hexagon"], run=1).data)
    (tmp_path / "p.xmp").write_text(DARKTABLE.replace("<rdf:li>star</rdf:li>", "<rdf:li>hexagon</rdf:li>"))
    [(_, kw)] = image_keywords([str(photo)], embedded=False)
    assert {"hexagon", "holiday"} <= kw.flat
    (tmp_path / "p.xmp").unlink()
    [(_, kw)] = image_keywords([str(photo)], embedded=False)
    assert "hexagon" not in kw.flat


def test_a_read_only_packet_mark_is_kept():
    data = DARKTABLE + '<?xpacket end="r"?>\n'
    out = merge_sidecar(data.encode(), ["circle"], run=1).data
    assert out.rstrip().endswith(b'<?xpacket end="r"?>') and "circle" in items(out)
    assert merge_sidecar(DARKTABLE.encode(), ["circle"], run=1).data.rstrip().endswith(b'<?xpacket end="w"?>')


def test_a_comment_in_a_list_tagger_empties_survives():
    one = merge_sidecar(None, ["bell"], run=1, parents={"bell": ("object",)}).data
    data = one.replace(b"<rdf:li>object|bell</rdf:li>", b"<!-- Jane: checked --><rdf:li>object|bell</rdf:li>", 1)
    assert data != one
    out = merge_sidecar(data, [], run=2, parents={"bell": ("object",)}).data
    assert b"<!-- Jane: checked -->" in out and "bell" not in items(out) and items(out, HIERARCHY) == set()


def test_the_workspace_id_never_blocks_an_export_nor_rewrites_broken_settings(tmp_path):
    from tagger.workspace import Workspace
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "workspace.json").write_text("{broken")
    first = Workspace.at(broken).identity()
    assert first == Workspace.at(broken).identity() and (broken / "workspace.json").read_text() == "{broken"
    fresh = Workspace.at(tmp_path / "fresh")
    ident = fresh.identity()
    assert json.loads((tmp_path / "fresh" / "workspace.json").read_text())["id"] == ident != first
