"""Inputs found in the wild, through the encode stages: names that are not UTF-8, 1x100000 strips,
EPS files named .jpg, PNGs over the pixel limit, manifests that are binary, UTF-16 or of the wrong
Parquet types, sources named oddly, remote servers that never answer. Each is an error row or one
clear SourceError, never a crash, a hang or gigabytes of memory; one test runs the real CLI."""
from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from raytools import ENV

from tagger.errors import SourceError
from tagger.models.pixels import PixelSpec, resize_center_crop
from tagger.pipeline import reading, sources
from tagger.pipeline.decode import Decoder, decode_one, probe_one
from tagger.pipeline.sources import read_bytes, scan_images

BAD_NAME = b"caf\xe9 \xff.jpg"  # Latin-1 bytes: no UTF-8 string can name this file


def _jpeg(size: tuple[int, int] = (48, 32), colour: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "JPEG")
    return buf.getvalue()


def _png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def _bad_name_file(folder: Path, data: bytes) -> str:
    """Write ``data`` under :data:`BAD_NAME` in ``folder``; its path as os gives it (surrogates)."""
    path = os.fsencode(folder) + b"/" + BAD_NAME
    try:
        with open(path, "wb") as f:
            f.write(data)
    except OSError:  # a file system that keeps only UTF-8 names (APFS)
        pytest.skip("this file system refuses names that are not UTF-8")
    return os.fsdecode(path)


# -- names that are not UTF-8 ----------------------------------------------------------------------
def test_a_name_that_is_not_utf8_is_listed_as_a_file_uri_and_read_back(tmp_path):
    (tmp_path / "good.jpg").write_bytes(_jpeg())
    _bad_name_file(tmp_path, _jpeg(colour=(0, 0, 250)))
    listing = scan_images(tmp_path)  # was: UnicodeEncodeError, the whole listing lost
    uris = listing.images.column("uri").to_pylist()
    bad = f"file://{tmp_path}/caf%E9%20%FF.jpg"
    assert uris == sorted([str(tmp_path / "good.jpg"), bad])
    assert scan_images(str(tmp_path / "*.jpg")).images.column("uri").to_pylist() == uris
    manifest = tmp_path / "list.txt"
    manifest.write_text(f"{bad}\n{bad}\n")
    assert scan_images(manifest).images.column("uri").to_pylist() == [bad]  # one file, one URI
    assert read_bytes(bad) == _jpeg(colour=(0, 0, 250))
    out = Decoder(size=16)({"image_id": np.arange(2), "uri": np.array(uris, dtype=object)})
    assert list(out["status"]) == ["ok", "ok"], list(out["error"])


def test_an_unreadable_folder_is_counted_not_passed_over_in_silence(tmp_path, monkeypatch):
    (tmp_path / "open").mkdir()
    (tmp_path / "open" / "a.jpg").write_bytes(_jpeg())
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked" / "b.jpg").write_bytes(_jpeg())
    real = os.scandir

    def scandir(path="."):  # chmod 000 does not stop root: refuse it here
        if os.fspath(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    listing = scan_images(tmp_path)
    assert listing.images.column("uri").to_pylist() == [str(tmp_path / "open" / "a.jpg")]
    assert dict(listing.skipped) == {"unreadable folder": 1}


# -- pixels ------------------------------------------------------------------------------------------
def test_a_1x100000_strip_is_resized_from_its_centre_only(monkeypatch):
    """Resizing a 1x100000 strip whole to 224 wide would be a 224x22,400,000 image (15 GB)."""
    real = Image.Image.resize
    biggest = []

    def resize(self, size, *args, **kwargs):
        biggest.append(size[0] * size[1])
        assert size[0] * size[1] <= 64 * 224 * 224, f"resize to {size} asked for"
        return real(self, size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", resize)
    spec = PixelSpec(224)
    decoder = Decoder(preprocess=spec.to_uint8, size=224)
    for shape in ((1, 100_000), (100_000, 1), (3, 40_000)):
        data = _png(Image.new("L", shape, 128))
        row = decoder.decode("strip.png", data)
        assert row["status"] == "ok", row["error"]
        assert row["pixels"].shape == (3, 224, 224) and (row["width"], row["height"]) == shape
        assert abs(int(row["pixels"].mean()) - 128) <= 1
    assert max(biggest) <= 224 * 224


def test_the_centre_box_resize_equals_the_whole_resize_within_rounding():
    rng = np.random.default_rng(3)
    for w, h in ((2, 700), (700, 3), (5, 1200)):  # beyond 64:1 at size 8: the box path
        im = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        size = 8
        nw, nh = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
        top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
        whole = np.asarray(im.resize((nw, nh), Image.Resampling.BICUBIC).crop((left, top, left + size, top + size)))
        boxed = np.asarray(resize_center_crop(im, size))
        assert boxed.shape == whole.shape
        assert np.abs(boxed.astype(int) - whole).mean() < 2.0, (w, h)


# -- formats and limits --------------------------------------------------------------------------------
def test_an_eps_named_jpg_is_never_rendered_by_ghostscript(monkeypatch):
    from PIL import EpsImagePlugin

    def ghostscript(*args, **kwargs):
        raise AssertionError("Ghostscript was asked to run the file")

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", ghostscript)
    monkeypatch.setattr(EpsImagePlugin, "has_ghostscript", lambda: True)
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n{ } loop\nshowpage\n"
    im, err, _ = decode_one(eps)
    assert im is None and "PostScript" in err
    row = Decoder(size=16).decode("x.jpg", eps)
    assert row["status"] == "error" and "PostScript" in row["error"]
    assert probe_one(eps)[0] is not None


def test_a_png_over_the_pixel_limit_is_refused_before_it_is_decoded(monkeypatch):
    from PIL import PngImagePlugin

    loads = []
    real = PngImagePlugin.PngImageFile.load

    def load(self):
        loads.append(self.size)
        return real(self)

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", load)
    data = _png(Image.new("RGBA", (1200, 1000), (1, 2, 3, 4)))
    im, err, meta = decode_one(data, max_pixels=1_000_000)
    assert im is None and "decompression bomb" in err and (meta["width"], meta["height"]) == (1200, 1000)
    assert probe_one(data, max_pixels=1_000_000)[0].startswith("refused as a decompression bomb")
    assert loads == []  # PIL's getexif() decoded every PNG whole to look for EXIF after its pixels
    im, err, _ = decode_one(data, max_pixels=2_000_000)
    assert err is None and im.size == (1200, 1000) and loads


def test_error_text_is_always_storable():
    """A library's message with a lone surrogate (a name that is not UTF-8) or a NUL would make the
    catalog refuse the whole batch."""
    def read(uri: str) -> bytes:
        raise OSError(f"cannot open {os.fsdecode(BAD_NAME)}\x00 " + "x" * 5000)

    out = Decoder(size=8, read=read)({"image_id": np.arange(1), "uri": np.array(["a.jpg"], dtype=object)})
    err = out["error"][0]
    assert out["status"][0] == "error" and "\x00" not in err and len(err) <= 2000
    err.encode("utf-8")  # raises on a lone surrogate
    pa.array([err], pa.string())


# -- manifests and sources -------------------------------------------------------------------------
def test_text_manifests_that_are_not_text(tmp_path):
    cases = {"utf16.txt": ("a.jpg\nb.jpg\n".encode("utf-16"), "UTF-16"),
             "nul.txt": (b"/a.jpg\n/b\x00c.jpg\n", "NUL character on line 2"),
             "image.txt": (_jpeg(), "not UTF-8")}
    for name, (data, needle) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(SourceError, match=needle):
            scan_images(tmp_path / name)
    (tmp_path / "ok.txt").write_bytes(b"\xef\xbb\xbf# list\r\n\r\n  a.jpg  \r\nfile://" + str(tmp_path).encode()
                                      + b"/a.jpg\r\n" + str(tmp_path / "a.jpg").encode() + b"\r\n")
    assert scan_images(tmp_path / "ok.txt").images.column("uri").to_pylist() == [str(tmp_path / "a.jpg")]
    (tmp_path / "seps.txt").write_text("line\u2028sep.jpg\nnext\x85line.jpg\r\n", encoding="utf-8")
    assert scan_images(tmp_path / "seps.txt").images.column("uri").to_pylist() == [
        str(tmp_path / "line\u2028sep.jpg"), str(tmp_path / "next\x85line.jpg")]


def test_parquet_manifests_of_the_wrong_types(tmp_path):
    bad = {"int.parquet": pa.table({"uri": [1, 2]}),
           "list.parquet": pa.table({"uri": [["/a.jpg"]]}),
           "strsize.parquet": pa.table({"uri": ["/a.jpg"], "size": ["12"]}),
           "latin1.parquet": pa.table({"path": pa.array([b"/caf\xe9.jpg"], pa.binary())})}
    for name, table in bad.items():
        pq.write_table(table, tmp_path / name)
        with pytest.raises(SourceError, match="parquet manifest"):
            scan_images(tmp_path / name)
    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({"path": pa.array([b"/x/a.jpg", b"/x/b.jpg", None], pa.binary()),
                             "bytes": [b"\xff\xd8 image content", b"", None]}), good)
    t = scan_images(good).images  # a binary 'bytes' column is content, not a size
    assert t.select(["uri", "size"]).to_pylist() == [{"uri": "/x/a.jpg", "size": None}, {"uri": "/x/b.jpg", "size": None}]
    pq.write_table(pa.table({"uri": ["/x/a.jpg", "/x/b.jpg"], "size": [-5, 7]}), good)
    assert scan_images(good).images.column("size").to_pylist() == [None, 7]


def test_sources_named_oddly(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "stray.jpg").write_bytes(_jpeg())
    for empty in ("", "  "):
        with pytest.raises(SourceError, match="empty image source"):  # was: the working folder, encoded
            scan_images(empty)
    folder = tmp_path / "photos.txt"  # a folder, whatever its name
    folder.mkdir()
    (folder / "a.jpg").write_bytes(_jpeg())
    assert scan_images(folder).images.column("uri").to_pylist() == [str(folder / "a.jpg")]
    literal = tmp_path / "shot [1].jpg"  # an image file whose name reads as a glob
    literal.write_bytes(_jpeg())
    assert scan_images(literal).images.column("uri").to_pylist() == [str(literal)]
    (tmp_path / "notes.pdf").write_bytes(b"%PDF-1.4")
    with pytest.raises(SourceError, match="neither an image"):
        scan_images(tmp_path / "notes.pdf")


# -- remote ------------------------------------------------------------------------------------------
@pytest.fixture
def silent_server():
    """A TCP server that accepts connections and never answers; its port."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(5)
    for conn in held:
        conn.close()
    server.close()


def test_a_server_that_never_answers_is_an_error_row_not_a_hang(silent_server, monkeypatch):
    pytest.importorskip("aiohttp")
    monkeypatch.setattr(reading, "REMOTE_READ_TIMEOUT_S", 2.0)
    uris = [f"http://127.0.0.1:{silent_server}/a.jpg", "http://127.0.0.1:9/refused.jpg", "ftp://127.0.0.1:9/x.jpg"]
    result: dict = {}

    def run() -> None:
        result["out"] = Decoder(size=8)({"image_id": np.arange(3), "uri": np.array(uris, dtype=object)})

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(60)
    assert not worker.is_alive(), "reading from a silent server hung"
    out = result["out"]
    assert list(out["status"]) == ["error"] * 3
    assert "no answer within 2 s" in out["error"][0]
    assert "Cannot connect" in out["error"][1]  # the cause, not only fsspec's FileNotFoundError
    with pytest.raises(SourceError, match="ftp://127.0.0.1:9/x.jpg"):  # was: a bare ConnectionRefusedError
        read_bytes(uris[2])


# -- the real CLI --------------------------------------------------------------------------------------
@pytest.mark.ray
def test_encode_cli_on_a_wild_folder_then_incrementally(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "good.jpg").write_bytes(_jpeg())
    (src / "strip.png").write_bytes(_png(Image.new("RGB", (2, 30_000), (9, 200, 9))))
    (src / "eps.jpg").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n")
    (src / "truncated.jpg").write_bytes(_jpeg((200, 100))[:300])
    (src / "zero.jpg").write_bytes(b"")
    os.mkfifo(src / "pipe.jpg")
    bad = _bad_name_file(src, _jpeg(colour=(1, 2, 250)))
    env = {k: v for k, v in ENV.items() if k != "RAY_ADDRESS"}
    ws = tmp_path / "ws"

    def tagger(*args: str) -> dict:
        out = subprocess.run([sys.executable, "-m", "tagger.cli", *args, "-w", str(ws), "--json"],
                             capture_output=True, text=True, timeout=420, env=env)
        assert out.returncode == 0, out.stderr[-3000:]
        return json.loads([ln for ln in out.stdout.splitlines() if ln.startswith("{")][-1])

    first = tagger("encode", str(src))
    assert (first["listed"], first["encoded"], first["errors"]) == (6, 3, 3), first
    assert "1 not a regular file (FIFO)" in first["skipped_why"]
    (src / "new.jpg").write_bytes(_jpeg(colour=(3, 3, 3)))
    again = tagger("encode", str(src))
    assert (again["listed"], again["encoded"], again["errors"]) == (7, 1, 0), again
    status = tagger("status")
    assert (status["images"], status["encoded"], status["errors"], status["pending"]) == (7, 4, 3, 0), status
    from tagger.catalog import Catalog

    def hashes() -> dict[str, str]:
        with Catalog.open(ws / "catalog.duckdb", read_only=True) as cat:
            return dict(cat.query("SELECT i.uri, e.content_hash FROM images AS i JOIN encodings AS e USING (image_id)"))
    with Catalog.open(ws / "catalog.duckdb", read_only=True) as cat:
        rows = dict(cat.query("SELECT uri, status FROM images"))
    assert rows[sources.local_uri(bad)] == "ok" and rows[str(src / "strip.png")] == "ok"
    # an edit in place to the same byte size (an uncompressed BMP's pixels) is encoded again
    edited, before = src / "new.jpg", hashes()
    size, stamp = edited.stat().st_size, edited.stat().st_mtime_ns
    buf = io.BytesIO()
    Image.new("RGB", (48, 32), (250, 250, 3)).save(buf, "JPEG", optimize=True)  # smaller: padded after its end
    edited.write_bytes(buf.getvalue() + bytes(size - len(buf.getvalue())))
    os.utime(edited, ns=(stamp + 10**9, stamp + 10**9))
    assert edited.stat().st_size == size
    third = tagger("encode", str(src))
    assert (third["listed"], third["encoded"], third["errors"]) == (7, 1, 0), third
    after = hashes()
    assert after[str(edited)] != before[str(edited)] and len(after) == len(before)
    assert all(after[u] == h for u, h in before.items() if u != str(edited))

    def found(level: str) -> list[str]:
        out = subprocess.run([sys.executable, "-m", "tagger.cli", "search", "a red square", "-k", "10", "--level",
                              level, "-w", str(ws), "--json"], capture_output=True, text=True, timeout=420, env=env)
        assert out.returncode == 0, out.stderr[-3000:]
        return [h["uri"] for h in json.loads(out.stdout)]
    assert str(src / "good.jpg") in found("global") and len(found("patch")) == 4
    (src / "good.jpg").unlink()  # deleted: its embeddings stay in the stores, search leaves them out
    assert tagger("encode", str(src))["gone"] == 1
    for level in ("global", "patch"):
        hits = found(level)
        assert str(src / "good.jpg") not in hits and len(hits) == 3, (level, hits)


def test_a_name_that_is_not_utf8_is_local_to_the_keyword_and_export_queries(tmp_path):
    from tagger.catalog import Catalog
    from tagger.catalog.keywords import image_uris
    from tagger.uris import normalize_uri
    odd = sources.local_uri("/p/caf\udce9.jpg")  # the bytes b"caf\xe9.jpg", as os lists them
    assert odd == "file:///p/caf%E9.jpg" and normalize_uri(odd) == odd  # kept storable, one URI per file
    with Catalog.open(tmp_path / "c.duckdb") as cat:
        cat.register_images([("/p/a.jpg", 1), (odd, 2), ("/q/b.jpg", 3), ("s3://b/c.jpg", 4)])
        assert image_uris(cat) == sorted(["/p/a.jpg", odd, "/q/b.jpg"])
        assert image_uris(cat, "/p") == sorted(["/p/a.jpg", odd])


def test_an_image_deleted_from_its_folder_is_an_error_row_and_comes_back_when_restored(tmp_path):
    from tagger.catalog import Catalog
    from tagger.pipeline.encode import register_source
    src = tmp_path / "photos"
    (src / "sub").mkdir(parents=True)
    for name in ("a.jpg", "sub/b.jpg", ".hidden.jpg"):
        (src / name).write_bytes(_jpeg())
    (tmp_path / "photos2").mkdir()
    (tmp_path / "photos2" / "c.jpg").write_bytes(_jpeg())  # a sibling folder sharing the prefix "photos"
    with Catalog.open(tmp_path / "c.duckdb") as cat:
        assert register_source(cat, str(tmp_path / "photos2"))["listed"] == 1
        cat.register_images([str(src / ".hidden.jpg")])  # listed once with --include-hidden, say
        assert register_source(cat, str(src)) == {"listed": 2, "skipped": 1, "skipped_why": "1 hidden"}
        ids = cat.image_ids([str(src / n) for n in ("a.jpg", "sub/b.jpg", ".hidden.jpg")] +
                            [str(tmp_path / "photos2" / "c.jpg")])
        cat.record_encodings(list(ids.values()), "m", ["h"] * len(ids), "shard-0")
        kept = (src / "sub" / "b.jpg").read_bytes()
        (src / "sub" / "b.jpg").unlink()
        again = register_source(cat, str(src) + "/")
        assert again["gone"] == 1 and again["listed"] == 1
        rows = dict(cat.query("SELECT uri, status FROM images"))
        assert rows == {str(src / "a.jpg"): "ok", str(src / "sub/b.jpg"): "error",
                        str(src / ".hidden.jpg"): "ok", str(tmp_path / "photos2" / "c.jpg"): "ok"}
        error = cat.query("SELECT error FROM images WHERE status = 'error'")[0][0]
        assert error.startswith("read failed:") and "is gone" in error
        assert "gone" not in register_source(cat, str(src))  # counted once
        (src / "sub" / "b.jpg").write_bytes(kept)  # restored, same bytes: read (and encoded) again
        assert "gone" not in register_source(cat, str(src))
        assert cat.pending_images("m") == [(ids[str(src / "sub/b.jpg")], str(src / "sub/b.jpg"))]
        cat.record_encodings([ids[str(src / "sub/b.jpg")]], "m", ["h"], "shard-1")
        assert dict(cat.query("SELECT uri, status FROM images"))[str(src / "sub/b.jpg")] == "ok"
