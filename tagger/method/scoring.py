"""CoMC scoring: map global and patch embeddings toward text, classify, fuse, standardise."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..errors import ConfigError
from .mapping import MemoryBank, cross_modal_map, image_memory_rows, map_over_rows, mapped_scores
from .readout import ReadoutState
from .zeroshot import standardize

__all__ = ["ScoreConfig", "candidate_labels", "comc_scores", "fuse", "global_scores", "local_scores",
           "pruned_local_scores"]


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
    # Patch scoring pruned to each image's best labels by global score (None = every label, the
    # exact path); the other labels' local score is estimated (see pruned_local_scores). At 128 the
    # toy benchmark's 20 labels are all scored exactly; bench/tag_quality.py measures smaller k and
    # the large vocabulary, bench/tag.py the speed (docs/method.md, "Scoring at many labels").
    patch_labels: int | None = 128
    # With pruned patch scoring, each image's patches attend over the ``patch_memory`` memory rows its
    # global embedding attends to most instead of the whole memory (None: every row); below that many
    # rows nothing changes. Chosen on val (bench/tag_quality.py, large vocabulary with distractors to
    # 1,000 labels, 500 scenes): mAP against the whole memory +0.008 / +0.019 (toy-vit / toy-rn) at 32,
    # within 0.05 from 8 to 256 rows; the patches' mapping costs 2 x 32 x d per patch instead of 2 K d.
    # Not with ``topk`` (each patch then attends over its own top-k rows, as before).
    patch_memory: int | None = 32

    def __post_init__(self) -> None:
        if self.patch_memory is not None and self.patch_memory < 1:
            raise ConfigError(f"patch_memory must be None or at least 1, got {self.patch_memory}")
        if self.patch_labels is not None and self.patch_labels < 1:
            raise ConfigError(f"patch_labels must be None or at least 1, got {self.patch_labels}")
        if self.topk is not None and self.topk < 1:
            raise ConfigError(f"topk must be None or at least 1, got {self.topk}")

    def to_dict(self) -> dict:
        return asdict(self)


def _reads_state(memory: MemoryBank | None, cfg: ScoreConfig, state: ReadoutState | None) -> bool:
    """Whether the images' readout ``state`` (over this memory, computed already) stands in for the
    global readout: a memory read in full (no top-k) with alpha below 1."""
    return state is not None and memory is not None and cfg.alpha < 1.0 and cfg.topk is None


def global_scores(g: np.ndarray, weight: np.ndarray, memory: MemoryBank | None, cfg: ScoreConfig,
                  state: ReadoutState | None = None) -> np.ndarray:
    """Scores of mapped global embeddings: (n, d) -> (n, C) (``state``: the images' readout state
    over ``memory``, when already computed: its readout is used instead of reading the memory again)."""
    if not _reads_state(memory, cfg, state):
        return mapped_scores(g, weight, memory, cfg.tau, cfg.alpha, cfg.topk)
    assert state is not None
    mapped = state.readout()
    mapped *= np.float32(1 - cfg.alpha)
    mapped += np.float32(cfg.alpha) * np.asarray(g, np.float32)
    return mapped @ np.asarray(weight, np.float32).T


def local_scores(p: np.ndarray, weight: np.ndarray, memory: MemoryBank | None, cfg: ScoreConfig) -> np.ndarray:
    """Max over patches of mapped patch scores: (n, P, d) -> (n, C)."""
    n, num_p, d = p.shape
    flat = p.reshape(n * num_p, d).astype(np.float32, copy=False)
    return mapped_scores(flat, weight, memory, cfg.tau, cfg.alpha, cfg.topk).reshape(n, num_p, -1).max(axis=1)


def candidate_labels(g_scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices ``(n, k)`` of each row's ``k`` highest scores (in no particular order)."""
    k = min(k, g_scores.shape[1])
    return np.argpartition(-g_scores, k - 1, axis=1)[:, :k]


def _map_patches(p: np.ndarray, g: np.ndarray | None, memory: MemoryBank | None, cfg: ScoreConfig,
                 best: np.ndarray | None = None) -> np.ndarray:
    """Mapped patches ``(n, P, d)``: over the whole memory, or over each image's ``cfg.patch_memory``
    rows (when the memory has more rows than that and the global embeddings ``g`` are given; ``best``:
    those rows, when a readout state lists them)."""
    n, num_p, d = p.shape
    if memory is None or cfg.alpha >= 1.0 or g is None or cfg.patch_memory is None \
            or cfg.patch_memory >= memory.size or cfg.topk is not None:  # topk: each patch its own top rows
        return cross_modal_map(p.reshape(-1, d), memory, cfg.tau, cfg.alpha, cfg.topk).reshape(n, num_p, d)
    if best is None or (best < 0).any():
        best = image_memory_rows(g, memory, cfg.patch_memory)
    rows = memory.vectors[best]
    return map_over_rows(p, rows, cfg.tau, cfg.alpha)


def pruned_local_scores(p: np.ndarray, g_scores: np.ndarray, weight: np.ndarray, memory: MemoryBank | None,
                        cfg: ScoreConfig, batch_images: int = 32, g: np.ndarray | None = None,
                        best: np.ndarray | None = None) -> np.ndarray:
    """:func:`local_scores` computed for each image's ``cfg.patch_labels`` best labels by global score.

    Those labels (the candidates) get their exact max-over-patches score. Every other label of the
    image gets its global score plus the image's mean (local - global) over its candidates, so a
    pruned label keeps its global rank against the same label in other images. The patches are
    mapped once (the mapping does not depend on the labels); the classifier multiplies only the
    candidates' rows: ``P * k * d`` multiply-adds per image instead of ``P * C * d``. Given the global
    embeddings ``g``, the patches attend over each image's ``cfg.patch_memory`` rows (:func:`_map_patches`;
    ``best``: those rows from a readout state).
    """
    n, num_p, d = p.shape
    w = np.asarray(weight, np.float32)
    cand = candidate_labels(g_scores, int(cfg.patch_labels or w.shape[0]))
    out = np.empty(g_scores.shape, np.float32)
    for i in range(0, n, batch_images):
        j = min(i + batch_images, n)
        mapped = _map_patches(np.asarray(p[i:j], np.float32), None if g is None else g[i:j], memory, cfg,
                              None if best is None else best[i:j])
        loc = np.matmul(mapped, w[cand[i:j]].transpose(0, 2, 1)).max(axis=1)
        offset = (loc - np.take_along_axis(g_scores[i:j], cand[i:j], axis=1)).mean(axis=1, keepdims=True)
        np.add(g_scores[i:j], offset, out=out[i:j])
        np.put_along_axis(out[i:j], cand[i:j], loc, axis=1)
    return out


def fuse(g_scores: np.ndarray, l_scores: np.ndarray | None, cfg: ScoreConfig) -> np.ndarray:
    """Fuse global and local scores with ``local_weight``; optionally standardise per image."""
    s = g_scores if l_scores is None or not cfg.use_local else \
        (1 - cfg.local_weight) * g_scores + cfg.local_weight * l_scores
    return standardize(s) if cfg.standardize else s


def comc_scores(g: np.ndarray, p: np.ndarray | None, weight: np.ndarray, memory: MemoryBank | None,
                cfg: ScoreConfig, state: ReadoutState | None = None) -> np.ndarray:
    """Full CoMC scores for a batch of stored embeddings (``state``: the images' readout state over
    ``memory``, computed already: the global readout and each image's best rows come from it)."""
    gs = global_scores(g, weight, memory, cfg, state)
    if not cfg.use_local or p is None:
        return fuse(gs, None, cfg)
    if cfg.patch_labels is not None and cfg.patch_labels < gs.shape[1]:
        best = state.best(cfg.patch_memory) if _reads_state(memory, cfg, state) and state is not None \
            and cfg.patch_memory else None
        return fuse(gs, pruned_local_scores(p, gs, weight, memory, cfg, g=np.asarray(g, np.float32), best=best), cfg)
    return fuse(gs, local_scores(p, weight, memory, cfg), cfg)
