"""A fake text tower for tests of what training reads from a corpus: fixed random directions, and
sentence vectors made of noise from the text plus one direction per meaning of a word it knows."""
from __future__ import annotations

import zlib

import numpy as np

D = 32  # embedding width


def unit(seed: int) -> np.ndarray:
    """A unit vector of width :data:`D`, fixed by ``seed``."""
    v = np.random.default_rng(seed).normal(size=D)
    return v / np.linalg.norm(v)


def embed(corpus, known: dict[str, int]) -> np.ndarray:
    """Each sentence of ``corpus`` as a tower reading the words of ``known`` only (word -> its meaning):
    noise seeded by the sentence, plus 3 times a direction per meaning of a known word it holds."""
    rows = []
    for s in corpus.sentences:
        v = np.random.default_rng(zlib.crc32(s.encode())).normal(scale=0.3, size=D)
        for j in {j for w, j in known.items() if w in s.lower()}:
            v += 3 * unit(100 + j)
        rows.append(v)
    return np.asarray(rows, np.float32)
