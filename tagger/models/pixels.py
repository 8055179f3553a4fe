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
_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


def resize_center_crop(image: Image.Image, size: int, interpolation: str = "bicubic") -> Image.Image:
    """Shorter side to ``size`` (longer side truncated), then the centre square: torchvision's
    ``Resize(size)`` + ``CenterCrop(size)`` on a PIL image, pixel for pixel."""
    w, h = image.size
    if w <= h:
        nw, nh = size, int(size * h / w)
    else:
        nw, nh = int(size * w / h), size
    if (nw, nh) != (w, h):
        image = image.resize((nw, nh), _RESAMPLE[interpolation])
    top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


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
