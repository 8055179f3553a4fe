"""Background nouns: words outside the vocabulary that a small vocabulary's corpus also writes about.

A classifier trained only on sentences about its own labels learns to tell them from each other, not
from anything else: with two or three labels nearly every image scores high on one of them (toy world,
``square`` and ``lightning bolt``: 914 and 627 positives of 1,000 images where 141 and 151 show
them). A few ordinary nouns drawn from a general English word list are added to the label sets of a
small vocabulary's corpus: sentences name them beside the labels, the classifier learns a row for each
and the rows are dropped after training, so that an image of something the vocabulary does not name
has somewhere to go other than the nearest label. Only the user's labels are ever tagged.

The nouns are the first of a seeded order of the word list (wonderwords' nouns, its rude words left
out, and the words the offline grammar frames sentences with) that share no word with a label or
synonym and are no other spelling of one (``sports car`` stays out when ``car`` is a label, ``bowtie``
when ``bow tie`` is; compared NFKC- and case-folded), as
many as :func:`background_count` gives the vocabulary's size; a vocabulary of ``LARGE`` labels or more
gets none: its labels are each other's negatives, and the nouns take a share of a fixed number of
sentences from them (toy world, validation split: at 20 labels 20 nouns cost toy-vit 0.019 of mean
F1), and at 2 or 3 labels 50 nouns did better than 100 (mean F1 over both toy models 0.72 against 0.64
at 2 labels, 0.62 against 0.59 at 3; ``bench/small_vocab.py``). A noun that names a kind of a label
(``puppy`` for ``dog``) is not recognised as such and would take some of the label's images: the word
list is mostly unrelated words, and ``ComcConfig.background = 0`` turns the nouns off.
"""
from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from functools import lru_cache
from importlib import resources

from .offline import generator_words
from .vocab import fold, term_keys, word_stems

__all__ = ["LARGE", "PER_LABEL", "apart", "background_count", "background_nouns", "noun_list"]

logger = logging.getLogger(__name__)

#: Background nouns a vocabulary of n labels gets: ``min(MAX, round(PER_LABEL / n))`` below ``LARGE``
#: labels (chosen on the toy world's validation split, docs/decisions.md).
PER_LABEL = 400
MAX = 50
LARGE = 16


def background_count(n_labels: int) -> int:
    """How many background nouns a vocabulary of ``n_labels`` labels gets."""
    if n_labels <= 0 or n_labels >= LARGE:
        return 0
    return min(MAX, round(PER_LABEL / n_labels))


@lru_cache(maxsize=1)
def noun_list() -> tuple[str, ...]:
    """The general word list's nouns: lower-case letters only, 3 to 12 of them, none of its rude words
    and none the sentence writers use around the labels (``painting``, ``view``: every sentence so
    framed would name one); sorted, unique."""
    assets = resources.files("wonderwords.assets")
    raw = assets.joinpath("nounlist.txt").read_text(encoding="utf-8").split()
    rude = {w.lower() for w in assets.joinpath("profanitylist.txt").read_text(encoding="utf-8").split()}
    words = {w.lower() for w in raw if w.isascii() and w.isalpha() and 3 <= len(w) <= 12}
    return tuple(sorted(words - rude - generator_words()))


def apart(nouns: Sequence[str], labels: Sequence[str]) -> list[str]:
    """``nouns`` less any that is one of ``labels`` once folded (a label the user added later, ``Nut``
    for the noun ``nut``): a corpus's background and its labels never share a name."""
    taken = {fold(x) for x in labels}
    return [n for n in nouns if fold(n) not in taken]


def background_nouns(labels: Sequence[str], synonyms: Mapping[str, Sequence[str]] | None = None,
                     seed: int = 0, count: int | None = None) -> list[str]:
    """The background nouns of this vocabulary (module docstring): ``count`` of them, by default
    :func:`background_count` of the number of labels; the same vocabulary and seed give the same nouns,
    and a vocabulary that grows keeps a prefix of them."""
    n = background_count(len(labels)) if count is None else max(0, int(count))
    if not n:
        return []
    taken: set[str] = set()
    keys: set[str] = set()
    for lab in labels:
        for term in (lab, *((synonyms or {}).get(lab) or ())):
            taken |= word_stems(term)
            keys |= term_keys(term)
    order = list(noun_list())
    random.Random(f"background:{seed}").shuffle(order)
    out = []
    for noun in order:
        if not word_stems(noun) & taken and not term_keys(noun) & keys:
            out.append(noun)
            if len(out) == n:
                break
    return out
