"""Web-like captions for toy scenes, used only to train the toy CLIP models.

Like alt-text on the web, captions are varied, use synonyms, mention colours and backgrounds as
nuisance, and often leave out small or background objects, so that a global image embedding
under-weights small objects the way real CLIP does.
"""
from __future__ import annotations

import numpy as np

from .scenes import Scene
from .vocab import BIG_ABOVE, LABEL_SYNONYMS, LABELS, SMALL_BELOW, plural

_TEMPLATES = (
    "a photo of {objs}.",
    "{objs}.",
    "an image showing {objs}.",
    "{objs} on a {bg} background.",
    "a picture with {objs}.",
    "clip art of {objs}.",
    "a drawing of {objs}, {bg} backdrop.",
    "{objs} in the middle of a {bg} pattern.",
    "look at {objs}!",
    "my favourite: {objs}",
)
_BG_WORDS = {
    "plain": ("plain", "flat", "simple"),
    "gradient": ("gradient", "faded", "smooth"),
    "stripes": ("striped", "lined"),
    "checks": ("checkered", "chequered", "tiled"),
    "speckles": ("speckled", "dotted", "noisy"),
}
_SIZE_WORDS = {"small": ("small", "tiny", "little"), "big": ("big", "large", "huge")}


def _name(label: str, rng: np.random.Generator) -> str:
    if rng.random() < 0.3:
        syns = LABEL_SYNONYMS[label]
        return syns[int(rng.integers(len(syns)))]
    return label


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _phrase(label: str, colour: str, size_word: str | None, rng: np.random.Generator) -> str:
    noun = _name(label, rng)
    words = []
    if size_word:
        words.append(size_word)
    if rng.random() < 0.25:
        words.append(colour)
    words.append(noun)
    text = " ".join(words)
    return f"{_article(text)} {text}"


def _join(parts: list[str], rng: np.random.Generator) -> str:
    if len(parts) == 1:
        return parts[0]
    sep = ", " if rng.random() < 0.5 else " and "
    if sep == ", ":
        return ", ".join(parts[:-1]) + " and " + parts[-1]
    return " and ".join(parts)


def caption_objects(scene: Scene, rng: np.random.Generator) -> list:
    """The objects one caption mentions: the largest always, small ones seldom (shuffled)."""
    objs = sorted(scene.objects, key=scene.area, reverse=True)
    kept = []
    for i, o in enumerate(objs):
        a = scene.area(o)
        p_drop = 0.0 if i == 0 else (0.7 if a < 0.03 else 0.35 if a < 0.08 else 0.1)
        if rng.random() >= p_drop:
            kept.append(o)
    rng.shuffle(kept)
    return kept


def mentioned_labels(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """Multi-hot (uint8, over LABELS) of the labels one caption would mention: what a caption tells."""
    out = np.zeros(len(LABELS), np.uint8)
    for o in caption_objects(scene, rng):
        out[LABELS.index(o.label)] = 1
    return out


def make_caption(scene: Scene, rng: np.random.Generator) -> str:
    """One caption for ``scene``; small objects are dropped often, large ones rarely."""
    kept = caption_objects(scene, rng)
    parts = []
    # a repeated count phrase sometimes ("two stars" style plural), otherwise singular phrases
    for o in kept:
        a = scene.area(o)
        size_word = None
        if rng.random() < 0.3:
            key = "small" if a < SMALL_BELOW else "big" if a > BIG_ABOVE else None
            if key:
                words = _SIZE_WORDS[key]
                size_word = words[int(rng.integers(len(words)))]
        if rng.random() < 0.08:
            parts.append("some " + plural(_name(o.label, rng)))
        else:
            parts.append(_phrase(o.label, o.colour, size_word, rng))
    template = _TEMPLATES[int(rng.integers(len(_TEMPLATES)))]
    bg_words = _BG_WORDS[scene.background]
    return template.format(objs=_join(parts, rng), bg=bg_words[int(rng.integers(len(bg_words)))])
