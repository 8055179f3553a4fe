"""Ranking loss, cross-modal mapping and classifier training against direct formulas."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tagger.method.mapping import MemoryBank, cross_modal_map
from tagger.method.scoring import ScoreConfig, comc_scores
from tagger.method.classifier import TextClassifier, TrainConfig, ranking_loss, train_classifier
from tagger.method.classifier import lr_at


def _brute_ranking(s, y, margin):
    total = 0.0
    for b in range(s.shape[0]):
        for p in range(s.shape[1]):
            for n in range(s.shape[1]):
                if y[b, p] == 1 and y[b, n] == 0:
                    total += max(0.0, margin - s[b, p] + s[b, n])
    return total / s.shape[0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ranking_loss_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    s = rng.normal(size=(7, 6))
    y = (rng.random((7, 6)) < 0.4).astype(np.float64)
    got = ranking_loss(torch.tensor(s), torch.tensor(y), margin=1.0, chunk=3).item()
    assert got == pytest.approx(_brute_ranking(s, y, 1.0), rel=1e-9)



def test_ranking_loss_pairs_only_positives_with_the_same_value_and_gradient():
    rng = np.random.default_rng(3)
    y = torch.zeros(9, 40, dtype=torch.float64)
    for b in range(8):  # the last row has no positive label
        y[b, rng.choice(40, size=1 + b % 4, replace=False)] = 1
    s1 = torch.tensor(rng.normal(size=(9, 40)), requires_grad=True)
    s2 = s1.detach().clone().requires_grad_(True)
    all_pairs = (torch.relu(1.0 - s2[:, :, None] + s2[:, None, :]) * y[:, :, None] * (1 - y)[:, None, :]).sum() / 9
    got = ranking_loss(s1, y, margin=1.0, chunk=4)
    got.backward()
    all_pairs.backward()
    assert got.item() == pytest.approx(all_pairs.item(), rel=1e-12)
    torch.testing.assert_close(s1.grad, s2.grad)


def test_ranking_loss_gradient_with_fractional_targets_passes_gradcheck():
    rng = np.random.default_rng(4)
    y = torch.zeros(6, 12, dtype=torch.float64)
    for b in range(6):
        y[b, rng.choice(12, size=1 + b % 3, replace=False)] = torch.tensor(rng.choice([1.0, 0.5], size=1 + b % 3))
    s = torch.tensor(rng.normal(size=(6, 12)), requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: ranking_loss(t, y, margin=0.7, chunk=4), (s,))
    all_pairs = (torch.relu(0.7 - s[:, :, None] + s[:, None, :]) * y[:, :, None] * (1 - y)[:, None, :]).sum() / 6
    assert ranking_loss(s, y, margin=0.7).item() == pytest.approx(all_pairs.item(), rel=1e-12)

def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_mapping_matches_direct_formula():
    rng = np.random.default_rng(0)
    m = _unit(rng.normal(size=(11, 8)))
    v = _unit(rng.normal(size=(5, 8)))
    tau, alpha = 0.05, 0.7
    expected = []
    for row in v:
        logits = np.array([row @ mk for mk in m]) / tau
        a = np.exp(logits - logits.max())
        a /= a.sum()
        u = sum(a[k] * m[k] for k in range(len(m)))
        expected.append(alpha * row + (1 - alpha) * u / np.linalg.norm(u))
    got = cross_modal_map(v.astype(np.float32), MemoryBank(m), tau, alpha)
    np.testing.assert_allclose(got, np.array(expected), atol=1e-5)


def test_mapping_topk_equals_full_when_k_is_k_and_differs_when_small():
    rng = np.random.default_rng(1)
    bank = MemoryBank(_unit(rng.normal(size=(50, 16))), kind="sentences")
    v = _unit(rng.normal(size=(4, 16))).astype(np.float32)
    full = cross_modal_map(v, bank, 0.1, 0.5)
    np.testing.assert_allclose(cross_modal_map(v, bank, 0.1, 0.5, topk=50), full, atol=1e-6)
    # top-k over an exact FAISS index == softmax restricted to the k most similar rows
    k = 3
    sims = v @ bank.vectors.T
    idx = np.argsort(-sims, axis=1)[:, :k]
    a = np.exp(np.take_along_axis(sims, idx, 1) / 0.1)
    a /= a.sum(1, keepdims=True)
    u = _unit(np.einsum("nk,nkd->nd", a, bank.vectors[idx]))
    np.testing.assert_allclose(cross_modal_map(v, bank, 0.1, 0.5, topk=k), 0.5 * v + 0.5 * u, atol=1e-5)


def test_identity_when_alpha_one_or_no_memory():
    v = _unit(np.random.default_rng(2).normal(size=(3, 4))).astype(np.float32)
    bank = MemoryBank(_unit(np.random.default_rng(3).normal(size=(5, 4))))
    np.testing.assert_array_equal(cross_modal_map(v, bank, alpha=1.0), v)
    np.testing.assert_array_equal(cross_modal_map(v, None), v)


def test_comc_scores_fuse_global_and_local():
    rng = np.random.default_rng(4)
    g = _unit(rng.normal(size=(3, 8))).astype(np.float32)
    p = _unit(rng.normal(size=(3, 5, 8))).astype(np.float32)
    w = rng.normal(size=(4, 8)).astype(np.float32)
    cfg = ScoreConfig(memory="none", use_local=True, local_weight=0.25, standardize=False)
    expected = 0.75 * (g @ w.T) + 0.25 * np.einsum("npd,cd->npc", p, w).max(axis=1)
    np.testing.assert_allclose(comc_scores(g, p, w, None, cfg), expected, atol=1e-5)


def _toy_text(seed=0, n=600, d=16, c=5):
    rng = np.random.default_rng(seed)
    protos = _unit(rng.normal(size=(c, d)))
    y = (rng.random((n, c)) < 0.35).astype(np.uint8)
    y[y.sum(1) == 0, 0] = 1
    x = _unit(y @ protos + 0.1 * rng.normal(size=(n, d))).astype(np.float32)
    return x, y, protos


def test_training_is_deterministic_and_learns():
    x, y, _ = _toy_text()
    cfg = TrainConfig(epochs=8, batch_size=64, seed=5, lr=0.02)
    a = train_classifier(x, y, list("abcde"), "m", "c", cfg)
    b = train_classifier(x, y, list("abcde"), "m", "c", cfg)
    np.testing.assert_array_equal(a.weight, b.weight)
    c = train_classifier(x, y, list("abcde"), "m", "c", TrainConfig(epochs=8, batch_size=64, seed=6, lr=0.02))
    assert not np.array_equal(a.weight, c.weight)
    losses = a.metrics["loss_per_epoch"]
    assert losses[-1] < 0.5 * losses[0]
    # held-out sentences from the same distribution are ranked well
    xt, yt, _ = _toy_text(seed=0, n=1200)
    from tagger.evaluate.metrics import mean_average_precision
    assert mean_average_precision(a.scores(xt[600:]), yt[600:]) > 90


def test_classifier_roundtrip(tmp_path):
    x, y, _ = _toy_text(n=100)
    clf = train_classifier(x, y, list("abcde"), "m", "c", TrainConfig(epochs=2, batch_size=32))
    clf.save(tmp_path / "clf")
    back = TextClassifier.load(tmp_path / "clf")
    np.testing.assert_array_equal(back.weight, clf.weight)
    assert back.labels == clf.labels and back.config == clf.config and back.corpus_id == "c"


def test_lr_schedule_warmup_then_cosine():
    cfg = TrainConfig(epochs=20)
    assert lr_at(0, cfg) == cfg.warmup_lr
    assert lr_at(1, cfg) == pytest.approx(1e-3 * 0.5 * (1 + np.cos(np.pi / 20)))
    assert lr_at(19, cfg) == pytest.approx(6.16e-6, rel=0.01)


def test_tag_rows_keep_top_k_and_positives_on_the_standardised_score():
    from tagger.pipeline.tag import TagConfig, tag_rows
    from tagger.method.zeroshot import standardize

    rng = np.random.default_rng(3)
    raw = rng.normal(size=(6, 9)).astype(np.float32) * 0.02 + 0.3  # raw, unstandardised logits
    raw[0, 4] = 0.5  # one clear positive in image 0
    table = tag_rows(np.arange(10, 16), raw, [f"l{i}" for i in range(9)], TagConfig(top_k=2, threshold=1.5))
    rows = table.to_pydict()
    z = standardize(raw)
    for img, lab, score, rank, pos in zip(rows["image_id"], rows["label"], rows["score"], rows["rank"], rows["positive"]):
        i, c = img - 10, int(lab[1:])
        assert score == pytest.approx(raw[i, c])  # stored scores are the ranking scores
        assert pos == bool(z[i, c] >= 1.5)
        assert rank <= 2 or pos
    assert (10, "l4") in {(i, l) for i, l, p in zip(rows["image_id"], rows["label"], rows["positive"]) if p}
    # every image keeps exactly its top-2 plus positives
    for i in range(6):
        kept = {l for img, l in zip(rows["image_id"], rows["label"]) if img == 10 + i}
        top2 = {f"l{c}" for c in np.argsort(-raw[i])[:2]}
        pos = {f"l{c}" for c in np.flatnonzero(z[i] >= 1.5)}
        assert kept == top2 | pos


def test_label_calibration_lets_an_offset_label_rank_and_is_order_independent():
    from tagger.pipeline.tag import ShardScorer, TagConfig, TagShards, tag_rows

    rng = np.random.default_rng(5)
    raw = {f"s{i}": rng.normal(size=(50, 4)).astype(np.float32) for i in range(4)}
    for s in raw.values():
        s[:, 3] = s[:, 3] * 0.1 - 5.0  # a label whose raw scores sit far below the others

    class Fake(TagShards):
        def __init__(self, cfg, stats=None):
            self.cfg, self.stats, self.decisions = cfg, stats, None

        def load(self, name):
            return SimpleNamespace(name=name, ids=np.arange(len(raw[name])))

        def scores(self, shard):
            return raw[shard.name]

    cfg = TagConfig(top_k=1, calibration_images=100)
    stats = Fake(cfg).label_stats(["s2", "s0", "s1", "s3"])
    assert stats == Fake(cfg).label_stats(["s3", "s1", "s0", "s2"])  # first shards in name order
    both = np.concatenate([raw["s0"], raw["s1"]])
    np.testing.assert_allclose(stats[0], both.mean(0), rtol=1e-5, atol=1e-6)
    labels = ["a", "b", "c", "d"]
    plain = tag_rows(np.arange(50), Fake(cfg).calibrated(Fake(cfg).load("s3")), labels, cfg).to_pydict()
    calibrated = tag_rows(np.arange(50), Fake(cfg, stats).calibrated(Fake(cfg).load("s3")), labels, cfg).to_pydict()
    top = lambda rows: {l for l, r in zip(rows["label"], rows["rank"]) if r == 1}
    assert "d" not in top(plain) and "d" in top(calibrated)
    assert isinstance(Fake(cfg), ShardScorer)


@pytest.mark.parametrize(("k", "c", "d"), [(6, 4, 64), (40, 30, 32)])  # folded path, direct path
def test_mapped_scores_equal_mapping_then_classifier(k, c, d):
    from tagger.method.mapping import mapped_scores
    from tagger.method.mapping import _folded_is_cheaper

    rng = np.random.default_rng(7)
    v = _unit(rng.normal(size=(50, d))).astype(np.float32)
    w = rng.normal(size=(c, d)).astype(np.float32)
    mem = MemoryBank(rng.normal(size=(k, d)).astype(np.float32))
    assert _folded_is_cheaper(k, c, d) == (d == 64)
    for tau, alpha in [(0.01, 0.7), (0.5, 0.2)]:
        expected = cross_modal_map(v, mem, tau, alpha) @ w.T
        np.testing.assert_allclose(mapped_scores(v, w, mem, tau, alpha, batch=16), expected, rtol=1e-4, atol=1e-5)


def test_a_persons_decision_stands_before_the_hierarchy_raises_the_parents():
    """A rejected circle no longer makes its image a shape; an accepted square does; the others as before."""
    from tagger.method.hierarchy import Hierarchy
    from tagger.method.reviewed import reviewed_columns
    from tagger.pipeline.tag import TagConfig, tag_rows

    class Cut:  # each label's threshold at 0.5, confidence the score
        def positive(self, s):
            return s >= 0.5

        def confidence(self, s):
            return s

    labels = ["circle", "square", "shape"]
    tree = Hierarchy.build(labels, {"circle": ["shape"], "square": ["shape"]})
    scores = np.array([[0.9, 0.1, 0.2], [0.1, 0.2, 0.1], [0.8, 0.1, 0.1]], np.float32)
    reviewed = reviewed_columns([(10, "circle", False), (11, "square", True), (99, "circle", True),
                                 (12, "retired", False)], labels)

    def positives(rev) -> set:
        t = tag_rows(np.array([10, 11, 12]), scores, labels, TagConfig(top_k=1), Cut(), tree, rev).to_pydict()
        return {(i, lab) for i, lab, p in zip(t["image_id"], t["label"], t["positive"]) if p}
    assert positives(None) == {(10, "circle"), (10, "shape"), (12, "circle"), (12, "shape")}
    assert positives(reviewed) == {(11, "square"), (11, "shape"), (12, "circle"), (12, "shape")}


def test_a_parent_over_every_label_leaves_the_childrens_rows_as_they_were():
    """``thing`` over every label: each sentence holds it, implied by its labels. It takes part in no
    pair, so each child's row trains as without the parent (before, its pairs lowered every child on
    every sentence: the children's text scale fell while their images' scores did not)."""
    from scipy import sparse as sp
    from tagger.method.hierarchy import expand_label_matrix, implied_labels
    rng = np.random.default_rng(0)
    L, d, n = 6, 16, 1200
    dirs, common = rng.standard_normal((L, d)), 2 * rng.standard_normal(d)
    sets = [rng.choice(L, rng.integers(1, 4), replace=False) for _ in range(n)]
    y = np.zeros((n, L), np.float32)
    for i, s in enumerate(sets):
        y[i, s] = 1
    x = np.stack([dirs[s].sum(0) for s in sets]) + common + 0.5 * rng.standard_normal((n, d))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    names = [f"l{i}" for i in range(L)] + ["thing"]
    parents = {f"l{i}": ["thing"] for i in range(L)}
    targets = expand_label_matrix(sp.csr_array(np.c_[y, np.zeros(n, np.float32)]), names, parents)
    cfg = TrainConfig(epochs=4, batch_size=128)
    flat = train_classifier(x, sp.csr_array(y), names[:L], "m", "c", cfg)
    implied = implied_labels(targets, names, parents)
    assert implied.toarray()[:, L].all() and not implied.toarray()[:, :L].any()
    ruled = train_classifier(x, targets, names, "m", "c", cfg, implied=implied)
    before = train_classifier(x, targets, names, "m", "c", cfg)
    np.testing.assert_allclose(ruled.weight[:L], flat.weight, atol=1e-5)
    np.testing.assert_allclose(ruled.anchors.neg_mean[:L], flat.anchors.neg_mean, atol=1e-4)
    assert np.abs(before.anchors.neg_mean[:L] - flat.anchors.neg_mean).mean() > 0.01
