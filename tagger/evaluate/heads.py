"""Evaluation heads built on the text side: CoMC fitted on text for a dataset's own classes."""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np

from ..method.comc import ComcConfig, fit_comc
from ..text import comc_corpus
from ..toyworld.vocab import LABEL_SYNONYMS

logger = logging.getLogger(__name__)


def toy_synonyms(class_names: Sequence[str]) -> dict[str, Sequence[str]]:
    """The toy world's synonyms of those ``class_names`` it knows (none for other datasets)."""
    return {c: LABEL_SYNONYMS[c] for c in class_names if c in LABEL_SYNONYMS}


def comc_head(cfg: ComcConfig | None = None) -> Callable[..., np.ndarray]:
    """A harness head: fit CoMC on text for the dataset's classes, then score the stored features.

    ``synonyms`` given to the head win; else the toy world's synonyms of the classes are used.
    """
    def score(clip, test, synonyms=None, **_: object) -> np.ndarray:
        synonyms = synonyms or toy_synonyms(test.class_names)
        model = fit_comc(clip, test.class_names, synonyms, cfg, corpus=comc_corpus(test.class_names, synonyms, cfg))
        return model.scores(test.global_, test.patches.astype(np.float32))
    return score
