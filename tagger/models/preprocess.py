"""Image preprocessing split in two: a CPU part (resize + crop to uint8) and a device part
(scale + normalise). Together they equal open_clip's evaluation transform, but only uint8
pixels travel between the decode and encode stages (4x less than float32).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import open_clip
import torch
from PIL import Image
from torchvision import transforms as T

from ..errors import ModelLoadError

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class PixelSpec:
    """What a model expects: square size, normalisation and resize interpolation."""

    image_size: int
    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD
    interpolation: str = "bicubic"

    def _resize(self) -> T.Compose:
        interp = {"bicubic": T.InterpolationMode.BICUBIC, "bilinear": T.InterpolationMode.BILINEAR}[
            self.interpolation]
        return T.Compose([T.Resize(self.image_size, interpolation=interp), T.CenterCrop(self.image_size)])

    def to_uint8(self, image: Image.Image) -> np.ndarray:
        """Resize the shorter side and centre-crop: uint8 CHW array (CPU stage)."""
        im = self._resize()(image.convert("RGB"))
        return np.ascontiguousarray(np.asarray(im, dtype=np.uint8).transpose(2, 0, 1))

    def normalize(self, pixels: np.ndarray | torch.Tensor, device: str = "cpu",
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """uint8 (n, 3, H, W) -> normalised float tensor on ``device`` (device stage)."""
        x = torch.as_tensor(pixels).to(device=device, non_blocking=True)
        x = x.to(torch.float32).div_(255.0)
        mean = torch.tensor(self.mean, device=device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=device).view(1, 3, 1, 1)
        return ((x - mean) / std).to(dtype)


def pixel_spec(name: str, pretrained: str | None = None) -> PixelSpec:
    """The preprocessing of an open_clip model, read from its config (no weights are loaded)."""
    cfg = open_clip.get_model_config(name)
    if cfg is None:
        raise ModelLoadError(f"unknown open_clip model {name!r}")
    size = cfg["vision_cfg"]["image_size"]
    size = int(size[0] if isinstance(size, (list, tuple)) else size)
    pp = dict(cfg.get("preprocess_cfg", {}))
    if pretrained and not pretrained.endswith((".pt", ".pth", ".bin", ".safetensors")):
        pp.update({k: v for k, v in open_clip.get_pretrained_cfg(name, pretrained).items()
                   if k in ("mean", "std", "interpolation")})
    return PixelSpec(size, tuple(pp.get("mean", OPENAI_MEAN)), tuple(pp.get("std", OPENAI_STD)),
                     pp.get("interpolation", "bicubic"))
