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


def attend(v: np.ndarray, memory: MemoryBank, tau: float, topk: int | None = None) -> np.ndarray:
    """Unit-norm attention readout u of each row of v (shape (n, d)) over the memory."""
    v = np.ascontiguousarray(v, np.float32)
    if topk is None or topk >= memory.size:
        logits = v @ memory.vectors.T
        logits *= np.float32(1.0 / tau)
        u = _softmax_(logits) @ memory.vectors
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
