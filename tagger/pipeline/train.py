"""The train stage: embed a corpus's sentences with CLIP's text tower and fit the text-only classifier.

The classifier learns from the corpus's targets (:meth:`~tagger.text.TextCorpus.targets`): with a
label hierarchy recorded in the corpus, a sentence about a label counts as being about each of its
ancestors too, so "vehicle" is learnt from sentences about cars as well as its own.

Text embeddings are kept in the workspace: a corpus's sentences next to the corpus, the class
prompts of the memory banks (17 per label) in one file per model (:class:`TextMemo`), so a nightly
run that adds a few labels embeds the new sentences and the new labels' prompts only.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..ids import short_sha256
from ..atomic import atomic_dir, atomic_open

if TYPE_CHECKING:
    from ..method.classifier import TrainState
    from ..workspace import Workspace

__all__ = ["TextMemo", "TrainCheckpoint", "corpus_embeddings", "read_text_embeddings", "run_train",
           "write_text_embeddings"]

logger = logging.getLogger(__name__)


def read_text_embeddings(path) -> dict[str, Any]:
    """Text -> embedding from a file of :func:`write_text_embeddings` (empty when missing or unreadable)."""
    try:
        with np.load(path) as f:
            return dict(zip(f["texts"].tolist(), f["emb"].astype(np.float32)))
    except (OSError, ValueError, KeyError):
        return {}


def write_text_embeddings(path, known: dict[str, Any]) -> None:
    """Write text -> embedding to ``path`` (``.npz``, atomically)."""
    texts = list(known)
    emb = np.stack([known[t] for t in texts]).astype(np.float32) if texts else np.zeros((0, 0), np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as fh:
        np.savez(fh, texts=np.asarray(texts, dtype=str), emb=emb)


class TextMemo:
    """``clip`` whose ``encode_text`` embeds only texts it has not embedded before under its model,
    and keeps every embedding in ``path`` for later runs. ``n_embedded`` counts the new ones."""

    def __init__(self, clip, path) -> None:
        self.clip, self.path = clip, path
        self.known = read_text_embeddings(path)
        self.n_embedded = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.clip, name)

    def encode_text(self, texts, batch_size: int = 512):
        import numpy as np

        texts = list(texts)
        todo = [t for t in dict.fromkeys(texts) if t not in self.known]
        if todo:
            self.known.update(zip(todo, self.clip.encode_text(todo, batch_size)))
            write_text_embeddings(self.path, self.known)
            self.n_embedded += len(todo)
        if not texts:
            return self.clip.encode_text([])
        return np.stack([self.known[t] for t in texts]).astype(np.float32)


def corpus_embeddings(workspace: "Workspace", clip, corpus) -> tuple[Any, int]:
    """Text embeddings of every sentence of ``corpus``, cached next to the corpus per model.

    Sentences already embedded for the corpus this one extends are taken from its cache, so a
    nightly run embeds (and tokenises) only its new sentences. Returns (embeddings, newly embedded).
    """
    path = workspace.text_embeddings(corpus.corpus_id, clip.model_id)
    if path.exists():
        emb = np.load(path)
        if emb.shape[0] == len(corpus.sentences):
            return emb, 0
    row: dict[str, int] = {}  # sentence -> its row of prev_emb
    prev_emb = np.zeros((0, 0), np.float32)
    parent = (corpus.config or {}).get("extends")
    parent_file = workspace.text_embeddings(parent, clip.model_id) if parent else None
    if parent and parent_file is not None and parent_file.exists():
        from ..text import TextCorpus
        prev = TextCorpus.load(workspace.text_dir(parent))
        prev_emb = np.load(parent_file, mmap_mode="r")  # rows gathered below, never stacked one by one
        if prev_emb.shape[0] == len(prev.sentences):
            row = {s: i for i, s in enumerate(prev.sentences)}
    todo = sorted({s for s in corpus.sentences if s not in row})
    fresh = np.asarray(clip.encode_text(todo), np.float32)
    where = {s: i for i, s in enumerate(todo)}
    take = np.fromiter((row.get(s, -1) for s in corpus.sentences), np.int64, len(corpus.sentences))
    emb = np.empty((len(take), fresh.shape[1] if len(todo) else prev_emb.shape[1]), np.float32)
    old = take >= 0
    m = int(old.sum())
    if m and old[:m].all() and np.array_equal(take[:m], np.arange(m)):  # the parent's rows, then new ones
        emb[:m] = prev_emb[:m]
    elif m:
        emb[old] = prev_emb[take[old]]
    if len(todo):
        emb[~old] = fresh[[where[s] for s in np.asarray(corpus.sentences, object)[~old]]]
    with atomic_open(path) as fh:
        np.save(fh, emb)
    return emb, len(todo)


#: A training in progress writes its state at most this often (seconds), so a killed train resumes
#: from its last whole epoch; trainings shorter than this never write one.
CHECKPOINT_EVERY_S = 60.0
#: In a classifier's id where its corpus has a hierarchy: positives implied by a child take part in no pair.
HIERARCHY_LOSS = "implied-in-no-pair"


class TrainCheckpoint:
    """A training's state on disk, tied to the classifier it trains (``ident``: model, corpus and
    configs). A state of another training, or one that does not read, is ignored."""

    def __init__(self, path: Path, ident: str, every_s: float | None = None) -> None:
        self.path, self.ident = path, ident
        self.every_s = CHECKPOINT_EVERY_S if every_s is None else every_s
        self._last = time.monotonic()

    def load(self) -> "TrainState | None":
        """The kept state when it is this training's and reads whole, else None."""
        import torch

        from ..method.classifier import TrainState
        if not self.path.exists():
            return None
        try:
            d = torch.load(self.path, weights_only=True, map_location="cpu")
            if d.get("ident") != self.ident:
                return None
            state = TrainState(int(d["epoch"]), d["weight"].numpy().astype(np.float32), d["optimizer"], d["generator"],
                               [float(x) for x in d["losses"]])
            if len(state.losses) != state.epoch:
                raise ValueError(f"{len(state.losses)} losses for {state.epoch} epochs")
        except Exception as exc:  # a truncated or foreign file: train from the start
            logger.warning("ignoring the training state %s (%s)", self.path, exc)
            return None
        logger.info("resuming the training from epoch %d (%s)", state.epoch, self.path.name)
        return state

    def save(self, state: "TrainState") -> None:
        import torch

        if time.monotonic() - self._last < self.every_s:
            return
        with atomic_open(self.path) as fh:
            torch.save({"ident": self.ident, "epoch": state.epoch, "weight": torch.from_numpy(state.weight),
                        "optimizer": state.optimizer, "generator": state.generator, "losses": list(state.losses)}, fh)
        self._last = time.monotonic()

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def run_train(workspace: "Workspace", model: str, pretrained: str | None = None, corpus_id: str | None = None,
              cfg=None, *, clip=None) -> dict[str, Any]:
    """Train the text-only classifier (and its memory banks) for ``model`` on a corpus.

    ``clip`` is a text tower to use instead of loading ``model`` (anything with ``model_id`` and
    ``encode_text``, such as a loaded :class:`~tagger.models.ClipModel`)."""
    from ..catalog import Catalog
    from ..method.comc import ComcConfig
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
        if clip is None:
            from ..models import load_clip
            clip = load_clip(model, pretrained)
        ident = json.dumps([clip.model_id, corpus_id, asdict(cfg.train), asdict(cfg.score), cfg.memory_size,
                            cfg.min_term_reading, cfg.min_alike, *loss_rules(corpus)])
        classifier_id = short_sha256(ident)
        out = workspace.classifier_dir(classifier_id)
        read: dict[str, Any] = {}
        if not (out / "score_config.json").exists():
            read = _fit_and_save(workspace, clip, corpus, cfg, ident, out)
        cat.add_classifier(classifier_id, model_id=clip.model_id, labels=corpus.labels,
                           corpus_id=corpus_id, config={"train": asdict(cfg.train), "score": asdict(cfg.score)},
                           path=workspace.relative(out))
    return {"classifier_id": classifier_id, "corpus_id": corpus_id, "labels": len(corpus.labels),
            "model_id": clip.model_id, **read}


def loss_rules(corpus) -> list[str]:
    """What a classifier id (a full training's or an extension's) adds for a corpus with a
    hierarchy: its implied positives take part in no pair (:mod:`tagger.method.ranking`), unlike
    classifiers trained before that rule."""
    from ..text.corpus import corpus_parents
    return [HIERARCHY_LOSS] if corpus_parents(corpus.config) else []


def _fit_and_save(workspace: "Workspace", clip, corpus, cfg, ident: str, out: Path) -> dict[str, Any]:
    """Fit CoMC on ``corpus`` as its text tower reads it (:mod:`tagger.text.terms`) and save it into
    ``out``, resuming from a checkpoint of the same training; returns what was left out or shared."""
    from ..method.comc import fit_comc, save_comc
    from ..text.terms import trainable

    emb, n_new = corpus_embeddings(workspace, clip, corpus)
    logger.info("corpus %s: %d sentences, %d embedded now", corpus.corpus_id, len(emb), n_new)
    memo = TextMemo(clip, workspace.prompt_embeddings(clip.model_id))
    ckpt = TrainCheckpoint(workspace.train_checkpoint(out.name), ident)
    kept = trainable(corpus, emb, cfg.min_term_reading, cfg.min_alike)  # ancestors set after unread terms go
    del emb  # a corpus with sentences left out holds its own copy: the whole one goes
    resume = ckpt.load()
    try:
        m = fit_comc(memo, corpus.labels, None, cfg, corpus=kept.corpus, embeddings=kept.embeddings, resume=resume,
                     on_epoch=ckpt.save)
    except (ValueError, RuntimeError, KeyError) as exc:
        if resume is None:
            raise
        logger.warning("the training state %s does not fit this training (%s): training from the start",
                       ckpt.path, exc)
        ckpt.remove()
        m = fit_comc(memo, corpus.labels, None, cfg, corpus=kept.corpus, embeddings=kept.embeddings,
                     on_epoch=ckpt.save)
    logger.info("class prompts: %d embedded now, %d reused", memo.n_embedded, len(memo.known) - memo.n_embedded)
    m.classifier = kept.marked(m.classifier)
    with atomic_dir(out, replace=False) as tmp:  # a concurrent train of the same id keeps its own
        save_comc(m, tmp)
    ckpt.remove()
    return kept.summary()
