"""Scoring at many labels: the pruned patch branch and the mapping's softmax against direct formulas."""
import json
from dataclasses import replace

import numpy as np
import pytest

from tagger.errors import ConfigError
from tagger.method.classifier import TextClassifier
from tagger.method.comc import ComcModel, load_comc, save_comc
from tagger.method.mapping import MemoryBank, cross_modal_map
from tagger.method.scoring import (ScoreConfig, candidate_labels, comc_scores, global_scores, local_scores,
                                   pruned_local_scores)


def _unit(rng, *shape):
    x = rng.standard_normal(shape).astype(np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _data(seed, n=9, num_p=11, d=48, c=70, k=40):
    rng = np.random.default_rng(seed)
    return _unit(rng, n, d), _unit(rng, n, num_p, d), _unit(rng, c, d), MemoryBank(_unit(rng, k, d))


def _mapped_reference(v, m, tau, alpha):
    """The mapping written out in float64: alpha v + (1 - alpha) normalise(softmax(v M^T / tau) M)."""
    v, m = v.astype(np.float64), m.astype(np.float64)
    logits = v @ m.T / tau
    a = np.exp(logits - logits.max(1, keepdims=True))
    a /= a.sum(1, keepdims=True)
    u = a @ m
    return alpha * v + (1 - alpha) * u / np.linalg.norm(u, axis=1, keepdims=True)


@pytest.mark.parametrize("tau", [0.01, 0.1])
def test_mapping_equals_the_softmax_formula(tau):
    _, p, _, mem = _data(0)
    flat = p.reshape(-1, p.shape[-1])
    got = cross_modal_map(flat, mem, tau, 0.7)
    np.testing.assert_allclose(got, _mapped_reference(flat, mem.vectors, tau, 0.7), atol=2e-5)
    # the scaled memory is cached per tau: a second tau gives its own mapping, not the first one's
    other = 0.05 if tau != 0.05 else 0.2
    np.testing.assert_allclose(cross_modal_map(flat, mem, other, 0.7),
                               _mapped_reference(flat, mem.vectors, other, 0.7), atol=2e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pruning_to_every_label_is_the_exact_local_score(seed):
    g, p, w, mem = _data(seed)
    cfg = replace(ScoreConfig(), patch_labels=w.shape[0])
    gs = global_scores(g, w, mem, cfg)
    np.testing.assert_allclose(pruned_local_scores(p, gs, w, mem, cfg, batch_images=4),
                               local_scores(p, w, mem, cfg), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k", [1, 5, 23])
def test_pruned_candidates_are_exact_and_the_rest_get_global_plus_offset(k):
    g, p, w, mem = _data(k)
    cfg = replace(ScoreConfig(), patch_labels=k)
    gs = global_scores(g, w, mem, cfg)
    exact = local_scores(p, w, mem, cfg)
    got = pruned_local_scores(p, gs, w, mem, cfg, batch_images=4)
    cand = np.zeros(gs.shape, bool)
    np.put_along_axis(cand, candidate_labels(gs, k), True, axis=1)
    assert (cand.sum(1) == k).all()
    # the candidates are each image's k best labels by global score
    kth = np.sort(gs, axis=1)[:, -k]
    assert (gs[cand].reshape(len(gs), k) >= kth[:, None]).all()
    np.testing.assert_allclose(got[cand], exact[cand], rtol=1e-5, atol=1e-5)
    offset = np.where(cand, exact - gs, 0.0).sum(1) / k
    np.testing.assert_allclose(got[~cand], (gs + offset[:, None])[~cand], rtol=1e-5, atol=1e-5)


def test_comc_scores_prunes_only_below_the_label_count():
    g, p, w, mem = _data(5)
    exact = comc_scores(g, p, w, mem, replace(ScoreConfig(), patch_labels=None))
    same = comc_scores(g, p, w, mem, replace(ScoreConfig(), patch_labels=w.shape[0]))
    np.testing.assert_allclose(same, exact, rtol=1e-6)
    pruned = comc_scores(g, p, w, mem, replace(ScoreConfig(), patch_labels=10, patch_memory=None))
    cand = np.zeros(exact.shape, bool)
    np.put_along_axis(cand, candidate_labels(global_scores(g, w, mem, ScoreConfig()), 10), True, axis=1)
    np.testing.assert_allclose(pruned[cand], exact[cand], rtol=1e-5, atol=1e-5)
    assert not np.allclose(pruned[~cand], exact[~cand])  # the rest are estimates, not the exact scores
    # float16 patches (as the evaluation harness keeps them) score as their float32 values
    np.testing.assert_allclose(comc_scores(g, p.astype(np.float16), w, mem, replace(ScoreConfig(), patch_labels=10)),
                               comc_scores(g, p.astype(np.float16).astype(np.float32), w, mem,
                                           replace(ScoreConfig(), patch_labels=10)), rtol=1e-6)


def test_pruned_ranking_keeps_the_strong_labels():
    """A label whose patches and global embedding both match an image ranks first either way."""
    rng = np.random.default_rng(7)
    w = _unit(rng, 200, 64)
    g = _unit(rng, 6, 64) * 0.3 + w[:6] * 0.7
    p = _unit(rng, 6, 10, 64)
    p[:, 0] = w[:6]
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    for cfg in (replace(ScoreConfig(), patch_labels=None), replace(ScoreConfig(), patch_labels=8)):
        assert (comc_scores(g, p, w, None, cfg).argmax(1) == np.arange(6)).all()


@pytest.mark.parametrize("field", ["patch_labels", "topk"])
def test_bad_counts_are_a_config_error(field):
    with pytest.raises(ConfigError, match=field):
        ScoreConfig(**{field: 0})


def test_a_saved_score_config_without_the_new_field_loads_with_the_default(tmp_path):
    rng = np.random.default_rng(3)
    model = ComcModel(TextClassifier(_unit(rng, 4, 16), list("abcd"), "m", "c"),
                      {"prompts": MemoryBank(_unit(rng, 4, 16))}, ScoreConfig())
    save_comc(model, tmp_path)
    cfg = json.loads((tmp_path / "score_config.json").read_text())
    assert "patch_labels" in cfg
    del cfg["patch_labels"]
    (tmp_path / "score_config.json").write_text(json.dumps(cfg))
    assert load_comc(tmp_path).score == ScoreConfig()


@pytest.mark.parametrize("rows", [3, 12])
def test_patches_attend_over_the_rows_their_image_attends_to_most(rows):
    g, p, w, mem = _data(4)
    cfg = ScoreConfig(patch_labels=20, patch_memory=rows)
    got = pruned_local_scores(p, global_scores(g, w, mem, cfg), w, mem, cfg, g=g)
    gs = global_scores(g, w, mem, cfg)
    for i in range(len(g)):  # each image's own memory: its global embedding's top rows, by the formula
        top = np.argsort(-(g[i] @ mem.vectors.T))[:rows]
        mapped = _mapped_reference(p[i], mem.vectors[top], cfg.tau, cfg.alpha)
        cand = candidate_labels(gs[i:i + 1], 20)[0]
        np.testing.assert_allclose(got[i, cand], (mapped @ w[cand].T.astype(np.float64)).max(0), atol=1e-4)
    whole = pruned_local_scores(p, gs, w, mem, replace(cfg, patch_memory=None), g=g)
    assert np.abs(got - whole).max() > 1e-3  # fewer rows: other scores


def test_patch_memory_at_least_the_memory_is_the_whole_memory():
    g, p, w, mem = _data(5)
    base = ScoreConfig(patch_labels=20, patch_memory=None)
    np.testing.assert_array_equal(comc_scores(g, p, w, mem, replace(base, patch_memory=mem.size)),
                                  comc_scores(g, p, w, mem, base))
    with pytest.raises(ConfigError):
        ScoreConfig(patch_memory=0)
    # the default: pruned patches read each image's own rows once the memory has more than that many
    small = comc_scores(g, p, w, mem, base)
    assert ScoreConfig().patch_memory is not None and ScoreConfig().patch_memory < mem.size
    assert np.abs(comc_scores(g, p, w, mem, replace(ScoreConfig(), patch_labels=20)) - small).max() > 1e-4
    # with topk each patch keeps its own top rows: patch_memory does not apply
    np.testing.assert_array_equal(comc_scores(g, p, w, mem, replace(base, topk=8, patch_memory=4)),
                                  comc_scores(g, p, w, mem, replace(base, topk=8)))
