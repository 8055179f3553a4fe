"""Image preprocessing split in two: a CPU part (resize + crop to uint8) and a device part
(scale + normalise). Together they equal open_clip's evaluation transform, but only uint8
pixels travel between the decode and encode stages (4x less than float32).
"""
from __future__ import annotations

from ..errors import ModelLoadError
from .pixels import OPENAI_MEAN, OPENAI_STD, PixelSpec
from .registry import model_config, register_configs

__all__ = ["OPENAI_MEAN", "OPENAI_STD", "PixelSpec", "pixel_spec"]


def pixel_spec(name: str, pretrained: str | None = None) -> PixelSpec:
    """The preprocessing of an open_clip model, read from its config (no weights are loaded).

    Config files are read directly, so the decode side needs no torch; open_clip is imported
    only for names without a config file and for hub tags (their mean/std).
    """
    cfg = model_config(name)
    hub = bool(pretrained and not pretrained.endswith((".pt", ".pth", ".bin", ".safetensors")))
    if cfg is None or hub:
        import open_clip
        register_configs()
        cfg = open_clip.get_model_config(name)
    if cfg is None:
        raise ModelLoadError(f"unknown open_clip model {name!r}")
    size = cfg["vision_cfg"]["image_size"]
    size = int(size[0] if isinstance(size, (list, tuple)) else size)
    pp = dict(cfg.get("preprocess_cfg", {}))
    if hub:
        pp.update({k: v for k, v in open_clip.get_pretrained_cfg(name, pretrained).items()
                   if k in ("mean", "std", "interpolation")})
    return PixelSpec(size, tuple(pp.get("mean", OPENAI_MEAN)), tuple(pp.get("std", OPENAI_STD)),
                     pp.get("interpolation", "bicubic"))
