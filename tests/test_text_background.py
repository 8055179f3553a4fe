"""Background nouns: what a small vocabulary's corpus also writes about, trained and never tagged."""
from __future__ import annotations

import numpy as np
import pytest

from tagger.method.comc import ComcConfig, fit_comc
from tagger.text import OfflineGenerator, Vocabulary, build_corpus
from tagger.text.background import LARGE, background_count, background_nouns, noun_list
from tagger.text.corpus import comc_corpus
from tagger.text.incremental import extend_corpus, update_corpus
from tagger.text.vocab import word_stems
from tagger.toyworld import LABEL_SYNONYMS, LABELS


def _gen(labels, seed=0):
    return OfflineGenerator(Vocabulary.create(list(labels), LABEL_SYNONYMS), seed=seed)


def test_count_falls_with_the_vocabulary_and_stops_at_large():
    counts = [background_count(n) for n in range(1, LARGE + 2)]
    assert counts[0] > 0 and all(a >= b for a, b in zip(counts, counts[1:]))
    assert background_count(LARGE) == 0 and background_count(10_000) == 0 and background_count(0) == 0


def test_nouns_share_no_word_with_a_label_or_synonym_and_are_stable():
    labels = ["car", "red panda", "tree"]
    synonyms = {"tree": ["oak"]}
    nouns = background_nouns(labels, synonyms, count=len(noun_list()))
    assert nouns and not {"car", "cars", "panda", "tree", "oak"} & set(nouns)
    taken = set().union(*(word_stems(t) for t in ["car", "red panda", "tree", "oak"]))
    assert all(not word_stems(n) & taken for n in nouns)
    assert "car" in {w for n in noun_list() for w in word_stems(n)}  # the list has them: they were left out
    assert background_nouns(labels, synonyms) == background_nouns(labels, synonyms)
    assert background_nouns(labels, synonyms, seed=1) != background_nouns(labels, synonyms)
    assert len(background_nouns(labels, synonyms)) == background_count(3)


def test_no_noun_is_another_spelling_of_a_label_or_a_word_the_sentences_are_framed_with():
    from tagger.text import Vocabulary
    from tagger.text.offline import generator_words
    assert "bowtie" in noun_list()  # the word list has it: it is left out for this vocabulary
    nouns = background_nouns(["bow tie", "hat"], count=len(noun_list()))
    assert "bowtie" not in nouns and "bowties" not in nouns
    assert not set(noun_list()) & generator_words()  # "painting", "view": every sentence so framed names them
    wide = ["ｎｕｔ", "ＢＯＬＴ"]  # full-width names, as the catalog stores them
    nouns = background_nouns(wide, count=len(noun_list()))
    assert "nut" not in nouns and "bolt" not in nouns
    Vocabulary.create([*wide, *nouns])  # no duplicate once folded


def test_a_corpus_records_its_background_and_its_labels_leave_it_out():
    labels = list(LABELS[:3])
    corpus = comc_corpus(labels, LABEL_SYNONYMS, ComcConfig(n_sentences=400))
    bg = background_nouns(labels, LABEL_SYNONYMS, 0)
    assert corpus.background == tuple(bg) and corpus.labels == labels
    assert list(corpus.class_names) == labels + bg
    assert corpus.label_matrix[:, len(labels):].sum() > 0  # sentences name them
    off = comc_corpus(labels, LABEL_SYNONYMS, ComcConfig(n_sentences=400, background=0))
    assert off.background == () and list(off.class_names) == labels


def test_the_classifier_tags_only_the_labels():
    labels = list(LABELS[:3])
    corpus = comc_corpus(labels, LABEL_SYNONYMS, ComcConfig(n_sentences=300))

    class Text:  # a text tower: a fixed random vector per sentence
        model_id = "hash"

        def encode_text(self, texts):
            rng = np.random.default_rng(len(texts))
            return rng.standard_normal((len(texts), 16)).astype(np.float32)

    model = fit_comc(Text(), labels, None, ComcConfig(n_sentences=300), corpus=corpus)
    assert model.labels == labels and model.classifier.weight.shape == (3, 16)
    assert len(model.classifier.anchors.pos_mean) == 3
    assert model.classifier.metrics["background_rows_dropped"] == len(corpus.background)


def test_an_extension_keeps_the_background_and_gives_up_a_noun_an_added_label_names():
    labels = list(LABELS[:3])
    bg = background_nouns(labels, LABEL_SYNONYMS, 0)
    prev = build_corpus(labels, LABEL_SYNONYMS, 300, _gen(labels + bg), seed=0, background=bg)
    clash = f"giant {bg[0]}"  # a new label sharing a word with the first background noun
    more = labels + [clash]
    grown = extend_corpus(prev, more, LABEL_SYNONYMS, _gen(more + bg), seed=0)
    assert bg[0] not in grown.background and set(grown.background) <= set(bg)
    assert grown.labels == more and grown.stats["background_dropped"] == [bg[0]]
    # the sentences naming the noun given up beside another name stay (it leaves their label sets); those
    # naming it alone go (no label left)
    m = prev.label_matrix.toarray()
    j = list(prev.class_names).index(bg[0])
    beside = [prev.sentences[i] for i in np.flatnonzero((m[:, j] > 0) & (m.sum(1) > 1))]
    alone = {prev.sentences[i] for i in np.flatnonzero((m[:, j] > 0) & (m.sum(1) == 1))}
    assert beside and set(beside) <= set(grown.sentences) and not alone & set(grown.sentences)
    before = m[prev.sentences.index(beside[0])].sum()
    row = grown.label_matrix.toarray()[grown.sentences.index(beside[0])]
    assert row.sum() == before - 1 and bg[0] not in grown.class_names


def test_update_builds_with_background_and_reuses_it_unchanged():
    labels = list(LABELS[:4])
    gen = _gen(labels + background_nouns(labels, LABEL_SYNONYMS, 0))
    built, how = update_corpus([], lambda cid: None, labels, LABEL_SYNONYMS, gen, 200, 0)
    assert how == "built" and built.background == tuple(background_nouns(labels, LABEL_SYNONYMS, 0))
    records = [{"corpus_id": built.corpus_id, "config": built.config}]
    again, how = update_corpus(records, lambda cid: built, labels, LABEL_SYNONYMS, gen, 200, 0)
    assert how == "reused" and again is built


@pytest.mark.parametrize("n_labels", [3])
def test_a_small_vocabulary_is_tagged_more_precisely_with_background(n_labels):
    """Toy world, held-out scenes: three labels learnt without background nouns tag most images with one
    of them; with them, each label's precision rises (the decisions of a tag run, anchored rule)."""
    from tagger.evaluate.datasets import read_toy
    from tagger.evaluate.harness import embed_dataset
    from tagger.method.decisions import DecisionConfig, fit_anchored
    from tagger.method.zeroshot import best_matches
    from tagger.models import load_clip
    from tagger.pipeline.tag import prompt_vectors
    from tagger.text.comcfit import fit_comc_generated

    clip = load_clip("toy-vit", device="cpu")
    data = embed_dataset(clip, read_toy(n=400, split="val"))
    labels = ["square", "heart", "tree"][:n_labels]
    truth = data.labels[:, [LABELS.index(x) for x in labels]].astype(bool)
    precision = {}
    for name, count in (("without", 0), ("with", None)):
        model = fit_comc_generated(clip, labels, LABEL_SYNONYMS, ComcConfig(background=count))
        s = model.scores(data.global_, data.patches.astype("float32"))
        top1 = best_matches(data.global_, prompt_vectors(model), np.zeros(len(labels), bool))
        pred = fit_anchored(s, labels, model.classifier.anchors, DecisionConfig(), zeroshot_top1=top1).positive(s)
        precision[name] = (pred & truth).sum(0) / np.maximum(pred.sum(0), 1)
    assert precision["with"].mean() > precision["without"].mean() + 0.2, precision
