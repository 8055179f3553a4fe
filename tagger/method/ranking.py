"""The classifier's ranking loss: a hinge over each sentence's (positive, negative) label pairs."""
from __future__ import annotations

import torch

__all__ = ["PairHinge", "ranking_loss"]


class PairHinge(torch.autograd.Function):
    """sum_{b,p} w_bp sum_n v_bn max(0, margin - s_bp + s_bn) for scores ``s`` [b, C], each row's
    positive columns ``pos`` [b, k] with weights ``w`` and negative weights ``v`` [b, C]. Its
    gradient is written out, so one [b, k, C] tensor is kept instead of autograd's several."""

    @staticmethod
    def forward(ctx, s, pos, w, v, margin):  # type: ignore[override]
        hinge = s[:, None, :] - (s.gather(1, pos) - margin)[:, :, None]  # [b, k, C]
        hinge.clamp_(min=0)
        ctx.save_for_backward(hinge, pos, w, v)
        return (torch.bmm(hinge, v[:, :, None])[:, :, 0] * w).sum()

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        hinge, pos, w, v = ctx.saved_tensors
        active = (hinge > 0).to(hinge.dtype)
        g = torch.bmm(w[:, None, :], active)[:, 0, :] * v  # d/ds_n: sum_p w_p v_n [active]
        g.scatter_add_(1, pos, -(w * torch.bmm(active, v[:, :, None])[:, :, 0]))  # d/ds_p
        return g * grad, None, None, None, None


def ranking_loss(scores: torch.Tensor, targets: torch.Tensor, margin: float = 1.0, chunk: int = 64) -> torch.Tensor:
    """mean_b sum_{p in pos(b)} sum_{n in neg(b)} max(0, margin - s_p + s_n), each pair weighted by
    y_p (1 - y_n). Only each row's positive labels are paired with every label ([b, k, C] for k
    positives at most, not [b, C, C]), so the cost grows with C, not C squared."""
    total = scores.new_zeros(())
    for i in range(0, scores.shape[0], chunk):
        s, y = scores[i:i + chunk], targets[i:i + chunk]
        k = int((y > 0).sum(1).max()) if len(y) else 0
        if k == 0:
            continue
        w, pos = torch.topk(y, k, dim=1)  # rows with fewer positives pad with weight 0
        total = total + PairHinge.apply(s, pos, w.contiguous(), (1 - y).contiguous(), margin)
    return total / scores.shape[0]
