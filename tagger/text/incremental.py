"""Grow a corpus when the vocabulary changes, paying only for label sets that are new.

Every sentence of the previous corpus whose labels are all still active is kept as it is (its
label row is remapped to the new class order); sentences that name a retired label are dropped,
and so are generated sentences that name a label whose synonyms changed (they are written again).
Each added or changed label gets as many new label sets as an old label had on average, each set holding the
new label plus up to ``max_labels - 1`` others drawn uniformly; only those sets go to the
generator. Template sentences are added for the new labels.
"""
from __future__ import annotations

import hashlib
import json
import logging
import random
from collections.abc import Mapping, Sequence

import numpy as np

from .base import SentenceGenerator
from .corpus import TextCorpus
from .labelsets import label_matrix
from .templates import template_sentences
from .vocab import Vocabulary

logger = logging.getLogger(__name__)


def new_label_sets(new: Sequence[str], labels: Sequence[str], per_label: int, seed: int,
                   max_labels: int = 5) -> list[tuple[str, ...]]:
    """``per_label`` label sets for each new label, each containing it (deterministic)."""
    rng = random.Random(f"{seed}:{','.join(new)}")
    sets = []
    for lab in new:
        others = [x for x in labels if x != lab]
        for _ in range(per_label):
            k = rng.randint(1, min(max_labels, len(labels)))
            sets.append(tuple([lab, *rng.sample(others, k - 1)]))
    return sets


def corpus_synonyms(config: Mapping) -> dict[str, tuple[str, ...]] | None:
    """The synonyms a corpus was written with (from its config), or None for an old config without them."""
    vocab = config.get("vocab") if isinstance(config, Mapping) else None
    if not isinstance(vocab, Mapping) or "synonyms" not in vocab:
        return None
    return {k: tuple(v) for k, v in vocab["synonyms"].items() if v}


def synonyms_changed(config: Mapping, vocab: Vocabulary) -> list[str]:
    """Labels of ``vocab`` whose synonyms differ from those in a corpus config (both must know the label)."""
    old = corpus_synonyms(config)
    if old is None:
        return []
    known = set((config.get("vocab") or {}).get("labels", ()))
    return [lab for lab in vocab.labels
            if lab in known and old.get(lab, ()) != tuple(vocab.synonyms.get(lab, ()))]


def _kept_rows(prev: TextCorpus, labels: Sequence[str],
               changed: Sequence[str] = ()) -> tuple[list[int], list[tuple[str, ...]]]:
    active, stale = set(labels), set(changed)
    rows, sets = [], []
    for i, row in enumerate(prev.label_matrix):
        names = tuple(prev.class_names[j] for j in np.flatnonzero(row))
        if prev.sources[i] == "generated" and stale & set(names):
            continue
        if names and set(names) <= active:
            rows.append(i)
            sets.append(names)
    return rows, sets


def extend_corpus(prev: TextCorpus, labels: Sequence[str], synonyms: Mapping[str, Sequence[str]] | None,
                  generator: SentenceGenerator, seed: int, *, max_labels: int = 5,
                  n_photo_copies: int = 9) -> TextCorpus:
    """The corpus of ``labels`` built from ``prev`` plus sentences for new label sets only."""
    vocab = Vocabulary.create(labels, synonyms)
    added = [lab for lab in vocab.labels if lab not in prev.class_names]
    retired = [lab for lab in prev.class_names if lab not in vocab.labels]
    changed = synonyms_changed(prev.config, vocab)
    rows, sets = _kept_rows(prev, vocab.labels, changed)
    sentences = [prev.sentences[i] for i in rows]
    sources = [prev.sources[i] for i in rows]
    n_gen = sum(1 for s in prev.sources if s == "generated")
    per_label = max(1, round(n_gen * 3 / max(1, len(prev.class_names))))
    fresh = added + changed
    asked = new_label_sets(fresh, vocab.labels, per_label, seed, max_labels) if fresh else []
    kept_new = 0
    for labs, text in zip(asked, generator.generate(asked) if asked else []):
        if text is not None and vocab.mentions_all(text, labs):
            sentences.append(text)
            sets.append(labs)
            sources.append("generated")
            kept_new += 1
    for text, c in template_sentences(added, n_photo_copies):
        sentences.append(text)
        sets.append((c,))
        sources.append("template")
    config = {"extends": prev.corpus_id, "labels": list(vocab.labels), "vocab": vocab.to_dict(), "seed": seed,
              "per_label": per_label, "generator": generator.identity()}
    corpus_id = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
    stats = {"kept_from_previous": len(rows), "new_label_sets": len(asked), "new_sentences": kept_new,
             "added_labels": added, "retired_labels": retired, "synonyms_changed": changed}
    logger.info("extended corpus %s -> %s: %s", prev.corpus_id, corpus_id, stats)
    return TextCorpus(sentences, label_matrix(sets, vocab.labels), vocab.labels, corpus_id, sources,
                      config, stats)
