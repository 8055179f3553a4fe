"""Drivers of the text side: generate a corpus for the active labels, train a classifier on it."""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def _labels_and_synonyms(cat) -> tuple[list[str], dict[str, list[str]]]:
    labels = [lab for lab in cat.list_labels(include_retired=False)]
    if not labels:
        from ..errors import ConfigError
        raise ConfigError("no active labels: add some with `tagger labels add`")
    return [lab.name for lab in labels], {lab.name: list(lab.synonyms or []) for lab in labels}


def run_generate_text(workspace, n_sentences: int = 20000, seed: int = 0, llm_config=None,
                      incremental: bool = True, max_missing: float = 0) -> dict[str, Any]:
    """Build the text corpus of the active labels; LLM when configured, else offline.

    With ``incremental`` (the default) the newest corpus made with the same ``n_sentences``,
    ``seed`` and generator is reused as it is when the vocabulary (labels and synonyms) did not
    change, extended with sentences for new label sets only when it did (a label whose synonyms
    changed gets its generated sentences written again), and completed when it lacks sentences.
    Other settings build a new corpus. More label sets without a sentence than ``max_missing``
    allows (a fraction below 1, else a count) raise
    :class:`~tagger.errors.IncompleteCorpusError` and record nothing; LLM sentences are cached by
    (label set, prompt version, model) in the workspace, so the rerun requests only those missing.
    """
    from ..catalog import Catalog
    from ..text import TextCorpus, generator_from_config
    from ..text.corpus import missing_label_sets
    from ..text.incremental import update_corpus

    with Catalog.for_job(workspace.catalog, "generate-text") as cat:
        labels, synonyms = _labels_and_synonyms(cat)
        gen = generator_from_config(labels, synonyms, llm_config=llm_config, cache_dir=workspace.llm_cache,
                                    seed=seed)
        try:
            corpus, how = update_corpus(cat.corpora() if incremental else [],
                                        lambda cid: TextCorpus.load(workspace.text_dir(cid)), labels, synonyms,
                                        gen, n_sentences, seed, max_missing=max_missing)
        finally:
            getattr(gen, "close", lambda: None)()
        out = workspace.text_dir(corpus.corpus_id)
        if not (out / "corpus.json").exists():
            corpus.save(out)
        cat.add_corpus(corpus.corpus_id, len(corpus.sentences), labels=labels, path=str(out),
                       config=corpus.config)
    missing = missing_label_sets(corpus)
    logger.info("corpus %s (%s): %d sentences for %d labels", corpus.corpus_id, how, len(corpus.sentences),
                len(labels))
    if missing:
        logger.warning("corpus %s lacks sentences for %d label sets (within the tolerance)", corpus.corpus_id, missing)
    return {"corpus_id": corpus.corpus_id, "corpus": how, "n_sentences": len(corpus.sentences),
            "labels": len(labels), "missing_label_sets": missing, "stats": corpus.stats}


def _embedding_file(workspace, corpus_id: str, model_id: str) -> Path:
    return workspace.text_dir(corpus_id) / f"embeddings-{model_id}.npy"


def corpus_embeddings(workspace, clip, corpus) -> tuple[Any, int]:
    """Text embeddings of every sentence of ``corpus``, cached next to the corpus per model.

    Sentences already embedded for the corpus this one extends are taken from its cache, so a
    nightly run embeds (and tokenises) only its new sentences. Returns (embeddings, newly embedded).
    """
    import numpy as np

    path = _embedding_file(workspace, corpus.corpus_id, clip.model_id)
    if path.exists():
        emb = np.load(path)
        if emb.shape[0] == len(corpus.sentences):
            return emb, 0
    known: dict[str, Any] = {}
    parent = (corpus.config or {}).get("extends")
    parent_file = _embedding_file(workspace, parent, clip.model_id) if parent else None
    if parent_file is not None and parent_file.exists():
        from ..text import TextCorpus
        prev = TextCorpus.load(workspace.text_dir(parent))
        prev_emb = np.load(parent_file)
        if prev_emb.shape[0] == len(prev.sentences):
            known = dict(zip(prev.sentences, prev_emb))
    todo = sorted({s for s in corpus.sentences if s not in known})
    known.update(zip(todo, clip.encode_text(todo)))
    emb = np.stack([known[s] for s in corpus.sentences]).astype(np.float32)
    tmp = path.with_name(path.stem + ".tmp.npy")
    np.save(tmp, emb)
    tmp.replace(path)
    return emb, len(todo)


def run_train(workspace, model: str, pretrained: str | None = None, corpus_id: str | None = None,
              cfg=None) -> dict[str, Any]:
    """Train the text-only classifier (and its memory banks) for ``model`` on a corpus."""
    from ..catalog import Catalog
    from ..method.comc import ComcConfig, fit_comc, save_comc
    from ..models import load_clip
    from ..text import TextCorpus

    cfg = cfg or ComcConfig()
    with Catalog.for_job(workspace.catalog, "train") as cat:
        corpora = cat.corpora()
        if corpus_id is None:
            if not corpora:
                from ..errors import ConfigError
                raise ConfigError("no text corpus yet: run generate-text first")
            corpus_id = corpora[-1]["corpus_id"]
        corpus = TextCorpus.load(workspace.text_dir(corpus_id))
        clip = load_clip(model, pretrained)
        ident = json.dumps([clip.model_id, corpus_id, asdict(cfg.train), asdict(cfg.score), cfg.memory_size])
        classifier_id = hashlib.sha256(ident.encode()).hexdigest()[:16]
        out = workspace.classifier_dir(classifier_id)
        if not (out / "score_config.json").exists():
            emb, n_new = corpus_embeddings(workspace, clip, corpus)
            logger.info("corpus %s: %d sentences, %d embedded now", corpus_id, len(emb), n_new)
            m = fit_comc(clip, corpus.class_names, None, cfg, corpus=corpus, embeddings=emb)
            tmp = out.with_name(out.name + ".tmp")
            save_comc(m, tmp)
            tmp.replace(out) if not out.exists() else None
        cat.add_classifier(classifier_id, model_id=clip.model_id, labels=list(corpus.class_names),
                           corpus_id=corpus_id, config={"train": asdict(cfg.train), "score": asdict(cfg.score)},
                           path=str(out))
    return {"classifier_id": classifier_id, "corpus_id": corpus_id, "labels": len(corpus.class_names),
            "model_id": clip.model_id}


def latest_classifier(cat, model_id: str) -> dict[str, Any]:
    """The newest classifier trained for ``model_id``."""
    found = [c for c in cat.classifiers() if c["model_id"] == model_id]
    if not found:
        from ..errors import ConfigError
        raise ConfigError(f"no classifier for {model_id}: run train first")
    return found[-1]


def ensure_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
