"""Image preprocessing split in two: a CPU part (resize + crop to uint8) and a device part
(scale + normalise). Together they equal open_clip's evaluation transform, but only uint8
pixels travel between the decode and encode stages (4x less than float32).
"""
from __future__ import annotations

import open_clip

from ..errors import ModelLoadError
from .pixels import OPENAI_MEAN, OPENAI_STD, PixelSpec

__all__ = ["OPENAI_MEAN", "OPENAI_STD", "PixelSpec", "pixel_spec"]


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
