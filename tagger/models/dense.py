"""Global and dense (patch) image features in CLIP's joint space, for ResNet and ViT backbones.

* ModifiedResNet: the global feature is the attention pool, with or without its positional
  embedding (``global_mode="nopos"`` is the method's variant); each location's local feature is the
  attention pool's value path ``c_proj(v_proj(F_i))`` (no query/key attention).
* ViT: the global feature is the usual CLS token; local features replace the last block's
  attention by the value path (``dense_mode="value"``: every token attends only to itself, no
  residual, no MLP) or by query-query attention (``dense_mode="qq"``), then ``ln_post`` and ``proj``.
All outputs are L2-normalised float32 tensors: global ``(n, d)`` and patches ``(n, P, d)``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class FeatureConfig:
    """Which global and dense feature variants to compute."""

    global_mode: str = "standard"  # "standard" | "nopos" (ResNet only)
    dense_mode: str = "value"  # "value" | "qq" (ViT); ResNet always uses the value path


def is_vit(model) -> bool:
    return hasattr(model.visual, "transformer") and hasattr(model.visual, "class_embedding")


def is_resnet(model) -> bool:
    return hasattr(model.visual, "attnpool")


def grid_size(model) -> tuple[int, int]:
    """Spatial grid of the dense features."""
    v = model.visual
    if is_vit(model):
        return tuple(v.grid_size)  # type: ignore[return-value]
    s = v.image_size if isinstance(v.image_size, int) else v.image_size[0]
    return (s // 32, s // 32)


def _resnet_features(model, x: torch.Tensor, cfg: FeatureConfig) -> tuple[torch.Tensor, torch.Tensor]:
    v = model.visual
    f = v.stem(x)
    f = v.layer4(v.layer3(v.layer2(v.layer1(f))))
    pool = v.attnpool
    n, c, h, w = f.shape
    tokens = f.reshape(n, c, h * w).permute(2, 0, 1)  # (HW, N, C)
    tokens = torch.cat([tokens.mean(dim=0, keepdim=True), tokens], dim=0)
    pos = pool.positional_embedding[:, None, :].to(tokens.dtype)
    if cfg.global_mode == "standard":
        q_in = tokens + pos
    elif cfg.global_mode == "nopos":
        q_in = tokens
    else:
        raise ValueError(f"unknown global_mode {cfg.global_mode!r} for a ResNet")
    g, _ = F.multi_head_attention_forward(
        query=q_in[:1], key=q_in, value=q_in, embed_dim_to_check=c, num_heads=pool.num_heads,
        q_proj_weight=pool.q_proj.weight, k_proj_weight=pool.k_proj.weight, v_proj_weight=pool.v_proj.weight,
        in_proj_weight=None, in_proj_bias=torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]),
        bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0.0,
        out_proj_weight=pool.c_proj.weight, out_proj_bias=pool.c_proj.bias,
        use_separate_proj_weight=True, training=False, need_weights=False)
    local = pool.c_proj(pool.v_proj(tokens[1:]))  # (HW, N, D): value path per location
    return g[0], local.permute(1, 0, 2)


def _vit_features(model, x: torch.Tensor, cfg: FeatureConfig) -> tuple[torch.Tensor, torch.Tensor]:
    v = model.visual
    if cfg.global_mode != "standard":
        raise ValueError(f"global_mode {cfg.global_mode!r} is not defined for a ViT")
    h = v._embeds(x)
    blocks = v.transformer.resblocks
    batch_first = getattr(v.transformer, "batch_first", True)
    if not batch_first:
        h = h.transpose(0, 1)
    for blk in blocks[:-1]:
        h = blk(h)
    last = blocks[-1]
    full = last(h)
    if not batch_first:
        full, h = full.transpose(0, 1), h.transpose(0, 1)
    pooled, _ = v._pool(full)
    g = pooled @ v.proj if v.proj is not None else pooled
    dense = _vit_dense(last, h, cfg.dense_mode)[:, 1:]
    dense = v.ln_post(dense)
    if v.proj is not None:
        dense = dense @ v.proj
    return g, dense


def _vit_dense(block, h: torch.Tensor, mode: str) -> torch.Tensor:
    """Last block with its attention replaced by the value path or q-q attention (batch first)."""
    attn = block.attn
    y = block.ln_1(h)
    w_q, w_k, w_v = attn.in_proj_weight.chunk(3)
    b_q, b_k, b_v = attn.in_proj_bias.chunk(3)
    val = F.linear(y, w_v, b_v)
    if mode == "value":
        out = val
    elif mode == "qq":
        n, length, width = y.shape
        heads = attn.num_heads
        q = F.linear(y, w_q, b_q).view(n, length, heads, -1).transpose(1, 2)
        vv = val.view(n, length, heads, -1).transpose(1, 2)
        a = torch.softmax(q @ q.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)
        out = (a @ vv).transpose(1, 2).reshape(n, length, width)
    else:
        raise ValueError(f"unknown dense_mode {mode!r}")
    return attn.out_proj(out)


def train_features(model, pixels: torch.Tensor, cfg: FeatureConfig | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Unnormalised global ``(n, d)`` and patch ``(n, P, d)`` features, with gradients (training)."""
    cfg = cfg or FeatureConfig()
    if is_resnet(model):
        return _resnet_features(model, pixels, cfg)
    if is_vit(model):
        return _vit_features(model, pixels, cfg)
    raise TypeError(f"no dense-feature path for visual tower {type(model.visual).__name__}")


@torch.inference_mode()
def image_features(model, pixels: torch.Tensor, cfg: FeatureConfig | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised global ``(n, d)`` and patch ``(n, P, d)`` features of a preprocessed batch."""
    cfg = cfg or FeatureConfig()
    dtype = next(model.parameters()).dtype
    g, p = train_features(model, pixels.to(dtype=dtype), cfg)
    return F.normalize(g.float(), dim=-1), F.normalize(p.float(), dim=-1)
