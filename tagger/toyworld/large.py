"""A large labelled vocabulary for the toy world, with exact truth from each scene's description.

Besides its 20 objects, the world draws things its captions name: a background pattern, a colour
for each object and a size. Labels built from them (``striped background``, ``red hexagon``,
``small star``) have ground truth read from the scene (its background, each object's label, colour
and box), never from pixels, so it is exact:

* the 20 object labels (as in :data:`~tagger.toyworld.vocab.LABELS`);
* 5 backgrounds: ``<pattern> background`` for the scene's pattern;
* 240 colour-object compounds: ``<colour> <object>`` when an object of that label has that colour;
* 40 size-object compounds: ``small <object>`` / ``big <object>`` when that object's visible box
  covers less than :data:`SMALL_BELOW` / more than :data:`BIG_ABOVE` of the image (the thresholds
  the captions use for "small" and "big").

That is 305 labels with truth. Compounds have their object as parent (a red hexagon is a hexagon).
Distractors (:func:`distractor_words`) fill the vocabulary up to any size (10,000 and more): nouns
of the ``wonderwords`` word list, then adjective-noun compounds of it, leaving out every word that
shares a BPE token with what the toy captions or the truth labels say, so no distractor names
anything the world draws.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from .scenes import Scene
from .vocab import BACKGROUNDS, BIG_ABOVE, COLOURS, LABEL_SYNONYMS, LABELS, SMALL_BELOW

__all__ = ["BACKGROUND_LABELS", "DISTRACTOR_SEED", "LargeVocab", "N_TRUTH", "distractor_words",
           "large_truth", "large_vocabulary", "truth_labels"]

logger = logging.getLogger(__name__)

SMALL_WORDS = ("small", "tiny", "little")
BIG_WORDS = ("big", "large", "huge")

#: background pattern -> (label, synonyms): the words the captions use for that pattern
BACKGROUND_LABELS: dict[str, tuple[str, tuple[str, ...]]] = {
    "plain": ("plain background", ("flat background", "simple background", "plain backdrop")),
    "gradient": ("gradient background", ("faded background", "smooth background", "gradient backdrop")),
    "stripes": ("striped background", ("lined background", "striped backdrop", "striped pattern")),
    "checks": ("checkered background", ("chequered background", "tiled background", "checkered pattern")),
    "speckles": ("speckled background", ("dotted background", "noisy background", "speckled pattern")),
}

DISTRACTOR_SEED = 20261205  # fixed before anything was measured


def _compound_synonyms(modifiers: tuple[str, ...], label: str) -> tuple[str, ...]:
    """``<modifier> <name>`` for every modifier and every name of ``label`` but the first pair."""
    names = (label, *LABEL_SYNONYMS[label])
    return tuple(f"{m} {n}" for m in modifiers for n in names)[1:]


@lru_cache(maxsize=1)
def truth_labels() -> tuple[tuple[str, ...], dict[str, tuple[str, ...]], dict[str, tuple[str, ...]]]:
    """The labels with truth, their synonyms and their parents (compound -> its object)."""
    labels: list[str] = list(LABELS)
    synonyms: dict[str, tuple[str, ...]] = dict(LABEL_SYNONYMS)
    parents: dict[str, tuple[str, ...]] = {}
    for bg in BACKGROUNDS:
        name, syns = BACKGROUND_LABELS[bg]
        labels.append(name)
        synonyms[name] = syns
    for colour in COLOURS:
        for obj in LABELS:
            name = f"{colour} {obj}"
            labels.append(name)
            synonyms[name] = _compound_synonyms((colour,), obj)
            parents[name] = (obj,)
    for size, words in (("small", SMALL_WORDS), ("big", BIG_WORDS)):
        for obj in LABELS:
            name = f"{size} {obj}"
            labels.append(name)
            synonyms[name] = _compound_synonyms(words, obj)
            parents[name] = (obj,)
    return tuple(labels), synonyms, parents


N_TRUTH = len(truth_labels()[0])


def large_truth(scene: Scene) -> np.ndarray:
    """Multi-hot (uint8) of ``scene`` over :func:`truth_labels`, read from its description."""
    labels = truth_labels()[0]
    index = {name: i for i, name in enumerate(labels)}
    out = np.zeros(len(labels), np.uint8)
    out[: len(LABELS)] = scene.labels
    out[index[BACKGROUND_LABELS[scene.background][0]]] = 1
    for obj in scene.objects:
        out[index[f"{obj.colour} {obj.label}"]] = 1
        area = scene.area(obj)
        if area < SMALL_BELOW:
            out[index[f"small {obj.label}"]] = 1
        elif area > BIG_ABOVE:
            out[index[f"big {obj.label}"]] = 1
    return out


def world_words() -> set[str]:
    """Every word the toy captions use, and every word of the truth labels and their synonyms."""
    from . import captions
    labels, synonyms, _ = truth_labels()
    phrases = [*labels, *(s for v in synonyms.values() for s in v), *COLOURS, *BACKGROUNDS]
    phrases += [w for v in captions._BG_WORDS.values() for w in v]
    phrases += [w for v in captions._SIZE_WORDS.values() for w in v]
    phrases += [t.replace("{objs}", " ").replace("{bg}", " ") for t in captions._TEMPLATES]
    return {w.strip(".,!:;").lower() for p in phrases for w in p.replace("-", " ").split() if w.strip(".,!:;")}


def _word_list(name: str) -> list[str]:
    from importlib import resources
    raw = resources.files("wonderwords.assets").joinpath(name).read_text(encoding="utf-8").split()
    return sorted({w.lower() for w in raw if w.isalpha() and 3 <= len(w) <= 12})


@lru_cache(maxsize=1)
def _clean_words() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(nouns, adjectives) of the word list sharing no BPE token with :func:`world_words`."""
    import open_clip
    tok = open_clip.get_tokenizer("RN50")  # the BPE the toy models' text towers read

    def tokens(w: str) -> set[int]:
        return set(tok.encode(w))
    known = set().union(*(tokens(w) for w in world_words()))
    nouns = tuple(w for w in _word_list("nounlist.txt") if not tokens(w) & known)
    adjectives = tuple(w for w in _word_list("adjectivelist.txt") if not tokens(w) & known and w not in nouns)
    return nouns, adjectives


def distractor_words(n: int, seed: int = DISTRACTOR_SEED, exclude: frozenset[str] = frozenset()) -> list[str]:
    """``n`` distinct distractor labels: the clean nouns in a seeded order, then adjective-noun
    compounds drawn with the same seed (deterministic; a prefix of a longer list). Words in
    ``exclude`` (e.g. those a sentence generator writes around the labels) are left out too."""
    nouns, adjectives = _clean_words()
    if exclude:
        nouns = tuple(w for w in nouns if w not in exclude)
        adjectives = tuple(w for w in adjectives if w not in exclude)
    rng = np.random.default_rng(seed)
    out = [nouns[i] for i in rng.permutation(len(nouns))][:n]
    seen = set(out)
    while len(out) < n:
        word = f"{adjectives[int(rng.integers(len(adjectives)))]} {nouns[int(rng.integers(len(nouns)))]}"
        if word not in seen:
            seen.add(word)
            out.append(word)
    return out


@dataclass(frozen=True)
class LargeVocab:
    """Labels (the ``n_truth`` with truth first, then distractors), synonyms and parents."""

    labels: tuple[str, ...]
    n_truth: int
    synonyms: dict[str, tuple[str, ...]] = field(default_factory=dict)
    parents: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def truth(self) -> tuple[str, ...]:
        return self.labels[: self.n_truth]


def large_vocabulary(n_labels: int | None = None, exclude: frozenset[str] = frozenset()) -> LargeVocab:
    """The labels with truth, plus distractors up to ``n_labels`` in all (None: no distractors),
    none of them using a word of ``exclude``."""
    labels, synonyms, parents = truth_labels()
    n = len(labels) if n_labels is None else int(n_labels)
    if n < len(labels):
        raise ValueError(f"the large toy vocabulary has {len(labels)} labels with truth; asked for {n}")
    extra = distractor_words(n - len(labels), exclude=frozenset(exclude)) if n > len(labels) else []
    logger.info("large toy vocabulary: %d labels with truth, %d distractors", len(labels), len(extra))
    return LargeVocab(labels + tuple(extra), len(labels), dict(synonyms), dict(parents))
