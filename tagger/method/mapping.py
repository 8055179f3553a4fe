"""Memory banks of text embeddings and the cross-modal mapping of image embeddings onto them.

For a unit-norm image embedding v and a memory M (K unit-norm rows):
    a  = softmax_k(v . M_k / tau)          (over all K rows, or over FAISS top-k)
    u  = normalise(sum_k a_k M_k)
    v' = alpha * v + (1 - alpha) * u        (not renormalised)
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)


@dataclass
class MemoryBank:
    """K unit-norm text embeddings; optionally searched with a FAISS inner-product index."""

    vectors: np.ndarray  # (K, d) float32
    kind: str = "prompts"  # "prompts" | "sentences"
    _index: object = None
    _scaled: tuple[float, np.ndarray] | None = None

    def __post_init__(self) -> None:
        v = np.asarray(self.vectors, np.float32)
        self.vectors = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)

    @property
    def size(self) -> int:
        return int(self.vectors.shape[0])

    def index(self):
        """An exact FAISS inner-product index over the memory (built once)."""
        if self._index is None:
            import faiss
            idx = faiss.IndexFlatIP(self.vectors.shape[1])
            idx.add(self.vectors)
            self._index = idx
        return self._index

    def scaled(self, tau: float) -> np.ndarray:
        """``vectors / tau`` (kept for the last tau): the attention logits come out of one product."""
        if self._scaled is None or self._scaled[0] != tau:
            self._scaled = (tau, self.vectors * np.float32(1.0 / tau))
        return self._scaled[1]

    def save(self, path: str | Path) -> None:
        np.save(Path(path), self.vectors)

    @classmethod
    def load(cls, path: str | Path, kind: str = "prompts") -> "MemoryBank":
        return cls(np.load(Path(path)), kind)


def _softmax_(x: np.ndarray) -> np.ndarray:
    """Row softmax computed in place (x is a scratch buffer)."""
    x -= x.max(axis=-1, keepdims=True)
    np.exp(x, out=x)
    x /= x.sum(axis=-1, keepdims=True)
    return x


def _normalize_(u: np.ndarray) -> np.ndarray:
    norms = np.sqrt(np.einsum("nd,nd->n", u, u))
    u /= np.maximum(norms, 1e-12)[:, None]
    return u


def attend(v: np.ndarray, memory: MemoryBank, tau: float, topk: int | None = None,
           logits: np.ndarray | None = None) -> np.ndarray:
    """Unit-norm attention readout u of each row of v (shape (n, d)) over the memory; ``logits``, when
    given, are ``v @ M^T`` already computed (read, not changed)."""
    v = np.ascontiguousarray(v, np.float32)
    if topk is None or topk >= memory.size:
        logits = v @ memory.scaled(tau).T if logits is None else logits * np.float32(1.0 / tau)
        logits -= logits.max(axis=-1, keepdims=True)
        # softmax numerators only: dividing by their sum scales u, which is normalised below
        u = np.exp(logits, out=logits) @ memory.vectors
    else:
        sims, idx = memory.index().search(v, topk)
        sims *= np.float32(1.0 / tau)
        u = np.einsum("nk,nkd->nd", _softmax_(sims), memory.vectors[idx])
    return _normalize_(u)


def cross_modal_map(v: np.ndarray, memory: MemoryBank | None, tau: float = 0.01, alpha: float = 0.7,
                    topk: int | None = None, batch: int = 8192) -> np.ndarray:
    """Map image embeddings of shape (..., d) toward the text modality; alpha=1 or no memory is identity."""
    if memory is None or alpha >= 1.0:
        return np.asarray(v, np.float32)
    shape = v.shape
    flat = np.asarray(v, np.float32).reshape(-1, shape[-1])
    out = np.empty_like(flat)
    for i in range(0, len(flat), batch):
        x = flat[i:i + batch]
        u = attend(x, memory, tau, topk)
        u *= np.float32(1 - alpha)
        np.multiply(x, np.float32(alpha), out=out[i:i + batch])
        out[i:i + batch] += u
    return out.reshape(shape)


def image_memory_rows(g: np.ndarray, memory: MemoryBank, rows: int, logits: np.ndarray | None = None) -> np.ndarray:
    """Indices ``(n, rows)`` of the memory rows each global embedding (n, d) attends to most
    (``logits``: ``g @ M^T`` when already computed)."""
    logits = np.asarray(g, np.float32) @ memory.vectors.T if logits is None else logits
    r = min(rows, memory.size)
    return np.argpartition(-logits, r - 1, axis=1)[:, :r]


def map_over_rows(v: np.ndarray, rows: np.ndarray, tau: float, alpha: float) -> np.ndarray:
    """:func:`cross_modal_map` of each image's vectors ``v`` (n, P, d) over its own memory rows
    ``rows`` (n, r, d) instead of the whole memory (the patches of an image attend over the rows its
    global embedding attends to most: ``2 r d`` multiply-adds per patch instead of ``2 K d``)."""
    v = np.asarray(v, np.float32)
    logits = np.matmul(v, rows.transpose(0, 2, 1))
    logits *= np.float32(1.0 / tau)
    logits -= logits.max(axis=2, keepdims=True)
    u = np.matmul(np.exp(logits, out=logits), rows)  # softmax numerators: u is normalised below
    u = _normalize_(u.reshape(-1, u.shape[-1])).reshape(u.shape)
    u *= np.float32(1 - alpha)
    u += np.float32(alpha) * v
    return u


def _folded_is_cheaper(k: int, c: int, d: int) -> bool:
    """FLOPs per row: folded (x [M;W]^T, s MW, s G) against direct (x M^T, s M, mapped W^T)."""
    return (k + c) * d + k * c + k * k < (2 * k + c) * d


def mapped_scores(v: np.ndarray, weight: np.ndarray, memory: MemoryBank | None, tau: float = 0.01,
                  alpha: float = 0.7, topk: int | None = None, batch: int = 8192) -> np.ndarray:
    """``cross_modal_map(v, ...) @ weight.T`` for rows v (n, d) and a classifier weight (C, d).

    When the memory (K rows) and the classifier are small next to d, the mapped vectors are never
    formed: with s = softmax(v M^T / tau), the mapped score is
    ``alpha * v W^T + (1 - alpha) * (s (M W^T)) / ||s M||`` and ``||s M||^2 = rowsum((s G) * s)``
    with G = M M^T, so every product has K or C columns instead of d. Same values up to rounding.
    """
    w = np.asarray(weight, np.float32)
    k, d = (memory.vectors.shape if memory is not None else (0, w.shape[1]))
    if memory is None or alpha >= 1.0 or topk is not None or not _folded_is_cheaper(k, w.shape[0], d):
        return cross_modal_map(v, memory, tau, alpha, topk, batch) @ w.T
    m = memory.vectors
    both = np.ascontiguousarray(np.concatenate([m, w]).T)  # (d, K + C)
    mw, gram = m @ w.T, m @ m.T
    flat = np.asarray(v, np.float32).reshape(-1, d)
    out = np.empty((len(flat), w.shape[0]), np.float32)
    for i in range(0, len(flat), batch):
        xa = flat[i:i + batch] @ both
        s = xa[:, :k]
        s *= np.float32(1.0 / tau)
        _softmax_(s)
        norm = np.sqrt(np.einsum("nk,nk->n", s @ gram, s))
        o = out[i:i + batch]
        np.matmul(s, mw, out=o)
        o *= (np.float32(1 - alpha) / np.maximum(norm, 1e-12))[:, None]
        o += np.float32(alpha) * xa[:, k:]
    return out
