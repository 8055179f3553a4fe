"""A grammar-based sentence generator that needs no network: deterministic, varied, always valid."""
from __future__ import annotations

import logging
import random
import re
from collections.abc import Sequence
from typing import Any

from ..method.names import reads_plural, starts_with_article
from .vocab import Vocabulary

logger = logging.getLogger(__name__)

GRAMMAR_VERSION = "offline-v1"

_STYLES = ("photo", "picture", "snapshot", "image", "shot", "photograph")
_QUALITIES = ("clear", "blurry", "bright", "dim", "colorful", "candid", "sharp", "grainy",
              "well-lit", "casual", "close-up", "wide-angle")
_ADJECTIVES = ("red", "blue", "green", "yellow", "white", "black", "brown", "orange", "pink",
               "purple", "grey", "small", "large", "tiny", "big", "little", "old", "shiny",
               "bright", "dark", "striped", "plain", "colorful", "faded")
_ADJECTIVE_SET = frozenset(_ADJECTIVES)
_COUNTS = ("two", "three", "four", "a few", "several", "some", "a couple of", "a pair of", "many")
_SCENES = ("on a wooden table", "in a sunny park", "against a plain wall", "on a busy street",
           "in a cozy living room", "on a white background", "in the grass", "at the beach",
           "in a kitchen", "under a cloudy sky", "near a window", "on the floor",
           "in an empty room", "by the road", "on a shelf", "in the garden", "at night",
           "in the afternoon light", "on a dark background", "in the middle of the frame",
           "in a crowded scene", "outdoors", "indoors", "in the foreground")

# Frames over the whole list of noun phrases. {be}/{verb_s} agree with the subject's number.
_LIST_FRAMES = (
    "a {style} of {objs} {scene}.",
    "{objs} {scene}.",
    "there {be} {objs} {scene}.",
    "this {style} shows {objs}.",
    "a {quality} {style} featuring {objs}.",
    "in this {style}, {objs} {be} visible {scene}.",
    "{objs} {be} shown {scene} in this {style}.",
    "a close-up of {objs}.",
    "you can see {objs} {scene}.",
    "{objs} {be} sitting {scene}.",
    "an image with {objs} {scene}.",
    "{objs} captured {scene}.",
    "a {quality} {style}: {objs} {scene}.",
    "{objs} appear{verb_s} {scene} in a {quality} {style}.",
    "someone took a {style} of {objs} {scene}.",
    "{scene}, {objs} can be seen.",
    "a {quality} view of {objs}.",
)
# Frames that split the phrases into a first one and the rest (two or more labels).
_PAIR_FRAMES = (
    "{first} next to {rest} {scene}.",
    "{first} {be1} beside {rest}.",
    "a {style} of {first} with {rest} nearby.",
    "{first} surrounded by {rest} {scene}.",
    "{first} in front of {rest} {scene}.",
    "{first} alongside {rest}, {scene}.",
    "{first} {be1} placed near {rest} in this {style}.",
    "a {quality} {style} where {first} and {rest} share the frame.",
)
# Frames for a single label.
_SINGLE_FRAMES = (
    "just {objs} {scene}.",
    "nothing but {objs} {scene}.",
    "a {quality} {style} with {objs} as the only subject.",
    "{objs}, alone {scene}.",
)


def generator_words() -> frozenset[str]:
    """Every word this grammar and the template sentences write around the labels (lower case):
    a label made of one of them would be named by sentences not about it."""
    from .templates import PHOTO_TEMPLATE, PROMPT_TEMPLATES
    texts = (*_STYLES, *_QUALITIES, *_ADJECTIVES, *_COUNTS, *_SCENES, *_LIST_FRAMES, *_PAIR_FRAMES,
             *_SINGLE_FRAMES, *PROMPT_TEMPLATES, PHOTO_TEMPLATE, "and with as well")
    words = re.sub(r"\{[a-z_0-9]*\}", " ", " ".join(texts).lower())
    return frozenset(w for w in re.split(r"[^a-z0-9']+", words) if w)


def _article(text: str) -> str:
    return "an" if text[:1].lower() in "aeiou" else "a"


def _listed(name: str) -> str:
    """``name`` as one item of a plain listing: with its article, unless it has one or reads plural."""
    return name if starts_with_article(name) or reads_plural(name) else f"{_article(name)} {name}"


def _join(parts: list[str], rng: random.Random) -> str:
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        return f"{parts[0]} {rng.choice(('and', 'and', 'with', 'as well as'))} {parts[1]}"
    comma = "," if rng.random() < 0.3 else ""
    return ", ".join(parts[:-1]) + f"{comma} and {parts[-1]}"


class OfflineGenerator:
    """Grammar + synonym sentence generator; every sentence mentions every label.

    Output depends only on the seed and the input label sets (each ``generate`` call restarts
    from the seed). Label order is shuffled, names are sometimes synonyms, quantities and
    adjectives vary, and the sentence frame is drawn from many list/pair/single-label frames.
    """

    def __init__(self, vocab: Vocabulary, seed: int = 0, synonym_prob: float = 0.3,
                 plural_prob: float = 0.3, adjective_prob: float = 0.4) -> None:
        self.vocab = vocab
        self.seed = seed
        self.synonym_prob = synonym_prob
        self.plural_prob = plural_prob
        self.adjective_prob = adjective_prob
        self._names: set[str] | None = None  # every label and synonym, casefolded (built on first use)

    def identity(self) -> dict[str, Any]:
        return {"kind": "offline", "grammar": GRAMMAR_VERSION, "seed": self.seed,
                "synonym_prob": self.synonym_prob, "plural_prob": self.plural_prob,
                "adjective_prob": self.adjective_prob}

    def generate(self, label_sets: Sequence[Sequence[str]]) -> list[str | None]:
        """One sentence per label set, all passing :meth:`Vocabulary.mentions_all`."""
        rng = random.Random(self.seed)
        return [self.sentence(labs, rng) for labs in label_sets]

    def sentence(self, labels: Sequence[str], rng: random.Random) -> str:
        """One sentence for ``labels``; falls back to a plain listing if a draw fails validation."""
        labs = list(labels)
        for _ in range(4):
            text = self._compose(labs, rng)
            if self.vocab.mentions_all(text, labs):
                return text
        logger.debug("offline sentence fell back to a plain listing for %s", labs)
        return _capitalise(f"a photo of {_join([_listed(x) for x in labs], rng)}.")

    def _phrase(self, label: str, rng: random.Random) -> tuple[str, bool]:
        """A noun phrase for one label and whether it is plural.

        The adjective is left out (after the same draws) when the name already starts with one, or
        when adjective and name would name another label ("red" + "hexagon" is the label "red
        hexagon"): the sentence would be about a label its set does not hold."""
        names = self.vocab.names(label)
        name = rng.choice(names[1:]) if len(names) > 1 and rng.random() < self.synonym_prob else label
        adj = rng.choice(_ADJECTIVES) + " " if rng.random() < self.adjective_prob else ""
        if adj and self._clashes(adj + name):
            adj = ""
        many = rng.random() < self.plural_prob
        count = rng.choice(_COUNTS) if many else None
        det = None if many else rng.choice(("a", "a", "a", "the", "one"))  # the same draws for every name
        if starts_with_article(name):  # as the user wrote it: no count, determiner or adjective before it
            return name, reads_plural(name)
        if reads_plural(name):  # already a plural: counted or with "the", never "a squares" nor "squareses"
            return f"{count or 'the'} {adj}{name}", True
        if many:
            return f"{count} {adj}{self.vocab.plural(name)}", True
        body = adj + name
        return f"{_article(body) if det == 'a' else det} {body}", False

    def _clashes(self, phrase: str) -> bool:
        """Whether ``adjective name`` is the name of a label, or the name has several words and
        starts with an adjective of the grammar ("red hexagon", "small star")."""
        if self._names is None:
            self._names = {n.casefold() for lab in self.vocab.labels for n in self.vocab.names(lab)}
        head, _, tail = phrase.partition(" ")[2].partition(" ")
        return bool(tail) and head.lower() in _ADJECTIVE_SET or phrase.casefold() in self._names

    def _compose(self, labels: list[str], rng: random.Random) -> str:
        order = labels[:]
        rng.shuffle(order)
        phrases = [self._phrase(lab, rng) for lab in order]
        texts = [p for p, _ in phrases]
        many = len(phrases) > 1 or phrases[0][1]
        slots = {"style": rng.choice(_STYLES), "quality": rng.choice(_QUALITIES),
                 "scene": rng.choice(_SCENES), "be": "are" if many else "is",
                 "verb_s": "" if many else "s"}
        pool = _LIST_FRAMES + (_PAIR_FRAMES if len(phrases) > 1 else _SINGLE_FRAMES)
        frame = rng.choice(pool)
        if "{first}" in frame:
            slots["first"] = texts[0]
            slots["rest"] = _join(texts[1:], rng)
            slots["be1"] = "are" if phrases[0][1] else "is"
        else:
            slots["objs"] = _join(texts, rng)
        return _capitalise(frame.format(**slots))


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]
