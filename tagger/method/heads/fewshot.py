"""Few-shot CoMC: improve the text-trained CoMC classifier with k labelled images per label.

The images are mapped toward the text modality exactly as at tag time (method.md section 3), so
what they teach lands in the space the classifier scores. Two ways, alone or together (``mode``):
- ``prototype``: per label c, the mean mapped global embedding of its labelled images, centred
  on the mean of all labelled images (the common image component would move every weight the
  same way), is added to the classifier row with weight ``b_c`` times the row's norm:
      W'_c = W_c + b_c * |W_c| * normalise(proto_c - mean),   b_c = blend * n_c / (n_c + shrinkage)
  where n_c is the number of labelled images of c: a prototype of few images is trusted less than
  one of many (``shrinkage`` = 0 gives every prototype the full ``blend``). A label without a
  labelled image keeps its text-trained row.
- ``finetune``: continue training W with the classifier's ranking loss (margin 1) on the mapped
  global embeddings of the labelled images (plus, when given, batches of the text corpus with the
  classifier's noise), with an L2 pull ``anchor`` * |W - W_0|^2 towards the text-trained weights, so a
  handful of images refines rather than replaces what the text taught. Labels with no labelled image
  take part as negatives only through the images' label rows: only labels with at least one
  labelled image are trained (their columns), the rest stay as the text left them.
The result is a :class:`~tagger.method.comc.ComcModel` like the base one (same memory and score
config), so it tags, saves and loads as any CoMC classifier. The text anchors of the base
classifier are kept (they describe the text side, which few shots barely move).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np
import torch

from ..classifier import ranking_loss
from ..comc import ComcModel
from ..labelrows import dense_rows
from ..mapping import cross_modal_map

__all__ = ["FewShotConfig", "fit_fewshot", "prototype_weights", "sample_shots"]

logger = logging.getLogger(__name__)

MODES = ("prototype", "finetune", "both")


@dataclass(frozen=True)
class FewShotConfig:
    """Knobs of the few-shot update; ``blend`` and ``shrinkage`` are chosen on val scenes by
    bench/seen_unseen.py (mean mAP over 1..16 shots; 0.2 and 16 on both toy models)."""

    mode: str = "prototype"
    blend: float = 0.2
    shrinkage: float = 16.0  # labelled images at which a prototype gets half of ``blend``
    epochs: int = 50
    lr: float = 1e-3
    anchor: float = 1.0
    noise_std: float = 0.1  # text batches only
    text_batch: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        if self.blend < 0 or self.shrinkage < 0:
            raise ValueError(f"blend and shrinkage must be >= 0, got {self.blend}, {self.shrinkage}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")


def _mapped(model: ComcModel, g: np.ndarray) -> np.ndarray:
    cfg = model.score
    return cross_modal_map(np.asarray(g, np.float32), model.memory(cfg.memory), cfg.tau, cfg.alpha, cfg.topk)


def prototype_weights(weight: np.ndarray, mapped: np.ndarray, y: np.ndarray, blend: float,
                      shrinkage: float = 0.0) -> np.ndarray:
    """Classifier rows moved toward their labels' centred image prototypes (see the module doc)."""
    w = np.array(weight, np.float32, copy=True)
    y = np.asarray(y, bool)
    mean = mapped.mean(0)
    for c in np.flatnonzero(y.any(0)):
        n_c = int(y[:, c].sum())
        proto = mapped[y[:, c]].mean(0) - mean
        norm = np.linalg.norm(proto)
        if norm > 1e-8:
            w[c] += blend * n_c / (n_c + shrinkage) * np.linalg.norm(w[c]) * proto / norm
    return w


def _finetune(w0: np.ndarray, x: np.ndarray, y: np.ndarray, cfg: FewShotConfig,
              text: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    """Full-batch Adam on the image ranking loss (+ text batches) with an L2 pull to ``w0``."""
    g = torch.Generator().manual_seed(cfg.seed)
    cols = torch.from_numpy(np.flatnonzero(np.asarray(y).any(0)))
    base = torch.from_numpy(np.asarray(w0, np.float32))
    w = torch.nn.Parameter(base.clone())
    opt = torch.optim.Adam([w], lr=cfg.lr)
    xt, yt = torch.from_numpy(np.asarray(x, np.float32)), torch.from_numpy(np.asarray(y, np.float32))
    for _ in range(cfg.epochs):
        loss = ranking_loss(xt @ w[cols].T, yt[:, cols]) + cfg.anchor * ((w - base) ** 2).sum()
        if text is not None:
            idx = torch.randint(0, len(text[0]), (cfg.text_batch,), generator=g).numpy()
            z = torch.from_numpy(np.asarray(text[0][idx], np.float32))
            z = z + cfg.noise_std * torch.randn(z.shape, generator=g)
            loss = loss + ranking_loss(z @ w.T, torch.from_numpy(dense_rows(text[1], idx, np.float32)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return w.detach().numpy().copy()


def fit_fewshot(base: ComcModel, g: np.ndarray, label_matrix: np.ndarray, cfg: FewShotConfig | None = None,
                text: tuple[np.ndarray, np.ndarray] | None = None) -> ComcModel:
    """A CoMC model improved with labelled images: global embeddings ``g`` (n, d) and their labels
    ``label_matrix`` (n, C) over ``base.labels``; ``text`` = optional (sentence embeddings, their
    labels as dense or sparse rows)."""
    cfg = cfg or FewShotConfig()
    y = np.asarray(label_matrix, bool)
    if y.shape != (len(g), len(base.labels)):
        raise ValueError(f"label matrix {y.shape} for {len(g)} images and {len(base.labels)} labels")
    if not len(g) or not y.any():
        return base
    x = _mapped(base, g)
    w = np.asarray(base.classifier.weight, np.float32)
    if cfg.mode in ("prototype", "both"):
        w = prototype_weights(w, x, y, cfg.blend, cfg.shrinkage)
    if cfg.mode in ("finetune", "both"):
        w = _finetune(w, x, y, cfg, text)
    logger.info("few-shot CoMC: %d images, %d labels with images, mode %s", len(g), int(y.any(0).sum()), cfg.mode)
    clf = replace(base.classifier, weight=w, metrics={**base.classifier.metrics, "fewshot": {
        "images": int(len(g)), "labels_with_images": int(y.any(0).sum()), "mode": cfg.mode}})
    return ComcModel(clf, base.memories, base.score)


def sample_shots(labels: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Indices of a k-shot support set: for each label in turn, k images showing it (images drawn
    for an earlier label count for every label they show; fewer when a label has fewer images)."""
    y = np.asarray(labels, bool)
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for c in range(y.shape[1]):
        have = int(y[chosen, c].sum()) if chosen else 0
        pool = np.setdiff1d(np.flatnonzero(y[:, c]), chosen)
        take = max(0, min(k - have, len(pool)))
        chosen += rng.choice(pool, size=take, replace=False).tolist() if take else []
    return np.asarray(sorted(chosen), np.int64)
