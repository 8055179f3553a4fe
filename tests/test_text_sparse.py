"""The corpus's label rows held sparsely (CSR) end to end: the same corpus ids, the same trained
classifier as dense targets give, older corpora with a dense ``label_matrix.npy`` still read, and
training memory bounded by the batch rather than sentences x labels."""
from __future__ import annotations

import hashlib
import json
import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from tagger import ids
from tagger.errors import DatasetError
from tagger.method.classifier import TrainConfig, lr_at, ranking_loss, train_classifier, train_rows
from tagger.method.decisions import text_anchors
from tagger.method.hierarchy import Hierarchy
from tagger.text import OfflineGenerator, TextCorpus, Vocabulary, build_corpus, label_matrix, sample_label_sets
from tagger.text.corpus import DENSE_LABELS_FILE, LABELS_FILE
from tagger.toyworld import LABEL_SYNONYMS, LABELS

PARENTS = {"circle": ["shape"], "square": ["shape"]}
NAMES = [*LABELS, "shape"]


def _corpus(n: int = 400) -> TextCorpus:
    vocab = Vocabulary.create(NAMES, LABEL_SYNONYMS)
    return build_corpus(NAMES, LABEL_SYNONYMS, n, OfflineGenerator(vocab, seed=0), seed=0, parents=PARENTS)


def _embeddings(n: int, d: int = 24, seed: int = 3) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _dense_reference(x: np.ndarray, y: np.ndarray, cfg: TrainConfig) -> np.ndarray:
    """The training loop as it ran on a dense float32 target matrix held whole."""
    g = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.float32))
    head = torch.nn.Linear(xt.shape[1], yt.shape[1], bias=False)
    opt = torch.optim.Adam(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    n, bs = len(xt), min(cfg.batch_size, len(xt))
    for epoch in range(cfg.epochs):
        for group in opt.param_groups:
            group["lr"] = lr_at(epoch, cfg)
        perm = torch.randperm(n, generator=g)
        for i in range(0, n - bs + 1, bs):
            idx = perm[i:i + bs]
            z = xt[idx] + cfg.noise_std * torch.randn(len(idx), xt.shape[1], generator=g)
            loss = ranking_loss(head(z), yt[idx], cfg.margin)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return head.weight.detach().numpy()


def test_targets_are_sparse_and_equal_the_dense_lift() -> None:
    corpus = _corpus()
    assert sp.issparse(corpus.label_matrix) and sp.issparse(corpus.targets())
    dense = corpus.label_matrix.toarray()
    want = Hierarchy.build(NAMES, PARENTS).lift(dense, 0)
    np.testing.assert_array_equal(corpus.targets().toarray(), want)
    assert (want != dense).any()  # the hierarchy raised some rows: the check can tell


def test_sparse_training_gives_the_dense_classifier() -> None:
    corpus = _corpus()
    y = corpus.targets()
    x = _embeddings(len(corpus))
    cfg = TrainConfig(epochs=4, batch_size=64, seed=2, lr=0.01)
    clf = train_classifier(x, y, list(corpus.class_names), "m", corpus.corpus_id, cfg)
    ref = _dense_reference(x, y.toarray(), cfg)
    np.testing.assert_array_equal(clf.weight, ref)
    dense_anchors = text_anchors(x, clf.weight, y.toarray())
    for key in ("neg_mean", "pos_mean", "neg_sd", "pos_sd"):
        np.testing.assert_array_equal(getattr(clf.anchors, key), getattr(dense_anchors, key))


def test_frozen_row_training_reads_sparse_rows_as_dense_ones() -> None:
    corpus = _corpus()
    y = corpus.targets()
    x = _embeddings(len(corpus))
    frozen = np.random.default_rng(1).normal(size=(y.shape[1] - 2, x.shape[1])).astype(np.float32)
    cfg = TrainConfig(epochs=3, batch_size=64, seed=4)
    new = [NAMES.index("star"), NAMES.index("shape")]
    rows_s, met_s = train_rows(x, y, frozen, new, cfg, others_per_positive=1, min_others=100)
    rows_d, met_d = train_rows(x, y.toarray(), frozen, new, cfg, others_per_positive=1, min_others=100)
    np.testing.assert_array_equal(rows_s, rows_d)
    assert met_s == met_d and 100 < met_s["sentences"] < len(corpus)


def test_the_corpus_id_is_the_one_its_dense_matrix_gave() -> None:
    corpus = _corpus(120)
    h = hashlib.sha256(json.dumps([corpus.sentences, corpus.sources], ensure_ascii=False).encode("utf-8"))
    dense = corpus.label_matrix.toarray().astype(np.uint8)
    h.update(repr(dense.shape).encode())
    h.update(dense.tobytes())
    assert corpus.corpus_id == ids.content_id({"config": corpus.config, "content": h.hexdigest()})


def test_a_corpus_saved_with_a_dense_matrix_still_loads(tmp_path) -> None:  # noqa: ANN001
    corpus = _corpus(80)
    d = corpus.save(tmp_path / "c")
    dense = corpus.label_matrix.toarray()
    (d / LABELS_FILE).unlink()
    np.save(d / DENSE_LABELS_FILE, dense)  # how corpora were written before
    old = TextCorpus.load(d)
    assert sp.issparse(old.label_matrix) and old.corpus_id == corpus.corpus_id
    np.testing.assert_array_equal(old.label_matrix.toarray(), dense)
    np.testing.assert_array_equal(old.targets().toarray(), corpus.targets().toarray())
    again = old.save(tmp_path / "again")
    assert (again / LABELS_FILE).exists() and not (again / DENSE_LABELS_FILE).exists()
    np.testing.assert_array_equal(TextCorpus.load(again).label_matrix.toarray(), dense)


def test_a_damaged_label_file_is_a_dataset_error(tmp_path) -> None:  # noqa: ANN001
    d = _corpus(40).save(tmp_path / "c")
    (d / LABELS_FILE).write_bytes(b"not a zip file")
    with pytest.raises(DatasetError, match="cannot read text corpus"):
        TextCorpus.load(d)


def test_training_memory_at_10000_labels_is_bounded_by_the_batch() -> None:
    n, c, d = 8000, 10000, 16
    names = [f"w{i}" for i in range(c)]
    y = label_matrix(sample_label_sets(names, n, seed=0, max_labels=2), names)  # 2 positives: a faster loss
    x = _embeddings(n, d)
    train_classifier(x[:64], y[:64], names, "m", "c", TrainConfig(epochs=1, batch_size=32))  # lazy imports
    tracemalloc.start()
    try:
        clf = train_classifier(x, y, names, "m", "c", TrainConfig(epochs=1, batch_size=256))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    dense_targets = n * c * 4  # the float32 targets held whole: 320 MB
    assert clf.weight.shape == (c, d) and np.isfinite(clf.anchors.pos_mean).sum() > 0.6 * c
    assert peak < dense_targets / 8, f"peak {peak / 2**20:.0f} MiB"


def test_sampling_label_sets_at_10000_labels_stays_small() -> None:
    names = [f"w{i}" for i in range(10000)]
    tracemalloc.start()
    try:
        sets = sample_label_sets(names, 5000, seed=1)
        m = label_matrix(sets, names)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert m.shape == (5000, 10000) and m.nnz == sum(len(s) for s in sets)
    assert peak < 5000 * 10000 * 8 / 4, f"peak {peak / 2**20:.0f} MiB"  # the keys drawn at once: 400 MB


def test_implied_positives_count_on_neither_side_of_the_text_anchors() -> None:
    from tagger.method.hierarchy import implied_labels
    from tagger.text.corpus import corpus_parents
    corpus = _corpus()
    y, names = corpus.targets(), list(corpus.class_names)
    implied = implied_labels(y, names, corpus_parents(corpus.config))
    assert implied is not None and implied.nnz
    x = _embeddings(len(corpus))
    w = np.random.default_rng(3).normal(size=(y.shape[1], x.shape[1]))
    got = text_anchors(x, w, y, chunk=37, implied=implied)
    s, yd, imp = x.astype(np.float64) @ w.T, y.toarray() > 0, implied.toarray() > 0
    for j in range(len(names)):
        own, neg = yd[:, j] & ~imp[:, j], ~yd[:, j]
        assert got.pos_mean[j] == pytest.approx(s[own, j].mean()) if own.any() else np.isnan(got.pos_mean[j])
        assert got.neg_mean[j] == pytest.approx(s[neg, j].mean())
    plain = text_anchors(x, w, y)
    assert not np.allclose(plain.pos_mean, got.pos_mean, equal_nan=True)  # the rule changes something
