"""What a model expects of its pixels, with no torch import: the decode stage runs on this alone.

``PixelSpec.to_uint8`` is the CPU half of open_clip's evaluation transform (shorter side resized,
centre crop, done with PIL exactly as torchvision does it on PIL images); ``normalize`` is the
device half (scale and normalise), and imports torch only when called.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
#: Beyond this ratio of the resized long side to ``size`` only the centre square's source box is resized.
MAX_ASPECT = 64
_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


def resize_center_crop(image: Image.Image, size: int, interpolation: str = "bicubic") -> Image.Image:
    """Shorter side to ``size`` (longer side truncated), then the centre square: torchvision's
    ``Resize(size)`` + ``CenterCrop(size)`` on a PIL image, pixel for pixel.

    An image longer than :data:`MAX_ASPECT` times its width (or wider than that times its height, a
    1x100000 strip) is not resized whole, which would take gigabytes: only the source region of the
    centre square is resampled, at the same scale (equal to the whole resize up to float rounding)."""
    w, h = image.size
    if w <= h:
        nw, nh = size, int(size * h / w)
    else:
        nw, nh = int(size * w / h), size
    top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
    if (nw, nh) != (w, h) and max(nw, nh) > MAX_ASPECT * size:
        return _resize_centre_box(image, (nw, nh), (left, top), size, interpolation)
    if (nw, nh) != (w, h):
        image = image.resize((nw, nh), _RESAMPLE[interpolation])
    return image.crop((left, top, left + size, top + size))


def _resize_centre_box(image: Image.Image, resized: tuple[int, int], corner: tuple[int, int], size: int,
                       interpolation: str) -> Image.Image:
    """The ``size`` square at ``corner`` of ``image`` resized to ``resized``, computed from its
    source box alone (the scale, hence the filter, is that of the whole resize)."""
    (w, h), (nw, nh), (left, top) = image.size, resized, corner
    sx, sy = w / nw, h / nh
    box = (left * sx, top * sy, (left + size) * sx, (top + size) * sy)
    logger.debug("resizing the centre of a %dx%d image from its box %s", w, h, box)
    return image.resize((size, size), _RESAMPLE[interpolation], box=box)


@dataclass(frozen=True)
class PixelSpec:
    """What a model expects: square size, normalisation and resize interpolation."""

    image_size: int
    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD
    interpolation: str = "bicubic"

    def resize_crop(self, image: Image.Image) -> Image.Image:
        """Shorter side to ``image_size`` (longer side truncated), then the centre square."""
        return resize_center_crop(image, self.image_size, self.interpolation)

    def to_uint8(self, image: Image.Image) -> np.ndarray:
        """Resize the shorter side and centre-crop: uint8 CHW array (CPU stage)."""
        im = self.resize_crop(image.convert("RGB"))
        return np.ascontiguousarray(np.asarray(im, dtype=np.uint8).transpose(2, 0, 1))

    def normalize(self, pixels: Any, device: str = "cpu", dtype: Any = None) -> Any:
        """uint8 (n, 3, H, W) -> normalised float tensor on ``device`` (device stage)."""
        import torch

        x = torch.as_tensor(pixels).to(device=device, non_blocking=True)
        x = x.to(torch.float32).div_(255.0)
        mean = torch.tensor(self.mean, device=device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=device).view(1, 3, 1, 1)
        return ((x - mean) / std).to(dtype or torch.float32)
