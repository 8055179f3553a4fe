"""Growing a corpus for a changed vocabulary asks the generator only for new label sets."""
import numpy as np

from tagger.text import OfflineGenerator, Vocabulary, build_corpus
from tagger.text.background import background_nouns
from tagger.text.incremental import extend_corpus, new_label_sets
from tagger.toyworld import LABEL_SYNONYMS, LABELS


class CountingGenerator:
    """Wraps a generator and records every label set it is asked for."""

    def __init__(self, inner):
        self.inner, self.asked = inner, []

    def generate(self, label_sets):
        self.asked.extend(tuple(s) for s in label_sets)
        return self.inner.generate(label_sets)

    def identity(self):
        return self.inner.identity()


def _gen(labels, synonyms=LABEL_SYNONYMS):
    return CountingGenerator(OfflineGenerator(Vocabulary.create(labels, synonyms), seed=0))


def test_extend_reuses_old_sentences_and_asks_only_for_new_sets():
    first, later = list(LABELS[:10]), list(LABELS[10:13])
    prev = build_corpus(first, LABEL_SYNONYMS, 500, _gen(first), seed=0)
    active = [x for x in first if x != "star"] + later  # retire one label, add three
    gen = _gen(active)
    new = extend_corpus(prev, active, LABEL_SYNONYMS, gen, seed=0)
    assert list(new.class_names) == active
    assert gen.asked and all(any(lab in s for lab in later) for s in gen.asked)
    assert new.stats["retired_labels"] == ["star"] and new.stats["added_labels"] == later
    kept = [s for s in new.sentences if s in set(prev.sentences)]
    assert len(kept) == new.stats["kept_from_previous"] > 0
    # no kept row names the retired label; every row has at least one label
    assert new.label_matrix.toarray().sum(1).min() >= 1
    star_rows = prev.label_matrix.toarray()[:, first.index("star")] == 1
    assert not set(np.array(prev.sentences)[star_rows]) & set(kept)
    # label rows follow their sentences: a kept sentence has the same label set as before
    before = {s: {first[j] for j in np.flatnonzero(r)} for s, r in zip(prev.sentences, prev.label_matrix.toarray())}
    for s, r in zip(new.sentences, new.label_matrix.toarray()):
        if s in before and before[s] <= set(active):
            assert {active[j] for j in np.flatnonzero(r)} == before[s]


def test_same_inputs_same_corpus_id_and_new_sets_contain_the_label():
    first = list(LABELS[:8])
    prev = build_corpus(first, LABEL_SYNONYMS, 200, _gen(first), seed=0)
    active = first + ["tree"]
    a = extend_corpus(prev, active, LABEL_SYNONYMS, _gen(active), seed=0)
    b = extend_corpus(prev, active, LABEL_SYNONYMS, _gen(active), seed=0)
    assert a.corpus_id == b.corpus_id and a.sentences == b.sentences
    sets = new_label_sets(["tree"], active, 50, seed=3)
    assert len(sets) == 50 and all("tree" in s and 1 <= len(s) <= 5 and len(set(s)) == len(s) for s in sets)


def test_changed_synonyms_rewrite_only_that_labels_sentences():
    labels = list(LABELS[:8])
    prev = build_corpus(labels, LABEL_SYNONYMS, 400, _gen(labels), seed=0)
    same = extend_corpus(prev, labels, LABEL_SYNONYMS, _gen(labels), seed=0)
    assert same.stats["synonyms_changed"] == [] and not same.stats["new_label_sets"]
    syn = {k: list(v) for k, v in LABEL_SYNONYMS.items()}
    syn["circle"] = ["disc"]  # "dot" and "round shape" withdrawn
    gen = _gen(labels, syn)  # a generator that still used "dot" would fail the new vocabulary
    new = extend_corpus(prev, labels, syn, gen, seed=0)
    assert new.stats["synonyms_changed"] == ["circle"]
    assert gen.asked and all("circle" in s for s in gen.asked)
    circle = labels.index("circle")
    old_circle = {s for s, r, src in zip(prev.sentences, prev.label_matrix.toarray(), prev.sources)
                  if src == "generated" and r[circle]}
    kept = set(new.sentences[:new.stats["kept_from_previous"]])
    assert old_circle and not old_circle & kept
    # sentences without the label are kept as they were; template rows too
    others = [s for s, r, src in zip(prev.sentences, prev.label_matrix.toarray(), prev.sources) if not r[circle]]
    assert set(others) <= set(new.sentences)
    # the new corpus remembers the new synonyms: extending it again changes nothing
    again = extend_corpus(new, labels, syn, _gen(labels, syn), seed=0)
    assert again.stats["synonyms_changed"] == []


def test_training_embeds_only_sentences_the_parent_corpus_did_not_have(tmp_path):
    from tagger.catalog import Catalog
    from tagger.models import load_clip
    from tagger.text import TextCorpus
    from tagger.pipeline.text import run_generate_text
    from tagger.pipeline.train import corpus_embeddings
    from tagger.workspace import Workspace

    ws = Workspace.at(tmp_path / "ws")
    first, later = list(LABELS[:8]), list(LABELS[8:10])
    with Catalog.open(ws.catalog) as cat:
        cat.add_labels(first, {n: list(LABEL_SYNONYMS[n]) for n in first})
    clip = load_clip("toy-vit", device="cpu")
    a = TextCorpus.load(ws.text_dir(run_generate_text(ws, 300, 0)["corpus_id"]))
    emb_a, n_a = corpus_embeddings(ws, clip, a)
    assert n_a == len(set(a.sentences)) and emb_a.shape == (len(a.sentences), clip.embed_dim)
    assert corpus_embeddings(ws, clip, a)[1] == 0  # cached
    with Catalog.open(ws.catalog) as cat:
        cat.add_labels(later, {n: list(LABEL_SYNONYMS[n]) for n in later})
    b = TextCorpus.load(ws.text_dir(run_generate_text(ws, 300, 0)["corpus_id"]))
    emb_b, n_b = corpus_embeddings(ws, clip, b)
    assert 0 < n_b == len(set(b.sentences) - set(a.sentences))
    fresh = clip.encode_text(list(b.sentences[:40]) + list(b.sentences[-40:]))
    np.testing.assert_allclose(np.concatenate([emb_b[:40], emb_b[-40:]]), fresh, atol=1e-5)


class _CountingClip:
    """A stand-in text tower: a fixed vector per text, and the texts it was asked to embed."""

    model_id = "fake"

    def __init__(self) -> None:
        self.asked: list[str] = []

    def encode_text(self, texts, batch_size: int = 512) -> np.ndarray:
        self.asked += list(texts)
        return np.array([[len(t), sum(map(ord, t)) % 97, 1.0] for t in texts], np.float32).reshape(-1, 3)


def test_class_prompts_are_embedded_once_per_workspace(tmp_path):
    from tagger.method.zeroshot import ENSEMBLE_PROMPTS, class_embeddings
    from tagger.pipeline.train import TextMemo

    path = tmp_path / "text" / "prompts-fake.npz"
    clip = _CountingClip()
    first = class_embeddings(TextMemo(clip, path), ["cat", "dog"], ENSEMBLE_PROMPTS)
    assert len(clip.asked) == 2 * len(ENSEMBLE_PROMPTS) and path.exists()
    clip.asked.clear()
    again = class_embeddings(TextMemo(clip, path), ["cat", "dog", "owl"], ENSEMBLE_PROMPTS)
    assert clip.asked == [t.format("owl") for t in ENSEMBLE_PROMPTS]  # only the new label's prompts
    np.testing.assert_array_equal(again[:2], first)
    np.testing.assert_array_equal(again, class_embeddings(_CountingClip(), ["cat", "dog", "owl"], ENSEMBLE_PROMPTS))
    path.write_bytes(b"not an npz")  # an unreadable cache is rebuilt, not an error
    assert TextMemo(clip, path).known == {}


def test_many_labels_added_at_once_build_a_corpus_of_the_usual_size():
    """Extending asks each new label for as many label sets as an old label has: adding ten labels to
    three would ask for more than a new corpus holds (it grew without bound), so one is built."""
    from tagger.text.incremental import update_corpus
    first, more = list(LABELS[:3]), list(LABELS[3:13])
    prev = build_corpus(first, LABEL_SYNONYMS, 300, _gen(first), seed=0,
                        background=background_nouns(first, LABEL_SYNONYMS, 0))
    records = [{"corpus_id": prev.corpus_id, "config": prev.config}]
    small = first + more[:1]
    grown, how = update_corpus(records, lambda cid: prev, small, LABEL_SYNONYMS, _gen(small), 300, 0)
    assert how == "extended" and len(grown.sentences) > len(prev.sentences)
    active = first + more
    gen = _gen(active)
    corpus, how = update_corpus(records, lambda cid: prev, active, LABEL_SYNONYMS, gen, 300, 0)
    fresh = build_corpus(active, LABEL_SYNONYMS, 300, _gen(active), seed=0,
                         background=background_nouns(active, LABEL_SYNONYMS, 0))
    assert how == "built" and corpus.corpus_id == fresh.corpus_id and len(gen.asked) <= 300


def test_many_labels_retired_build_a_corpus_instead_of_keeping_a_remnant():
    """Retiring 18 of 20 labels would keep the few sentences about the two left and no background
    noun: a new corpus is built (sentences of the usual count, the nouns a 2-label vocabulary gets);
    retiring one keeps extending."""
    from tagger.text.background import background_count
    from tagger.text.incremental import update_corpus
    prev = build_corpus(LABELS, LABEL_SYNONYMS, 400, _gen(LABELS), seed=0)
    records = [{"corpus_id": prev.corpus_id, "config": prev.config}]
    two = ["heart", "fish"]
    kept = extend_corpus(prev, two, LABEL_SYNONYMS, _gen(two), 0, background=[])
    assert sum(s == "generated" for s in kept.sources) < 100 and not kept.background  # what an extension keeps
    corpus, how = update_corpus(records, lambda cid: prev, two, LABEL_SYNONYMS, _gen(two), 400, 0)
    assert how == "built" and len(corpus.background) == background_count(2) > 0
    assert sum(s == "generated" for s in corpus.sources) >= 300 and corpus.labels == two
    less = [x for x in LABELS if x != "star"]
    corpus, how = update_corpus(records, lambda cid: prev, less, LABEL_SYNONYMS, _gen(less), 400, 0)
    assert how == "extended" and corpus.stats["retired_labels"] == ["star"]
    twelve = list(LABELS[:12])  # a vocabulary that becomes small keeps fewer than half its nouns: built
    corpus, how = update_corpus(records, lambda cid: prev, twelve, LABEL_SYNONYMS, _gen(twelve), 400, 0)
    assert how == "built" and len(corpus.background) == background_count(12)
