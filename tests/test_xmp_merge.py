"""XMP export merges, never replaces: sidecars in the forms exiftool, digiKam and darktable write keep
every field a person set (read back with exiftool), gain the machine keywords, lose only tagger's own
stale ones at a later run's export, are byte-identical when the same run is exported again, and a
kill during an export leaves each sidecar as it was or complete."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tagger.catalog import Catalog
from tagger.export.sidecars import SidecarChanged, _replace, read_sidecar
from tagger.export.xmp import MachineTag, merge_sidecar
from tagger.workspace import Workspace
from xmpcases import EXIFTOOL, PERSON, as_set, exif, invoke, tag_run, write_fixture

pytestmark = pytest.mark.skipif(EXIFTOOL is None, reason="exiftool (Debian: libimage-exiftool-perl) is not installed")
LABELS = ["circle", "shape", "star", "tree"]
KEYWORD_FIELDS = ("Subject", "HierarchicalSubject", "TagsList")


@pytest.fixture
def library(tmp_path):
    """Three photos, each with a sidecar in one tool's form, and a workspace with a current run."""
    folder = tmp_path / "photos"
    folder.mkdir()
    forms = {}
    for form in PERSON:
        image = folder / f"{form}.jpg"
        image.write_bytes(b"jpeg bytes")
        write_fixture(form, folder / f"{form}.jpg.xmp")
        forms[form] = image
    root = tmp_path / "ws"
    tag_run(root, {str(p): {"star", "tree"} for p in forms.values()}, LABELS)
    return root, forms


def _export(root: Path, *args: str) -> dict:
    out = invoke("export", "-f", "xmp", "-w", str(root), "--json", *args)
    assert out.exit_code == 0, out.output
    return json.loads(out.stdout.splitlines()[-1])


def test_every_person_field_stays_and_machine_keywords_are_added(library):
    root, forms = library
    before = {form: exif(Path(f"{p}.xmp")) for form, p in forms.items()}
    summary = _export(root, "--root", "auto")
    assert summary["written"] == 3 and summary["failed"] == 0
    for form, image in forms.items():
        after = exif(Path(f"{image}.xmp"))
        for key, value in before[form].items():  # rating, title, colour labels, darktable history ...
            if key not in KEYWORD_FIELDS:
                assert after.get(key) == value, (form, key)
        flat, hier = PERSON[form]
        assert as_set(after["Subject"]) == flat | {"star", "tree"}, form
        assert as_set(after["HierarchicalSubject"]) == hier | {"auto|star", "auto|tree"}, form
        if "TagsList" in before[form]:  # kept in step where the person's tool keeps one
            assert as_set(after["TagsList"]) >= as_set(before[form]["TagsList"]) | {"auto/star", "auto/tree"}
        else:
            assert "TagsList" not in after  # never made: digiKam would stop reading lr:hierarchicalSubject
        mine = {e["Label"]: e for e in after["MachineTags"]}
        assert set(mine) == {"star", "tree"} and all(e["Run"] == summary["run"] for e in mine.values())
        assert all(e["Provenance"] == "model" and 0.5 <= float(e["Confidence"]) <= 1 for e in mine.values())
        # a keyword the person had already is not claimed (so never removed by tagger)
        assert ("Keyword" in mine["star"]) == ("star" not in flat), form


def test_a_later_run_removes_only_its_own_stale_keywords(library):
    root, forms = library
    _export(root)
    first = {form: exif(Path(f"{p}.xmp")) for form, p in forms.items()}
    tag_run(root, {str(p): {"circle"} for p in forms.values()}, LABELS)  # star and tree no longer positive
    summary = _export(root)
    assert summary["labels_removed"] == 6 and summary["labels_added"] == 3
    for form, image in forms.items():
        after = exif(Path(f"{image}.xmp"))
        flat, hier = PERSON[form]
        assert as_set(after["Subject"]) == flat | {"circle"}, form  # "star" stays where the person had it
        assert as_set(after["HierarchicalSubject"]) == hier | {"circle"}, form
        for key, value in first[form].items():
            if key not in (*KEYWORD_FIELDS, "MachineTags"):
                assert after.get(key) == value, (form, key)


def test_exporting_the_same_run_again_changes_no_byte(library):
    root, forms = library
    _export(root)
    sidecars = [Path(f"{p}.xmp") for p in forms.values()]
    data = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sidecars}
    summary = _export(root)
    assert summary["unchanged"] == 3 and summary["written"] == 0
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sidecars} == data


def test_a_new_run_with_the_same_keywords_rewrites_no_sidecar(library):
    """A nightly's export touches only the sidecars whose keywords change: a run and its confidences
    alone do not make a photo manager see metadata changed on disk."""
    root, forms = library
    _export(root)
    sidecars = [Path(f"{p}.xmp") for p in forms.values()]
    data = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sidecars}
    run = tag_run(root, {str(p): {"star", "tree"} for p in forms.values()}, LABELS)
    summary = _export(root)
    assert summary["run"] == run and summary["unchanged"] == 3 and summary["written"] == 0
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sidecars} == data
    tag_run(root, {str(p): {"star"} for p in forms.values()}, LABELS)  # tree goes: each sidecar changes
    assert _export(root)["written"] == 3
    assert all(e["Run"] == run + 1 for p in sidecars for e in exif(p)["MachineTags"])


def test_a_keyword_the_person_had_is_not_counted_as_added(tmp_path):
    person = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
              b'<rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:subject><rdf:Bag>'
              b'<rdf:li>Heart</rdf:li></rdf:Bag></dc:subject></rdf:Description></rdf:RDF></x:xmpmeta>')
    res = merge_sidecar(person, [MachineTag("heart", 0.9), MachineTag("star", 0.8)], run=1)
    assert res.added == ["star"]


def test_a_sidecar_without_machine_keywords_is_left_as_its_tool_wrote_it(library):
    root, forms = library
    tag_run(root, {str(p): set() for p in forms.values()}, LABELS)  # no positive anywhere
    sidecars = [Path(f"{p}.xmp") for p in forms.values()]
    data = {p: p.read_bytes() for p in sidecars}
    assert _export(root)["unchanged"] == 3
    assert {p: p.read_bytes() for p in sidecars} == data


def test_a_keyword_the_person_deleted_is_not_written_again(library):
    root, forms = library
    _export(root)
    side = Path(f"{forms['digikam']}.xmp")
    subprocess.run([EXIFTOOL, "-q", "-overwrite_original", "-XMP-dc:Subject-=tree", str(side)], check=True, timeout=60)
    summary = _export(root)
    assert summary["labels_declined"] == 1
    after = exif(side)
    assert "tree" not in as_set(after["Subject"]) and as_set(after["Declined"]) == {"tree"}


def _drop(side: Path, field: str, item: str) -> None:
    subprocess.run([EXIFTOOL, "-q", "-overwrite_original", f"-XMP-{field}-={item}", str(side)], check=True, timeout=60)


def test_each_list_remembers_what_the_person_deleted_from_it_on_its_own(library):
    root, forms = library
    with Catalog.open(Workspace.at(root).catalog) as cat:
        cat.add_parents(["star"], ["shape"])
    _export(root)
    side = Path(f"{forms['digikam']}.xmp")  # digiKam's form: it has a TagsList
    _drop(side, "lr:HierarchicalSubject", "shape|star")  # the path only: the keyword star stays
    _export(root)
    after = exif(side)
    assert "shape|star" not in as_set(after["HierarchicalSubject"]) and "star" in as_set(after["Subject"])
    assert "shape/star" in as_set(after["TagsList"]) and as_set(after["DeclinedPaths"]) == {"shape|star"}
    assert "Declined" not in after and "Keyword" in {e["Label"]: e for e in after["MachineTags"]}["star"]
    data = side.read_bytes()
    assert _export(root)["unchanged"] == 3 and side.read_bytes() == data  # the same run again: no byte changes
    _drop(side, "digiKam:TagsList", "shape/star")
    _export(root)
    after = exif(side)
    assert "shape/star" not in as_set(after["TagsList"]) and as_set(after["DeclinedTags"]) == {"shape/star"}
    assert "star" in as_set(after["Subject"]) and "shape|star" not in as_set(after["HierarchicalSubject"])
    assert _export(root)["unchanged"] == 3 and "star" in as_set(exif(side)["Subject"])


def test_names_xml_cannot_hold_are_refused_and_pipes_are_not_a_hierarchy(tmp_path):
    res = merge_sidecar(None, [MachineTag("bad\ufffename"), MachineTag("a|b"), MachineTag("star"),
                               MachineTag("moon")], run=1, parents={"star": ["a|b"], "moon": ["x\x01"]})
    assert res.refused == ["bad\ufffename"] and "\ufffe" not in res.data.decode("utf-8")
    assert "\x01" not in res.data.decode("utf-8")  # nor a parent's name XML cannot hold
    path = tmp_path / "x.jpg.xmp"
    path.write_bytes(res.data)
    got = exif(path)
    assert as_set(got["Subject"]) == {"a|b", "moon", "star"}
    assert "HierarchicalSubject" not in got  # neither "a|b" nor "a|b|star" would read as the names they are


def test_a_sidecar_changed_meanwhile_is_left_alone(tmp_path):
    path = tmp_path / "a.jpg.xmp"
    write_fixture("darktable", path)
    before, ident = read_sidecar(path)
    merged = merge_sidecar(before, ["star"], run=1).data
    path.write_bytes(before.replace(b'xmp:Rating="3"', b'xmp:Rating="5"'))  # darktable saved meanwhile
    with pytest.raises(SidecarChanged):
        _replace(path, merged, before, ident, crash=False)
    assert b'xmp:Rating="5"' in path.read_bytes() and b"tagger:" not in path.read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["a.jpg.xmp"]  # no temp file left


def _many(tmp_path: Path, n: int) -> tuple[Path, list[Path]]:
    folder = tmp_path / "photos"
    folder.mkdir()
    images = []
    for i in range(n):
        image = folder / f"p{i:04d}.jpg"
        image.write_bytes(b"x")
        write_fixture("digikam" if i % 2 else "darktable", Path(f"{image}.xmp"))
        images.append(image)
    root = tmp_path / "ws"
    tag_run(root, {str(p): {"star", "tree"} for p in images}, LABELS)
    return root, images


def _check_whole(images: list[Path], originals: dict[Path, bytes]) -> tuple[int, int]:
    """Each sidecar is its original bytes or a complete export; counts of (old, new)."""
    old = new = 0
    for image in images:
        side = Path(f"{image}.xmp")
        data = side.read_bytes()
        if data == originals[side]:
            old += 1
        else:
            assert data.rstrip().endswith(b'<?xpacket end="w"?>') and b"<tagger:machineTags>" in data, side
            new += 1
    return old, new


def test_a_crash_before_a_rename_leaves_every_sidecar_whole_and_the_next_export_cleans_up(tmp_path):
    root, images = _many(tmp_path, 12)
    originals = {Path(f"{p}.xmp"): Path(f"{p}.xmp").read_bytes() for p in images}
    out = subprocess.run([sys.executable, "-m", "tagger.cli", "export", "-f", "xmp", "-w", str(root),
                          "--crash-after", "5"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 17, out.stderr[-2000:]
    assert _check_whole(images, originals) == (7, 5)
    assert len([p for p in images[0].parent.iterdir() if p.name.startswith(".tagger-tmp-")]) == 1
    summary = _export(root)
    assert summary["written"] == 7 and summary["unchanged"] == 5
    assert _check_whole(images, originals) == (0, 12)
    assert not [p for p in images[0].parent.iterdir() if p.name.startswith(".tagger-tmp-")]


def test_a_kill_at_any_moment_leaves_no_truncated_sidecar(tmp_path):
    root, images = _many(tmp_path, 400)
    originals = {Path(f"{p}.xmp"): Path(f"{p}.xmp").read_bytes() for p in images}
    proc = subprocess.Popen([sys.executable, "-m", "tagger.cli", "export", "-f", "xmp", "-w", str(root)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:  # wait for the first sidecars, then kill
        if any(Path(f"{p}.xmp").read_bytes() != originals[Path(f"{p}.xmp")] for p in images[:3]):
            break
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    old, new = _check_whole(images, originals)
    assert new >= 1 and old >= 1 and old + new == len(images)  # killed mid-export
