"""CoMC scoring: map global and patch embeddings toward text, classify, fuse, standardise."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .mapping import MemoryBank, mapped_scores
from .zeroshot import standardize


@dataclass(frozen=True)
class ScoreConfig:
    """Every inference knob of the method in one place (defaults chosen on the toy val split)."""

    # Defaults from bench/tune.py: the best mean val mAP over toy-vit and toy-rn (one default for
    # both backbones). Per-image standardisation is left off for ranking: with the local branch on
    # it cost ~1 mAP (3 on small objects) for toy-rn; tag positives are still decided on the
    # standardised score (TagConfig.threshold).
    tau: float = 0.01  # softmax temperature of the memory attention
    alpha: float = 0.7  # weight kept on the image embedding after mapping (1.0 = no mapping)
    topk: int | None = None  # attend over the top-k memory rows only (None = all rows)
    memory: str = "prompts"  # "prompts" | "prompts-ensemble" | "sentences" | "none"
    local_weight: float = 0.5  # fused = (1 - w) * global + w * max-over-patches
    use_local: bool = True
    standardize: bool = False  # per-image z-score of the fused scores

    def to_dict(self) -> dict:
        return asdict(self)


def global_scores(g: np.ndarray, weight: np.ndarray, memory: MemoryBank | None, cfg: ScoreConfig) -> np.ndarray:
    """Scores of mapped global embeddings: (n, d) -> (n, C)."""
    return mapped_scores(g, weight, memory, cfg.tau, cfg.alpha, cfg.topk)


def local_scores(p: np.ndarray, weight: np.ndarray, memory: MemoryBank | None, cfg: ScoreConfig) -> np.ndarray:
    """Max over patches of mapped patch scores: (n, P, d) -> (n, C)."""
    n, num_p, d = p.shape
    flat = p.reshape(n * num_p, d).astype(np.float32, copy=False)
    return mapped_scores(flat, weight, memory, cfg.tau, cfg.alpha, cfg.topk).reshape(n, num_p, -1).max(axis=1)


def fuse(g_scores: np.ndarray, l_scores: np.ndarray | None, cfg: ScoreConfig) -> np.ndarray:
    """Fuse global and local scores with ``local_weight``; optionally standardise per image."""
    s = g_scores if l_scores is None or not cfg.use_local else \
        (1 - cfg.local_weight) * g_scores + cfg.local_weight * l_scores
    return standardize(s) if cfg.standardize else s


def comc_scores(g: np.ndarray, p: np.ndarray | None, weight: np.ndarray, memory: MemoryBank | None,
                cfg: ScoreConfig) -> np.ndarray:
    """Full CoMC scores for a batch of stored embeddings."""
    gs = global_scores(g, weight, memory, cfg)
    ls = local_scores(p, weight, memory, cfg) if (cfg.use_local and p is not None) else None
    return fuse(gs, ls, cfg)
