"""Image files of every good and bad kind, shared by the decode and pipeline tests."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _photo(w: int = 120, h: int = 90) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


def write_cases(d: Path) -> dict[str, str]:
    """Every good and bad case as a file in ``d``; name -> path."""
    d.mkdir(parents=True, exist_ok=True)
    photo = _photo()
    jpeg = _save(photo, "JPEG", quality=90)
    rgba = photo.convert("RGBA")
    rgba.putpixel((0, 0), (0, 0, 0, 0))  # fully transparent -> white
    frames = [Image.new("RGB", (40, 30), c) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:], duration=40, loop=0)
    grey16 = Image.fromarray((np.arange(48 * 64).reshape(48, 64) * 21).astype(np.uint16))
    contents = {
        "good.jpg": jpeg,
        "good.PNG": _save(photo, "PNG"),
        "good.webp": _save(photo, "WEBP"),
        "good.bmp": _save(photo, "BMP"),
        "good.tiff": _save(photo, "TIFF"),
        "cmyk.jpg": _save(photo.convert("CMYK"), "JPEG"),
        "grey16.png": _save(grey16, "PNG"),
        "palette.png": _save(photo.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"),
        "rgba.png": _save(rgba, "PNG"),
        "la.png": _save(photo.convert("LA"), "PNG"),
        "grey.jpg": _save(photo.convert("L"), "JPEG"),
        "animated.gif": gif.getvalue(),
        "large.jpg": _save(Image.new("RGB", (3000, 2000), (20, 140, 220)), "JPEG"),
        "zero.jpg": b"",
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "random.jpg": np.random.default_rng(1).bytes(4096),
        "text.png": b"this is a text file, not a PNG\n" * 10,
    }
    paths = {}
    for name, data in contents.items():
        (d / name).write_bytes(data)
        paths[name] = str(d / name)
    paths["missing.jpg"] = str(d / "no-such-file.jpg")
    return paths


