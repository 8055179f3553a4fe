"""Heads that learn from labelled images too: OVML, MKT, CLIP-Decoder and few-shot CoMC.

Pure math over stored embeddings (no catalog, workspace or Ray). ``fit_head(kind, ...)`` trains an
image head, ``load_head(dir)`` loads one; :func:`fit_fewshot` improves a text-trained CoMC model.
"""
from . import clip_decoder, mkt, ovml  # noqa: F401  (register the head kinds)
from .base import FitConfig, ImageHead, fit_head, is_head_dir, load_head
from .clip_decoder import ClipDecoderConfig
from .fewshot import FewShotConfig, fit_fewshot, sample_shots
from .mkt import MktConfig
from .ovml import OvmlConfig

IMAGE_HEADS: tuple[str, ...] = ("ovml", "mkt", "clip-decoder")
CONFIGS = {"ovml": OvmlConfig, "mkt": MktConfig, "clip-decoder": ClipDecoderConfig}

__all__ = ["CONFIGS", "ClipDecoderConfig", "FewShotConfig", "FitConfig", "IMAGE_HEADS", "ImageHead", "MktConfig",
           "OvmlConfig", "fit_fewshot", "fit_head", "is_head_dir", "load_head", "sample_shots"]
