"""Text-only multi-label classifier: a bias-free linear head on noisy CLIP text embeddings.

Trained with a pairwise ranking loss (margin 1, summed over positive x negative pairs, averaged
over the batch), Adam with coupled L2 weight decay, one constant warm-up epoch and a cosine
schedule afterwards. Gaussian noise is added to the unit-norm text embeddings each step and the
result is not renormalised, which makes the head robust to the image/text modality gap.

The label rows may be sparse (a corpus holds them as CSR): each batch's targets are made dense on
their own, so memory grows with ``batch x labels``, not ``sentences x labels``.
"""
from __future__ import annotations

import copy
import json
import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import atomic_write_text
from .decisions import TextAnchors, text_anchors
from .labelrows import LabelRows, as_csr, columns_any, dense_rows, is_sparse
from .ranking import ranking_loss
from .rowloss import new_rows_loss

__all__ = ["TextClassifier", "TrainConfig", "TrainState", "lr_at", "ranking_loss", "train_classifier", "train_rows"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Classifier training knobs (defaults follow the method; noise scaled per dimension)."""

    epochs: int = 20
    batch_size: int = 512
    lr: float = 1e-3
    warmup_lr: float = 1e-5
    weight_decay: float = 5e-4
    noise_std: float = 0.1
    margin: float = 1.0
    seed: int = 1


@dataclass
class TextClassifier:
    """A trained head with everything needed to use and audit it."""

    weight: np.ndarray  # (C, d)
    labels: list[str]
    model_id: str
    corpus_id: str
    config: TrainConfig = field(default_factory=TrainConfig)
    metrics: dict = field(default_factory=dict)
    anchors: "TextAnchors | None" = None  # its scores on its own corpus, per label (decisions use them)

    def scores(self, x: np.ndarray) -> np.ndarray:
        """Raw logits ``x @ W.T`` for embeddings of shape (..., d)."""
        return x @ self.weight.T

    def only(self, labels: list[str]) -> "TextClassifier":
        """This head restricted to ``labels`` (its rows and anchors, in that order): what is kept of a
        head trained with background nouns (:mod:`tagger.text.background`)."""
        where = {n: j for j, n in enumerate(self.labels)}
        cols = np.asarray([where[n] for n in labels], np.int64)
        metrics = {**self.metrics, "background_rows_dropped": len(self.labels) - len(labels)}
        return replace(self, weight=self.weight[cols], labels=list(labels), metrics=metrics,
                       anchors=None if self.anchors is None else self.anchors.take(cols))

    def save(self, directory: str | Path) -> Path:
        """Write ``weight.npy`` and then ``classifier.json`` (atomically) into ``directory``."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        np.save(d / "weight.npy", self.weight.astype(np.float32))
        meta = {"labels": self.labels, "model_id": self.model_id, "corpus_id": self.corpus_id,
                "config": asdict(self.config), "metrics": self.metrics,
                "text_anchors": self.anchors.to_dict() if self.anchors is not None else None}
        atomic_write_text(d / "classifier.json", json.dumps(meta, indent=2))
        return d

    @classmethod
    def load(cls, directory: str | Path) -> "TextClassifier":
        d = Path(directory)
        meta = json.loads((d / "classifier.json").read_text())
        anchors = TextAnchors.from_dict(meta["text_anchors"]) if meta.get("text_anchors") else None
        return cls(np.load(d / "weight.npy"), meta["labels"], meta["model_id"], meta["corpus_id"],
                   TrainConfig(**meta["config"]), meta.get("metrics", {}), anchors)


def lr_at(epoch: int, cfg: TrainConfig) -> float:
    """Epoch 0: constant warm-up; epochs 1..E-1: cosine from lr towards 0."""
    if epoch == 0:
        return cfg.warmup_lr
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * epoch / cfg.epochs))


@dataclass
class TrainState:
    """Where a training stands after ``epoch`` whole epochs: the head, the optimiser, the random
    generator and the losses so far. Training resumed from it continues exactly as it would have."""

    epoch: int
    weight: np.ndarray
    optimizer: dict[str, Any]
    generator: Any  # torch.Generator.get_state()
    losses: list[float]


def train_classifier(text_emb: np.ndarray, label_matrix: LabelRows, labels: list[str], model_id: str,
                     corpus_id: str, cfg: TrainConfig | None = None, *, resume: TrainState | None = None,
                     on_epoch: Callable[[TrainState], None] | None = None,
                     implied: LabelRows | None = None) -> TextClassifier:
    """Train the bias-free linear head on (sentence embedding, label set) pairs. ``on_epoch`` is
    given the state after each epoch (to keep as a checkpoint); ``resume`` continues from one;
    ``implied`` (rows like ``label_matrix``): the positives a hierarchy implies, in no pair of the
    loss (:mod:`.ranking`) and in neither side of the text anchors."""
    cfg = cfg or TrainConfig()
    y = label_matrix if is_sparse(label_matrix) else np.asarray(label_matrix)
    if len(text_emb) != y.shape[0]:
        raise ValueError(f"{len(text_emb)} embeddings but {y.shape[0]} label rows")
    g = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    x = torch.from_numpy(np.asarray(text_emb, np.float32))
    head = torch.nn.Linear(x.shape[1], y.shape[1], bias=False)
    opt = torch.optim.Adam(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    losses: list[float] = []
    if resume is not None:
        if resume.weight.shape != tuple(head.weight.shape) or not 0 <= resume.epoch <= cfg.epochs:
            raise ValueError(f"a training state of {resume.weight.shape} after {resume.epoch} epochs does not "
                             f"fit a head of {tuple(head.weight.shape)} trained {cfg.epochs} epochs")
        with torch.no_grad():
            head.weight.copy_(torch.from_numpy(resume.weight))
        opt.load_state_dict(resume.optimizer)
        g.set_state(resume.generator)
        losses = list(resume.losses)
    n = len(x)
    bs = min(cfg.batch_size, n)
    for epoch in range(len(losses), cfg.epochs):
        for group in opt.param_groups:
            group["lr"] = lr_at(epoch, cfg)
        perm = torch.randperm(n, generator=g)
        run = 0.0
        for i in range(0, n - bs + 1, bs):  # drop_last
            idx = perm[i:i + bs]
            z = x[idx] + cfg.noise_std * torch.randn(len(idx), x.shape[1], generator=g)
            loss = ranking_loss(head(z), _targets(y, idx), cfg.margin,
                                implied=None if implied is None else _targets(implied, idx))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            run += loss.item()
        losses.append(run / max(1, n // bs))
        if on_epoch is not None:
            on_epoch(TrainState(epoch + 1, head.weight.detach().numpy().copy(), copy.deepcopy(opt.state_dict()),
                                g.get_state(), list(losses)))
    logger.info("trained text classifier: %d sentences, %d labels, final loss %.3f", n, y.shape[1], losses[-1])
    weight = head.weight.detach().numpy().copy()
    anchors = text_anchors(text_emb, weight, label_matrix, implied=implied)
    return TextClassifier(weight, list(labels), model_id, corpus_id, cfg, {"loss_per_epoch": losses}, anchors)


def _targets(y: LabelRows, idx: torch.Tensor) -> torch.Tensor:
    """The float targets of the rows ``idx`` (in that order)."""
    return torch.from_numpy(dense_rows(y, idx.numpy(), np.float32))


def _row_sample(y: LabelRows, new: np.ndarray, others_per_positive: int, min_others: int, seed: int) -> np.ndarray:
    """The sentences frozen-row training learns from: every sentence about a new label, and a seeded
    sample of the others (the new rows' negatives), ``others_per_positive`` per positive sentence."""
    pos = np.flatnonzero(columns_any(y, new)) if len(new) else np.zeros(0, np.int64)
    rest = np.setdiff1d(np.arange(y.shape[0]), pos)
    k = min(len(rest), max(min_others, others_per_positive * len(pos)))
    picked = np.random.default_rng(seed).choice(rest, size=k, replace=False) if k else rest[:0]
    return np.sort(np.concatenate([pos, picked]))


def train_rows(text_emb: np.ndarray, label_matrix: LabelRows, frozen: np.ndarray, new: list[int],
               cfg: TrainConfig | None = None, *, others_per_positive: int = 8,
               min_others: int = 4096, max_lr_scale: float = 1.0, epochs_after: float | None = None,
               max_epoch_scale: float = 1.0, implied: LabelRows | None = None) -> tuple[np.ndarray, dict]:
    """Train only the classifier rows of the columns ``new`` of ``label_matrix`` against the frozen
    rows of the other columns (``frozen``, their rows in column order, the new ones left out): the
    same ranking loss (its pairs with a new label, which alone move the new rows:
    :func:`~tagger.method.rowloss.new_rows_loss`; the losses it reports are theirs), noise and
    schedule as :func:`train_classifier`, on every sentence about a new
    label plus a sample of the others. The sample takes fewer steps than the whole corpus would; its
    learning rate is multiplied by the ratio r = corpus rows / sample rows, at most ``max_lr_scale``,
    and, where r is above ``epochs_after``, its epochs by r / ``epochs_after``, at most
    ``max_epoch_scale``, so the rows move about as far as in a full training; ``implied`` as in
    :func:`train_classifier`. Returns the new rows ``(len(new), d)`` and metrics."""
    cfg = cfg or TrainConfig()
    y_all = label_matrix if is_sparse(label_matrix) else np.asarray(label_matrix)  # dense a batch at a time
    n_cols = y_all.shape[1]
    new_idx = np.asarray(sorted(new), np.int64)
    old_idx = np.setdiff1d(np.arange(n_cols), new_idx)
    if len(frozen) != len(old_idx) or len(text_emb) != y_all.shape[0]:
        raise ValueError(f"{len(frozen)} frozen rows for {len(old_idx)} kept columns, "
                         f"{len(text_emb)} embeddings for {y_all.shape[0]} label rows")
    rows = _row_sample(y_all, new_idx, others_per_positive, min_others, cfg.seed)
    ratio = y_all.shape[0] / max(1, len(rows))
    lr_scale = float(np.clip(ratio, 1.0, max(1.0, max_lr_scale)))
    epoch_scale = 1.0 if epochs_after is None else float(np.clip(ratio / epochs_after, 1.0, max(1.0, max_epoch_scale)))
    cfg = replace(cfg, lr=cfg.lr * lr_scale, epochs=int(round(cfg.epochs * epoch_scale)))
    g = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    x = torch.from_numpy(np.asarray(text_emb, np.float32)[rows])
    y = as_csr(y_all[rows])
    imp = None if implied is None else as_csr(implied[rows] if is_sparse(implied) else np.asarray(implied)[rows])
    fixed = torch.from_numpy(np.asarray(frozen, np.float32))
    head = torch.nn.Linear(x.shape[1], len(new_idx), bias=False)
    opt = torch.optim.Adam(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    n, losses = len(x), []
    bs = min(cfg.batch_size, n)
    for epoch in range(cfg.epochs if len(new_idx) and n else 0):
        for group in opt.param_groups:
            group["lr"] = lr_at(epoch, cfg)
        perm, run = torch.randperm(n, generator=g), 0.0
        for i in range(0, n - bs + 1, bs):
            z = x[perm[i:i + bs]] + cfg.noise_std * torch.randn(bs, x.shape[1], generator=g)
            batch = perm[i:i + bs].numpy()
            loss = new_rows_loss(z, head(z), fixed, y[batch], new_idx, cfg.margin,
                                 implied=None if imp is None else imp[batch])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            run += loss.item()
        losses.append(run / max(1, n // bs))
    logger.info("trained %d classifier rows against %d frozen ones on %d of %d sentences", len(new_idx),
                len(old_idx), n, y_all.shape[0])
    return head.weight.detach().numpy().copy(), {"loss_per_epoch": losses, "sentences": int(n), "lr_scale": lr_scale,
                                                 "epochs": cfg.epochs}
