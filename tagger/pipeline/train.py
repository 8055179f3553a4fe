"""The train stage: embed a corpus's sentences with CLIP's text tower and fit the text-only classifier.

The classifier learns from the corpus's targets (:meth:`~tagger.text.TextCorpus.targets`): with a
label hierarchy recorded in the corpus, a sentence about a label counts as being about each of its
ancestors too, so "vehicle" is learnt from sentences about cars as well as its own.
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any

from ..ids import short_sha256
from ..store.atomic import atomic_open

if TYPE_CHECKING:
    from ..workspace import Workspace

__all__ = ["corpus_embeddings", "run_train"]

logger = logging.getLogger(__name__)


def corpus_embeddings(workspace: "Workspace", clip, corpus) -> tuple[Any, int]:
    """Text embeddings of every sentence of ``corpus``, cached next to the corpus per model.

    Sentences already embedded for the corpus this one extends are taken from its cache, so a
    nightly run embeds (and tokenises) only its new sentences. Returns (embeddings, newly embedded).
    """
    import numpy as np

    path = workspace.text_embeddings(corpus.corpus_id, clip.model_id)
    if path.exists():
        emb = np.load(path)
        if emb.shape[0] == len(corpus.sentences):
            return emb, 0
    known: dict[str, Any] = {}
    parent = (corpus.config or {}).get("extends")
    parent_file = workspace.text_embeddings(parent, clip.model_id) if parent else None
    if parent_file is not None and parent_file.exists():
        from ..text import TextCorpus
        prev = TextCorpus.load(workspace.text_dir(parent))
        prev_emb = np.load(parent_file)
        if prev_emb.shape[0] == len(prev.sentences):
            known = dict(zip(prev.sentences, prev_emb))
    todo = sorted({s for s in corpus.sentences if s not in known})
    known.update(zip(todo, clip.encode_text(todo)))
    emb = np.stack([known[s] for s in corpus.sentences]).astype(np.float32)
    with atomic_open(path) as fh:
        np.save(fh, emb)
    return emb, len(todo)


def run_train(workspace: "Workspace", model: str, pretrained: str | None = None, corpus_id: str | None = None,
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
        classifier_id = short_sha256(ident)
        out = workspace.classifier_dir(classifier_id)
        if not (out / "score_config.json").exists():
            emb, n_new = corpus_embeddings(workspace, clip, corpus)
            logger.info("corpus %s: %d sentences, %d embedded now", corpus_id, len(emb), n_new)
            m = fit_comc(clip, corpus.class_names, None, cfg, corpus=replace(corpus, label_matrix=corpus.targets()),
                         embeddings=emb)
            tmp = out.with_name(out.name + ".tmp")
            save_comc(m, tmp)
            tmp.replace(out) if not out.exists() else None
        cat.add_classifier(classifier_id, model_id=clip.model_id, labels=list(corpus.class_names),
                           corpus_id=corpus_id, config={"train": asdict(cfg.train), "score": asdict(cfg.score)},
                           path=workspace.relative(out))
    return {"classifier_id": classifier_id, "corpus_id": corpus_id, "labels": len(corpus.class_names),
            "model_id": clip.model_id}
