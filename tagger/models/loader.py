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
from open_clip.model import CLIP as OpenClipCLIP
from open_clip.model import CustomTextCLIP
from open_clip.transformer import TextTransformer, text_global_pool

from ..errors import ModelLoadError
from . import registry
from .registry import model_id_for

__all__ = ["ClipModel", "default_device", "load_clip"]

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
    def encode_text(self, texts: list[str], batch_size: int = 512, chunk: int = 16384) -> np.ndarray:
        """L2-normalised sentence embeddings (EOT token), float32 numpy of shape (n, d).

        Where the text tower is causal and pools the EOT token, texts are embedded in batches of
        similar token length, each cut after its longest sentence (same result, less padding); they
        are tokenised ``chunk`` texts at a time, so the tokens of a large corpus are never held at once.
        """
        texts = list(texts)
        parts = _trim_parts(self.model)
        if parts is None or not texts:
            return self._encode_text_full(texts, batch_size)
        step = max(1, chunk)
        return np.concatenate([self._encode_sorted(texts[i:i + step], batch_size, parts)
                               for i in range(0, len(texts), step)])

    def _encode_sorted(self, texts: list[str], batch_size: int, parts: tuple[Any, str, int | None]) -> np.ndarray:
        """``texts`` embedded in batches sorted by token length, each cut after its longest sentence."""
        tower, pool, eos = parts
        toks = self.tokenizer(texts)
        lengths = _pool_index(toks, pool, eos) + 1
        order = torch.argsort(lengths, stable=True)
        out = []
        for i in range(0, len(texts), batch_size):
            idx = order[i:i + batch_size]
            batch = toks[idx, :int(lengths[idx].max())].to(self.device)
            f = _encode_cut(tower, batch, pool, eos).float()
            out.append(torch.nn.functional.normalize(f, dim=-1).cpu().numpy())
        emb = np.concatenate(out).astype(np.float32)
        restored = np.empty_like(emb)
        restored[order.numpy()] = emb
        return restored

    @torch.inference_mode()
    def _encode_text_full(self, texts: list[str], batch_size: int) -> np.ndarray:
        """Every batch padded to the full context (any model open_clip's ``encode_text`` runs)."""
        out = []
        for i in range(0, len(texts), batch_size):
            toks = self.tokenizer(list(texts[i:i + batch_size])).to(self.device)
            f = self.model.encode_text(toks).float()
            out.append(torch.nn.functional.normalize(f, dim=-1).cpu().numpy())
        if not out:
            return np.zeros((0, self.embed_dim), np.float32)
        return np.concatenate(out).astype(np.float32)


def _is_causal(mask: torch.Tensor | None) -> bool:
    """True when ``mask`` (additive float or boolean) blocks every position from all later ones."""
    if mask is None or mask.ndim != 2 or mask.shape[0] != mask.shape[1]:
        return False
    blocked = mask if mask.dtype == torch.bool else torch.isneginf(mask)
    future = torch.ones_like(blocked, dtype=torch.bool).triu(1)
    return bool(blocked[future].all())


def _trim_parts(model: Any) -> tuple[Any, str, int | None] | None:
    """(text tower, pool type, EOS id) when a batch cut after its last pooled token embeds exactly
    as at full length: open_clip's ``CLIP``, or ``CustomTextCLIP`` over a ``TextTransformer``, with a
    causal mask, no class token, and the EOT token pooled. None for anything else."""
    method = getattr(getattr(model, "encode_text", None), "__func__", None)
    if method is OpenClipCLIP.encode_text:
        tower, pool, eos = model, model.text_pool_type, getattr(model, "text_eos_id", None)
    elif method is CustomTextCLIP.encode_text and getattr(type(model.text), "forward", None) is TextTransformer.forward:
        tower, pool, eos = model.text, model.text.pool_type, model.text.eos_id
    else:
        return None
    if pool not in ("argmax", "eos") or (pool == "eos" and eos is None):
        return None
    if getattr(tower, "cls_emb", None) is not None or getattr(tower, "use_pad_mask", False):
        return None
    return (tower, pool, eos) if _is_causal(getattr(tower, "attn_mask", None)) else None


def _pool_index(toks: torch.Tensor, pool: str, eos: int | None) -> torch.Tensor:
    """The position open_clip's ``text_global_pool`` reads in each row of ``toks``."""
    if pool == "argmax":
        return toks.argmax(dim=-1)
    if eos is None:
        raise ValueError("pool type 'eos' needs the EOS token id")
    return torch.eq(toks, eos).int().argmax(dim=-1)


def _encode_cut(tower: Any, toks: torch.Tensor, pool: str, eos: int | None) -> torch.Tensor:
    """open_clip 3.3.0's text forward (``CLIP.encode_text``) on ``toks`` of any length up to the
    context: the positional embedding and causal mask are sliced to that length."""
    n = toks.shape[1]
    cast_dtype = tower.transformer.get_cast_dtype()
    x = tower.token_embedding(toks).to(cast_dtype) + tower.positional_embedding[:n].to(cast_dtype)
    x = tower.transformer(x, attn_mask=tower.attn_mask[:n, :n])
    x = text_global_pool(tower.ln_final(x), toks, pool, eos_token_id=eos)
    proj = tower.text_projection
    if proj is not None:
        x = proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj
    return x


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
