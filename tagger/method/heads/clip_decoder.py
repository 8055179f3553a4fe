"""CLIP-Decoder: an ML-Decoder-style head whose queries are CLIP text embeddings of prompted labels.

A shared projection W (d -> D) maps both modalities: the queries q_c = W t_c (t_c the text
embedding of "a photo of a {label}.") and the image tokens m = W [g; x_1..x_P]. One decoder layer
(no self-attention between queries, as in ML-Decoder):
    a   = softmax_m((q W_q)(m W_k)^T / C)            per head h
    h_c = LN_1(q_c + W_o concat_h(a (m W_v)))
    h_c = LN_2(h_c + FFN(h_c))
    logit_c = scale * <normalise(W_s h_c), t_c> + b    (the per-query scorer)
Each query's scorer is its own label's CLIP text embedding, read through one learned map W_s
(starting as the identity) shared by every query: ML-Decoder's group-FC with the class weights
given by text rather than learned per class, which is what lets the head score a label it never
saw (a learned scorer vector shared by all queries, as in ML-Decoder's zero-shot variant, learns
a prior over the seen labels' queries and ranks unseen labels below zero-shot CLIP on the toy world).
Loss L = alpha * L_clip + beta * L_cls:
- L_cls: the asymmetric loss (gamma_neg 4, gamma_pos 0, probability margin 0.05) of ML-Decoder,
  summed over labels, mean over images.
- L_clip: the CLIP-style image-text contrastive term in the shared space: the image embedding
  u_i = normalise(W g_i) against the label-set embedding v_i = normalise(mean_{c in pos(i)} W t_c),
  symmetric InfoNCE over the batch at temperature ``clip_tau`` (images without a label skipped).
  It keeps the shared projection aligning images with their labels' text, as CLIP does.
Choices where the summary is open: the backbone is frozen CLIP (the paper uses TResNet image
features); W, W_q, W_k, W_v, W_o start as the identity (D = d) and the FFN's output layer at
zero, so the untrained layer is a text-guided attention pool of CLIP's own tokens; C is a
temperature (0.05) instead of sqrt(D / h), since the tokens are unit-norm; alpha = beta = 1.
At test time each query's output is mixed with CLIP's own image feature before the scorer's
cosine, as OVML interpolates its class-specific features: logit_c = scale * <(1 - lam)
normalise(W_s h_c) + lam g, t_c> + b, lam = ``interp`` (0 in training; at 1 the ranking of each
label is zero-shot CLIP's). A decoder trained on a few seen labels can drift from CLIP's alignment
on the unseen ones; the mix keeps it.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .base import FitConfig, HeadModule, LabelAttention, identity_linear, register_head, zero_linear

__all__ = ["ClipDecoderConfig", "ClipDecoderModule", "asymmetric_loss", "clip_contrastive"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClipDecoderConfig:
    """Knobs of the CLIP-Decoder head."""

    n_heads: int = 1
    attn_temp: float = 0.05  # C
    ffn_mult: int = 2
    alpha: float = 1.0  # weight of L_clip
    beta: float = 1.0  # weight of L_cls
    clip_tau: float = 0.07
    logit_scale: float = 10.0  # scale of the scorer's cosine
    gamma_neg: float = 4.0
    gamma_pos: float = 0.0
    asl_clip: float = 0.05
    interp: float = 0.25  # test time: weight of CLIP's global feature mixed into each query's output
    fit: FitConfig = field(default_factory=FitConfig)


def asymmetric_loss(logits: torch.Tensor, y: torch.Tensor, gamma_neg: float = 4.0, gamma_pos: float = 0.0,
                    clip: float = 0.05, eps: float = 1e-8) -> torch.Tensor:
    """ASL: -[y (1-p)^g+ log p + (1-y) p_m^g- log(1-p_m)], p_m = max(p - clip, 0); sum over labels,
    mean over images."""
    p = torch.sigmoid(logits)
    p_m = (p - clip).clamp_min(0) if clip > 0 else p
    pos = y * (1 - p).pow(gamma_pos) * torch.log(p.clamp_min(eps))
    neg = (1 - y) * p_m.pow(gamma_neg) * torch.log((1 - p_m).clamp_min(eps))
    return -(pos + neg).sum(1).mean()


def clip_contrastive(u: torch.Tensor, v: torch.Tensor, tau: float) -> torch.Tensor:
    """Symmetric InfoNCE of unit-norm row pairs (u_i, v_i): CLIP's image-text loss."""
    logits = u @ v.T / tau
    target = torch.arange(len(u))
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


class ClipDecoderModule(HeadModule):
    """Shared projection, one cross-attention decoder layer, the text-given per-query scorer."""

    def __init__(self, cfg: ClipDecoderConfig, d: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.shared = identity_linear(d)
        self.attn = LabelAttention(d, cfg.n_heads)
        self.ln1, self.ln2 = torch.nn.LayerNorm(d), torch.nn.LayerNorm(d)
        self.ffn = torch.nn.Sequential(torch.nn.Linear(d, cfg.ffn_mult * d), torch.nn.ReLU(),
                                       zero_linear(cfg.ffn_mult * d, d))
        self.scorer = identity_linear(d)  # W_s
        self.bias = torch.nn.Parameter(torch.zeros(()))

    def class_embeddings(self, g: torch.Tensor, p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Decoder outputs (n, L, D) for labels ``t`` over the image tokens [g; p]."""
        q = self.shared(t)  # (L, D)
        m = self.shared(torch.cat([g[:, None, :], p], dim=1))  # (n, T, D)
        x = self.ln1(q[None] + self.attn(q, m, self.cfg.attn_temp))
        return self.ln2(x + self.ffn(x))

    def logits(self, g: torch.Tensor, p: torch.Tensor, t: torch.Tensor, interp: float = 0.0) -> torch.Tensor:
        """Per-query logits (n, L), the outputs mixed with the global feature ``g`` at weight ``interp``."""
        h = F.normalize(self.scorer(self.class_embeddings(g, p, t)), dim=-1)
        if interp:
            h = (1 - interp) * h + interp * g[:, None, :]
        return self.cfg.logit_scale * torch.einsum("nld,ld->nl", h, t) + self.bias

    def forward(self, g: torch.Tensor, p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Test-time scores (``cfg.interp`` applied)."""
        return self.logits(g, p, t, self.cfg.interp)

    def loss(self, g: torch.Tensor, p: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        cls = asymmetric_loss(self.logits(g, p, t), y, cfg.gamma_neg, cfg.gamma_pos, cfg.asl_clip)
        has = y.sum(1) > 0
        if has.sum() < 2:
            return cfg.beta * cls
        u = F.normalize(self.shared(g[has]), dim=-1)
        v = F.normalize((y[has] @ self.shared(t)) / y[has].sum(1, keepdim=True), dim=-1)
        return cfg.alpha * clip_contrastive(u, v, cfg.clip_tau) + cfg.beta * cls


register_head("clip-decoder", ClipDecoderConfig, ClipDecoderModule)
