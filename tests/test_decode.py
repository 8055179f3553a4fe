"""Decode stage: good images of every mode decode to RGB; every bad input becomes an error row."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
from imagecases import write_cases
from PIL import Image

from tagger.pipeline.decode import Decoder, decode_one, to_rgb

SIZE = 32


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """Every good and bad case as a file; name -> path."""
    return write_cases(tmp_path_factory.mktemp("images"))


GOOD = ["good.jpg", "good.PNG", "good.webp", "good.bmp", "good.tiff", "cmyk.jpg", "grey16.png",
        "palette.png", "rgba.png", "la.png", "grey.jpg", "animated.gif", "large.jpg"]
BAD = {"zero.jpg": "empty file", "truncated.jpg": "truncated", "random.jpg": "not an image",
       "text.png": "not an image", "missing.jpg": "read failed"}


def _batch(files, names):
    return {"image_id": np.arange(len(names), dtype=np.int64), "uri": np.array([files[n] for n in names])}


def test_batch_good_and_bad(files):
    names = GOOD + list(BAD)
    out = Decoder(size=SIZE)(_batch(files, names))
    assert out["pixels"].shape == (len(names), SIZE, SIZE, 3) and out["pixels"].dtype == np.uint8
    assert list(out["image_id"]) == list(range(len(names)))
    for i, name in enumerate(names):
        if name in BAD:
            assert out["status"][i] == "error", name
            assert BAD[name] in out["error"][i], (name, out["error"][i])
            assert not out["pixels"][i].any()
        else:
            assert out["status"][i] == "ok", (name, out["error"][i])
            assert out["error"][i] == ""
            assert out["pixels"][i].any()
    for key in ("content_hash", "status", "error", "width", "height"):
        assert len(out[key]) == len(names)


def test_metadata_and_hash(files):
    data = open(files["good.jpg"], "rb").read()
    im, err, meta = decode_one(data)
    assert err is None and im.mode == "RGB" and im.size == (120, 90)
    assert meta["content_hash"] == hashlib.sha256(data).hexdigest()
    assert (meta["width"], meta["height"], meta["format"]) == (120, 90, "JPEG")
    out = Decoder(size=SIZE)(_batch(files, ["good.jpg", "zero.jpg", "truncated.jpg"]))
    assert out["content_hash"][0] == meta["content_hash"]
    assert out["content_hash"][1] == hashlib.sha256(b"").hexdigest()
    assert (out["width"][0], out["height"][0]) == (120, 90)
    assert out["width"][1] == 0


@pytest.mark.parametrize("name,mode", [("cmyk.jpg", "CMYK"), ("grey16.png", "I;16"), ("palette.png", "P"),
                                       ("rgba.png", "RGBA"), ("la.png", "LA"), ("grey.jpg", "L"),
                                       ("animated.gif", "P")])
def test_modes_become_rgb(files, name, mode):
    im, err, meta = decode_one(open(files[name], "rb").read())
    assert err is None and im.mode == "RGB"
    assert meta["mode"].startswith(mode[:3])


def test_alpha_composited_on_white_and_16bit_range(files):
    im, _, _ = decode_one(open(files["rgba.png"], "rb").read())
    assert im.getpixel((0, 0)) == (255, 255, 255)
    im, _, _ = decode_one(open(files["grey16.png"], "rb").read())
    arr = np.asarray(im)
    assert arr.min() == 0 and arr.max() > 200  # 16-bit values scaled, not clipped to 255
    assert to_rgb(Image.new("F", (4, 4), 0.5)).getpixel((0, 0)) == (128, 128, 128)


def test_animated_uses_first_frame(files):
    im, err, meta = decode_one(open(files["animated.gif"], "rb").read())
    assert err is None and meta["animated"]
    assert im.getpixel((5, 5)) == (255, 0, 0)


def test_bomb_refused_by_pixel_limit(files):
    data = open(files["large.jpg"], "rb").read()
    im, err, meta = decode_one(data, max_pixels=1_000_000)
    assert im is None and "decompression bomb" in err and "6000000" in err
    out = Decoder(size=SIZE, max_pixels=1_000_000)(_batch(files, ["large.jpg", "good.jpg"]))
    assert list(out["status"]) == ["error", "ok"]
    assert (out["width"][0], out["height"][0]) == (3000, 2000)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_pil_bomb_limit_is_an_error_row(files, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL raises above 2x, warns above 1x
    for name in ("animated.gif", "good.jpg", "large.jpg"):  # 1200 px: the warning case
        im, err, _ = decode_one(open(files[name], "rb").read())
        assert im is None and "decompression bomb" in err


def test_large_image_decoded_reduced(files):
    im, err, meta = decode_one(open(files["large.jpg"], "rb").read(), target=SIZE)
    assert err is None and (meta["width"], meta["height"]) == (3000, 2000)
    assert 2 * SIZE <= min(im.size) < 2000  # draft/reduce kept enough pixels, not all
    full, _, _ = decode_one(open(files["large.jpg"], "rb").read())
    assert full.size == (3000, 2000)


def test_preprocess_callable_and_all_error_batch(files):
    def preprocess(im: Image.Image) -> np.ndarray:  # CHW float like open_clip's transform
        arr = np.asarray(im.resize((16, 16)), dtype=np.float32) / 255.0
        return arr.transpose(2, 0, 1)

    dec = Decoder(preprocess, size=16)
    out = dec(_batch(files, ["good.PNG", "text.png"]))
    assert out["pixels"].shape == (2, 3, 16, 16) and out["pixels"].dtype == np.float32
    assert list(out["status"]) == ["ok", "error"]
    only_bad = dec(_batch(files, ["zero.jpg", "missing.jpg"]))
    assert only_bad["pixels"].shape == (2, 3, 16, 16) and set(only_bad["status"]) == {"error"}
    empty = dec({"image_id": np.zeros(0, np.int64), "uri": np.array([], dtype=object)})
    assert empty["pixels"].shape == (0, 3, 16, 16)


def test_preprocess_exception_is_an_error_row(files):
    calls = []

    def flaky(im: Image.Image) -> np.ndarray:
        calls.append(im.size)
        if len(calls) > 1:
            raise RuntimeError("boom")
        return np.zeros((3, 8, 8), np.float32)

    out = Decoder(flaky, size=8)(_batch(files, ["good.jpg"]))
    assert out["status"][0] == "error" and "preprocess failed: RuntimeError: boom" in out["error"][0]


def test_bytes_column_is_used_and_dropped(files):
    data = open(files["good.jpg"], "rb").read()
    batch = {"image_id": np.array([7]), "uri": np.array(["/not/read.jpg"]),
             "bytes": np.array([data], dtype=object)}
    out = Decoder(size=SIZE)(batch)
    assert out["status"][0] == "ok" and "bytes" not in out


def test_pixel_spec_crop_equals_torchvision_and_decode_imports_no_torch():
    """The decode stage resizes with PIL alone, pixel for pixel as open_clip's transform does, and
    neither it nor the encode driver imports torch (their processes start in a fraction of the time)."""
    import subprocess
    import sys

    from torchvision import transforms as T

    from tagger.models.pixels import PixelSpec

    rng = np.random.default_rng(0)
    for size in (96, 224):
        spec = PixelSpec(size)
        ref = T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size)])
        for w, h in [(256, 256), (size, size), (300, 199), (199, 300), (97, 1000), (size + 3, size), (33, 45)]:
            im = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
            assert np.array_equal(np.asarray(ref(im)), np.asarray(spec.resize_crop(im))), (size, w, h)
    code = ("import sys, tagger.pipeline.decode, tagger.pipeline.encode, tagger.store.updates\n"
            "from tagger.models.registry import model_id_for\n"
            "from tagger.models.preprocess import pixel_spec\n"
            "model_id_for('toy-vit'); pixel_spec('toy-vit'); pixel_spec('ViT-B-32')\n"
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_size_cap_and_special_files_are_error_rows(files, tmp_path):
    """A file over the cap is not read, nor is a FIFO (it would block) or a device: each is an error row."""
    import os
    good = files["good.jpg"]
    size = os.path.getsize(good)
    os.mkfifo(tmp_path / "pipe.jpg")
    (tmp_path / "zero.jpg").symlink_to("/dev/zero")
    batch = {"image_id": np.arange(3, dtype=np.int64),
             "uri": np.array([good, str(tmp_path / "pipe.jpg"), str(tmp_path / "zero.jpg")])}
    out = Decoder(size=SIZE, max_bytes=size)(batch)
    assert list(out["status"]) == ["ok", "error", "error"], list(out["error"])
    assert "not a regular file (FIFO)" in out["error"][1] and "character device" in out["error"][2]
    small = Decoder(size=SIZE, max_bytes=size - 1)
    out = small(_batch(files, ["good.jpg"]))
    assert out["status"][0] == "error" and f"{size} bytes, over the per-image limit of {size - 1}" in out["error"][0]
    with open(good, "rb") as f:  # bytes handed in (a bytes column) are held to the cap too
        data = f.read()
    row = small.decode(good, data)
    assert row["status"] == "error" and "over the per-image limit" in row["error"]
