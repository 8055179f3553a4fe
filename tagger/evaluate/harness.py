"""Evaluation harness: embed a labelled dataset once (cached), score it with a head, report metrics."""
from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..ids import short_sha256
from ..models.dense import FeatureConfig, image_features
from ..method.zeroshot import ENSEMBLE_PROMPTS, SINGLE_PROMPT, class_embeddings, zero_shot_scores
from ..atomic import atomic_open
from .metrics import summarize

logger = logging.getLogger(__name__)


@dataclass
class EmbeddedSet:
    """Stored image features of a labelled dataset."""

    global_: np.ndarray  # (n, d) unit-norm
    patches: np.ndarray  # (n, P, d) unit-norm, float16
    labels: np.ndarray  # (n, C) uint8
    class_names: list[str]


CACHE_ENV = "TAGGER_CACHE_DIR"
LEGACY_CACHE_ENV = "TAGGER_CACHE"  # the older name, still honoured after CACHE_ENV


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where the harness caches: ``cache_dir`` (e.g. a workspace's cache folder), else
    ``$TAGGER_CACHE_DIR``, else ``$TAGGER_CACHE``, else ``~/.cache/tagger``; embeddings go in
    ``<root>/eval/``."""
    if cache_dir is not None:
        return Path(cache_dir)
    for var in (CACHE_ENV, LEGACY_CACHE_ENV):
        if os.environ.get(var):
            return Path(os.environ[var])
    return Path.home() / ".cache" / "tagger"


def _cache_key(clip, dataset, fcfg: FeatureConfig) -> str:
    ident = json.dumps([clip.model_id, dataset.name, len(dataset.items), dataset.items[:3], dataset.items[-3:],
                        asdict(fcfg), getattr(dataset, "scene_config", None)], default=str)
    return short_sha256(ident, 20)


def embed_dataset(clip, dataset, fcfg: FeatureConfig | None = None, batch_size: int = 128,
                  use_cache: bool = True, cache_dir: str | os.PathLike[str] | None = None) -> EmbeddedSet:
    """Global and patch features of every image in ``dataset`` (an ``EvalDataset``), cached under
    :func:`cache_root` of ``cache_dir`` unless ``use_cache`` is false."""
    fcfg = fcfg or FeatureConfig()
    path = cache_root(cache_dir) / "eval" / f"{_cache_key(clip, dataset, fcfg)}.npz"
    if use_cache and path.exists():
        z = np.load(path)
        return EmbeddedSet(z["global_"], z["patches"], dataset.labels, list(dataset.class_names))
    gs, ps = [], []
    for i in range(0, len(dataset.items), batch_size):
        batch = torch.stack([clip.preprocess(dataset.load_image(j))
                             for j in range(i, min(i + batch_size, len(dataset.items)))])
        g, p = image_features(clip.model, batch.to(clip.device), fcfg)
        gs.append(g.cpu().numpy())
        ps.append(p.cpu().numpy().astype(np.float16))
    out = EmbeddedSet(np.concatenate(gs), np.concatenate(ps), dataset.labels, list(dataset.class_names))
    if use_cache:
        with atomic_open(path) as fh:
            np.savez(fh, global_=out.global_, patches=out.patches)
    return out


def zsclip_head(prompts: str = "single", standardise: bool = False) -> Callable:
    """A zero-shot CLIP head: image embeddings against prompt embeddings of the class names."""
    templates = ENSEMBLE_PROMPTS if prompts == "ensemble" else SINGLE_PROMPT

    def score(clip, test: EmbeddedSet, **_: object) -> np.ndarray:
        cls = class_embeddings(clip, test.class_names, templates)
        return zero_shot_scores(test.global_, cls, standardise)
    return score


def fit_linear_probe(x: np.ndarray, y: np.ndarray, epochs: int = 300, lr: float = 0.01,
                     weight_decay: float = 1e-4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One-vs-rest logistic regression on frozen features (full batch Adam); returns (W, b)."""
    g = torch.Generator().manual_seed(seed)
    xt, yt = torch.from_numpy(x).float(), torch.from_numpy(y).float()
    lin = torch.nn.Linear(x.shape[1], y.shape[1])
    with torch.no_grad():
        lin.weight.normal_(0, 0.01, generator=g)
        lin.bias.zero_()
    opt = torch.optim.Adam(lin.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(epochs):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(lin(xt * 10), yt)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return lin.weight.detach().numpy() * 10, lin.bias.detach().numpy()


def linprobe_head(n_train: int = 4000, vocab: str = "toy") -> Callable:
    """Supervised ceiling: a linear probe trained on labelled toy *train* scenes (labels of the toy
    vocabulary ``vocab``, see :func:`~tagger.evaluate.datasets.read_toy`)."""
    def score(clip, test: EmbeddedSet, fcfg: FeatureConfig | None = None,
              cache_dir: str | os.PathLike[str] | None = None, **_: object) -> np.ndarray:
        from .datasets import read_toy
        train = embed_dataset(clip, read_toy(n=n_train, split="train", vocab=vocab), fcfg, cache_dir=cache_dir)
        if list(train.class_names) != list(test.class_names):
            raise ValueError("the linear probe is only defined on the toy world (train labels needed)")
        w, b = fit_linear_probe(train.global_, train.labels)
        return test.global_ @ w.T + b
    return score


HEADS: dict[str, Callable[[], Callable]] = {
    "zsclip": lambda: zsclip_head("single"),
    "zsclip-ensemble": lambda: zsclip_head("ensemble"),
    "zsclip-std": lambda: zsclip_head("single", True),
    "zsclip-ensemble-std": lambda: zsclip_head("ensemble", True),
    "linprobe": linprobe_head,
}


def evaluate(clip, dataset, head: str | Callable, fcfg: FeatureConfig | None = None,
             test: EmbeddedSet | None = None, *, cache_dir: str | os.PathLike[str] | None = None,
             **head_kw: object) -> dict:
    """Score ``dataset`` with ``head`` and return the metrics (mAP, P/R/F1@3/5).

    Embeddings are cached under ``cache_dir`` (see :func:`cache_root`); the head gets
    ``fcfg``, ``cache_dir`` and ``head_kw`` as keywords.
    """
    test = test or embed_dataset(clip, dataset, fcfg, cache_dir=cache_dir)
    fn = head if callable(head) else _head(head)
    scores = fn(clip, test, fcfg=fcfg, cache_dir=cache_dir, **head_kw)
    return summarize(scores, test.labels)


def _head(name: str) -> Callable:
    if name == "comc":
        from .heads import comc_head  # imported lazily: it needs the text side
        return comc_head()
    if name not in HEADS:
        raise ValueError(f"unknown head {name!r}; choose from {sorted(HEADS) + ['comc']}")
    return HEADS[name]()


def image_text_retrieval(clip, n: int = 1000, split: str = "test", seed: int = 7) -> float:
    """Image->caption R@1 (%) on held-out toy scenes with one caption each."""
    from ..toyworld import make_caption, make_scene
    rng = np.random.default_rng(seed)
    scenes = [make_scene(i, split) for i in range(n)]
    caps = [make_caption(s, rng) for s in scenes]
    img = []
    for i in range(0, n, 128):
        batch = torch.stack([clip.preprocess(s.image) for s in scenes[i:i + 128]]).to(clip.device)
        img.append(image_features(clip.model, batch)[0].cpu().numpy())
    sims = np.concatenate(img) @ clip.encode_text(caps).T
    return float(100 * (sims.argmax(1) == np.arange(n)).mean())
