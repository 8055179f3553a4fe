"""The CoMC model: fit on text for a set of class names, score images, save and load it.

Fitting runs text corpus -> text embeddings -> classifier + memory banks; the stages live in their
own modules (``classifier``, ``mapping``, ``scoring``) and this one glues them. The corpus comes
from the caller (:func:`tagger.text.comc_corpus` builds the offline one a config asks for): the
text layer sits above this one. Saving and loading stay here, beside the model they write.
Synonyms come from the caller (the evaluation side passes the toy world's); nothing here knows a
dataset.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from ..atomic import atomic_write_text
from .mapping import MemoryBank
from .readout import ReadoutState
from .alike import MIN_ALIKE
from .reading import MIN_READING
from .scoring import ScoreConfig, comc_scores
from .classifier import TextClassifier, TrainConfig, train_classifier
from .hierarchy import implied_labels
from .zeroshot import ENSEMBLE_PROMPTS, SINGLE_PROMPT, class_embeddings

__all__ = ["ComcConfig", "ComcModel", "build_memories", "fit_comc", "load_comc", "save_comc"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ComcConfig:
    """Text-side configuration of a CoMC model (inference knobs live in ``ScoreConfig``)."""

    n_sentences: int = 20000
    text_seed: int = 0
    max_labels: int = 5
    include_templates: bool = True
    memory_size: int = 20000  # sentence-bank rows (for memory="sentences")
    background: int | None = None  # background nouns in the corpus (tagger.text.background); None: by vocabulary size
    min_term_reading: float = MIN_READING  # a synonym read less is left out of training (tagger.method.reading)
    min_alike: float = MIN_ALIKE  # labels whose directions are this close train on each other's sentences (.alike)
    train: TrainConfig = field(default_factory=TrainConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)


@dataclass
class ComcModel:
    """A trained classifier plus the memory banks it can map images with."""

    classifier: TextClassifier
    memories: dict[str, MemoryBank]
    score: ScoreConfig

    def memory(self, kind: str | None = None) -> MemoryBank | None:
        kind = kind or self.score.memory
        if kind == "none":
            return None
        if kind not in self.memories:
            raise ValueError(f"memory {kind!r} not built; have {sorted(self.memories)}")
        return self.memories[kind]

    def scores(self, g: np.ndarray, p: np.ndarray | None, score: ScoreConfig | None = None,
               state: ReadoutState | None = None) -> np.ndarray:
        """Scores ``(n, C)``; ``state``: the images' readout state over the scoring memory, when
        already computed (:mod:`tagger.method.readout`)."""
        cfg = score or self.score
        return comc_scores(g, p, self.classifier.weight, self.memory(cfg.memory), cfg, state)

    @property
    def labels(self) -> list[str]:
        return self.classifier.labels


def build_memories(clip, class_names: Sequence[str], sentence_emb: np.ndarray | None, size: int,
                   seed: int = 0) -> dict[str, MemoryBank]:
    """The memory variants: class prompts (single, ensemble) and a bank of corpus sentences."""
    mem = {"prompts": MemoryBank(class_embeddings(clip, class_names, SINGLE_PROMPT), "prompts"),
           "prompts-ensemble": MemoryBank(class_embeddings(clip, class_names, ENSEMBLE_PROMPTS), "prompts")}
    if sentence_emb is not None and len(sentence_emb):
        rng = np.random.default_rng(seed)
        idx = np.sort(rng.choice(len(sentence_emb), size=min(size, len(sentence_emb)), replace=False))
        mem["sentences"] = MemoryBank(sentence_emb[idx], "sentences")
    return mem


def fit_comc(clip, class_names: Sequence[str], synonyms: Mapping[str, Sequence[str]] | None = None,
             cfg: ComcConfig | None = None, *, corpus, embeddings=None, resume=None, on_epoch=None) -> ComcModel:
    """Embed ``corpus`` with CLIP's text tower (unless its ``embeddings`` are given, row-aligned with
    the sentences), train, build memories.

    The corpus comes from the text layer above this one (:func:`tagger.text.comc_corpus` builds the one
    ``cfg`` asks for; :func:`tagger.text.comcfit.fit_comc_generated` builds it and calls this).
    ``synonyms`` are the corpus's own (it was built with them); nothing here reads them again.
    ``resume`` and ``on_epoch`` go to :func:`~tagger.method.classifier.train_classifier` (checkpoints).
    A corpus with background nouns (:mod:`tagger.text.background`) trains a row for each beside the
    labels; the classifier keeps only the labels' rows.
    """
    cfg = cfg or ComcConfig()
    emb = clip.encode_text(list(corpus.sentences)) if embeddings is None else np.asarray(embeddings, np.float32)
    if emb.shape[0] != len(corpus.sentences):
        raise ValueError(f"{emb.shape[0]} embeddings for {len(corpus.sentences)} sentences")
    config = getattr(corpus, "config", None)
    implied = implied_labels(corpus.label_matrix, list(corpus.class_names),
                             config.get("parents") if isinstance(config, Mapping) else None)
    clf = train_classifier(emb, corpus.label_matrix, list(corpus.class_names), clip.model_id, corpus.corpus_id,
                           cfg.train, resume=resume, on_epoch=on_epoch, implied=implied)
    if corpus.background:  # trained beside the labels, never tagged (tagger.text.background)
        clf = clf.only(corpus.labels)
    generated = np.array([src == "generated" for src in corpus.sources], bool)
    memories = build_memories(clip, class_names, emb[generated], cfg.memory_size, cfg.text_seed)
    return ComcModel(clf, memories, cfg.score)


def save_comc(model: ComcModel, directory) -> None:
    """Write classifier, memory banks and score config into ``directory``."""
    from pathlib import Path
    d = Path(directory)
    model.classifier.save(d)
    for kind, bank in model.memories.items():
        bank.save(d / f"memory-{kind}.npy")
    atomic_write_text(d / "score_config.json", json.dumps(model.score.to_dict(), indent=2))


def load_comc(directory) -> ComcModel:
    """Load what :func:`save_comc` wrote."""
    from pathlib import Path
    d = Path(directory)
    clf = TextClassifier.load(d)
    memories = {p.stem[len("memory-"):]: MemoryBank.load(p, "sentences" if "sentences" in p.stem else "prompts")
                for p in sorted(d.glob("memory-*.npy"))}
    score = ScoreConfig(**json.loads((d / "score_config.json").read_text()))
    return ComcModel(clf, memories, score)
