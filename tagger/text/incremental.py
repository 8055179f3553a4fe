"""Grow a corpus when the vocabulary changes, paying only for label sets that are new.

Every sentence of the previous corpus whose labels are all still active is kept as it is (its
label row is remapped to the new class order, and gains each added label it names: "one small
star" is about ``small star`` once that is a label); sentences that name a retired label are dropped,
and so are generated sentences that name a label whose synonyms changed (they are written again).
Each added or changed label gets as many new label sets as an old label had on average, each set holding the
new label plus up to ``max_labels - 1`` others drawn uniformly; only those sets go to the
generator. Template sentences are added for the new labels. A changed label hierarchy (the
``parents`` a corpus records) makes a new corpus of the same sentences under the new hierarchy:
nothing is generated for it, but its id, and so the classifier trained on it, change.

:func:`update_corpus` decides, from the recorded corpora, whether a corpus built with the same
settings (sentence count, seed, generator) can be reused, extended or repaired, or a new one
must be built.
"""
from __future__ import annotations

import logging
import random
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..method.hierarchy import ParentMap
from .background import apart, background_count, background_nouns
from .base import SentenceGenerator
from .corpus import (
    TextCorpus, build_corpus, content_id, corpus_parents, keep_valid, missing_label_sets, parents_config,
    require_complete, vocab_names,
)
from .labelsets import label_matrix
from .templates import template_sentences
from .vocab import Vocabulary, mentions

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
    """Labels of ``vocab`` whose synonyms differ from those in a corpus config (both must know the
    label); the order they are listed in is no change (every sentence the corpus holds still names
    its labels, so nothing needs retraining)."""
    old = corpus_synonyms(config)
    if old is None:
        return []
    known = set((config.get("vocab") or {}).get("labels", ()))
    return [lab for lab in vocab.labels
            if lab in known and sorted(old.get(lab, ())) != sorted(vocab.synonyms.get(lab, ()))]


def parents_changed(config: Mapping, labels: Sequence[str], parents: ParentMap | None) -> list[str]:
    """Labels whose parents (among ``labels``) differ from those a corpus config records."""
    old = corpus_parents(config)
    new = corpus_parents(parents_config(parents, labels))
    return sorted(c for c in (set(old) | set(new)) & set(labels) if old.get(c, ()) != new.get(c, ()))


def _first_word(term: str) -> str:
    """A term's first word as its pattern reads it (``t-shirt`` -> ``t``: a sentence may say ``t shirt``)."""
    words = [w for w in re.split(r"[\s\-]+", unicodedata.normalize("NFC", term).casefold()) if w]
    return words[0] if words else term.strip().casefold()


def _with_named(vocab: Vocabulary, sentences: Sequence[str], sets: list[tuple[str, ...]],
                added: Sequence[str]) -> list[tuple[str, ...]]:
    """``sets`` with each added label that its kept sentence names ("one small star" once ``small
    star`` is a label): the sentence is about it, so it is a positive, not a negative, for it."""
    if not added:
        return sets
    words = {lab: {_first_word(n) for n in vocab.names(lab)} for lab in added}
    # one search per sentence for any added label's first word; the sentences it finds are checked
    # label by label (a corpus of 10^4 labels holds hundreds of thousands of sentences)
    anyword = re.compile("|".join(re.escape(w) for w in sorted({w for ws in words.values() for w in ws})))
    out = []
    for text, labs in zip(sentences, sets):
        low = unicodedata.normalize("NFC", text).casefold()
        extra = () if anyword.search(low) is None else tuple(
            lab for lab in added if lab not in labs and any(w in low for w in words[lab])
            and mentions(text, lab, vocab.synonyms))
        out.append(labs + extra)
    n = sum(len(b) > len(a) for a, b in zip(sets, out))
    if n:
        logger.info("%d kept sentences name an added label: it joins their label sets", n)
    return out


def _kept_rows(prev: TextCorpus, labels: Sequence[str], changed: Sequence[str] = (),
               strip: Sequence[str] = ()) -> tuple[list[int], list[tuple[str, ...]]]:
    """The rows of ``prev`` kept (their labels all active) and their label sets; the names in ``strip``
    (background nouns given up) leave the sets, not the sentences."""
    active, stale, gone = set(labels), set(changed), set(strip)
    rows, sets = [], []
    m = prev.label_matrix  # canonical CSR: each row's columns in increasing order
    for i, (lo, hi) in enumerate(zip(m.indptr[:-1].tolist(), m.indptr[1:].tolist())):
        names = tuple(n for n in (prev.class_names[j] for j in m.indices[lo:hi].tolist()) if n not in gone)
        if prev.sources[i] == "generated" and stale & set(names):
            continue
        if names and set(names) <= active:
            rows.append(i)
            sets.append(names)
    return rows, sets


def _per_label(prev: TextCorpus, names: Sequence[str] | None = None) -> int:
    """Label sets asked for each new label: as many as a label of ``prev`` appears in, its label sets
    shared among ``names`` (default: every class name, background nouns too)."""
    n_gen = sum(1 for s in prev.sources if s == "generated")
    return max(1, round(n_gen * 3 / max(1, len(prev.class_names if names is None else names))))


def _extension_size(prev: TextCorpus, vocab: Vocabulary) -> int:
    """The label sets extending ``prev`` to ``vocab`` would ask the generator for, were its label sets
    about its labels alone (background nouns take a share of them: counted without, the labels new or
    changed decide between extending and building as they did before there were any)."""
    fresh = {lab for lab in vocab.labels if lab not in prev.labels} | set(synonyms_changed(prev.config, vocab))
    return len(fresh) * _per_label(prev, prev.labels)


def kept_background(prev: TextCorpus, labels: Sequence[str], synonyms: Mapping[str, Sequence[str]] | None,
                    seed: int, count: int | None = None) -> list[str]:
    """The background nouns an extension of ``prev`` keeps: those the vocabulary ``labels`` would still
    get (:func:`~tagger.text.background.background_nouns`; a noun sharing a word with an added label, or
    past the count a larger vocabulary gets, is given up: it leaves the label sets, its sentences stay).
    An extension never adds one: nothing is generated for the background when labels change."""
    now = set(background_nouns(labels, synonyms, seed, count))
    return [b for b in prev.background if b in now]


def extend_corpus(prev: TextCorpus, labels: Sequence[str], synonyms: Mapping[str, Sequence[str]] | None,
                  generator: SentenceGenerator, seed: int, *, max_labels: int = 5,
                  n_photo_copies: int = 9, max_missing: float = 0, parents: ParentMap | None = None,
                  background: Sequence[str] | None = None) -> TextCorpus:
    """The corpus of ``labels`` built from ``prev`` plus sentences for new label sets only, recording
    the hierarchy ``parents`` (child -> parents); ``background``: the background nouns kept (default:
    :func:`kept_background`), which new label sets draw their companions from as they do labels.

    New label sets left without a valid sentence count against ``max_missing`` as in
    :func:`~tagger.text.corpus.build_corpus`.
    """
    bg = apart(kept_background(prev, labels, synonyms, seed) if background is None else background, labels)
    vocab = Vocabulary.create([*labels, *bg], synonyms)
    added = [lab for lab in vocab.labels if lab not in prev.class_names]
    retired = [lab for lab in prev.class_names if lab not in vocab.labels and lab not in prev.background]
    changed = synonyms_changed(prev.config, vocab)
    rows, sets = _kept_rows(prev, vocab.labels, changed, [b for b in prev.background if b not in vocab.labels])
    sets = _with_named(vocab, [prev.sentences[i] for i in rows], sets, added)
    sentences = [prev.sentences[i] for i in rows]
    sources = [prev.sources[i] for i in rows]
    per_label = _per_label(prev)
    fresh = added + changed
    asked = new_label_sets(fresh, vocab.labels, per_label, seed, max_labels) if fresh else []
    new, new_sets, missing, rejected = keep_valid(vocab, asked, generator.generate(asked) if asked else [])
    shortfall = require_complete(len(asked), {"got no sentence": missing, "did not name every label": rejected},
                                 max_missing)
    kept_new = len(new)
    sentences.extend(new)
    sets.extend(tuple(s) for s in new_sets)
    sources.extend("generated" for _ in new)
    for text, c in template_sentences(added, n_photo_copies, names=vocab_names(vocab)):
        sentences.append(text)
        sets.append((c,))
        sources.append("template")
    config = {"extends": prev.corpus_id, "labels": list(vocab.labels), "vocab": vocab.to_dict(), "seed": seed,
              "n_sentences": prev.config.get("n_sentences"), "per_label": per_label,
              "generator": generator.identity(), "shortfall": shortfall, **parents_config(parents, vocab.labels),
              **({"background": bg} if bg else {})}
    matrix = label_matrix(sets, vocab.labels)
    corpus_id = content_id(config, sentences, sources, matrix)
    stats = {"kept_from_previous": len(rows), "new_label_sets": len(asked), "new_sentences": kept_new,
             "added_labels": added, "retired_labels": retired, "synonyms_changed": changed,
             "background_dropped": [b for b in prev.background if b not in bg],
             "parents_changed": parents_changed(prev.config, vocab.labels, parents)}
    logger.info("extended corpus %s -> %s: %s", prev.corpus_id, corpus_id, stats)
    return TextCorpus(sentences, matrix, vocab.labels, corpus_id, sources, config, stats)


def _shrunk(prev: TextCorpus, vocab: Vocabulary, bg: Sequence[str], asked: int, n_sentences: int,
            background: int | None) -> str | None:
    """Why extending ``prev`` would give a corpus much poorer than a new one (None: it would not): the
    labels retired took more than half of its generated sentences with them (an extension keeps only
    the sentences whose labels are all active), or the vocabulary became small and keeps fewer than
    half the background nouns a new corpus of it has (an extension never adds any)."""
    keep = set(vocab.labels) | set(bg)
    rows, _ = _kept_rows(prev, [*keep], synonyms_changed(prev.config, vocab),
                         [b for b in prev.background if b not in keep])
    kept = sum(1 for i in rows if prev.sources[i] == "generated")
    if kept + asked < n_sentences / 2:
        return f"an extension would keep {kept} of its generated sentences and ask for {asked}, under half of {n_sentences}"
    wanted = background_count(len(vocab.labels)) if background is None else max(0, int(background))
    if len(bg) < wanted / 2:
        return f"{len(vocab.labels)} labels get {wanted} background nouns, an extension would keep {len(bg)}"
    return None


def corpus_settings(config: Mapping[str, Any], configs: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The sentence count, seed and generator a corpus was made with; an extension made before
    configs recorded the count takes it from the corpus it extends (``configs`` by id)."""
    n, seen, cur = config.get("n_sentences"), set(), config
    while n is None and cur.get("extends") in configs and cur["extends"] not in seen:
        seen.add(cur["extends"])
        cur = configs[cur["extends"]] or {}
        n = cur.get("n_sentences")
    return {"n_sentences": n, "seed": config.get("seed"), "generator": config.get("generator")}


def update_corpus(records: Sequence[Mapping[str, Any]], load: Callable[[str], TextCorpus],
                  labels: Sequence[str], synonyms: Mapping[str, Sequence[str]] | None,
                  generator: SentenceGenerator, n_sentences: int, seed: int, *,
                  max_missing: float = 0, parents: ParentMap | None = None,
                  background: int | None = None) -> tuple[TextCorpus, str]:
    """The corpus of ``labels`` for these settings and how it was had.

    ``records`` are the recorded corpora oldest first (``corpus_id`` and ``config``), ``load``
    reads one by id. The newest made with the same sentence count, seed and generator is
    ``"reused"`` when its vocabulary is the current one and it lacks nothing, ``"repaired"`` (its
    last step done again, so only the label sets it lacks are requested) when it lacks
    sentences, and ``"extended"`` when the vocabulary or the hierarchy ``parents`` changed (keeping
    any shortfall it accepted); without one, when extending would ask for more label sets than a new
    corpus has sentences (many labels added at once), or when it would keep under half of a new one's
    sentences or background nouns (many labels retired: :func:`_shrunk`), a corpus is ``"built"``. A built corpus gets
    :func:`~tagger.text.background.background_nouns` (``background``: how many, None: by the vocabulary's
    size); an extended one keeps its predecessor's that still fit (:func:`kept_background`).
    """
    def build() -> TextCorpus:
        return build_corpus(labels, synonyms, n_sentences, generator, seed, max_missing=max_missing, parents=parents,
                            background=background_nouns(labels, synonyms, seed, background))

    configs = {r["corpus_id"]: r.get("config") or {} for r in records}
    want = {"n_sentences": n_sentences, "seed": seed, "generator": generator.identity()}
    same = [r["corpus_id"] for r in records if corpus_settings(configs[r["corpus_id"]], configs) == want]
    if not same:
        return build(), "built"
    prev = load(same[-1])
    vocab = Vocabulary.create(labels, synonyms)
    bg = kept_background(prev, labels, synonyms, seed, background)
    if prev.labels != list(vocab.labels) or bg != list(prev.background) or synonyms_changed(prev.config, vocab) \
            or parents_changed(prev.config, vocab.labels, parents):
        asked = _extension_size(prev, vocab)
        if asked > n_sentences:  # many labels added at once: a corpus of the usual size, not one that grows
            logger.info("extending corpus %s would ask for %d label sets, more than a new corpus of %d sentences: "
                        "building one", prev.corpus_id, asked, n_sentences)
            return build(), "built"
        why = _shrunk(prev, vocab, bg, asked, n_sentences, background)
        if why:
            logger.info("corpus %s: %s: building a new one", prev.corpus_id, why)
            return build(), "built"
        return extend_corpus(prev, labels, synonyms, generator, seed, max_missing=max_missing,
                             parents=parents, background=bg), "extended"
    lacking = missing_label_sets(prev)
    if not lacking:
        return prev, "reused"
    logger.info("corpus %s lacks %d label sets: generating them", prev.corpus_id, lacking)
    parent = prev.config.get("extends")
    if parent:
        return extend_corpus(load(parent), labels, synonyms, generator, seed, max_missing=max_missing,
                             parents=parents, background=list(prev.background)), "repaired"
    return build_corpus(labels, synonyms, n_sentences, generator, seed, max_missing=max_missing,
                        parents=parents, background=list(prev.background)), "repaired"
