"""Zero-shot CLIP scoring: class prompt embeddings, prompt ensembles, per-image standardisation."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .hierarchy import ParentMap, relatives
from .names import ZeroShotNames, fill, hierarchy_names

SINGLE_PROMPT = ("a photo of a {}.",)

# A compact, varied prompt ensemble for class embeddings.
ENSEMBLE_PROMPTS = (
    "a photo of a {}.",
    "a photo of the {}.",
    "a picture of a {}.",
    "an image containing a {}.",
    "a drawing of a {}.",
    "a close-up photo of a {}.",
    "a photo of a small {}.",
    "a photo of a big {}.",
    "a blurry photo of a {}.",
    "a cropped photo of a {}.",
    "a rendering of a {}.",
    "clip art of a {}.",
    "there is a {} in the scene.",
    "a {} in the picture.",
    "a photo with a {} in it.",
    "a {}.",
)


def class_embeddings(clip, class_names: Sequence[str], templates: Sequence[str] = SINGLE_PROMPT) -> np.ndarray:
    """Unit-norm class embeddings ``(C, d)``: the mean over templates of normalised prompt embeddings."""
    texts = [fill(t, c) for c in class_names for t in templates]  # no "a a star", no "a squares"
    emb = clip.encode_text(texts).reshape(len(class_names), len(templates), -1).mean(axis=1)
    return emb / np.linalg.norm(emb, axis=1, keepdims=True)


def standardize(scores: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Per-image z-score across classes: removes each image's common offset and scale."""
    mu = scores.mean(axis=-1, keepdims=True)
    sd = scores.std(axis=-1, keepdims=True)
    return (scores - mu) / (sd + eps)


def zero_shot_scores(image_emb: np.ndarray, class_emb: np.ndarray, standardise: bool = False) -> np.ndarray:
    """Cosine scores of unit-norm image embeddings against class embeddings."""
    s = image_emb @ class_emb.T
    return standardize(s) if standardise else s


def best_matches(image_emb: np.ndarray, class_emb: np.ndarray, excluded: np.ndarray | None = None) -> np.ndarray:
    """Each image's best-matching class (its index), the classes marked in ``excluded`` left out."""
    s = np.asarray(image_emb, np.float32) @ np.asarray(class_emb, np.float32).T
    if excluded is not None:
        s[:, np.asarray(excluded, bool)] = -np.inf
    return s.argmax(1)


def image_names(image_emb: np.ndarray, class_emb: np.ndarray, labels: Sequence[str],
                parents: "ParentMap | None" = None) -> "np.ndarray | ZeroShotNames":
    """Each image's best-matching label, as the decisions' names check reads it: among the labels
    that are no label's parent under ``parents`` (a parent's name matches its children's images too);
    where a label is a parent, also among all of them, its descendants and ancestors counting as its
    own (:func:`~tagger.method.names.hierarchy_names`)."""
    kin = relatives(parents or {})
    excluded = np.array([x in kin for x in labels], bool)
    if not excluded.any():
        return best_matches(image_emb, class_emb)
    s = np.asarray(image_emb, np.float32) @ np.asarray(class_emb, np.float32).T
    wide = s.argmax(1)
    s[:, excluded] = -np.inf
    return hierarchy_names(s.argmax(1), wide, list(labels), kin)
