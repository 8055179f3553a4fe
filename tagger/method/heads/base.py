"""What every image-trained head shares: the interface, the training loop, losses, save and load.

A head is a small torch module on top of frozen CLIP. It trains on stored embeddings only: the
global embedding ``g`` (n, d) and the patch embeddings ``p`` (n, P, d), both unit-norm, with a
multi-hot label matrix over the *seen* labels and the CLIP text embedding (unit-norm) of every
label. Because each label enters through its text embedding, a trained head scores any label,
seen or unseen, given its text embedding: ``head.scores(g, p, label_emb) -> (n, L)``.

Training is deterministic under ``seed``: one ``torch.Generator`` draws the batches, the
parameters are initialised under ``torch.manual_seed(seed)``, and no nondeterministic kernel is
used on CPU.
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ...atomic import atomic_write_text
from ...errors import ConfigError
from ..headkinds import head_classes, register_head

__all__ = ["FitConfig", "HeadModule", "ImageHead", "LabelAttention", "fit_head", "identity_linear", "is_head_dir", "load_head",
           "register_head", "softplus_ranking", "train_module", "zero_linear"]

logger = logging.getLogger(__name__)

HEAD_FILE = "head.json"
WEIGHTS_FILE = "head_weights.pt"
LABEL_EMB_FILE = "label_emb.npy"


@dataclass(frozen=True)
class FitConfig:
    """Optimisation knobs every head shares (each head's config carries one as ``fit``)."""

    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0


class HeadModule(torch.nn.Module):
    """A head's torch module: ``forward(g, p, t) -> (n, L)`` scores, ``loss(g, p, y, t) -> scalar``."""

    def loss(self, g: torch.Tensor, p: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def identity_linear(d: int, bias: bool = True) -> torch.nn.Linear:
    """A ``Linear(d, d)`` that starts as the identity (heads start from CLIP's own space)."""
    lin = torch.nn.Linear(d, d, bias=bias)
    with torch.no_grad():
        lin.weight.copy_(torch.eye(d))
        if bias:
            lin.bias.zero_()
    return lin


class LabelAttention(torch.nn.Module):
    """Multi-head cross-attention of label queries over image tokens, its four projections starting
    as the identity: ``(t (L, d), tokens (n, T, d), temperature) -> (n, L, d)``."""

    def __init__(self, d: int, n_heads: int) -> None:
        super().__init__()
        if d % n_heads:
            raise ValueError(f"dimension {d} is not divisible by {n_heads} heads")
        self.n_heads = n_heads
        self.q, self.k, self.v, self.o = (identity_linear(d) for _ in range(4))

    def forward(self, t: torch.Tensor, tokens: torch.Tensor, temp: float) -> torch.Tensor:
        n, num_t, d = tokens.shape
        h = self.n_heads
        q = self.q(t).view(len(t), h, d // h)
        k = self.k(tokens).view(n, num_t, h, d // h)
        v = self.v(tokens).view(n, num_t, h, d // h)
        attn = torch.softmax(torch.einsum("lhe,nthe->nlht", q, k) / temp, dim=-1)
        return self.o(torch.einsum("nlht,nthe->nlhe", attn, v).reshape(n, len(t), d))


def zero_linear(d_in: int, d_out: int, bias: bool = True) -> torch.nn.Linear:
    """A ``Linear`` that starts at zero (a residual branch that starts switched off)."""
    lin = torch.nn.Linear(d_in, d_out, bias=bias)
    with torch.no_grad():
        lin.weight.zero_()
        if bias:
            lin.bias.zero_()
    return lin


def softplus_ranking(s: torch.Tensor, y: torch.Tensor, chunk: int = 32) -> torch.Tensor:
    """Pairwise ranking loss: mean over images of (1/|P_i|) sum_{j in P_i} sum_{k in N_i}
    log(1 + exp(s_k - s_j)); an image without a positive label adds 0."""
    total = s.new_zeros(())
    for i in range(0, s.shape[0], chunk):
        sc, yc = s[i:i + chunk], y[i:i + chunk]
        pair = F.softplus(sc[:, None, :] - sc[:, :, None])  # [b, j (pos), k (neg)]
        mask = yc[:, :, None] * (1 - yc[:, None, :])
        per_image = (pair * mask).sum((1, 2)) / yc.sum(1).clamp_min(1)
        total = total + per_image.sum()
    return total / s.shape[0]


def _as_tensor(x: np.ndarray | torch.Tensor | None) -> torch.Tensor | None:
    if x is None:
        return None
    return torch.as_tensor(np.asarray(x, np.float32) if not isinstance(x, torch.Tensor) else x, dtype=torch.float32)


def _patches_or_global(g: torch.Tensor, p: torch.Tensor | None) -> torch.Tensor:
    """Patch tokens; without stored patches the global embedding stands in as one token."""
    return g[:, None, :] if p is None else p


def train_module(module: HeadModule, g: torch.Tensor, p: torch.Tensor, y: torch.Tensor, t: torch.Tensor,
                 fit: FitConfig) -> list[float]:
    """Adam over shuffled mini-batches (a cosine learning rate over the epochs); returns the loss per epoch."""
    gen = torch.Generator().manual_seed(fit.seed)
    opt = torch.optim.Adam(module.parameters(), lr=fit.lr, weight_decay=fit.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, fit.epochs))
    n, bs = g.shape[0], min(fit.batch_size, g.shape[0])
    losses = []
    module.train()
    for _ in range(fit.epochs):
        perm, run, steps = torch.randperm(n, generator=gen), 0.0, 0
        for i in range(0, n, bs):
            idx = perm[i:i + bs]
            if len(idx) < 2:
                continue
            loss = module.loss(g[idx], p[idx], y[idx], t)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            run, steps = run + float(loss.item()), steps + 1
        sched.step()
        losses.append(run / max(1, steps))
    module.eval()
    return losses


class ImageHead:
    """A trained head: its module, config, the labels it tags by default (with their text
    embeddings), which of them it saw images of, and the id of its training data."""

    kind: ClassVar[str] = "head"

    def __init__(self, kind: str, config: Any, module: HeadModule, labels: Sequence[str], label_emb: np.ndarray,
                 seen: Sequence[str], data_id: str = "", metrics: dict | None = None) -> None:
        self.kind, self.config, self.module = kind, config, module
        self.labels, self.seen = list(labels), list(seen)
        self.label_emb = np.asarray(label_emb, np.float32)
        self.data_id, self.metrics = data_id, dict(metrics or {})
        if len(self.labels) != len(self.label_emb):
            raise ConfigError(f"{len(self.labels)} labels but {len(self.label_emb)} label embeddings")

    def scores(self, g: np.ndarray, p: np.ndarray | None = None, label_emb: np.ndarray | None = None,
               batch: int = 1024) -> np.ndarray:
        """Scores ``(n, L)`` of the images against ``label_emb`` (default: the head's own labels)."""
        t = _as_tensor(self.label_emb if label_emb is None else label_emb)
        out = []
        with torch.no_grad():
            for i in range(0, len(g), batch):
                gi = _as_tensor(g[i:i + batch])
                pi = _patches_or_global(gi, _as_tensor(None if p is None else p[i:i + batch]))
                out.append(self.module(gi, pi, t).numpy())
        return np.concatenate(out) if out else np.zeros((0, len(t)), np.float32)

    def save(self, directory: str | Path) -> Path:
        """Write weights, label embeddings and then ``head.json`` into ``directory``."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        torch.save(self.module.state_dict(), d / WEIGHTS_FILE)
        np.save(d / LABEL_EMB_FILE, self.label_emb)
        meta = {"kind": self.kind, "config": _config_dict(self.config), "labels": self.labels, "seen": self.seen,
                "data_id": self.data_id, "dim": int(self.label_emb.shape[1]), "metrics": self.metrics}
        atomic_write_text(d / HEAD_FILE, json.dumps(meta, indent=2))
        return d


def _config_dict(cfg: Any) -> dict:
    return asdict(cfg)


def _config_from(config_cls: type, data: dict) -> Any:
    data = dict(data)
    if "fit" in data and isinstance(data["fit"], dict):
        data["fit"] = FitConfig(**data["fit"])
    return config_cls(**data)


def is_head_dir(directory: str | Path) -> bool:
    """Whether ``directory`` holds an image-trained head (rather than a CoMC classifier)."""
    return (Path(directory) / HEAD_FILE).is_file()


def load_head(directory: str | Path) -> ImageHead:
    """Load what :meth:`ImageHead.save` wrote."""
    d = Path(directory)
    meta = json.loads((d / HEAD_FILE).read_text())
    try:
        config_cls, module_cls = head_classes(meta["kind"])
    except ConfigError as e:
        raise ConfigError(f"{d}: {e}") from None
    cfg = _config_from(config_cls, meta["config"])
    module = module_cls(cfg, int(meta["dim"]))
    module.load_state_dict(torch.load(d / WEIGHTS_FILE, weights_only=True))
    module.eval()
    return ImageHead(meta["kind"], cfg, module, meta["labels"], np.load(d / LABEL_EMB_FILE), meta["seen"],
                     meta.get("data_id", ""), meta.get("metrics"))


def fit_head(kind: str, g: np.ndarray, p: np.ndarray | None, label_matrix: np.ndarray, label_emb: np.ndarray,
             *, seen: Sequence[int] | None = None, labels: Sequence[str] | None = None, cfg: Any = None,
             data_id: str = "") -> ImageHead:
    """Train a head of ``kind`` on images ``g`` (n, d), ``p`` (n, P, d) labelled over the seen labels.

    ``label_emb`` (L, d) holds every label the head tags by default; ``label_matrix`` (n, L_seen)
    has one column per seen label, ``label_emb[seen[j]]`` for column j (``seen`` defaults to the
    first L_seen labels). ``labels`` names the L labels (default ``label0``, ...).
    """
    config_cls, module_cls = head_classes(kind)
    cfg = cfg or config_cls()
    y = np.asarray(label_matrix, np.float32)
    emb = np.asarray(label_emb, np.float32)
    seen = list(range(y.shape[1])) if seen is None else [int(s) for s in seen]
    labels = [f"label{i}" for i in range(len(emb))] if labels is None else list(labels)
    if len(seen) != y.shape[1] or len(g) != len(y) or (p is not None and len(p) != len(g)):
        raise ConfigError(f"{len(g)} images, label matrix {y.shape}, {len(seen)} seen labels do not match")
    if not len(g) or not y.any():
        raise ConfigError("no labelled image to train on")
    torch.manual_seed(cfg.fit.seed)
    module = module_cls(cfg, emb.shape[1])
    gt = _as_tensor(g)
    pt = _patches_or_global(gt, _as_tensor(p))
    losses = train_module(module, gt, pt, torch.from_numpy(y), torch.from_numpy(emb[seen]), cfg.fit)
    logger.info("trained %s head: %d images, %d seen of %d labels, final loss %.4f", kind, len(g), len(seen),
                len(emb), losses[-1] if losses else float("nan"))
    return ImageHead(kind, cfg, module, labels, emb, [labels[s] for s in seen], data_id, {"loss_per_epoch": losses})
