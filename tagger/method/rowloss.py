"""The ranking loss of new classifier rows trained against frozen ones, at the cost of the new rows.

The classifier's ranking loss (:func:`tagger.method.ranking.ranking_loss`) sums a hinge over every
(positive, negative) pair of labels of a sentence. With the old rows frozen, a pair of two old
labels has no gradient: only the pairs with a new label move the new rows. :func:`new_rows_loss`
sums exactly those pairs,

- a new positive against every negative, old or new (the old scores of the sentences with a new
  positive only: ``z W_old^T`` for a few rows of the batch), and
- an old positive against every new negative (the old positives' scores only: ``k d`` per sentence),

so its gradient with respect to the new rows is the full loss's, while its cost grows with the
sentences about new labels and the positives, not with the batch times the old labels. A positive a
hierarchy implies (``implied``) takes part in no pair, as in the full loss.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from .ranking import PairHinge

__all__ = ["new_rows_loss"]

_CHUNK = 64  # rows of one [rows, positives, labels] hinge tensor


def _padded(rows: np.ndarray, values: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``n``, its ``values`` (given in row order) left-aligned in ``(n, k)``, and a 0/1 mask."""
    counts = np.bincount(rows, minlength=n)
    k = int(counts.max(initial=0))
    slot = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
    out, mask = np.zeros((n, k), np.int64), np.zeros((n, k), np.float32)
    out[rows, slot], mask[rows, slot] = values, 1.0
    return out, mask


def new_rows_loss(z: torch.Tensor, new_scores: torch.Tensor, frozen: torch.Tensor, targets: sp.csr_array,
                  new_cols: np.ndarray, margin: float = 1.0, implied: sp.csr_array | None = None) -> torch.Tensor:
    """The ranking loss's pairs with a new label (module docstring), divided by the batch size.

    ``z`` ``(b, d)``: the batch's (noised) sentence embeddings; ``new_scores`` ``(b, A)``: the new
    rows' scores of them; ``frozen`` ``(K, d)``: the old rows, in the order of the old columns of
    ``targets``; ``targets`` ``(b, K + A)``: the batch's multi-hot label rows (CSR, every column);
    ``new_cols``: the new labels' columns of ``targets``, in the order of ``new_scores``; ``implied``
    (like ``targets``): the positives a hierarchy implies."""
    b, a = new_scores.shape
    n_cols = targets.shape[1]
    rank = np.full(n_cols, -1, np.int64)
    rank[np.asarray(new_cols, np.int64)] = np.arange(a)
    old_rank = np.full(n_cols, -1, np.int64)
    old_cols = np.flatnonzero(rank < 0)
    old_rank[old_cols] = np.arange(len(old_cols))
    csr = sp.csr_array(targets)
    r_of, c_of = np.repeat(np.arange(b), np.diff(csr.indptr)), csr.indices.astype(np.int64)
    is_new = rank[c_of] >= 0
    y_new = np.zeros((b, a), np.float32)
    y_new[r_of[is_new], rank[c_of[is_new]]] = 1.0
    by_child = np.zeros(len(c_of), bool)  # per entry of ``targets``: a positive its hierarchy implies
    if implied is not None and implied.nnz:
        imp = sp.csr_array(implied)
        keys = np.repeat(np.arange(b), np.diff(imp.indptr)) * n_cols + imp.indices.astype(np.int64)
        by_child = np.isin(r_of * n_cols + c_of, keys)
    pairs_new = np.zeros((b, a), np.float32)  # a new positive's weight in its pairs (0: implied)
    pairs_new[r_of[is_new & ~by_child], rank[c_of[is_new & ~by_child]]] = 1.0
    neg_new = torch.from_numpy(1.0 - y_new)
    total = new_scores.new_zeros(())
    # old positives against new negatives: only the old positives' scores are needed
    mover = ~is_new & ~by_child  # an implied old positive is in no pair
    pos_old, w_old = _padded(r_of[mover], old_rank[c_of[mover]], b)
    if pos_old.shape[1] and a:
        pos_t = torch.from_numpy(pos_old)
        s_pos = torch.einsum("bd,bkd->bk", z, frozen[pos_t])
        k = pos_old.shape[1]
        s = torch.cat([s_pos, new_scores], 1)
        v = torch.cat([torch.zeros(b, k), neg_new], 1)
        at = torch.arange(k).expand(b, k).contiguous()
        total = total + PairHinge.apply(s, at, torch.from_numpy(w_old), v, margin)
    # new positives against every negative, for the sentences with one
    rows = np.flatnonzero(y_new.any(axis=1))
    for i in range(0, len(rows), _CHUNK):
        r = rows[i:i + _CHUNK]
        rt = torch.from_numpy(r)
        s = torch.cat([z[rt] @ frozen.T, new_scores[rt]], 1)  # old columns in old_rank order, then new
        neg = torch.ones(len(r), len(old_cols) + a)
        mine = np.isin(r_of, r) & ~is_new
        where = np.searchsorted(r, r_of[mine])
        neg[torch.from_numpy(where), torch.from_numpy(old_rank[c_of[mine]])] = 0.0
        neg[:, len(old_cols):] = neg_new[rt]
        w, pos = torch.topk(torch.from_numpy(y_new[r]), int(y_new[r].sum(1).max()), dim=1)
        w = (w * torch.from_numpy(pairs_new[r]).gather(1, pos)).contiguous()
        total = total + PairHinge.apply(s, (pos + len(old_cols)).contiguous(), w, neg, margin)
    return total / b
