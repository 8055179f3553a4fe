"""Bad input through the real encode pipeline (local Ray): errors become rows, good images are kept."""
from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap

import pytest
from imagecases import write_cases

from tagger.catalog import Catalog
from tagger.pipeline.encode import EncodeConfig, run_encode
from tagger.errors import CatalogLockedError
from tagger.workspace import Workspace

pytestmark = pytest.mark.ray
GOOD = {"good.jpg", "good.PNG", "good.webp", "good.bmp", "good.tiff", "cmyk.jpg", "grey16.png", "palette.png",
        "rgba.png", "la.png", "grey.jpg", "animated.gif", "large.jpg", "dup-of-good.jpg", "naïve 'quoted'.jpg"}
BAD = {"zero.jpg", "truncated.jpg", "random.jpg", "text.png"}


@pytest.fixture(scope="module")
def cfg(random_checkpoint) -> EncodeConfig:
    return EncodeConfig(model="toy-vit", pretrained=str(random_checkpoint("toy-vit")), partition_size=8)


def test_every_bad_input_is_an_error_row_and_good_images_are_encoded(tmp_path, cfg):
    folder = tmp_path / "images"
    cases = write_cases(folder)
    shutil.copy(cases["good.jpg"], folder / "dup-of-good.jpg")
    shutil.copy(cases["good.jpg"], folder / "naïve 'quoted'.jpg")
    ws = Workspace.at(tmp_path / "ws")
    out = run_encode(ws, str(folder), cfg, progress=False)
    assert out["encoded"] == len(GOOD) and out["errors"] == len(BAD)
    with Catalog.open(ws.catalog, read_only=True) as cat:
        rows = {uri.rsplit("/", 1)[-1]: (status, error) for uri, status, error in
                cat.query("SELECT uri, status, error FROM images")}
        encoded = {u.rsplit("/", 1)[-1] for (u,) in cat.query(
            "SELECT uri FROM images JOIN encodings USING (image_id)")}
        dups = cat.duplicates()
    assert {n for n, (s, _) in rows.items() if s == "ok"} == GOOD
    assert {n for n, (s, e) in rows.items() if s == "error" and e} == BAD
    assert encoded == GOOD
    assert any(len(uris) == 3 for _, _, uris in dups)  # good.jpg and its two copies


def test_empty_corpus_is_not_an_error(tmp_path, cfg):
    (tmp_path / "empty").mkdir()
    out = run_encode(Workspace.at(tmp_path / "ws"), str(tmp_path / "empty"), cfg, progress=False)
    assert out["partitions"] == 0 and out["encoded"] == 0


def test_second_writer_gets_a_clear_error_and_nothing_is_corrupted(tmp_path, cfg, monkeypatch):
    monkeypatch.setenv("TAGGER_WAIT", "0")  # a job waits for the file by default; here it must not
    ws = Workspace.at(tmp_path / "ws")
    with Catalog.open(ws.catalog) as cat:
        cat.add_labels(["circle"])
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from tagger.catalog import Catalog
        with Catalog.open({str(ws.catalog)!r}) as c:
            print("locked", flush=True)
            sys.stdin.readline()
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(CatalogLockedError, match="lock"):
            run_encode(ws, str(tmp_path), cfg, progress=False)
    finally:
        holder.communicate("\n", timeout=60)
    with Catalog.open(ws.catalog, read_only=True) as cat:
        assert cat.active_labels() == ["circle"]
