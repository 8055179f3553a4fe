"""Heads that learn from labelled images too: OVML, MKT, CLIP-Decoder and few-shot CoMC.

Pure math over stored embeddings (no catalog, workspace or Ray). ``fit_head(kind, ...)`` trains an
image head, ``load_head(dir)`` loads one; :func:`fit_fewshot` improves a text-trained CoMC model.
The kinds are those of the registry :mod:`tagger.method.headkinds` (a new head registers there, not here).
"""
from typing import Any

from ..headkinds import head_classes, image_heads
from .base import FitConfig, ImageHead, fit_head, is_head_dir, load_head
from .clip_decoder import ClipDecoderConfig
from .fewshot import FewShotConfig, fit_fewshot, sample_shots
from .mkt import MktConfig
from .ovml import OvmlConfig

__all__ = ["CONFIGS", "ClipDecoderConfig", "FewShotConfig", "FitConfig", "IMAGE_HEADS", "ImageHead", "MktConfig",
           "OvmlConfig", "fit_fewshot", "fit_head", "is_head_dir", "load_head", "sample_shots"]


def __getattr__(name: str) -> Any:
    """``IMAGE_HEADS`` (the registered image heads) and ``CONFIGS`` (each one's config class), read from the
    registry when asked, so a head registered after this package was imported is among them."""
    if name == "IMAGE_HEADS":
        return image_heads()
    if name == "CONFIGS":
        return {kind: head_classes(kind)[0] for kind in image_heads()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
