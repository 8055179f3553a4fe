"""Nothing a user types as an export target destroys a workspace or hangs: `export --out`,
`export --mirror`, `report --out` and `import-keywords --out` refuse the catalog, workspace.json, an
index file, a device node, a FIFO, an existing file (unless --force), a missing folder (never made),
and end in one `error:` line for an unwritable one; the workspace stays usable throughout."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tagger.atomic import temp_name
from tagger.catalog import Catalog
from tagger.errors import ConfigError
from tagger.export.sidecars import _STALE_TMP
from tagger.targets import check_out_file
from xmpcases import invoke, tag_run

LABELS = ["circle", "star"]


@pytest.fixture
def ws(tmp_path) -> Path:
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a.jpg", "b.jpg"):
        (photos / name).write_bytes(b"x")
    root = tmp_path / "ws"
    tag_run(root, {str(photos / "a.jpg"): {"star"}, str(photos / "b.jpg"): {"circle"}}, LABELS)
    (root / "workspace.json").write_text('{"model": "toy-vit"}')
    index = root / "indexes" / "m" / "global.faiss"
    index.parent.mkdir(parents=True)
    index.write_bytes(b"FAISS index bytes")
    return root


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def one_error(res, *needles: str) -> None:
    assert res.exit_code == 2, res.output
    assert res.stderr.startswith("error:") and res.stderr.count("\n") == 1, res.stderr
    assert "Traceback" not in res.output
    for needle in needles:
        assert needle in res.stderr, res.stderr


def _usable(root: Path) -> None:
    with Catalog.open(root / "catalog.duckdb", read_only=True) as cat:
        assert cat.current_run() is not None
    res = invoke("sql", "-w", str(root), "SELECT count(*) AS n FROM current_tags", "--json")
    assert res.exit_code == 0 and '"n": 4' in res.stdout, res.output


@pytest.mark.parametrize("target", ["catalog.duckdb", "workspace.json", "indexes/m/global.faiss", "new.csv", "."])
def test_export_out_inside_the_workspace_is_refused(ws, target):
    before = _snapshot(ws)
    for extra in ((), ("--force",)):
        one_error(invoke("export", "-f", "csv", "--out", str(ws / target), "-w", str(ws), *extra),
                  "inside the workspace")
    assert _snapshot(ws) == before
    _usable(ws)


def test_a_link_into_the_workspace_is_refused(ws, tmp_path):
    link = tmp_path / "innocent.csv"
    link.symlink_to(ws / "catalog.duckdb")
    before = _snapshot(ws)
    one_error(invoke("export", "-f", "csv", "--out", str(link), "-w", str(ws), "--force"), "inside the workspace")
    assert _snapshot(ws) == before and link.is_symlink()
    _usable(ws)


def test_a_device_node_is_never_replaced(ws):
    for extra in ((), ("--force",)):
        one_error(invoke("export", "-f", "jsonl", "--out", "/dev/null", "-w", str(ws), *extra), "character device")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_a_fifo_is_refused_without_hanging(ws, tmp_path):
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    out = subprocess.run([sys.executable, "-m", "tagger.cli", "export", "-f", "csv", "--out", str(fifo), "-w", str(ws),
                          "--force"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "a FIFO" in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    # a FIFO where a sidecar goes is left alone, the other sidecar written
    side = ws.parent / "photos" / "a.jpg.xmp"
    os.mkfifo(side)
    out = subprocess.run([sys.executable, "-m", "tagger.cli", "export", "-f", "xmp", "-w", str(ws)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "not a regular file" in out.stderr, out.stderr
    assert stat.S_ISFIFO(os.stat(side).st_mode) and (ws.parent / "photos" / "b.jpg.xmp").is_file()


def test_an_existing_file_needs_force(ws, tmp_path):
    target = tmp_path / "tags.csv"
    target.write_text("my own file\n")
    one_error(invoke("export", "-f", "csv", "--out", str(target), "-w", str(ws)), "exists", "--force")
    assert target.read_text() == "my own file\n"
    res = invoke("export", "-f", "csv", "--out", str(target), "-w", str(ws), "--force")
    assert res.exit_code == 0, res.output
    assert target.read_text().startswith('"uri","run","label"')
    kept = tmp_path / "kept.csv"  # a read-only file is left alone even with --force, as a read-only sidecar is
    kept.write_text("mine\n")
    kept.chmod(0o444)
    for verb in (("export", "-f", "csv"), ("import-keywords", str(tmp_path / "nowhere"))):
        one_error(invoke(*verb, "--out", str(kept), "-w", str(ws), "--force"), "read-only")
        assert kept.read_text() == "mine\n" and stat.S_IMODE(kept.stat().st_mode) == 0o444


def test_out_dash_writes_the_table_to_standard_output_and_no_file(ws, tmp_path, monkeypatch):
    import subprocess
    import sys
    monkeypatch.chdir(tmp_path)
    done = subprocess.run([sys.executable, "-m", "tagger.cli", "export", "-f", "csv", "-o", "-", "-w", str(ws)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith('"uri","run","label"') and "row(s) of run" in done.stderr
    assert not (tmp_path / "-").exists()
    lines = subprocess.run([sys.executable, "-m", "tagger.cli", "export", "-f", "jsonl", "-o", "-", "-w", str(ws)],
                           capture_output=True, text=True, timeout=300, cwd=tmp_path).stdout.splitlines()
    assert lines and all(line.startswith('{"uri"') for line in lines)
    one_error(invoke("export", "-f", "csv", "-o", "-", "--json", "-w", str(ws)), "standard output")


def test_a_table_never_takes_a_photo_or_sidecar_name_a_broken_link_or_no_name(ws, tmp_path):
    side = tmp_path / "p.jpg.xmp"
    side.write_text("<x:xmpmeta/>")  # a person's sidecar
    for target, extra in ((side, ("--force",)), (tmp_path / "NEW.JPG", ()), (tmp_path / "scan.dng", ("--force",))):
        one_error(invoke("export", "-f", "csv", "--out", str(target), "-w", str(ws), *extra),
                  "named like an image or a sidecar")
    assert side.read_text() == "<x:xmpmeta/>" and not (tmp_path / "NEW.JPG").exists()
    link = tmp_path / "later.csv"
    link.symlink_to(tmp_path / "share" / "tags.csv")  # a share not mounted
    one_error(invoke("export", "-f", "csv", "--out", str(link), "-w", str(ws)), "broken link", "--force")
    assert link.is_symlink() and not link.exists()
    with pytest.raises(ConfigError, match="--out is empty"):
        check_out_file("  ", ws)
    for verb in (("export", "-f", "csv"), ("import-keywords",)):
        one_error(invoke(*verb, "--out", "", "-w", str(ws)), "--out is empty")


def test_missing_folders_are_never_made(ws, tmp_path):
    one_error(invoke("export", "-f", "csv", "--out", str(tmp_path / "no" / "such" / "t.csv"), "-w", str(ws)),
              "does not exist")
    one_error(invoke("export", "-f", "xmp", "--mirror", str(tmp_path / "no" / "mirror"), "-w", str(ws)),
              "does not exist")
    one_error(invoke("report", "--out", str(tmp_path / "no" / "site"), "-w", str(ws)), "does not exist")
    assert not (tmp_path / "no").exists()
    res = invoke("export", "-f", "xmp", "--mirror", str(tmp_path / "mirror"), "-w", str(ws))  # asked for: made
    assert res.exit_code == 0 and (tmp_path / "mirror" / "a.jpg.xmp").is_file(), res.output


def test_mirror_and_report_inside_the_workspace_are_refused(ws, tmp_path):
    before = _snapshot(ws)
    one_error(invoke("export", "-f", "xmp", "--mirror", str(ws / "indexes"), "-w", str(ws)), "inside the workspace")
    one_error(invoke("export", "-f", "xmp", "--mirror", str(ws), "-w", str(ws)), "inside the workspace")
    one_error(invoke("report", "--out", str(ws / "indexes"), "-w", str(ws)), "inside the workspace")
    one_error(invoke("report", "--out", str(ws / "catalog.duckdb"), "-w", str(ws)), "inside the workspace")
    one_error(invoke("report", "--out", "/dev/null", "-w", str(ws)), "character device")
    (tmp_path / "notes.txt").write_text("mine")
    one_error(invoke("report", "--out", str(tmp_path / "notes.txt"), "-w", str(ws)), "is a file: give a folder")
    assert (tmp_path / "notes.txt").read_text() == "mine"
    one_error(invoke("import-keywords", "--out", str(ws / "catalog.duckdb"), "-w", str(ws), "--force"),
              "inside the workspace")
    assert _snapshot(ws) == before
    _usable(ws)


def test_an_unwritable_target_is_one_error_line(ws, tmp_path):
    if os.geteuid() == 0:  # root writes through folder permissions; sysfs refuses even root
        folder = Path("/sys")
    else:
        folder = tmp_path / "locked"
        folder.mkdir()
        folder.chmod(0o500)
    try:
        one_error(invoke("export", "-f", "parquet", "--out", str(folder / "t.parquet"), "-w", str(ws)),
                  str(folder))
        one_error(invoke("export", "-f", "xmp", "--mirror", str(folder / "mirror"), "-w", str(ws)), str(folder))
    finally:
        if folder != Path("/sys"):
            folder.chmod(0o700)
    _usable(ws)


def test_a_label_xml_cannot_hold_never_breaks_a_sidecar(ws):
    """U+FFFE in a tag's label (however it got into the catalog): the sidecar stays valid XML, the label
    is named in a warning, and every later export still reads the sidecar."""
    from xmpcases import EXIFTOOL, as_set, exif
    with Catalog.open(ws / "catalog.duckdb") as cat:
        run = cat.current_run()
        cat.query("INSERT INTO tags (run_id, image_id, label, score, positive) SELECT ?, image_id, ?, 1, true "
                  "FROM images WHERE uri LIKE '%a.jpg'", [run, "bad\ufffe"])
    side = ws.parent / "photos" / "a.jpg.xmp"
    for _ in range(2):
        res = invoke("export", "-f", "xmp", "-w", str(ws))
        assert res.exit_code == 0 and "XML cannot hold" in res.stderr, res.output
        assert "\ufffe" not in side.read_text(encoding="utf-8")
    if EXIFTOOL:
        assert as_set(exif(side)["Subject"]) == {"star"}


def test_long_legal_names_are_written(tmp_path):
    """An image named with 240 bytes has a legal 244-byte sidecar name: the sidecar is written, as is a
    240-byte --out name (their temp names are shortened, and a killed export's is still cleaned up)."""
    image = tmp_path / ("L" * 236 + ".jpg")
    image.write_bytes(b"x")
    root = tmp_path / "ws"
    tag_run(root, {str(image): {"star"}}, LABELS)
    res = invoke("export", "-f", "xmp", "-w", str(root))
    assert res.exit_code == 0 and Path(f"{image}.xmp").is_file(), res.output
    assert _STALE_TMP.match(temp_name(f"{image}.xmp").name)
    assert _STALE_TMP.match(temp_name(tmp_path / "photo.jpg.XMP").name)  # an upper-case sidecar's too
    out = tmp_path / ("t" * 236 + ".csv")
    res = invoke("export", "-f", "csv", "--out", str(out), "-w", str(root))
    assert res.exit_code == 0 and out.read_text().startswith('"uri"'), res.output
