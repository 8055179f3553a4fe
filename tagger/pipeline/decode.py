"""The decode stage: bytes -> RGB pixels, where every bad image becomes an error row.

``Decoder`` is a callable over a batch dict of numpy arrays, shaped for Ray Data
``map_batches(Decoder(...), batch_format="numpy")``; ``decode_one`` decodes one image and
``probe_one`` reads only what the catalog records of it (hash, displayed size), for images whose
embeddings are already stored.
No global PIL setting is changed: truncated files are errors (``LOAD_TRUNCATED_IMAGES`` stays
as it is), and the pixel limit is checked per image, from the header, before any pixel is decoded.
EPS is never opened (PIL would run Ghostscript on it). HEIC/HEIF files open through pillow-heif's
PIL plugin (registered when this module is imported, if pillow-heif is installed); AVIF through
Pillow's own plugin (Pillow 11.3 or later).
"""
from __future__ import annotations

import functools
import hashlib
import io
import logging
from collections.abc import Callable, Collection, Mapping
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from ..models import pixels
from ..models.pixels import PixelSpec
from ..errors import SourceError
from .sources import max_image_bytes, read_bytes

__all__ = ["DEFAULT_MAX_PIXELS", "REFUSED_FORMATS", "DecodePartitions", "Decoder", "clean_error", "decode_one",
           "probe_one", "resize_center_crop", "to_rgb"]

logger = logging.getLogger(__name__)


def _register_heif() -> bool:
    """Let PIL open HEIC/HEIF files (pillow-heif); False when pillow-heif is not installed."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        logger.debug("pillow-heif is not installed: HEIC/HEIF files become error rows")
        return False
    register_heif_opener()
    return True


HEIF_SUPPORTED = _register_heif()
DEFAULT_MAX_PIXELS = 100_000_000
DEFAULT_SIZE = 224
_WHITE = (255, 255, 255)
_HIGH_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
#: Formats PIL could open that are refused here: EPS is rendered by Ghostscript, an external
#: PostScript interpreter that runs whatever program the file holds (it can loop for ever).
REFUSED_FORMATS = frozenset({"EPS"})
_POSTSCRIPT_MAGIC = (b"%!PS", b"\xc5\xd0\xd3\xc6")
#: Longest error text kept for a row (a library's message can quote a whole header).
MAX_ERROR_CHARS = 2000


def _describe(e: BaseException) -> str:
    msg = str(e).strip()
    return clean_error(f"{type(e).__name__}: {msg}" if msg else type(e).__name__)


def clean_error(text: str) -> str:
    """``text`` as an error row can store it: valid UTF-8 (a lone surrogate, as from a file name
    that is not UTF-8, written as ``\\udcff``), no NUL, at most :data:`MAX_ERROR_CHARS` characters."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS - 1] + "\u2026"


def _open_formats() -> tuple[str, ...]:
    """Every format PIL (and its registered plugins) can open, less :data:`REFUSED_FORMATS`."""
    Image.init()
    return tuple(f for f in Image.ID if f not in REFUSED_FORMATS)


def _open(data: bytes) -> Image.Image:
    """PIL's lazy open of ``data`` (header only), never as a refused format."""
    return Image.open(io.BytesIO(data), formats=_open_formats())


def _unidentified(data: bytes) -> str:
    """Why PIL identified no format in ``data``."""
    if data[:64].lstrip()[:4] in _POSTSCRIPT_MAGIC:
        return "PostScript/EPS is not read (it would need Ghostscript to run the file's program)"
    return "not an image, or an unsupported or corrupt format (PIL cannot identify it)"


def _high_bit_to_l(im: Image.Image) -> Image.Image:
    """16-bit / 32-bit integer or float greyscale -> 8-bit 'L', keeping the value range."""
    arr = np.nan_to_num(np.asarray(im).astype(np.float32))
    top = float(arr.max(initial=0.0))
    if im.mode.startswith("I;16"):
        scale = 255.0 / 65535.0
    elif im.mode == "F" and top <= 1.0:
        scale = 255.0
    elif top <= 255.0:
        scale = 1.0
    else:
        scale = 255.0 / (65535.0 if top <= 65535.0 else top)
    return Image.fromarray(np.clip(arr * scale, 0, 255).round().astype(np.uint8), "L")


def to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode -> 'RGB': palette, CMYK, greyscale, 16-bit, float; transparency is
    composited on white."""
    if im.mode == "RGB":
        return im
    if im.mode in _HIGH_BIT_MODES:
        return _high_bit_to_l(im).convert("RGB")
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif im.mode in ("L", "1") and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in _ALPHA_MODES:
        rgba = im.convert("RGBA")
        background = Image.new("RGB", rgba.size, _WHITE)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return im.convert("RGB")


def _orientation(im: Image.Image) -> int:
    """The EXIF orientation read from the header alone: PIL would decode a whole PNG to look for EXIF
    after its pixels (which browsers ignore too), before the pixel limit is checked."""
    if im.format == "PNG" and "exif" not in im.info:
        return 1
    try:
        return int(im.getexif().get(0x0112, 1) or 1)
    except Exception:  # malformed EXIF is not worth failing the image for
        return 1


def decode_one(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS,
               target: int | None = None) -> tuple[Image.Image | None, str | None, dict[str, Any]]:
    """Decode one encoded image to an RGB PIL image.

    Returns ``(image, None, meta)`` or ``(None, error message, meta)``; never raises for bad
    data. ``meta`` has ``bytes``, ``content_hash`` (sha256 hex), ``width``/``height`` (as
    displayed, EXIF orientation applied; 0 when unknown), ``format``, ``mode``, ``animated``.
    Images over ``max_pixels`` (or over PIL's own ``Image.MAX_IMAGE_PIXELS``) are refused
    before decoding. With ``target``, large images are decoded at reduced scale (JPEG draft,
    then ``reduce``) while keeping the shorter side at least ``2 * target``. Animated images
    give their first frame.
    """
    meta: dict[str, Any] = {"bytes": len(data), "content_hash": hashlib.sha256(data).hexdigest(),
                            "width": 0, "height": 0, "format": None, "mode": None, "animated": False}
    if not data:
        return None, "empty file (0 bytes)", meta
    try:
        im = _open(data)
    except Image.DecompressionBombError as e:
        return None, f"refused as a decompression bomb: {e}", meta
    except Image.UnidentifiedImageError:
        return None, _unidentified(data), meta
    except Exception as e:
        return None, f"not a readable image: {_describe(e)}", meta
    try:
        return _decode_opened(im, meta, max_pixels, target)
    except Image.DecompressionBombError as e:
        return None, f"refused as a decompression bomb: {e}", meta
    except Exception as e:
        return None, f"decode failed: {_describe(e)}", meta
    finally:
        im.close()


def _header_meta(im: Image.Image, meta: dict[str, Any]) -> int:
    """Fill ``meta`` from an opened image's header (size as displayed); return the EXIF orientation."""
    w, h = im.size
    orientation = _orientation(im)
    meta.update(format=im.format, mode=im.mode, animated=bool(getattr(im, "is_animated", False)),
                width=h if orientation in (5, 6, 7, 8) else w,
                height=w if orientation in (5, 6, 7, 8) else h)
    return orientation


def probe_one(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[str | None, dict[str, Any]]:
    """The ``meta`` of :func:`decode_one` (hash, size as displayed, format) from the header alone:
    no pixel is decoded. Returns ``(None, meta)`` or ``(error message, meta)``; never raises. For an
    image already encoded (its shard written before a crash), whose pixels are not needed again."""
    meta: dict[str, Any] = {"bytes": len(data), "content_hash": hashlib.sha256(data).hexdigest(),
                            "width": 0, "height": 0, "format": None, "mode": None, "animated": False}
    if not data:
        return "empty file (0 bytes)", meta
    try:
        with _open(data) as im:
            _header_meta(im, meta)
    except Image.UnidentifiedImageError:
        return _unidentified(data), meta
    except Exception as e:
        return f"not a readable image: {_describe(e)}", meta
    w, h = meta["width"], meta["height"]
    if w <= 0 or h <= 0:
        return f"invalid image size {w}x{h}", meta
    if w * h > min(max_pixels, Image.MAX_IMAGE_PIXELS or max_pixels):
        return f"refused as a decompression bomb: {w}x{h} = {w * h} pixels", meta
    return None, meta


def _decode_opened(im: Image.Image, meta: dict[str, Any], max_pixels: int,
                   target: int | None) -> tuple[Image.Image | None, str | None, dict[str, Any]]:
    w, h = im.size
    orientation = _header_meta(im, meta)
    if w <= 0 or h <= 0:
        return None, f"invalid image size {w}x{h}", meta
    limit = min(max_pixels, Image.MAX_IMAGE_PIXELS or max_pixels)
    if w * h > limit:
        return None, (f"refused as a decompression bomb: {w}x{h} = {w * h} pixels exceeds the "
                      f"limit of {limit}"), meta
    if meta["animated"]:
        im.seek(0)
    if target and im.format == "JPEG" and min(w, h) >= 4 * target:
        im.draft("RGB", (2 * target, 2 * target))
    im.load()
    out = ImageOps.exif_transpose(im) if orientation != 1 else im
    out = to_rgb(out)
    if target:
        factor = min(out.size) // (2 * target)
        if factor >= 2:
            out = out.reduce(factor)
    if out is im:  # detach from the file so that closing it is safe
        out = out.copy()
    return out, None, meta


def resize_center_crop(im: Image.Image, size: int) -> np.ndarray:
    """Resize the shorter side to ``size`` (bicubic) and crop the centre: uint8 (size, size, 3).

    The same resize and crop as the model's own preprocessing (:func:`tagger.models.pixels.resize_center_crop`).
    """
    return np.asarray(pixels.resize_center_crop(im, size), dtype=np.uint8)


class Decoder:
    """Batch decode stage: ``{"image_id", "uri"[, "bytes"]}`` -> the same columns plus
    ``pixels``, ``content_hash``, ``width``, ``height``, ``status`` ('ok'/'error'), ``error``.

    ``pixels`` is ``preprocess(image)`` as a numpy array (e.g. open_clip's transform: float32
    CHW) when ``preprocess`` is given, else uint8 ``(size, size, 3)`` RGB (shorter side resized
    to ``size``, centre crop). Error rows get zero pixels of the same shape, so batches stay
    rectangular, and a readable ``error``; nothing is raised for bad images. ``width`` and
    ``height`` are the header's when it could be read, on error rows too (the catalog keeps no size
    for an error row). A ``bytes``
    column, when present (e.g. ``ray.data.read_binary_files``), is used instead of reading
    ``uri`` and is dropped from the output unless ``keep_bytes``. A file over ``max_bytes`` (default
    :func:`~tagger.pipeline.sources.max_image_bytes`), or one that is not a regular file, is an
    error row and is not read.
    """

    def __init__(self, preprocess: Callable[[Image.Image], Any] | None = None, size: int = DEFAULT_SIZE,
                 *, max_pixels: int = DEFAULT_MAX_PIXELS, read: Callable[[str], bytes] | None = None,
                 keep_bytes: bool = False, max_bytes: int | None = None) -> None:
        if size <= 0 or max_pixels <= 0 or (max_bytes is not None and max_bytes <= 0):
            raise ValueError("size, max_pixels and max_bytes must be positive")
        self.preprocess = preprocess
        self.size = int(size)
        self.max_pixels = int(max_pixels)
        self.max_bytes = int(max_bytes) if max_bytes is not None else max_image_bytes()
        self.read = read if read is not None else functools.partial(read_bytes, max_bytes=self.max_bytes)
        self.keep_bytes = keep_bytes
        self._template: np.ndarray | None = None

    def _pixels(self, im: Image.Image) -> np.ndarray:
        if self.preprocess is None:
            return resize_center_crop(im, self.size)
        out = self.preprocess(im)
        if hasattr(out, "detach"):
            out = out.detach().cpu()
        return np.asarray(out)

    @property
    def template(self) -> np.ndarray:
        """Zero pixels with the output shape and dtype (what an error row carries)."""
        if self._template is None:
            probe = self._pixels(Image.new("RGB", (self.size, self.size), _WHITE))
            self._template = np.zeros_like(probe)
        return self._template

    def _read(self, uri: str, data: bytes | None, row: dict[str, Any]) -> bytes | None:
        """``data``, or the bytes of ``uri``; None (with the row's error set) when unreadable."""
        if data is not None:
            if len(data) > self.max_bytes:
                row["error"] = f"read failed: {uri} is {len(data)} bytes, over the per-image limit of {self.max_bytes}"
                return None
            return bytes(data)
        try:
            return self.read(uri)
        except SourceError as e:
            row["error"] = f"read failed: {e}"
        except Exception as e:
            row["error"] = f"read failed: {_describe(e)}"
        return None

    def _row(self) -> dict[str, Any]:
        return {"pixels": self.template, "content_hash": "", "width": 0, "height": 0, "status": "error",
                "error": ""}

    def probe(self, uri: str, data: bytes | None = None) -> dict[str, Any]:
        """One output row from the image's header alone (:func:`probe_one`): hash and size, zero
        pixels, status 'ok'. For an image whose embeddings are already stored: nothing is decoded."""
        row = self._row()
        data = self._read(uri, data, row)
        if data is None:
            return row
        err, meta = probe_one(data, max_pixels=self.max_pixels)
        row.update(content_hash=meta["content_hash"], width=meta["width"], height=meta["height"])
        if err:
            row["error"] = err
        else:
            row["status"] = "ok"
        return row

    def decode(self, uri: str, data: bytes | None = None) -> dict[str, Any]:
        """Decode one image (reading ``uri`` unless ``data`` is given) to one output row."""
        row = self._row()
        data = self._read(uri, data, row)
        if data is None:
            return row
        im, err, meta = decode_one(bytes(data), max_pixels=self.max_pixels, target=self.size)
        row.update(content_hash=meta["content_hash"], width=meta["width"], height=meta["height"])
        if im is None:
            row["error"] = err or "decode failed"
            return row
        try:
            pixels = self._pixels(im)
        except Exception as e:
            row["error"] = f"preprocess failed: {_describe(e)}"
            return row
        if pixels.shape != self.template.shape:
            row["error"] = f"preprocess gave shape {pixels.shape}, expected {self.template.shape}"
            return row
        row.update(pixels=pixels.astype(self.template.dtype, copy=False), status="ok")
        return row

    def __call__(self, batch: Mapping[str, Any], reuse: Collection[int] = ()) -> dict[str, np.ndarray]:
        """Decode a batch; the images whose ``image_id`` is in ``reuse`` (already encoded) are only
        probed (:meth:`probe`), not decoded."""
        uris = [str(u) for u in batch["uri"]]
        raw = batch.get("bytes") if hasattr(batch, "get") else None
        reuse = {int(i) for i in reuse}
        probed = [int(i) in reuse for i in batch["image_id"]] if reuse else [False] * len(uris)
        rows = [(self.probe if probed[i] else self.decode)(u, None if raw is None else raw[i])
                for i, u in enumerate(uris)]
        out = {k: np.asarray(v) for k, v in batch.items() if self.keep_bytes or k != "bytes"}
        out["pixels"] = (np.stack([r["pixels"] for r in rows]) if rows
                         else np.zeros((0, *self.template.shape), self.template.dtype))
        for row in rows:
            row["error"] = clean_error(str(row["error"]))
        for key in ("content_hash", "status", "error"):
            out[key] = np.array([r[key] for r in rows], dtype=object)
        for key in ("width", "height"):
            out[key] = np.array([r[key] for r in rows], dtype=np.int32)
        failed = [(u, r["error"]) for u, r in zip(uris, rows) if r["status"] != "ok"]
        for uri, err in failed:
            logger.debug("decode error %s: %s", uri, err)
        if failed:
            logger.info("%d of %d images in the batch could not be decoded (e.g. %s: %s)",
                        len(failed), len(rows), *failed[0])
        return out


def _object_column(values: list) -> np.ndarray:
    col = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        col[i] = v
    return col


class DecodePartitions:
    """Ray Data stage: each row is a partition (``partition``, ``image_ids``, ``uris``, optionally
    ``reuse_ids``); decode its images to uint8 CHW pixels for ``spec`` (errors kept as rows). The
    ``reuse_ids`` (images of the partition's shard, written before a crash) are only probed, not
    decoded: their pixels are not needed again. ``max_bytes`` caps each file read (default:
    :func:`~tagger.pipeline.sources.max_image_bytes` where the stage runs). Needs no torch."""

    def __init__(self, spec: PixelSpec, max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: int | None = None) -> None:
        self.decoder = Decoder(preprocess=spec.to_uint8, size=spec.image_size, max_pixels=max_pixels,
                               max_bytes=max_bytes)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out: dict[str, list] = {k: [] for k in ("partition", "image_ids", "pixels", "status", "error",
                                                "content_hash", "width", "height")}
        reuse = batch["reuse_ids"] if "reuse_ids" in batch else [()] * len(batch["partition"])
        for name, ids, uris, done in zip(batch["partition"], batch["image_ids"], batch["uris"], reuse):
            rows = self.decoder({"image_id": np.asarray(ids, np.int64), "uri": np.asarray(list(uris), object)},
                                reuse=np.asarray(done, np.int64).tolist())
            out["partition"].append(name)
            out["image_ids"].append(np.asarray(ids, np.int64))
            for k in ("pixels", "status", "error", "content_hash", "width", "height"):
                out[k].append(np.asarray(rows[k]))
        return {k: _object_column(v) for k, v in out.items()}
