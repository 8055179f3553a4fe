"""Seen/unseen evaluation of the heads on the toy world: train on seen labels' images, tag all labels.

The toy split is fixed: the 5 unseen labels are :data:`TOY_UNSEEN` (a solid polygon, an outline, a
thin crescent, a composite drawing and a thin key: the kinds of drawing that look large and
those that look small in a scene are on both sides), the other 15 are seen. Image-trained heads
learn from the toy *train* split's scenes with their seen labels only (an unseen object in a
training scene is simply not labelled, as in NUS-WIDE's 925/81 protocol); everything is scored on
*test* scenes; knobs are chosen on *val* scenes (bench/seen_unseen.py). ZSL and GZSL follow
:func:`~tagger.evaluate.splits.zsl_gzsl_metrics`.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..method.headkinds import FEWSHOT_HEAD, TEXT_HEAD, image_heads
from ..method.zeroshot import SINGLE_PROMPT, class_embeddings
from .harness import EmbeddedSet, embed_dataset
from .splits import LabelSplit, split_from_names, zsl_gzsl_metrics

__all__ = ["TOY_UNSEEN", "SeenUnseenData", "evaluate_seen_unseen", "fuse_scores", "load_seen_unseen",
           "seen_unseen_heads", "seen_unseen_scores", "toy_split"]

logger = logging.getLogger(__name__)

TOY_UNSEEN: tuple[str, ...] = ("triangle", "ring", "moon", "tree", "key")


def seen_unseen_heads() -> tuple[str, ...]:
    """The heads the seen/unseen split evaluates: zero-shot CLIP, CoMC, every registered image head
    (:mod:`tagger.method.headkinds`) and few-shot CoMC."""
    return ("zsclip", TEXT_HEAD, *image_heads(), FEWSHOT_HEAD)

@dataclass
class SeenUnseenData:
    """Embedded train / test scenes, the split and every label's text embedding."""

    train: EmbeddedSet
    test: EmbeddedSet
    split: LabelSplit
    label_emb: np.ndarray  # (L, d)


def toy_split(class_names: list[str]) -> LabelSplit:
    """The fixed toy split: :data:`TOY_UNSEEN` unseen, every other label seen."""
    return split_from_names(class_names, TOY_UNSEEN)


def load_seen_unseen(clip, n: int = 2000, n_train: int = 3000, split: str = "test",
                     cache_dir: str | os.PathLike[str] | None = None) -> SeenUnseenData:
    """Embed ``n_train`` train scenes and ``n`` scenes of ``split`` (cached)."""
    from .datasets import read_toy
    train = embed_dataset(clip, read_toy(n=n_train, split="train"), cache_dir=cache_dir)
    test = embed_dataset(clip, read_toy(n=n, split=split), cache_dir=cache_dir)
    return SeenUnseenData(train, test, toy_split(test.class_names), class_embeddings(clip, test.class_names,
                                                                                     SINGLE_PROMPT))


def fuse_scores(a: np.ndarray, b: np.ndarray, weight: float, ref_a: np.ndarray | None = None,
                ref_b: np.ndarray | None = None) -> np.ndarray:
    """``(1 - weight) * z(a) + weight * z(b)``, z the per-label z-score with the mean and sd of the
    reference scores ``ref_a`` / ``ref_b`` (default: the scores themselves), as a tag run calibrates
    each label on a corpus sample; two heads on different scales then mix."""
    def z(s: np.ndarray, ref: np.ndarray | None) -> np.ndarray:
        ref = s if ref is None else ref
        return (s - ref.mean(0)) / np.maximum(ref.std(0), 1e-6)
    return (1 - weight) * z(a, ref_a) + weight * z(b, ref_b)


def _image_head(kind: str, data: SeenUnseenData, cfg=None) -> np.ndarray:
    from ..method.heads import fit_head
    seen = list(data.split.seen)
    head = fit_head(kind, data.train.global_, data.train.patches.astype(np.float32), data.train.labels[:, seen],
                    data.label_emb, seen=seen, labels=data.test.class_names, cfg=cfg)
    return head.scores(data.test.global_, data.test.patches.astype(np.float32))


def _comc(clip, data: SeenUnseenData, comc_cfg=None):
    from ..method.comc import fit_comc
    from ..text import comc_corpus
    from .heads import toy_synonyms
    names = data.test.class_names
    synonyms = toy_synonyms(names)
    return fit_comc(clip, names, synonyms, comc_cfg, corpus=comc_corpus(names, synonyms, comc_cfg))


def _fewshot(clip, data: SeenUnseenData, shots: int = 16, seed: int = 0, base=None, cfg=None) -> np.ndarray:
    """CoMC fitted on text for every label, then updated with ``shots`` train images per seen label."""
    from ..method.heads import fit_fewshot, sample_shots
    base = base or _comc(clip, data)
    y = data.train.labels.copy()
    y[:, list(data.split.unseen)] = 0  # unseen labels have no labelled image
    idx = sample_shots(y[:, list(data.split.seen)], shots, seed)
    model = fit_fewshot(base, data.train.global_[idx], y[idx], cfg)
    return model.scores(data.test.global_, data.test.patches.astype(np.float32))


def seen_unseen_scores(clip, head: str, data: SeenUnseenData, **kw: object) -> np.ndarray:
    """Scores (n_test, L) of ``head`` (one of :func:`seen_unseen_heads`) trained on seen labels."""
    test = data.test
    runners: dict[str, Callable[[], np.ndarray]] = {
        "zsclip": lambda: test.global_ @ data.label_emb.T,
        TEXT_HEAD: lambda: _comc(clip, data).scores(test.global_, test.patches.astype(np.float32)),
        FEWSHOT_HEAD: lambda: _fewshot(clip, data, **kw),  # type: ignore[arg-type]
    }
    if head in runners:
        return runners[head]()
    if head in image_heads():
        return _image_head(head, data, kw.get("cfg"))
    from ..errors import ConfigError
    raise ConfigError(f"unknown seen/unseen head {head!r}; choose from {', '.join(seen_unseen_heads())}")


def evaluate_seen_unseen(clip, head: str, n: int = 2000, n_train: int = 3000,
                         cache_dir: str | os.PathLike[str] | None = None) -> dict[str, dict[str, float]]:
    """ZSL and GZSL metrics of ``head`` on the fixed toy split."""
    data = load_seen_unseen(clip, n, n_train, cache_dir=cache_dir)
    return zsl_gzsl_metrics(seen_unseen_scores(clip, head, data), data.test.labels, data.split)
