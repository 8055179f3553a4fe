"""CoMC fitted on the corpus its config asks for: the text layer builds the corpus
(:func:`~tagger.text.corpus.comc_corpus`) and hands it to :func:`tagger.method.comc.fit_comc`, which sits
below this layer and takes a corpus rather than building one."""
from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Sequence

from .base import SentenceGenerator
from .corpus import comc_corpus
from .terms import trainable

if TYPE_CHECKING:
    from ..method.comc import ComcConfig, ComcModel
    from .corpus import TextCorpus

__all__ = ["fit_comc_corpus", "fit_comc_generated"]


def fit_comc_generated(clip, class_names: Sequence[str], synonyms: Mapping[str, Sequence[str]] | None = None,
                       cfg: "ComcConfig | None" = None, generator: SentenceGenerator | None = None) -> "ComcModel":
    """CoMC for ``class_names`` on ``cfg``'s corpus from ``generator`` (offline, seeded, when None), less
    the sentences of synonyms the text tower does not read, labels it reads as one thing trained on
    each other's sentences (:mod:`.terms`; the classifier's metrics name both)."""
    from ..method.comc import ComcConfig  # lazily: it loads torch
    cfg = cfg or ComcConfig()
    return fit_comc_corpus(clip, comc_corpus(class_names, synonyms, cfg, generator), cfg)


def fit_comc_corpus(clip, corpus: "TextCorpus", cfg: "ComcConfig | None" = None) -> "ComcModel":
    """CoMC on ``corpus`` (its label rows as the generator named them) as a training reads it: less
    the unread synonyms' marks, alike labels sharing sentences, the hierarchy's ancestors set."""
    import numpy as np

    from ..method.comc import ComcConfig, fit_comc  # lazily: it loads torch
    cfg = cfg or ComcConfig()
    kept = trainable(corpus, np.asarray(clip.encode_text(list(corpus.sentences)), np.float32), cfg.min_term_reading,
                     cfg.min_alike)
    model = fit_comc(clip, list(corpus.labels), None, cfg, corpus=kept.corpus, embeddings=kept.embeddings)
    model.classifier = kept.marked(model.classifier)
    return model
