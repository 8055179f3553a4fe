"""Image sources: folders, globs, text and Parquet manifests, file:// URIs, empty corpora."""
from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tagger.errors import SourceError
from tagger.pipeline.sources import list_image_records, list_images, normalize_uri, read_bytes, scan_images


@pytest.fixture
def tree(tmp_path):
    """A small folder tree with images of mixed-case extensions and some non-images."""
    root = tmp_path / "photos"
    files = {"a.jpg": b"a", "B.JPEG": b"bb", "sub/c.png": b"ccc", "sub/deep/d.WebP": b"dddd",
             "sub/e.bmp": b"e", "f.gif": b"f", "g.TIF": b"g", "h.tiff": b"h",
             "notes.txt": b"x", "sub/data.csv": b"y", "noext": b"z", ".hidden.jpg": b"h",
             ".cache/i.jpg": b"i"}
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


EXPECTED = ["B.JPEG", "a.jpg", "f.gif", "g.TIF", "h.tiff", "sub/c.png", "sub/deep/d.WebP", "sub/e.bmp"]


def test_folder_recursive_sorted(tree):
    t = list_images(tree)
    assert t.schema == pa.schema([("uri", pa.string()), ("size", pa.int64()), ("modified_ns", pa.int64())])
    uris = t.column("uri").to_pylist()
    assert uris == sorted(str(tree / rel) for rel in EXPECTED)
    assert uris == sorted(uris)
    sizes = dict(zip(uris, t.column("size").to_pylist()))
    assert sizes[str(tree / "sub/deep/d.WebP")] == 4
    times = dict(zip(uris, t.column("modified_ns").to_pylist()))  # a local file's time, as os.stat says
    assert times[str(tree / "a.jpg")] == (tree / "a.jpg").stat().st_mtime_ns
    with_hidden = list_images(tree, include_hidden=True).column("uri").to_pylist()
    assert str(tree / ".hidden.jpg") in with_hidden and str(tree / ".cache/i.jpg") in with_hidden


def test_file_uri_and_relative_paths(tree, monkeypatch):
    assert list_images(f"file://{tree}").column("uri").to_pylist() == list_images(tree).column("uri").to_pylist()
    monkeypatch.chdir(tree.parent)
    assert list_images("photos").column("uri").to_pylist() == list_images(tree).column("uri").to_pylist()
    assert normalize_uri("file:///x/y%20z.jpg") == "/x/y z.jpg"
    assert normalize_uri("s3://bucket/k.jpg") == "s3://bucket/k.jpg"


def test_glob(tree):
    uris = list_images(str(tree / "**" / "*")).column("uri").to_pylist()
    assert uris == sorted(str(tree / rel) for rel in EXPECTED)
    only_sub = list_images(str(tree / "sub" / "*.png")).column("uri").to_pylist()
    assert only_sub == [str(tree / "sub/c.png")]
    assert list_images(str(tree / "*.nothing")).num_rows == 0


def test_text_manifest(tree, tmp_path):
    manifest = tree / "list.txt"
    manifest.write_text("# images to tag\n\nsub/c.png\n  a.jpg  \n"
                        f"file://{tree}/B.JPEG\ns3://bucket/remote.jpg\n# the end\na.jpg\n")
    t = list_images(manifest)
    assert t.column("uri").to_pylist() == sorted(
        [str(tree / "sub/c.png"), str(tree / "a.jpg"), str(tree / "B.JPEG"), "s3://bucket/remote.jpg"])
    assert t.column("size").null_count == t.num_rows
    assert list_images(f"file://{manifest}").equals(t)


@pytest.mark.parametrize("column", ["uri", "path"])
def test_parquet_manifest(tree, tmp_path, column):
    p = tmp_path / "manifest.parquet"
    pq.write_table(pa.table({column: [str(tree / "f.gif"), "sub/e.bmp", None], "size": [1, 1, None]}), p)
    t = list_images(p)
    assert t.column("uri").to_pylist() == [str(tree / "f.gif"), str(tmp_path / "sub/e.bmp")]
    assert t.column("size").to_pylist() == [1, 1]
    pq.write_table(pa.table({"file": ["x.jpg"]}), p)
    with pytest.raises(SourceError, match="'uri' or 'path'"):
        list_images(p)
    with pytest.raises(SourceError, match="cannot read parquet manifest"):
        list_images(tmp_path / "missing.parquet")


def test_empty_and_missing(tmp_path):
    (tmp_path / "empty").mkdir()
    t = list_images(tmp_path / "empty")
    assert t.num_rows == 0 and t.column_names == ["uri", "size", "modified_ns"]
    (tmp_path / "empty.txt").write_text("# nothing\n")
    assert list_images(tmp_path / "empty.txt").num_rows == 0
    assert list_image_records(tmp_path / "empty") == []
    with pytest.raises(SourceError, match="not found"):
        list_images(tmp_path / "nope")


def test_single_file_and_records(tree):
    assert list_image_records(tree / "a.jpg") == [(str(tree / "a.jpg"), 1)]


def test_read_bytes(tree):
    assert read_bytes(str(tree / "sub/c.png")) == b"ccc"
    assert read_bytes(f"file://{tree}/sub/c.png") == b"ccc"
    with pytest.raises(SourceError, match="cannot read .*No such file"):
        read_bytes(str(tree / "missing.jpg"))
    with pytest.raises(SourceError):
        read_bytes(str(tree / "sub"))  # a folder
    if hasattr(os, "getuid") and os.getuid() != 0:
        locked = tree / "locked.jpg"
        locked.write_bytes(b"x")
        locked.chmod(0)
        with pytest.raises(SourceError, match="Permission"):
            read_bytes(str(locked))


def test_remote_scheme_through_fsspec():
    fsspec = pytest.importorskip("fsspec")
    fs = fsspec.filesystem("memory")
    for rel, data in {"b.jpg": b"bb", "sub/a.PNG": b"a", "sub/skip.txt": b"t"}.items():
        fs.pipe(f"/tagger-test/imgs/{rel}", data)
    try:
        t = list_images("memory://tagger-test/imgs")
        assert t.column("uri").to_pylist() == ["memory://tagger-test/imgs/b.jpg",
                                               "memory://tagger-test/imgs/sub/a.PNG"]
        assert t.column("size").to_pylist() == [2, 1]
        assert list_images("memory://tagger-test/imgs/*.jpg").num_rows == 1
        fs.pipe("/tagger-test/list.txt", b"imgs/b.jpg\n# comment\ns3://other/x.jpg\n")
        assert list_images("memory://tagger-test/list.txt").column("uri").to_pylist() == [
            "memory://tagger-test/imgs/b.jpg", "s3://other/x.jpg"]
        with pytest.raises(SourceError, match="not found"):
            list_images("memory://tagger-test/nothing-here")
        assert read_bytes("memory://tagger-test/imgs/b.jpg") == b"bb"
        with pytest.raises(SourceError, match="cannot read"):
            read_bytes("memory://tagger-test/imgs/none.jpg")
    finally:
        fs.rm("/tagger-test", recursive=True)


def test_skipped_files_are_counted_by_reason(tree, caplog):
    with caplog.at_level("WARNING", logger="tagger.pipeline.sources"):
        listing = scan_images(tree)
    assert listing.images.num_rows == len(EXPECTED)
    assert dict(listing.skipped) == {"with extension .txt": 1, "with extension .csv": 1,
                                     "without extension": 1, "hidden": 2}
    assert listing.n_skipped == 5
    assert listing.skipped_text() == ("2 hidden, 1 with extension .csv, 1 with extension .txt, "
                                      "1 without extension")
    assert "skipped 5 file(s)" in caplog.text
    glob = scan_images(str(tree / "*.*"))
    assert dict(glob.skipped) == {"with extension .txt": 1} and glob.images.num_rows == 5
    assert dict(scan_images(tree, include_hidden=True).skipped) == {
        "with extension .txt": 1, "with extension .csv": 1, "without extension": 1}


def test_empty_sources_warn(tmp_path, caplog):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "readme.md").write_text("x")
    with caplog.at_level("WARNING", logger="tagger.pipeline.sources"):
        assert scan_images(tmp_path / "docs").images.num_rows == 0
        assert scan_images(str(tmp_path / "*.jpg")).n_skipped == 0
    assert "no images in" in caplog.text and "1 with extension .md" in caplog.text


def test_manifest_not_utf8(tmp_path):
    p = tmp_path / "list.txt"
    p.write_bytes(b"/photos/a.jpg\n/photos/caf\xe9.jpg\n")
    with pytest.raises(SourceError, match=r"not UTF-8 text \(byte 0xe9 on line 2\)"):
        list_images(p)


def test_nothing_skipped_is_reported_as_nothing(tmp_path, caplog):
    (tmp_path / "imgs" / "sub").mkdir(parents=True)
    (tmp_path / "imgs" / "sub" / "a.jpg").write_bytes(b"a")
    with caplog.at_level("INFO", logger="tagger.pipeline.sources"):
        listing = scan_images(tmp_path / "imgs")
    assert listing.n_skipped == 0 and not listing.skipped and listing.skipped_text() == ""
    assert "file(s)" not in caplog.text and "WARNING" not in caplog.text


# -- special files: only regular files are read ----------------------------------------------------
@pytest.fixture
def special(tmp_path):
    """A folder with a good image, a FIFO named pipe.jpg, a link to /dev/zero, a link to the good
    image, a broken link and a socket, all with image names."""
    import socket
    import tempfile
    root = tmp_path / "src"
    root.mkdir()
    (root / "good.jpg").write_bytes(b"good")
    os.mkfifo(root / "pipe.jpg")
    (root / "x.jpg").symlink_to("/dev/zero")
    (root / "alias.jpg").symlink_to(root / "good.jpg")
    (root / "gone.png").symlink_to(root / "missing.png")
    short = tempfile.mkdtemp(prefix="ts", dir="/tmp")  # a socket path must be short
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(os.path.join(short, "s.jpg"))
    (root / "sock.jpg").symlink_to(os.path.join(short, "s.jpg"))
    yield root
    sock.close()
    import shutil
    shutil.rmtree(short, ignore_errors=True)


def test_special_files_are_skipped_with_their_reason(special):
    listing = scan_images(special)
    assert listing.images.column("uri").to_pylist() == [str(special / "alias.jpg"), str(special / "good.jpg")]
    assert dict(listing.skipped) == {"not a regular file (FIFO)": 1, "not a regular file (character device)": 1,
                                     "not a regular file (socket)": 1, "broken link": 1}
    assert "1 not a regular file (FIFO)" in listing.skipped_text()
    glob = scan_images(str(special / "*.jpg"))
    assert glob.images.num_rows == 2 and glob.skipped["not a regular file (FIFO)"] == 1
    with pytest.raises(SourceError, match=r"not a regular file \(FIFO\)"):
        scan_images(special / "pipe.jpg")


def test_read_bytes_refuses_special_files_without_blocking(special):
    """Opening a FIFO with no writer would block for ever, and /dev/zero never ends: both are refused."""
    import concurrent.futures
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        for name, kind in (("pipe.jpg", "FIFO"), ("x.jpg", "character device")):
            with pytest.raises(SourceError, match=rf"not a regular file \({kind}\)"):
                pool.submit(read_bytes, str(special / name), 1024).result(timeout=30)
    assert read_bytes(str(special / "alias.jpg")) == b"good"  # a link to a regular file is followed


def test_size_cap(tmp_path, monkeypatch):
    from tagger.errors import ConfigError
    from tagger.pipeline.sources import DEFAULT_MAX_IMAGE_BYTES, max_image_bytes
    p = tmp_path / "big.jpg"
    p.write_bytes(b"x" * 1000)
    assert read_bytes(str(p), 1000) == b"x" * 1000
    with pytest.raises(SourceError, match="1000 bytes, over the per-image limit of 999 bytes"):
        read_bytes(str(p), 999)
    monkeypatch.delenv("TAGGER_MAX_IMAGE_BYTES", raising=False)
    assert max_image_bytes() == DEFAULT_MAX_IMAGE_BYTES
    for raw, value in (("1234", 1234), ("2KB", 2000), ("2KiB", 2048), ("1.5 GiB", 3 * 2**29), ("512MB", 512 * 10**6)):
        monkeypatch.setenv("TAGGER_MAX_IMAGE_BYTES", raw)
        assert max_image_bytes() == value, raw
    for raw in ("lots", "-5", "0", "1 XB"):
        monkeypatch.setenv("TAGGER_MAX_IMAGE_BYTES", raw)
        with pytest.raises(ConfigError, match="TAGGER_MAX_IMAGE_BYTES"):
            max_image_bytes()


def test_a_workspace_inside_the_source_is_not_listed(tree):
    """Thumbnails and a report inside a workspace that sits in the photo folder are not the user's images:
    skipped (and counted) by a walk, a glob and a manifest alike; a source that is the workspace lists none."""
    ws = tree / "sub" / "ws"
    for rel in ("thumbnails/1.jpg", "report/assets/x.png", "report/index.html"):
        (ws / rel).parent.mkdir(parents=True, exist_ok=True)
        (ws / rel).write_bytes(b"t")
    walked = scan_images(tree, exclude=[ws])
    assert walked.images.column("uri").to_pylist() == sorted(str(tree / rel) for rel in EXPECTED)
    assert walked.skipped["in the workspace"] == 1  # the folder, pruned before its files are read
    assert len(list_images(tree)) == len(EXPECTED) + 2  # without the workspace named, they are images
    globbed = scan_images(str(tree / "**" / "*.*"), exclude=[ws])
    assert str(ws / "thumbnails/1.jpg") not in globbed.images.column("uri").to_pylist()
    assert globbed.skipped["in the workspace"] == 2
    manifest = tree.parent / "list.txt"
    manifest.write_text(f"{ws / 'thumbnails/1.jpg'}\n{tree / 'a.jpg'}\n")
    assert scan_images(manifest, exclude=[ws]).images.column("uri").to_pylist() == [str(tree / "a.jpg")]
    itself = scan_images(ws, exclude=[ws])
    assert itself.images.num_rows == 0 and itself.skipped["in the workspace"] == 1
    (ws / "images").mkdir()  # images a person keeps inside the workspace are theirs: only its own folders go
    (ws / "images" / "p.jpg").write_bytes(b"p")
    owned = [ws / "thumbnails", ws / "report"]
    assert scan_images(ws / "images", exclude=owned).images.column("uri").to_pylist() == [str(ws / "images" / "p.jpg")]
    assert scan_images(ws, exclude=owned).images.column("uri").to_pylist() == [str(ws / "images" / "p.jpg")]
