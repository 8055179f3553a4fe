"""Load any open_clip model by name: shipped toy weights, a hub tag, or a local checkpoint path.

Importing this module changes nothing in open_clip: :func:`load_clip` registers the shipped
configs (:func:`~tagger.models.registry.register_configs`, idempotent) before it creates a model.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import open_clip
import torch

from ..errors import ModelLoadError
from . import registry
from .registry import model_id_for

logger = logging.getLogger(__name__)


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class ClipModel:
    """A loaded CLIP model with its preprocessing and tokenizer."""

    name: str
    pretrained: str | None
    model: Any
    preprocess: Callable
    tokenizer: Callable
    device: str = "cpu"
    dtype: torch.dtype = torch.float32
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def embed_dim(self) -> int:
        return int(self.model.text_projection.shape[1]) if hasattr(self.model, "text_projection") else int(
            self.model.visual.output_dim)

    @property
    def image_size(self) -> int:
        s = self.model.visual.image_size
        return int(s[0] if isinstance(s, (tuple, list)) else s)

    @property
    def model_id(self) -> str:
        """A stable identifier of (architecture, weights) used to key stored embeddings."""
        return model_id_for(self.name, self.pretrained)

    @torch.inference_mode()
    def encode_text(self, texts: list[str], batch_size: int = 512) -> np.ndarray:
        """L2-normalised sentence embeddings (EOT token), float32 numpy of shape (n, d)."""
        out = []
        for i in range(0, len(texts), batch_size):
            toks = self.tokenizer(list(texts[i:i + batch_size])).to(self.device)
            f = self.model.encode_text(toks).float()
            out.append(torch.nn.functional.normalize(f, dim=-1).cpu().numpy())
        if not out:
            return np.zeros((0, self.embed_dim), np.float32)
        return np.concatenate(out).astype(np.float32)


def load_clip(
    name: str,
    pretrained: str | None = None,
    device: str | None = None,
    precision: str | None = None,
) -> ClipModel:
    """Load an open_clip model.

    Args:
        name: an open_clip architecture (``ViT-B-32``, ``RN50``, ``toy-vit``…) or ``hf-hub:org/repo``.
        pretrained: a hub tag (``laion2b_s34b_b79k``), a local checkpoint path, or None. For the
            shipped toy models None means their shipped, checksum-verified weights.
        device: ``cuda``/``cpu``; defaults to a GPU when present.
        precision: ``fp32``/``fp16``/``bf16``; defaults to fp16 on GPU, fp32 on CPU.
    """
    registry.check_model(name, pretrained)
    registry.register_configs()
    device = device or default_device()
    precision = precision or ("fp16" if device.startswith("cuda") else "fp32")
    info: dict[str, Any] = {}
    source = pretrained
    if pretrained is None and name in registry.shipped_models() and registry.manifest_path(name).exists():
        source = str(registry.verified_weights(name))
        info = registry.read_manifest(name)
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            name, pretrained=source, device=device, precision=precision)
        tokenizer = open_clip.get_tokenizer(name)
    except (RuntimeError, ValueError, FileNotFoundError, KeyError) as e:
        raise ModelLoadError(f"could not load model {name!r} (pretrained={pretrained!r}): {e}") from e
    model.eval()
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision, torch.float32)
    logger.info("loaded %s (pretrained=%s) on %s/%s", name, pretrained, device, precision)
    return ClipModel(name, pretrained, model, preprocess, tokenizer, device, dtype, info)
