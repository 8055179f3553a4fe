"""Synonyms the text tower cannot read: their sentences are found, measured against the label's other
terms, and no longer count as the label's (a label stays learnt from the terms it reads; the sentences
stay for the other labels they name), with a warning."""
from __future__ import annotations

import logging

import numpy as np
import pytest
from faketower import D, embed, unit

from tagger.method.comc import ComcConfig
from tagger.method.reading import TermReading, term_readings, unread_cells
from tagger.text import OfflineGenerator, Vocabulary, build_corpus
from tagger.text.comcfit import fit_comc_generated
from tagger.text.terms import readable, term_groups



def test_readings_measure_each_term_along_the_label_best_read_direction():
    rng = np.random.default_rng(0)
    u = unit(1)
    x = rng.normal(scale=0.3, size=(400, D))
    name, syn, unknown = np.arange(0, 60), np.arange(60, 100), np.arange(100, 140)
    x[name] += 3 * u
    x[syn] += 2 * u
    v = unit(2) - (unit(2) @ u) * u
    x[unknown] += 3.5 * v / np.linalg.norm(v)  # moved further, but not along the label's direction
    groups = {"fish": {"fish": name, "goldfish": syn, "🐟": unknown}}
    got = {r.term: r for r in term_readings(x, {"fish": np.arange(140)}, groups)}
    assert got["fish"].reading == pytest.approx(1.0, abs=0.02) and got["fish"].sentences == 60
    assert got["goldfish"].reading == pytest.approx(2 / 3, abs=0.1)
    assert abs(got["🐟"].reading) < 0.2
    cells, unread = unread_cells(groups, list(got.values()), 0.4)
    assert unread == {"fish": ["🐟"]} and cells["fish"].tolist() == unknown.tolist()
    # a sentence naming the label by a term read too stays; too few sentences are not judged
    both = {"fish": {"fish": np.append(name, 100), "goldfish": syn, "🐟": unknown}}
    assert 100 not in unread_cells(both, list(got.values()), 0.4)[0]["fish"]
    few = {"fish": {"fish": name, "🐟": unknown[:5]}}
    assert term_readings(x, {"fish": np.arange(140)}, few) == []


def test_a_label_read_by_its_synonym_only_loses_its_name_sentences():
    rng = np.random.default_rng(1)
    u = unit(3)
    x = rng.normal(scale=0.3, size=(300, D))
    x[40:80] += 3 * u
    groups = {"Fisch": {"Fisch": np.arange(0, 40), "fish": np.arange(40, 80)}}
    readings = term_readings(x, {"Fisch": np.arange(80)}, groups)
    assert {r.term: r.reading > 0.9 for r in readings} == {"Fisch": False, "fish": True}
    cells, unread = unread_cells(groups, readings, 0.4)
    assert unread == {"Fisch": ["Fisch"]} and cells == {"Fisch": pytest.approx(list(range(40)))}
    assert unread_cells(groups, [TermReading("Fisch", "Fisch", 40, 0.5), TermReading("Fisch", "fish", 40, 1.0)],
                       0.4)[1] == {}



def test_an_unread_synonym_stops_counting_for_its_label_not_for_the_others(caplog):
    labels = ["fish", "tree", "house"]
    synonyms = {"fish": ["goldfish", "🐟"], "tree": ["fir"]}
    vocab = Vocabulary.create(labels, synonyms)
    corpus = build_corpus(labels, synonyms, 600, OfflineGenerator(vocab, seed=0), seed=0)
    emb = embed(corpus, {"fish": 0, "tree": 1, "fir": 1, "house": 2})  # goldfish holds fish: read too
    groups, positives = term_groups(corpus)
    assert set(groups) == {"fish", "tree"} and set(groups["fish"]) == {"fish", "goldfish", "🐟"}
    emoji = groups["fish"]["🐟"]
    assert len(emoji) > 20 and all("🐟" in corpus.sentences[i] for i in emoji)
    with caplog.at_level(logging.WARNING, "tagger.text.terms"):
        kept = readable(corpus, emb)
    assert kept.unread == {"fish": ["🐟"]} and kept.summary()["unread_synonyms"] == {"fish": ["🐟"]}
    assert "'🐟'" in caplog.text and "no longer count" in caplog.text
    only = [i for i in emoji if not any(w in corpus.sentences[i].lower() for w in ("fish ", "goldfish"))]
    assert kept.unread_sentences == len(only) > 0 and kept.summary()["unread_sentences"] == len(only)
    m = corpus.label_matrix.toarray() != 0
    alone = {corpus.sentences[i] for i in only if m[i].sum() == 1}  # named fish and nothing else
    shared = {corpus.sentences[i] for i in only if m[i].sum() > 1}
    assert alone and shared and kept.left_out == len(alone) == len(corpus) - len(kept.corpus)
    assert "left out of training" in caplog.text
    where = {s: k for k, s in enumerate(kept.corpus.sentences)}
    assert not alone & set(where)
    fish = corpus.class_names.index("fish")
    km = kept.corpus.label_matrix.toarray() != 0
    for sentence in shared:  # kept for the labels it names by words the tower reads, not for fish
        i, k = corpus.sentences.index(sentence), where[sentence]
        assert not km[k, fish] and (km[k] == np.where(np.arange(m.shape[1]) == fish, False, m[i])).all()
    # the rest keeps its rows aligned: sentence, label row, source and embedding
    for k in range(0, len(kept.corpus), 37):
        i = corpus.sentences.index(kept.corpus.sentences[k])
        if kept.corpus.sentences[k] not in shared:
            assert (km[k] == m[i]).all()
        assert kept.corpus.sources[k] == corpus.sources[i] and np.array_equal(kept.embeddings[k], emb[i])
    assert kept.corpus.corpus_id == corpus.corpus_id
    # a tower that reads every term leaves the corpus as it is
    whole = readable(corpus, embed(corpus, {"fish": 0, "🐟": 0, "tree": 1, "fir": 1, "house": 2}))
    assert whole.corpus is corpus and whole.left_out == 0 and whole.summary() == {}


def test_a_toy_label_given_an_emoji_synonym_is_still_learnt():
    """toy-rn's text tower never saw 🐟 or cœur: the classifier trained as `tagger train` does leaves
    their sentences out and learns fish and heart as well as without them."""
    from tagger.models import load_clip
    from tagger.toyworld import LABEL_SYNONYMS, LABELS
    clip = load_clip("toy-rn", device="cpu")
    edited = {k: [*v, *{"fish": ["🐟"], "heart": ["cœur"]}.get(k, [])] for k, v in LABEL_SYNONYMS.items()}
    model = fit_comc_generated(clip, LABELS, edited, ComcConfig(n_sentences=6000))
    assert model.classifier.metrics["unread_synonyms"] == {"heart": ["cœur"], "fish": ["🐟"]}
    sep = dict(zip(model.labels, model.classifier.anchors.separation()))
    assert sep["fish"] > 3 and sep["heart"] > 3, (sep["fish"], sep["heart"])


def test_a_sentence_naming_a_label_by_an_unread_term_only_is_not_about_its_parent_either():
    """Ancestors are set after the unread marks go: ``animal`` over ``fish`` is on a sentence that
    names fish by 🐟 only when the sentence names an animal itself or another of its children."""
    from tagger.text.terms import trainable
    labels = ["fish", "tree", "animal", "cat"]
    synonyms = {"fish": ["goldfish", "🐟"]}
    parents = {"fish": ["animal"], "cat": ["animal"]}
    vocab = Vocabulary.create(labels, synonyms)
    corpus = build_corpus(labels, synonyms, 800, OfflineGenerator(vocab, seed=0), seed=0, parents=parents)
    emb = embed(corpus, {"fish": 0, "tree": 1, "animal": 2, "cat": 3})
    kept = trainable(corpus, emb)
    assert kept.unread == {"fish": ["🐟"]}
    names = list(corpus.class_names)
    fish, animal, cat = (names.index(n) for n in ("fish", "animal", "cat"))
    named = corpus.label_matrix.toarray() != 0
    km = kept.corpus.label_matrix.toarray() != 0
    assert (km[:, animal] >= km[:, fish]).all() and (km[:, animal] >= km[:, cat]).all()  # ancestors set
    where = {s: k for k, s in enumerate(kept.corpus.sentences)}
    only = [i for i in term_groups(corpus)[0]["fish"]["🐟"]
            if not any(w in corpus.sentences[i].lower() for w in ("fish ", "goldfish")) and corpus.sentences[i] in where]
    assert only
    for i in only:
        k = where[corpus.sentences[i]]
        assert not km[k, fish] and km[k, animal] == (named[i, animal] or named[i, cat])
    assert any(not km[where[corpus.sentences[i]], animal] for i in only)
