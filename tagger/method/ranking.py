"""The classifier's ranking loss: a hinge over each sentence's (positive, negative) label pairs.

A positive a sentence holds only because a label below it in a hierarchy is positive (``implied``:
``shape`` on every sentence about a ``hexagon``) takes part in no pair: it is neither a positive
nor a negative there. A parent's row so learns its own word from its own sentences (its children
raise it at tag time, :mod:`tagger.method.hierarchy`), and its children's rows train as without
it. Pushing every other label down on its children's sentences made the labels' text scores fall
together while their images' did not (they sat higher on each label's text scale than before the
parent was added); raising the parent's row on them placed its own images low on its text scale
(a circle made the parent of moon kept a seventh of its circles)."""
from __future__ import annotations

import torch

__all__ = ["PairHinge", "ranking_loss"]


def _hinge(s: torch.Tensor, pos: torch.Tensor, margin: float) -> torch.Tensor:
    """max(0, margin - s_p + s_n) for each row's positives ``pos`` [b, k] and every column: [b, k, C]."""
    return (s[:, None, :] - (s.gather(1, pos) - margin)[:, :, None]).clamp_(min=0)


def _active(s: torch.Tensor, pos: torch.Tensor, margin: float) -> torch.Tensor:
    """The pairs where :func:`_hinge` is above 0, as 0/1 in ``s``'s dtype: [b, k, C]."""
    return (s[:, None, :] > (s.gather(1, pos) - margin)[:, :, None]).to(s.dtype)


def _hinge_value(hinge: torch.Tensor, w: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return (torch.bmm(hinge, v[:, :, None])[:, :, 0] * w).sum()


def _hinge_grad(active: torch.Tensor, pos: torch.Tensor, w: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """d/ds of :func:`_hinge_value` given its active pairs (0/1, [b, k, C])."""
    g = torch.bmm(w[:, None, :], active)[:, 0, :] * v  # d/ds_n: sum_p w_p v_n [active]
    g.scatter_add_(1, pos, -(w * torch.bmm(active, v[:, :, None])[:, :, 0]))  # d/ds_p
    return g


class PairHinge(torch.autograd.Function):
    """sum_{b,p} w_bp sum_n v_bn max(0, margin - s_bp + s_bn) for scores ``s`` [b, C], each row's
    positive columns ``pos`` [b, k] with weights ``w`` and negative weights ``v`` [b, C]. Its
    gradient is written out, so one [b, k, C] tensor is kept instead of autograd's several."""

    @staticmethod
    def forward(ctx, s, pos, w, v, margin):  # type: ignore[override]
        hinge = _hinge(s, pos, margin)
        ctx.save_for_backward(hinge, pos, w, v)
        return _hinge_value(hinge, w, v)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        hinge, pos, w, v = ctx.saved_tensors
        return _hinge_grad((hinge > 0).to(hinge.dtype), pos, w, v) * grad, None, None, None, None


def ranking_loss(scores: torch.Tensor, targets: torch.Tensor, margin: float = 1.0, chunk: int = 64,
                 implied: torch.Tensor | None = None) -> torch.Tensor:
    """mean_b sum_{p in pos(b)} sum_{n in neg(b)} max(0, margin - s_p + s_n), each pair weighted by
    y_p (1 - y_n). Only each row's positive labels are paired with every label ([chunk, k, C] for k
    positives at most, not [b, C, C]), so the cost grows with C, not C squared. ``implied`` (0/1, like
    ``targets``): positives that take part in no pair (module docstring)."""
    return _RankingLoss.apply(scores, targets, margin, chunk, implied)


class _RankingLoss(torch.autograd.Function):
    """:func:`ranking_loss` over a whole batch, ``chunk`` rows at a time, the rows taken in order of
    their number of positives (a chunk pads to its largest). The gradient is written into one
    ``[b, C]`` tensor (autograd would add a zero-filled ``[b, C]`` per chunk's slice) and the
    hinge's active pairs are recomputed in the backward pass instead of being kept."""

    @staticmethod
    def forward(ctx, scores, targets, margin, chunk, implied):  # type: ignore[override]
        total = scores.new_zeros(())
        counts = torch.count_nonzero(targets > 0, dim=1)
        order = torch.argsort(counts, stable=True)
        parts = []
        for i in range(0, scores.shape[0], chunk):
            rows = order[i:i + chunk]
            k = int(counts[rows].max())
            if k == 0:
                continue
            s, y = scores[rows], targets[rows]
            w, pos = torch.topk(y, k, dim=1)  # rows with fewer positives pad with weight 0
            if implied is not None:  # an implied positive: in no pair (and, being positive, no negative)
                w = w * (1 - implied[rows].gather(1, pos))
            total += _hinge_value(_hinge(s, pos, margin), w, 1 - y)
            parts.append((rows, pos, w.contiguous()))
        ctx.save_for_backward(scores, targets)
        ctx.parts, ctx.margin = parts, margin
        return total / scores.shape[0]

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        scores, targets = ctx.saved_tensors
        g = torch.zeros_like(scores)
        for rows, pos, w in ctx.parts:
            g[rows] = _hinge_grad(_active(scores[rows], pos, ctx.margin), pos, w, 1 - targets[rows])
        return g.mul_(grad / scores.shape[0]), None, None, None, None
