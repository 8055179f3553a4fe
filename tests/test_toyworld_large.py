"""The large toy vocabulary: labels with exact truth from the scene description, distractors that
name nothing the world draws, and a text corpus that writes no sentence about a label it is not for."""
from __future__ import annotations

import numpy as np
import pytest

from tagger.errors import DatasetError
from tagger.evaluate.datasets import SMALL_OBJECTS, read_toy
from tagger.text import OfflineGenerator, Vocabulary, build_corpus, mentions, template_sentences
from tagger.text.offline import generator_words
from tagger.toyworld import LABELS, make_scene
from tagger.toyworld.large import (
    BACKGROUND_LABELS, N_TRUTH, distractor_words, large_truth, large_vocabulary, truth_labels, world_words,
)
from tagger.toyworld.vocab import BIG_ABOVE, COLOURS, SMALL_BELOW


def test_truth_labels_are_many_distinct_and_compounds_have_their_object_as_parent():
    labels, synonyms, parents = truth_labels()
    assert len(labels) == N_TRUTH >= 200 and len(set(labels)) == len(labels)
    assert labels[: len(LABELS)] == LABELS
    assert set(parents) == {lab for lab in labels if lab not in LABELS and not lab.endswith("background")}
    for child, (obj,) in parents.items():
        assert obj in LABELS and child.endswith(" " + obj)
    names = [n.casefold() for lab in labels for n in (lab, *synonyms.get(lab, ()))]
    assert len(names) == len(set(names))  # no name means two labels


@pytest.mark.parametrize("cfg", [None, SMALL_OBJECTS])
def test_truth_is_read_from_each_scene_description(cfg):
    labels = truth_labels()[0]
    for i in range(40):
        scene = make_scene(i, "test", cfg)
        y = large_truth(scene)
        on = {labels[j] for j in np.flatnonzero(y)}
        want = set(scene.label_names) | {BACKGROUND_LABELS[scene.background][0]}
        for o in scene.objects:
            want.add(f"{o.colour} {o.label}")
            a = scene.area(o)
            if a < SMALL_BELOW:
                want.add(f"small {o.label}")
            if a > BIG_ABOVE:
                want.add(f"big {o.label}")
        assert on == want
        assert sum(lab.split(" ", 1)[0] in COLOURS for lab in on) == len(scene.objects)
        if cfg is SMALL_OBJECTS:
            assert not any(lab.startswith("big ") for lab in on)


def test_read_toy_large_has_the_same_images_and_the_default_is_unchanged():
    toy, large = read_toy(30, "val"), read_toy(30, "val", vocab="large")
    assert toy.class_names == list(LABELS) and toy.items == large.items and toy.name == large.name
    assert large.class_names == list(truth_labels()[0])
    assert np.array_equal(large.labels[:, : len(LABELS)], toy.labels)
    assert (large.labels.sum(0) > 0).sum() > 100
    with pytest.raises(DatasetError, match="unknown vocabulary"):
        read_toy(3, vocab="huge")


def test_distractors_reach_ten_thousand_and_use_no_world_or_generator_word():
    vocab = large_vocabulary(10_000, exclude=generator_words())
    assert len(vocab.labels) == 10_000 and len(set(vocab.labels)) == 10_000 and vocab.n_truth == N_TRUTH
    banned = world_words() | generator_words()
    extra = vocab.labels[vocab.n_truth:]
    assert not [w for d in extra for w in d.split() if w in banned]
    assert distractor_words(50) == distractor_words(500)[:50]  # a smaller vocabulary is a prefix
    with pytest.raises(ValueError):
        large_vocabulary(100)


def test_templates_and_sentences_name_only_their_labels_and_ancestors():
    labels = ["star", "red star", "small star", "circle", "plain background"]
    syn = {"small star": ("tiny star",)}
    parents = {"red star": ("star",), "small star": ("star",)}
    vocab = Vocabulary.create(labels, syn)
    corpus = build_corpus(labels, syn, 400, OfflineGenerator(vocab, seed=0), seed=0, parents=parents)
    for text, row in zip(corpus.sentences, corpus.label_matrix.toarray()):
        held = {labels[j] for j in np.flatnonzero(row)}
        allowed = held | {p for lab in held for p in parents.get(lab, ())}
        named = {lab for lab in labels if mentions(text, lab, syn)}
        assert named <= allowed, (text, held)
    # without the compounds in the vocabulary, the same templates are all written
    plain = template_sentences(["star"], 1)
    assert "a photo of a small star." in {s for s, _ in plain}
    filtered = {s for s, _ in template_sentences(["star"], 1, names=["star", "small star", "plain background"])}
    assert "a photo of a small star." not in filtered and "a photo of a star on a plain background." not in filtered
    assert len(filtered) < len(plain)


def test_extending_with_a_compound_makes_old_sentences_naming_it_positives():
    from tagger.text.incremental import extend_corpus
    first = ["star", "circle"]
    prev = build_corpus(first, {}, 100, OfflineGenerator(Vocabulary.create(first), seed=0), seed=0)
    assert "a photo of a small star." in prev.sentences
    grown = ["star", "circle", "small star"]
    new = extend_corpus(prev, grown, {}, OfflineGenerator(Vocabulary.create(grown), seed=0), seed=0,
                        parents={"small star": ("star",)})
    for text, row in zip(new.sentences, new.label_matrix.toarray()):
        if mentions(text, "small star"):
            assert row[grown.index("small star")] == 1, text
    assert "a photo of a small circle." in new.sentences and "a photo of a small star." in new.sentences
    assert new.stats["kept_from_previous"] == len(prev)  # nothing dropped
