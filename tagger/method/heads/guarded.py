"""A head guarded by the text-only head: the image-trained (or few-shot) head scores only the labels
its held-out annotations can judge; every other label keeps the text-only CoMC head's column and
its text anchors.

An image-trained head has no text corpus, so alone it carries no text anchors and a tag run would
decide its labels by the mixture rule, which tags labels absent from the corpus. Wrapped here, a
label is scored by the head only when the held-out part of the annotations shows it on at least
``min_positives`` images (and misses it on as many) and the head ranks those images at least as
well as the text head does, and well in itself (ROC AUC ``min_auc``: a head that learnt nothing
about a label does not get it); the tag run then decides such a label from those held-out images
(their scores and truth), and decides every other label by the anchored rule on the text head's
own scale: a label with no annotated image keeps the absent-label protection of the text-only head
whichever head was trained.

Pure math over arrays: the text model, the head, the split of the annotations and the held-out
images they are decided from; the workspace side lives in :mod:`tagger.pipeline.guard`.
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ...atomic import atomic_write_text
from ..comc import ComcModel
from ..anchors import TextAnchors
from .base import ImageHead, is_head_dir, load_head

__all__ = ["GUARD_FILE", "GuardConfig", "GuardedModel", "head_columns", "heldout_split", "image_columns",
           "is_guarded_dir", "load_guarded", "masked_anchors", "roc_auc"]

logger = logging.getLogger(__name__)

GUARD_FILE = "guard.json"
IMAGE_DIR = "image"  # the head itself, inside the guarded classifier's directory


@dataclass(frozen=True)
class GuardConfig:
    """How annotations are split and when a head may score a label."""

    heldout: float = 0.25  # share of the annotated images held out to validate the head
    seed: int = 0  # of the split
    min_heldout_images: int = 10  # fewer held-out images: the head cannot be validated
    min_positives: int = 3  # held-out positives (and negatives) a label needs to be scored by the head
    min_auc: float = 0.8  # ... and the head's ROC AUC on them (at least the text head's too)
    folds: int = 5  # validation: labelled decisions cross-fitted over this many folds of the held-out images

    def __post_init__(self) -> None:
        if not 0.0 < self.heldout < 1.0:
            raise ValueError(f"heldout must be in (0, 1), got {self.heldout}")
        if self.min_positives < 2 or self.folds < 2:
            raise ValueError(f"min_positives and folds must be >= 2, got {self.min_positives}, {self.folds}")

    def to_dict(self) -> dict:
        return asdict(self)


def heldout_split(y: np.ndarray, share: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, held_out)`` of labelled images ``y`` (n, L), seeded and stratified greedily:
    labels from the rarest up, each sending about ``share`` of its positives to the held-out part
    (its images not yet placed by a rarer label); images without a label are split by ``share``."""
    y = np.asarray(y, bool)
    rng = np.random.default_rng(seed)
    held, placed = np.zeros(len(y), bool), np.zeros(len(y), bool)
    counts = y.sum(0)
    for j in np.argsort(counts, kind="stable"):
        if not counts[j]:
            continue
        pool = np.flatnonzero(y[:, j] & ~placed)
        want = int(round(share * counts[j])) - int((held & y[:, j]).sum())
        take = rng.permutation(pool)[:max(0, min(want, len(pool)))]
        held[take], placed[pool] = True, True
    rest = rng.permutation(np.flatnonzero(~placed))
    held[rest[:int(round(share * len(rest)))]] = True
    return np.flatnonzero(~held), np.flatnonzero(held)


def image_columns(y_train: np.ndarray, y_held: np.ndarray, min_positives: int) -> np.ndarray:
    """Candidate labels (column indices) for the head: seen in training, with at least
    ``min_positives`` held-out positives and as many held-out negatives to decide them from."""
    y_train, y_held = np.asarray(y_train, bool), np.asarray(y_held, bool)
    ok = y_train.any(0) & (y_held.sum(0) >= min_positives) & ((~y_held).sum(0) >= min_positives)
    return np.flatnonzero(ok)


def roc_auc(scores: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per column, the ROC AUC of ``scores`` (n, L) against ``truth`` (ties averaged; NaN without
    positives or negatives)."""
    s, y = np.asarray(scores, np.float64), np.asarray(truth, bool)
    out = np.full(s.shape[1], np.nan)
    for j in range(s.shape[1]):
        n_pos, n_neg = int(y[:, j].sum()), int((~y[:, j]).sum())
        if n_pos and n_neg:
            _, inv, counts = np.unique(s[:, j], return_inverse=True, return_counts=True)
            ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[inv]
            out[j] = (ranks[y[:, j]].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
    return out


def head_columns(head: np.ndarray, text: np.ndarray, y: np.ndarray, candidates: np.ndarray,
                 cfg: "GuardConfig") -> np.ndarray:
    """The ``candidates`` the head may score, judged on labelled images: their scores by the head and
    by the text head and their truth ``y``. A label needs ``min_positives`` positives and negatives,
    and the head's ROC AUC at least ``min_auc`` and at least the text head's."""
    c = np.asarray(candidates, np.int64)
    if not len(c):
        return c
    y = np.asarray(y, bool)[:, c]
    enough = (y.sum(0) >= cfg.min_positives) & ((~y).sum(0) >= cfg.min_positives)
    a_head, a_text = roc_auc(np.asarray(head)[:, c], y), roc_auc(np.asarray(text)[:, c], y)
    return c[enough & (a_head >= cfg.min_auc) & (a_head >= a_text)]


def masked_anchors(anchors: TextAnchors | None, cols: np.ndarray) -> TextAnchors | None:
    """``anchors`` with NaN at ``cols`` (labels a head scores: no text scale for them)."""
    if anchors is None:
        return None
    parts = [np.array(x, np.float64, copy=True) for x in (anchors.neg_mean, anchors.pos_mean, anchors.neg_sd,
                                                          anchors.pos_sd)]
    for x in parts:
        x[np.asarray(cols, np.int64)] = np.nan
    return TextAnchors(parts[0], parts[1], parts[2], parts[3], alike=anchors.alike)


class GuardedModel:
    """The text-only CoMC model with an image-trained (or few-shot) head's columns for ``image_labels``.

    Seen by the tag stage like a classifier: ``labels``, ``scores(g, p)``, ``classifier.anchors``
    (the text anchors, NaN for the head's labels: those are decided from the held-out images).
    ``heldout`` maps image ids to their annotated labels; ``meta`` is what else the model records."""

    def __init__(self, kind: str, text: ComcModel, head: Any, image_labels: Sequence[str],
                 heldout: dict[int, list[str]] | None = None, meta: dict | None = None) -> None:
        if list(head.labels) != list(text.labels):
            raise ValueError("the head and the text model must score the same labels, in the same order")
        col = {n: j for j, n in enumerate(text.labels)}
        unknown = [n for n in image_labels if n not in col]
        if unknown:
            raise ValueError(f"image labels not in the vocabulary: {unknown[:5]}")
        self.kind, self.text, self.head = kind, text, head
        self.image_cols = np.asarray(sorted(col[n] for n in set(image_labels)), np.int64)
        self.heldout = {int(i): sorted(v) for i, v in (heldout or {}).items()}
        self.meta = dict(meta or {})

    @property
    def labels(self) -> list[str]:
        return self.text.labels

    @property
    def image_labels(self) -> list[str]:
        return [self.labels[j] for j in self.image_cols]

    @property
    def classifier(self) -> "GuardedModel":
        return self

    @property
    def anchors(self) -> TextAnchors | None:
        return masked_anchors(self.text.classifier.anchors, self.image_cols)

    def decision_labelled(self) -> dict[int, list[str]]:
        """The held-out images with their labels among the head's: what its labels are decided from."""
        mine = set(self.image_labels)
        return {i: [n for n in v if n in mine] for i, v in self.heldout.items()}

    def scores(self, g: np.ndarray, p: np.ndarray | None) -> np.ndarray:
        s = np.asarray(self.text.scores(g, p), np.float32)
        if len(self.image_cols):
            cols = self.image_cols
            if isinstance(self.head, ImageHead):
                s[:, cols] = self.head.scores(g, p, self.head.label_emb[cols])
            else:
                s[:, cols] = np.asarray(self.head.scores(g, p), np.float32)[:, cols]
        return s

    def save(self, directory: str | Path, text_ref: str) -> Path:
        """Write the head into ``directory/image`` and ``guard.json`` (last); ``text_ref`` names the
        text model for :func:`load_guarded` (the workspace passes its classifier id)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        if isinstance(self.head, ImageHead):
            self.head.save(d / IMAGE_DIR)
        else:  # few-shot CoMC: its classifier; the memory banks are the text model's
            self.head.classifier.save(d / IMAGE_DIR)
        meta = {**self.meta, "kind": self.kind, "text": text_ref, "image_labels": self.image_labels,
                "heldout": sorted([i, sorted(v)] for i, v in self.heldout.items())}
        atomic_write_text(d / GUARD_FILE, json.dumps(meta, indent=1))
        return d


def is_guarded_dir(directory: str | Path) -> bool:
    """Whether ``directory`` holds a :class:`GuardedModel`."""
    return (Path(directory) / GUARD_FILE).is_file()


def load_guarded(directory: str | Path, load_text: Callable[[str], ComcModel]) -> GuardedModel:
    """Load what :meth:`GuardedModel.save` wrote; ``load_text(text_ref)`` gives the text model."""
    from ..classifier import TextClassifier
    d = Path(directory)
    meta = json.loads((d / GUARD_FILE).read_text())
    text = load_text(meta["text"])
    sub = d / IMAGE_DIR
    head = load_head(sub) if is_head_dir(sub) else ComcModel(TextClassifier.load(sub), text.memories, text.score)
    rest = {k: v for k, v in meta.items() if k not in ("kind", "image_labels", "heldout")}
    return GuardedModel(meta["kind"], text, head, meta["image_labels"], {int(i): v for i, v in meta["heldout"]}, rest)
