"""The parts of the incremental nightly, without Ray: frozen-row training, the extended model's
scores, scoring patches from PQ codes, carrying a run's tags over, and the runs' recorded mode."""
from __future__ import annotations

from dataclasses import replace

import faiss
import numpy as np
import pyarrow as pa
import pytest

from tagger.catalog import Catalog
from tagger.catalog.runs import run_mode
from tagger.errors import CatalogError
from tagger.evaluate.metrics import per_class_ap
from tagger.method.classifier import TrainConfig, train_classifier, train_rows
from tagger.method.comc import ComcModel
from tagger.method.decisions import Decisions
from tagger.method.extend import ExtendedModel, pq_patch_max
from tagger.method.mapping import MemoryBank
from tagger.method.scoring import ScoreConfig
from tagger.method.hierarchy import Hierarchy
from tagger.pipeline.increment import carry_rows
from tagger.pipeline.lift import plan_lift
from tagger.pipeline.tag import TagConfig, tag_rows

D, C = 32, 12


def corpus(seed: int = 0, n: int = 3000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sentences about 1-3 of C labels: the sum of their label vectors (the same for every seed)
    plus noise, unit-normed."""
    protos = np.random.default_rng(0).standard_normal((C, D)).astype(np.float32)
    rng = np.random.default_rng(seed + 1)
    y = np.zeros((n, C), np.float32)
    for i in range(n):
        y[i, rng.choice(C, rng.integers(1, 4), replace=False)] = 1
    x = y @ protos + 2.0 * rng.standard_normal((n, D)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True), y, protos


def test_new_rows_trained_against_frozen_ones_rank_like_a_full_retrain():
    x, y, _ = corpus()
    cfg = TrainConfig(epochs=20, batch_size=128, lr=1e-2)
    old = train_classifier(x, y[:, :-2], [f"l{i}" for i in range(C - 2)], "m", "c", cfg)
    frozen = old.weight.copy()
    rows, metrics = train_rows(x, y, frozen, [C - 2, C - 1], cfg, others_per_positive=1, min_others=1000)
    full = train_classifier(x, y, [f"l{i}" for i in range(C)], "m", "c", cfg)
    test_x, test_y, _ = corpus(seed=1, n=600)  # fresh sentences about the same labels
    inc = np.concatenate([frozen, rows])
    ap_inc = per_class_ap(test_x @ inc.T, test_y.astype(np.uint8))[-2:]
    ap_full = per_class_ap(test_x @ full.weight.T, test_y.astype(np.uint8))[-2:]
    assert np.array_equal(frozen, old.weight)  # the old rows were not touched
    assert rows.shape == (2, D) and metrics["sentences"] < len(x)
    assert np.all(ap_inc > ap_full - 0.06) and np.all(ap_inc > 0.6), (ap_inc, ap_full)


def test_a_sample_smaller_than_the_corpus_trains_with_a_scaled_learning_rate():
    x, y, _ = corpus(n=2000)
    cfg = TrainConfig(epochs=4, batch_size=128, lr=1e-3)
    frozen = np.random.default_rng(2).standard_normal((C - 1, D)).astype(np.float32)
    plain, m1 = train_rows(x, y, frozen, [C - 1], cfg, others_per_positive=1, min_others=100)
    scaled, m8 = train_rows(x, y, frozen, [C - 1], cfg, others_per_positive=1, min_others=100, max_lr_scale=8)
    ratio = len(x) / m8["sentences"]  # corpus rows over sample rows: about 2,000 / 330
    assert m1["lr_scale"] == 1.0 and m8["lr_scale"] == pytest.approx(min(8.0, ratio))
    assert 1.0 < m8["lr_scale"] <= 8.0
    init, _ = train_rows(x, y, frozen, [C - 1], replace(cfg, epochs=0), others_per_positive=1, min_others=100)
    assert np.linalg.norm(scaled - init) > 2 * np.linalg.norm(plain - init)  # the scaled rows moved further
    _, whole = train_rows(x, y, frozen, [C - 1], cfg, others_per_positive=10**6, max_lr_scale=8)
    assert whole["lr_scale"] == 1.0  # the sample is the corpus: nothing to make up
    # a sample far smaller than the corpus trains for more epochs too: r / epochs_after, at most 3 x
    longer, mx = train_rows(x, y, frozen, [C - 1], cfg, others_per_positive=1, min_others=100, max_lr_scale=8,
                            epochs_after=2.0, max_epoch_scale=3.0)
    assert m8["epochs"] == 4 and mx["epochs"] == round(4 * min(3.0, max(1.0, ratio / 2.0))) > 4
    assert np.linalg.norm(longer - init) > np.linalg.norm(scaled - init)
    assert whole["epochs"] == 4


def test_frozen_row_training_refuses_rows_that_do_not_fit():
    x, y, _ = corpus(n=200)
    with pytest.raises(ValueError, match="frozen rows"):
        train_rows(x, y, np.zeros((3, D), np.float32), [C - 1])


def _comc(rng, labels: list[str]) -> ComcModel:
    from tagger.method.classifier import TextClassifier
    w = rng.standard_normal((len(labels), D)).astype(np.float32)
    prompts = rng.standard_normal((len(labels), D)).astype(np.float32)
    return ComcModel(TextClassifier(w, labels, "m", "c"), {"prompts": MemoryBank(prompts)}, ScoreConfig())


def test_extended_model_keeps_base_columns_and_scores_new_ones_from_one_readout(tmp_path):
    from tagger.method.classifier import TextClassifier
    rng = np.random.default_rng(1)
    base = _comc(rng, ["a", "b", "c", "d"])
    rows = TextClassifier(rng.standard_normal((2, D)).astype(np.float32), ["e", "f"], "m", "c")
    ext = ExtendedModel(base, ["a", "c", "d"], rows, {"prompts": rng.standard_normal((2, D)).astype(np.float32)},
                        base.score)
    g, p = rng.standard_normal((5, D)).astype(np.float32), rng.standard_normal((5, 7, D)).astype(np.float32)
    s = ext.scores(g, p)
    assert ext.labels == ["a", "c", "d", "e", "f"] and s.shape == (5, 5)
    np.testing.assert_allclose(s[:, :3], base.scores(g, p)[:, [0, 2, 3]], rtol=1e-5)
    # with the mapping off the new columns are exactly CoMC's: (1 - w) g.w + w max_p p.w
    plain = ExtendedModel(base, ["a"], rows, {}, ScoreConfig(alpha=1.0))
    want = 0.5 * g @ rows.weight.T + 0.5 * (p @ rows.weight.T).max(1)
    np.testing.assert_allclose(plain.scores(g, p)[:, 1:], want, rtol=1e-5, atol=1e-5)
    assert len(ext.memories["prompts"].vectors) == len(ext.labels)  # one prompt per label, kept ones first
    ext.save(tmp_path / "ext", "../base")
    loaded = ExtendedModel.load(tmp_path / "ext", lambda _: base)
    np.testing.assert_allclose(loaded.scores(g, p), s, rtol=1e-6)
    with pytest.raises(ValueError, match="not labels of the base"):
        ExtendedModel(base, ["zz"], rows, {}, base.score)


def test_extended_model_leaves_out_the_prompt_memories_it_was_not_given():
    """Only the memory the scores read (and ``prompts``, which names images) gets the new labels'
    prompts; another per-label memory is left out, not left a row short, and reading it is refused."""
    from tagger.method.classifier import TextClassifier
    rng = np.random.default_rng(5)
    base = _comc(rng, ["a", "b", "c"])
    base.memories["prompts-ensemble"] = MemoryBank(rng.standard_normal((3, D)).astype(np.float32))
    base.memories["sentences"] = MemoryBank(rng.standard_normal((11, D)).astype(np.float32))
    rows = TextClassifier(rng.standard_normal((1, D)).astype(np.float32), ["d"], "m", "c")
    ext = ExtendedModel(base, ["a", "b", "c"], rows, {"prompts": rng.standard_normal((1, D)).astype(np.float32)},
                        base.score)
    assert sorted(ext.memories) == ["prompts", "sentences"]
    assert len(ext.memories["prompts"].vectors) == 4 and len(ext.memories["sentences"].vectors) == 11
    g = rng.standard_normal((2, D)).astype(np.float32)
    assert ext.scores(g, None).shape == (2, 4)
    wrong = ExtendedModel(base, ["a", "b", "c"], rows, ext.prompts, ScoreConfig(memory="prompts-ensemble"))
    with pytest.raises(ValueError, match="prompts-ensemble"):
        wrong.scores(g, None)


def test_patches_attending_over_every_row_score_new_labels_as_comc_does():
    from tagger.method.classifier import TextClassifier
    from tagger.method.scoring import comc_scores
    rng = np.random.default_rng(4)
    base = _comc(rng, ["a", "b", "c", "d", "e", "f"])
    rows = TextClassifier(rng.standard_normal((2, D)).astype(np.float32), ["g", "h"], "m", "c")
    prompts = {"prompts": rng.standard_normal((2, D)).astype(np.float32)}
    g, p = rng.standard_normal((4, D)).astype(np.float32), rng.standard_normal((4, 9, D)).astype(np.float32)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    p /= np.linalg.norm(p, axis=2, keepdims=True)
    every = ExtendedModel(base, base.labels, rows, prompts, ScoreConfig(tau=0.1), patch_rows=10)
    want = comc_scores(g, p, rows.weight, every.memory(), every.score)
    np.testing.assert_allclose(every.scores(g, p)[:, -2:], want, rtol=1e-4, atol=1e-5)
    few = ExtendedModel(base, base.labels, rows, prompts, ScoreConfig(tau=0.1), patch_rows=1)
    assert not np.allclose(few.scores(g, p)[:, -2:], want, atol=1e-5)  # fewer rows: another readout


def test_patch_scores_from_pq_codes_match_decoded_patches():
    rng = np.random.default_rng(2)
    pq = faiss.index_factory(D, "PQ8x8")
    pq.train(rng.standard_normal((4000, D)).astype(np.float32))
    codes = pq.sa_encode(rng.standard_normal((6 * 9, D)).astype(np.float32))
    w = rng.standard_normal((3, D)).astype(np.float32)
    books = faiss.vector_to_array(pq.pq.centroids).reshape(8, 256, D // 8)
    want = (pq.sa_decode(codes) @ w.T).reshape(6, 9, 3).max(1)
    np.testing.assert_allclose(pq_patch_max(codes.reshape(6, 9, 8), books, w), want, rtol=1e-4, atol=1e-4)
    # the mapped patch branch read from the codes equals the one of the decoded patches
    base = _comc(rng, ["a", "b", "c", "d", "e", "f"])
    from tagger.method.classifier import TextClassifier
    rows = TextClassifier(w[:2], ["g", "h"], "m", "c")
    ext = ExtendedModel(base, base.labels, rows, {"prompts": rng.standard_normal((2, D)).astype(np.float32)},
                        ScoreConfig(tau=0.1), patch_rows=3)
    g = rng.standard_normal((6, D)).astype(np.float32)
    decoded = pq.sa_decode(codes).reshape(6, 9, D)
    np.testing.assert_allclose(ext.patch_scores_pq(g, codes.reshape(6, 9, 8), books), ext.patch_scores(g, decoded),
                               rtol=1e-3, atol=1e-4)


def test_new_scores_from_the_base_runs_readout_states_equal_those_computed_in_full():
    """Labels added, one retired: the new columns scored from the base model's states, edited by the
    changed memory rows, equal those read over the whole memory (global and patch branch), and so
    does a second extension edited from the first one's states."""
    from tagger.method.classifier import TextClassifier
    from tagger.method.readout import readout_state
    rng = np.random.default_rng(7)
    names = [f"l{i}" for i in range(40)]
    base = _comc(rng, names)
    base.score = ScoreConfig(tau=0.05)
    pq = faiss.index_factory(D, "PQ8x8")
    pq.train(rng.standard_normal((4000, D)).astype(np.float32))
    books = faiss.vector_to_array(pq.pq.centroids).reshape(8, 256, D // 8)
    g = rng.standard_normal((30, D)).astype(np.float32)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    codes = pq.sa_encode(rng.standard_normal((30 * 5, D)).astype(np.float32)).reshape(30, 5, 8)
    state = readout_state(g, base.memory().vectors, base.score.tau, rows=8)
    model = base
    for step, kept in enumerate([names[1:], None]):  # first retire l0 and add two, then add two more
        rows = TextClassifier(rng.standard_normal((2, D)).astype(np.float32), [f"n{step}a", f"n{step}b"], "m", "c")
        prompts = {"prompts": rng.standard_normal((2, D)).astype(np.float32)}
        ext = ExtendedModel(model, kept or model.labels, rows, prompts, base.score, patch_rows=3)
        state = ext.readout_state(g, state)
        full = ext.new_scores(g, ext.patch_scores_pq(g, codes, books), local_mapped=True)
        edited = ext.new_scores(g, ext.patch_scores_pq(g, codes, books, state=state), local_mapped=True, state=state)
        np.testing.assert_allclose(edited, full, rtol=1e-4, atol=1e-4)
        model = ext


def _decisions(labels: list[str], threshold: float) -> Decisions:
    n = len(labels)
    return Decisions(labels, np.full(n, threshold - 1.0), np.ones(n), np.full(n, threshold + 1.0), np.ones(n),
                     np.full(n, 0.5), np.ones(n, bool), 0.5)


def test_carried_tags_stay_and_new_labels_join_the_ranking():
    rng = np.random.default_rng(3)
    ids = np.arange(10, 30, dtype=np.int64)
    scores = rng.standard_normal((20, 8)).astype(np.float32)
    old, new = [f"o{i}" for i in range(6)], ["n0", "n1"]
    cfg = TagConfig(top_k=3)
    carried = tag_rows(ids, scores[:, :6], old, cfg, _decisions(old, 1.5))
    table = carry_rows(carried, ids[::-1].copy(), scores[::-1, 6:].copy(), new, _decisions(new, 1.5), 3)
    full = tag_rows(ids, scores, old + new, cfg, _decisions(old + new, 1.5))
    rows = {(r["image_id"], r["label"]): r for r in table.to_pylist()}
    for r in carried.to_pylist():  # every carried tag is still there, only its rank can grow
        got = rows[(r["image_id"], r["label"])]
        assert (got["score"], got["positive"], got["confidence"]) == (r["score"], r["positive"], r["confidence"])
        assert got["rank"] >= r["rank"]
    for r in full.to_pylist():  # the full ranking's tags are all there, those in the top-k at the same rank
        got = rows[(r["image_id"], r["label"])]
        assert got["positive"] == r["positive"]
        if r["rank"] <= 3:
            assert got["rank"] == r["rank"]
    assert len({(r["image_id"], r["label"]) for r in table.to_pylist()}) == table.num_rows


def test_a_decided_parent_is_raised_by_carried_and_decided_children_as_a_full_run_raises_it():
    rng = np.random.default_rng(5)
    ids = np.arange(40, dtype=np.int64)
    scores = rng.standard_normal((40, 8)).astype(np.float32)
    old, new = [f"o{i}" for i in range(6)], ["n0", "n1"]
    parents = {"o0": ["n0"], "o1": ["n0"], "n1": ["n0"], "o2": ["o3"]}  # n0 new over two kept labels and n1
    cfg = TagConfig(top_k=3)
    carried = tag_rows(ids, scores[:, :6], old, cfg, _decisions(old, 1.0), Hierarchy.build(old, parents))
    full = tag_rows(ids, scores, old + new, cfg, _decisions(old + new, 1.0), Hierarchy.build(old + new, parents))
    lift = plan_lift(new, old, parents, [])
    assert lift is not None and lift.carried == ("o0", "o1")
    plain = carry_rows(carried, ids, scores[:, 6:].copy(), new, _decisions(new, 1.0), 3)
    table = carry_rows(carried, ids, scores[:, 6:].copy(), new, _decisions(new, 1.0), 3, lift)

    def n0(t: pa.Table) -> dict[int, tuple]:
        return {r["image_id"]: (r["score"], r["confidence"]) for r in t.to_pylist() if r["label"] == "n0" and r["positive"]}
    assert n0(table) == n0(full) and len(n0(plain)) < len(n0(full))  # without the lift the parent misses images
    assert plan_lift(["o3"], old, parents, []) is not None and plan_lift(["o2"], old, parents, []) is None
    # a person's decision on a carried child reaches the decided parent
    quiet = next(int(i) for i in ids if int(i) not in n0(full))
    lifted = carry_rows(carried, ids, scores[:, 6:].copy(), new, _decisions(new, 1.0), 3,
                        plan_lift(new, old, parents, [(quiet, "o1", True)]))
    assert quiet in n0(lifted) and quiet not in n0(table)


def test_runs_record_their_mode(tmp_path):
    with Catalog.open(tmp_path / "catalog.duckdb") as cat:
        full = cat.start_run("tag", labels=["a"], mode="full")
        inc = cat.start_run("tag", labels=["a", "b"], mode="incremental", base_run=full)
        old = cat.start_run("tag", labels=["a"])
        with pytest.raises(CatalogError, match="mode"):
            cat.start_run("tag", mode="partial")
        runs = {r.run_id: r for r in cat.runs()}
    assert (runs[inc].mode, runs[inc].base_run) == ("incremental", full)
    assert [run_mode(runs[i]) for i in (full, inc, old)] == ["full", f"incremental from run {full}", "full"]
    assert pa is not None


def test_torch_threads_limits_the_block_and_restores_the_count():
    import torch
    from tagger.pipeline.increment import torch_threads
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError):
        with torch_threads(1):
            assert torch.get_num_threads() == 1
            raise RuntimeError("inside")
    assert torch.get_num_threads() == before


def test_new_labels_take_the_base_runs_placement_read_back_from_its_rows():
    """With too few new labels to fit a placement, an incremental run's new labels are decided at
    the placement its base run used, read back from the kept labels' stored components."""
    from types import SimpleNamespace

    from tagger.method.decisions import DecisionConfig, TextAnchors, fit_anchored
    from tagger.pipeline.calibration import decision_rows
    from tagger.pipeline.increment import _base_placement

    rng = np.random.default_rng(3)
    n, L, gap = 3000, 6, 4.0
    y = rng.random((n, L)) < 0.1
    raw = np.where(y, 0.75 * gap + 0.35 * rng.normal(size=(n, L)), rng.normal(0.2 * gap, 0.45, (n, L)))
    anchors = TextAnchors(np.zeros(L), np.full(L, gap), np.full(L, 0.5), np.full(L, 0.5))
    mean, std = raw.mean(0), raw.std(0)
    labels = [f"k{j}" for j in range(L)]
    d = fit_anchored((raw - mean) / std, labels, anchors.rescaled(mean, std), DecisionConfig())
    assert d.placement < DecisionConfig().pos_anchor
    rows = decision_rows(d, set())
    stats = {name: (float(m), float(s)) for name, m, s in zip(labels, mean, std)}
    base = SimpleNamespace(labels=["other", *labels], classifier=SimpleNamespace(anchors=TextAnchors(
        *(np.r_[1.0, a] for a in (anchors.neg_mean, anchors.pos_mean, anchors.neg_sd, anchors.pos_sd)))))
    scorer = SimpleNamespace(model=SimpleNamespace(base=base), cfg=SimpleNamespace(decisions=DecisionConfig()))
    assert _base_placement(scorer, rows, stats) == pytest.approx(d.placement, abs=1e-4)
    assert _base_placement(scorer, [dict(r, present=False) for r in rows], stats) is None
