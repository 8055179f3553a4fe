"""The toy world's vocabulary: object labels, their synonyms, colours and backgrounds."""
from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

# Label name -> synonyms used by captions and by the text validator. Names are plain English.
LABEL_SYNONYMS: dict[str, tuple[str, ...]] = {
    "circle": ("disc", "dot", "round shape"),
    "square": ("box", "block"),
    "triangle": ("wedge", "three-sided shape"),
    "star": ("starburst", "five-pointed star"),
    "heart": ("love heart",),
    "cross": ("plus sign", "plus"),
    "ring": ("hoop", "donut"),
    "diamond": ("rhombus", "lozenge"),
    "hexagon": ("six-sided shape", "hex"),
    "moon": ("crescent", "crescent moon"),
    "arrow": ("pointer",),
    "pentagon": ("five-sided shape",),
    "flower": ("blossom", "daisy"),
    "tree": ("pine tree", "fir"),
    "house": ("cottage", "hut"),
    "lightning bolt": ("bolt", "zigzag"),
    "fish": ("goldfish",),
    "umbrella": ("parasol",),
    "key": ("door key",),
    "bell": ("chime",),
}

LABELS: tuple[str, ...] = tuple(LABEL_SYNONYMS)

PLURALS: dict[str, str] = {"cross": "crosses", "fish": "fish", "lightning bolt": "lightning bolts"}

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 210, 40),
    "orange": (240, 140, 30),
    "purple": (140, 60, 190),
    "pink": (240, 130, 190),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
    "cyan": (40, 200, 210),
    "brown": (130, 80, 40),
    "grey": (128, 128, 128),
}

BACKGROUNDS: tuple[str, ...] = ("plain", "gradient", "stripes", "checks", "speckles")

# Captions call an object "small" below this fraction of the image and "big" above the other.
SMALL_BELOW = 0.04
BIG_ABOVE = 0.12


def plural(name: str) -> str:
    """Plural form of a label or synonym, as the toy captions use it.

    Not :func:`tagger.text.vocab.plural`: that one says "daisies" where this says "daisys", and the
    shipped toy weights (and the retrieval numbers measured on captions) were made with this one.
    """
    if name in PLURALS:
        return PLURALS[name]
    if name.endswith(("s", "x", "sh", "ch")):
        return name + "es"
    return name + "s"
