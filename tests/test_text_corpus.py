"""Label-set sampling, validation, the offline generator, templates and corpus persistence."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from tagger.errors import ConfigError, IncompleteCorpusError, TextGenerationError
from tagger.ids import content_id
from tagger.text.corpus import allowed_missing, corpus_config, missing_label_sets
from tagger.text import (
    PHOTO_TEMPLATE, PROMPT_TEMPLATES, LLMConfig, LLMGenerator, OfflineGenerator, TextCorpus,
    Vocabulary, build_corpus, generator_from_config, label_matrix, mentions_all, plural,
    sample_label_sets, template_sentences,
)
from tagger.toyworld import LABEL_SYNONYMS, LABELS
from tagger.toyworld.vocab import PLURALS

VOCAB = Vocabulary.create(LABELS, LABEL_SYNONYMS, PLURALS)


# ---------------------------------------------------------------- sampling

def test_sampling_is_deterministic_per_seed() -> None:
    a = sample_label_sets(LABELS, 300, seed=7)
    assert a == sample_label_sets(LABELS, 300, seed=7)
    assert a != sample_label_sets(LABELS, 300, seed=8)
    assert sample_label_sets(LABELS, 0, seed=1) == []


def test_sampling_distribution() -> None:
    n, c = 6000, len(LABELS)
    sets = sample_label_sets(LABELS, n, seed=3)
    ks = Counter(len(s) for s in sets)
    assert set(ks) == {1, 2, 3, 4, 5}
    for k in range(1, 6):  # k ~ Uniform{1..5}: 1200 each, sd ~31
        assert abs(ks[k] / n - 0.2) < 0.03, ks
    assert all(len(set(s)) == len(s) and set(s) <= set(LABELS) for s in sets)
    # each label appears in E[k]/C = 3/20 of the sets; no co-occurrence prior
    freq = label_matrix(sets, LABELS).mean(axis=0)
    assert np.all(np.abs(freq - 3 / c) < 0.03), freq
    # labels come in random order, not in vocabulary order
    firsts = Counter(s[0] for s in sets if len(s) == 5)
    assert len(firsts) == c


def test_sampling_caps_and_errors() -> None:
    sets = sample_label_sets(["a", "b"], 200, seed=0, max_labels=5)
    assert {len(s) for s in sets} == {1, 2}
    assert {len(s) for s in sample_label_sets(LABELS, 100, seed=0, max_labels=1)} == {1}
    with pytest.raises(ConfigError):
        sample_label_sets(["a", "a"], 3, seed=0)
    with pytest.raises(ConfigError):
        sample_label_sets([], 3, seed=0)
    with pytest.raises(ConfigError):
        label_matrix([("nope",)], LABELS)


# ---------------------------------------------------------------- validation

@pytest.mark.parametrize("sentence,labels,ok", [
    ("A Star and a MOON.", ["star", "moon"], True),
    ("Two stars near a crescent.", ["star", "moon"], True),
    ("A starfish on the sand.", ["star"], False),
    ("Some crosses and lightning bolts.", ["cross", "lightning bolt"], True),
    ("A five-pointed star.", ["star"], True),
    ("A tree", ["tree", "house"], False),
    ("Three daisies by a hut.", ["flower", "house"], True),
    ("A motorbike and two buses.", ["motor bike", "bus"], True),
    ("Two people with knives.", ["person", "knife"], True),
    ("A hexagonal tile.", ["hexagon"], False),
    ("A bluebell in a vase.", ["bell"], False),
    ("A superstar and a moon.", ["star", "moon"], False),
    # word boundaries of any script written with spaces; text compared in NFC
    ("Ein Bild von Göring.", ["ring"], False),
    ("Trois étoiles, une lune.", ["toile"], False),
    ("Un cafe\u0301 noir.", ["café"], True),  # decomposed in the sentence, composed in the label
    ("Un café noir.", ["cafe\u0301"], True),
    ("A ring\u0301 on a hand.", ["ring"], False),  # a combining accent belongs to the word before it
    ("my_ring", ["ring"], True),
    ("黑猫在桌子上", ["猫"], True),  # no spaces between words in Chinese: no boundary to respect
    ("我的iPhone很好", ["iphone"], True),
    ("कमाना", ["कम"], False),  # a vowel sign or a virama belongs to the word it sits in
    ("बिल्ली", ["ली"], False),
    ("एक बिल्ली है", ["बिल्ली"], True),
    ("고양이가 있다", ["고양이"], True),  # a Korean particle attaches to the word's end
    ("큰개", ["개"], False),
    ("ｸﾛﾈｺ", ["ﾈｺ"], True),  # half-width katakana: no spaces either
    ("一只黑猫", ["黑猫"], True),
    ("Ein Ring, ein Stern.", ["ring"], True),
])
def test_mentions_all(sentence: str, labels: list[str], ok: bool) -> None:
    assert mentions_all(sentence, labels, LABEL_SYNONYMS) is ok


def test_plural_rules() -> None:
    assert plural("lightning bolt") == "lightning bolts"
    assert plural("cross") == "crosses"
    assert plural("butterfly") == "butterflies"
    assert plural("person") == "people"
    assert plural("fish", {"fish": "fish"}) == "fish"


def test_vocabulary_rejects_bad_input() -> None:
    with pytest.raises(ConfigError):
        Vocabulary.create(["a", "a"])
    with pytest.raises(ConfigError):
        Vocabulary.create(["a", " - "])
    assert Vocabulary.create(["a", "b"], {"b": ["bee"], "c": ["d"]}).synonyms == {"b": ("bee",)}
    with pytest.raises(ConfigError):
        Vocabulary.create([])


# ---------------------------------------------------------------- offline generator

def test_offline_generator_mentions_every_label() -> None:
    sets = sample_label_sets(LABELS, 2000, seed=11)
    out = OfflineGenerator(VOCAB, seed=5).generate(sets)
    assert len(out) == len(sets)
    bad = [(s, t) for s, t in zip(sets, out) if not (t and VOCAB.mentions_all(t, s))]
    assert not bad, bad[:5]


def test_offline_generator_is_deterministic_and_varied() -> None:
    sets = sample_label_sets(LABELS, 1000, seed=2)
    gen = OfflineGenerator(VOCAB, seed=9)
    out = gen.generate(sets)
    assert out == gen.generate(sets) == OfflineGenerator(VOCAB, seed=9).generate(sets)
    assert out != OfflineGenerator(VOCAB, seed=10).generate(sets)
    assert len(set(out)) > 0.97 * len(out)
    openings = Counter(" ".join(t.split()[:2]).lower() for t in out)
    assert len(openings) > 40 and max(openings.values()) < 0.15 * len(out)
    # synonyms are used sometimes: a sentence without the label word itself
    singles = [(s[0], t) for s, t in zip(sets, out) if len(s) == 1]
    literal = [t for lab, t in singles if lab in t.lower()]
    assert 0.4 * len(singles) < len(literal) < 0.95 * len(singles)
    # the order of mention is shuffled, not the sampled order
    pairs = [(s, t.lower()) for s, t in zip(sets, out) if len(s) == 2 and all(x in t.lower() for x in s)]
    in_order = sum(t.index(s[0]) < t.index(s[1]) for s, t in pairs)
    assert 0.2 * len(pairs) < in_order < 0.8 * len(pairs)


# ---------------------------------------------------------------- templates

def test_template_sentences() -> None:
    assert 30 <= len(PROMPT_TEMPLATES) <= 80
    assert all(t.count("{}") == 1 for t in PROMPT_TEMPLATES)
    pairs = template_sentences(["cat", "dog"], n_photo_copies=9)
    assert len(pairs) == 2 * (9 + len(PROMPT_TEMPLATES))
    assert Counter(pairs)[(PHOTO_TEMPLATE.format("cat"), "cat")] == 9
    assert all(c in s for s, c in pairs)


# ---------------------------------------------------------------- corpus

class _DropEvery3rd:
    """A generator stand-in that drops every third label set and garbles every fifth."""

    def __init__(self) -> None:
        self.inner = OfflineGenerator(VOCAB, seed=0)

    def identity(self) -> dict[str, str]:
        return {"kind": "test-drop"}

    def generate(self, label_sets):  # noqa: ANN001, ANN201
        out = self.inner.generate(label_sets)
        return [None if i % 3 == 0 else ("nothing here" if i % 5 == 0 else t) for i, t in enumerate(out)]


def _build(n: int = 60, seed: int = 0, **kw) -> TextCorpus:  # noqa: ANN003
    gen = kw.pop("generator", None) or OfflineGenerator(VOCAB, seed=kw.pop("gen_seed", 0))
    return build_corpus(LABELS, LABEL_SYNONYMS, n, gen, seed, plurals=PLURALS, **kw)


def test_build_corpus_labels_are_the_sampled_sets() -> None:
    corpus = _build(50, seed=4)
    n_tpl = len(LABELS) * (9 + len(PROMPT_TEMPLATES))
    assert len(corpus) == 50 + n_tpl
    assert corpus.label_matrix.dtype == np.uint8 and corpus.label_matrix.shape == (len(corpus), len(LABELS))
    sets = sample_label_sets(LABELS, 50, seed=4)
    np.testing.assert_array_equal(corpus.label_matrix.toarray()[:50], label_matrix(sets, LABELS).toarray())
    assert corpus.sources[:50] == ["generated"] * 50 and set(corpus.sources[50:]) == {"template"}
    assert (corpus.label_matrix.toarray()[50:].sum(axis=1) == 1).all()
    for text, row in zip(corpus.sentences, corpus.label_matrix.toarray()):
        assert VOCAB.mentions_all(text, [LABELS[j] for j in np.flatnonzero(row)])
    no_tpl = _build(50, seed=4, include_templates=False)
    assert len(no_tpl) == 50 and no_tpl.sentences == corpus.sentences[:50]


def test_build_corpus_excludes_dropped_and_invalid() -> None:
    corpus = _build(30, include_templates=False, generator=_DropEvery3rd(), max_missing=14)
    sets = sample_label_sets(LABELS, 30, seed=0)
    keep = [i for i in range(30) if i % 3 and i % 5]
    assert len(corpus) == len(keep)
    np.testing.assert_array_equal(corpus.label_matrix.toarray(), label_matrix([sets[i] for i in keep], LABELS).toarray())
    assert corpus.stats["dropped"] == 10 and corpus.stats["rejected"] == 4
    assert corpus.config["shortfall"] == {"missing": 14, "label_sets": 30, "allowed": 14}
    assert missing_label_sets(corpus) == 14
    with pytest.raises(TextGenerationError):
        build_corpus(LABELS, LABEL_SYNONYMS, 5, _NoneGen(), 0, max_missing=5)


@pytest.mark.parametrize("max_missing", [0, 13, 0.45])
def test_build_corpus_refuses_a_shortfall_beyond_the_tolerance(max_missing: float) -> None:
    with pytest.raises(IncompleteCorpusError) as err:
        _build(30, include_templates=False, generator=_DropEvery3rd(), max_missing=max_missing)
    assert (err.value.missing, err.value.total) == (14, 30)
    assert err.value.allowed == allowed_missing(max_missing, 30)
    message = str(err.value)
    assert "\n" not in message and "14 of 30 label sets" in message and "rerun" in message
    assert "10 got no valid reply" in message and "4 did not name every label" in message


def test_allowed_missing_is_a_fraction_below_one_else_a_count() -> None:
    assert [allowed_missing(x, 200) for x in (0, 0.01, 0.5, 0.999, 1, 7, 7.0, 500)] == [0, 2, 100, 199, 1, 7, 7, 500]
    for bad in (-1, 2.5, float("nan"), "3"):
        with pytest.raises(ConfigError):
            allowed_missing(bad, 10)  # type: ignore[arg-type]


def test_a_complete_corpus_records_no_shortfall_and_its_id_follows_its_content() -> None:
    full = _build(30, include_templates=False)
    assert full.config["shortfall"] == {"missing": 0, "label_sets": 30} and missing_label_sets(full) == 0
    # the tolerance does not enter the id of a corpus that needed none
    assert _build(30, include_templates=False, max_missing=0.5).corpus_id == full.corpus_id

    class _Reworded(_DropEvery3rd):
        def generate(self, label_sets):  # noqa: ANN001, ANN201
            return [t + " Nice." for t in self.inner.generate(label_sets)]

        def identity(self) -> dict[str, str]:
            return OfflineGenerator(VOCAB, seed=0).identity()

    same_config = _build(30, include_templates=False, generator=_Reworded())
    assert same_config.config == full.config and same_config.corpus_id != full.corpus_id


class _NoneGen:
    def identity(self) -> dict[str, str]:
        return {"kind": "none"}

    def generate(self, label_sets):  # noqa: ANN001, ANN201
        return [None] * len(label_sets)


def test_corpus_save_load_round_trip(tmp_path) -> None:  # noqa: ANN001
    corpus = _build(40, seed=1)
    corpus.save(tmp_path / "c")
    assert {p.name for p in (tmp_path / "c").iterdir()} == {"corpus.json", "sentences.parquet", "label_sets.npz"}
    back = TextCorpus.load(tmp_path / "c")
    assert back.sentences == corpus.sentences and back.sources == corpus.sources
    np.testing.assert_array_equal(back.label_matrix.toarray(), corpus.label_matrix.toarray())
    assert back.label_matrix.dtype == np.uint8 and back.label_matrix.format == "csr"
    assert back.class_names == corpus.class_names and back.corpus_id == corpus.corpus_id
    assert back.config == corpus.config and back.stats == corpus.stats


def test_corpus_id_is_stable_and_tracks_config() -> None:
    base = _build(20, include_templates=False)
    assert _build(20, include_templates=False).corpus_id == base.corpus_id
    assert len(base.corpus_id) == 16
    others = [
        _build(21, include_templates=False),
        _build(20, seed=1, include_templates=False),
        _build(20, gen_seed=1, include_templates=False),
        _build(20, include_templates=True),
        _build(20, include_templates=False, max_labels=3),
        build_corpus(LABELS[:-1], LABEL_SYNONYMS, 20, OfflineGenerator(VOCAB), 0, include_templates=False),
        _build(20, include_templates=False, generator=_DropEvery3rd(), max_missing=0.5),
    ]
    ids = {c.corpus_id for c in others}
    assert len(ids) == len(others) and base.corpus_id not in ids
    llm = LLMGenerator(LLMConfig(model="m", base_url="http://127.0.0.1:9/v1"), VOCAB)
    llm2 = LLMGenerator(LLMConfig(model="m", base_url="http://other:9/v1", api_key="k"), VOCAB)
    ids_llm = [content_id(corpus_config(VOCAB, 20, g, 0, 5, False, 9, ())) for g in (llm, llm2)]
    assert ids_llm[0] == ids_llm[1]  # endpoint and key are not part of the identity


def test_generator_from_config() -> None:
    assert isinstance(generator_from_config(LABELS, LABEL_SYNONYMS, environ={}), OfflineGenerator)
    assert isinstance(generator_from_config(LABELS, environ={"TAGGER_LLM_MODEL": "m"}), OfflineGenerator)
    env = {"TAGGER_LLM_MODEL": "m", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1", "TAGGER_LLM_CONCURRENCY": "3"}
    gen = generator_from_config(LABELS, LABEL_SYNONYMS, environ=env)
    assert isinstance(gen, LLMGenerator) and gen.config.concurrency == 3 and gen.config.model == "m"
    explicit = generator_from_config(LABELS, llm_config=LLMConfig(model="x", api_key="sk-secret"), environ={})
    assert isinstance(explicit, LLMGenerator)
    assert "sk-secret" not in repr(explicit.config) and "sk-secret" not in str(explicit.identity())
    with pytest.raises(ConfigError):
        LLMConfig.from_env({**env, "TAGGER_LLM_TEMPERATURE": "hot"})
    with pytest.raises(ConfigError):
        LLMConfig(model="m", concurrency=0)


def test_plural_and_article_names_are_written_as_names_not_doubled():
    """`squares` gave "squareses" and "a squares", `a star` gave "an a star": the offline sentences
    taught the classifier words no caption uses. A name already plural is counted or takes "the"; a
    name with its article is used as written; every sentence still names every label."""
    import re

    from tagger.text.offline import OfflineGenerator, reads_plural, starts_with_article
    vocab = Vocabulary.create(["squares", "a star", "moon", "glass", "palm trees"], {})
    sets = [["squares"], ["a star", "moon"], ["glass", "squares"], ["palm trees", "a star"], ["moon", "glass"]] * 40
    text = " ".join(OfflineGenerator(vocab, seed=5).generate(sets)).lower()
    assert "squareses" not in text and "treeses" not in text and not re.search(r"\b(a|an|one) squares\b", text)
    assert not re.search(r"\b(a|an|the|one|two|some) a star\b", text) and "a stars" not in text
    assert "glasses" in text and "moons" in text  # singular names are still counted in plural
    assert reads_plural("palm trees") and not reads_plural("glass") and not reads_plural("bus")
    assert not reads_plural("lens") and starts_with_article("The moon") and not starts_with_article("theatre")
    from tagger.method.names import fill
    assert fill("a photo of a {}.", "a star") == "a photo of a star."
    assert fill("a sharp photo of the {}.", "a star") == "a sharp photo of a star."
    assert fill("a photo of a {}.", "squares") == "a photo of squares."
    assert fill("a sharp photo of the {}.", "squares") == "a sharp photo of the squares."
    assert fill("an image of an {}.", "apple") == "an image of an apple."  # other names: as format() gives
