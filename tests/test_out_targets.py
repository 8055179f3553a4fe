"""`--out` of `export` and `import-keywords` given as a symbolic link or a folder name: a link is
written through to its target (the link stays), every rule of a target applied to the file it points
to; a link to a process's standard stream is refused with `--out -` suggested; a name ending in `/`
is refused whether the folder exists or not, and nothing is written."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tagger.atomic import TMP_PREFIX
from xmpcases import invoke, tag_run

LABELS = ["circle", "star"]
SIDECAR = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
           '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:subject><rdf:Bag>'
           '<rdf:li>Star</rdf:li></rdf:Bag></dc:subject></rdf:Description></rdf:RDF></x:xmpmeta>')
VERBS = (("export", "-f", "csv"), ("import-keywords", "--no-embedded"))
HEADS = {"export": '"uri","run","label"', "import-keywords": "uri,label,decision"}


@pytest.fixture
def ws(tmp_path) -> Path:
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a.jpg", "b.jpg"):
        (photos / name).write_bytes(b"x")
    (photos / "a.jpg.xmp").write_text(SIDECAR, encoding="utf-8")  # a person's keyword: import-keywords has a row
    root = tmp_path / "ws"
    tag_run(root, {str(photos / "a.jpg"): {"star"}, str(photos / "b.jpg"): {"circle"}}, LABELS)
    return root


def one_error(res, *needles: str) -> None:
    assert res.exit_code == 2, res.output
    assert res.stderr.startswith("error:") and res.stderr.count("\n") == 1, res.stderr
    for needle in needles:
        assert needle in res.stderr, res.stderr


def _temps(*folders: Path) -> list[Path]:
    return [p for f in folders for p in f.iterdir() if p.name.startswith(TMP_PREFIX)]


@pytest.mark.parametrize("verb", VERBS, ids=lambda v: v[0])
def test_a_link_is_written_through_to_its_target(ws, tmp_path, verb):
    shared, mine = tmp_path / "shared", tmp_path / "mine"
    shared.mkdir()
    mine.mkdir()
    real = shared / "table.csv"
    real.write_text("old\n")
    link = mine / "link.csv"
    link.symlink_to(Path("..") / "shared" / "table.csv")  # relative, as `ln -s` makes it
    one_error(invoke(*verb, "--out", str(link), "-w", str(ws)), "exists", "--force")
    assert real.read_text() == "old\n" and link.is_symlink()
    res = invoke(*verb, "--out", str(link), "--force", "-w", str(ws))
    assert res.exit_code == 0, res.output
    assert link.is_symlink() and os.readlink(link) == os.path.join("..", "shared", "table.csv")
    assert real.read_text().startswith(HEADS[verb[0]]), real.read_text()
    assert str(real) in res.stdout and not _temps(shared, mine)


@pytest.mark.parametrize("verb", VERBS, ids=lambda v: v[0])
def test_a_link_to_a_standard_stream_is_refused_and_left_a_link(ws, tmp_path, verb):
    one_error(invoke(*verb, "--out", "/dev/stdout", "-w", str(ws)), "--out -")  # never tried with --force here
    stream = tmp_path / "stream.csv"
    stream.symlink_to("/proc/self/fd/1")
    for extra in ((), ("--force",)):
        one_error(invoke(*verb, "--out", str(stream), "-w", str(ws), *extra), "--out -")
        assert stream.is_symlink() and os.readlink(stream) == "/proc/self/fd/1"
    assert os.path.islink("/dev/stdout")


def test_every_rule_applies_to_the_link_s_target(ws, tmp_path):
    photo = tmp_path / "photos" / "a.jpg"
    to_photo = tmp_path / "to-photo.csv"
    to_photo.symlink_to(photo)
    one_error(invoke("export", "-f", "csv", "--out", str(to_photo), "--force", "-w", str(ws)),
              "named like an image or a sidecar")
    to_null = tmp_path / "null.csv"
    to_null.symlink_to("/dev/null")
    one_error(invoke("export", "-f", "csv", "--out", str(to_null), "--force", "-w", str(ws)), "character device")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    to_fifo = tmp_path / "pipe.csv"
    to_fifo.symlink_to(fifo)
    one_error(invoke("import-keywords", "--out", str(to_fifo), "--force", "-w", str(ws)), "a FIFO")
    other = tmp_path / "tags.parquet"
    other.write_text("old")
    to_other = tmp_path / "tags.csv"
    to_other.symlink_to(other)
    one_error(invoke("export", "-f", "csv", "--out", str(to_other), "--force", "-w", str(ws)),
              "named as a parquet file")
    assert photo.read_bytes() == b"x" and other.read_text() == "old"
    assert all(p.is_symlink() for p in (to_photo, to_null, to_fifo, to_other))


@pytest.mark.parametrize("verb", VERBS, ids=lambda v: v[0])
def test_a_name_ending_in_a_slash_is_refused(ws, tmp_path, verb, monkeypatch):
    monkeypatch.chdir(tmp_path)
    kept = tmp_path / "kept.csv"
    kept.write_text("mine\n")
    before = sorted(p.name for p in tmp_path.iterdir())
    for name in ("newdir/", "newdir/.", str(tmp_path / "newdir") + "/", "kept.csv/", "photos/"):
        for extra in ((), ("--force",)):
            one_error(invoke(*verb, "--out", name, "-w", str(ws), *extra), "names a folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == before and kept.read_text() == "mine\n"
