"""OVML: image-text attention over CLIP's patch features, one class-specific feature per label.

For patch features X (P, d) and a label's text embedding t_j (unit-norm):
    q_j = F_q(t_j), K = F_k(X), V = F_v(X)            (split into ``n_heads`` channel groups)
    o_j = F_o(concat_h sum_i softmax_i(q_jh . k_ih / C) v_ih)
    s_j = <o_j / |o_j|, t_j>
Training: the multi-label ranking loss on ``logit_scale * s`` (per image, 1/|P| sum over positive x
negative pairs of log(1 + exp(s_k - s_j)), mean over images) plus ``con_weight`` times the supervised
contrastive loss over the positive class-specific features of the batch, each projected to
``d_z`` and normalised: an anchor z_ij is pulled to the features of the same label in other images,
against every other positive feature of the batch (temperature ``con_tau``).
Test time: s_j = <lam * o_j/|o_j| + (1 - lam) * g, t_j> with g the global CLIP embedding.

Choices where the paper is open (written here, tested in tests/test_heads.py):
- X' are the stored patch embeddings, already in the joint space (CLIP's value path through the
  output projection), not the pre-pool features; so F_q, F_k, F_v, F_o start as the identity and
  the module starts as a text-guided attention pool of CLIP's own patch features.
- C is a temperature ``attn_temp`` (0.05) rather than sqrt(d): unit-norm features have dot
  products in [-1, 1], and sqrt(d) would make every mask uniform.
- The contrastive loss is averaged over the anchors that have a positive (eq. 9 sums them), so
  its weight does not grow with the batch; anchors without a same-label partner are skipped.
- ``logit_scale`` (10) multiplies the cosine scores inside the ranking loss.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .base import FitConfig, HeadModule, LabelAttention, register_head, softplus_ranking

__all__ = ["OvmlConfig", "OvmlModule", "supervised_contrastive"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OvmlConfig:
    """Knobs of the OVML head."""

    n_heads: int = 1
    attn_temp: float = 0.05  # C in softmax(q . k / C)
    d_z: int = 64  # contrastive projection size
    con_tau: float = 0.1
    con_weight: float = 1.0
    logit_scale: float = 10.0
    interp: float = 0.5  # test time: weight of the class-specific feature against the global one
    fit: FitConfig = field(default_factory=FitConfig)


def supervised_contrastive(z: torch.Tensor, y: torch.Tensor, tau: float) -> torch.Tensor:
    """Supervised contrastive loss over the positive class-specific features.

    ``z`` (n, L, d_z) unit-norm, ``y`` (n, L) multi-hot. Anchors are the positive (i, j); for each,
    A = every other anchor, P = anchors of the same label j in other images. Mean over anchors with
    a non-empty P of -1/|P| sum_{p in P} log(exp(z.z_p/tau) / sum_{a in A} exp(z.z_a/tau)).
    """
    img, lab = torch.nonzero(y > 0, as_tuple=True)
    if len(img) < 2:
        return z.new_zeros(())
    za = z[img, lab]  # (m, d_z)
    sim = za @ za.T / tau
    eye = torch.eye(len(za), dtype=torch.bool)
    sim = sim.masked_fill(eye, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    same = (lab[:, None] == lab[None, :]) & ~eye
    n_pos = same.sum(1)
    keep = n_pos > 0
    if not keep.any():
        return z.new_zeros(())
    per_anchor = -(log_prob.masked_fill(~same, 0.0).sum(1)[keep] / n_pos[keep])
    return per_anchor.mean()


class OvmlModule(HeadModule):
    """Image-text attention module plus the contrastive projection."""

    def __init__(self, cfg: OvmlConfig, d: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.attn = LabelAttention(d, cfg.n_heads)
        self.proj = torch.nn.Linear(d, cfg.d_z)

    def class_features(self, p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Class-specific features O (n, L, d) of patches ``p`` (n, P, d) for labels ``t`` (L, d)."""
        return self.attn(t, p, self.cfg.attn_temp)

    def forward(self, g: torch.Tensor, p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Test-time scores: class features interpolated with the global feature, against t."""
        o = F.normalize(self.class_features(p, t), dim=-1)
        lam = self.cfg.interp
        return torch.einsum("nld,ld->nl", lam * o + (1 - lam) * g[:, None, :], t)

    def loss(self, g: torch.Tensor, p: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        o = F.normalize(self.class_features(p, t), dim=-1)
        s = self.cfg.logit_scale * torch.einsum("nld,ld->nl", o, t)
        z = F.normalize(self.proj(o), dim=-1)
        return softplus_ranking(s, y) + self.cfg.con_weight * supervised_contrastive(z, y, self.cfg.con_tau)


register_head("ovml", OvmlConfig, OvmlModule)
