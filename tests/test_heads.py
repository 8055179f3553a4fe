"""The image-trained heads against formulas written out here, loop by loop, on tiny tensors; their
training is deterministic under a seed; save/load round-trips; any label scores from its text."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tagger.method.classifier import TextClassifier
from tagger.method.comc import ComcModel
from tagger.method.heads import (ClipDecoderConfig, FewShotConfig, FitConfig, MktConfig, OvmlConfig, fit_fewshot,
                                 fit_head, is_head_dir, load_head, sample_shots)
from tagger.method.heads.base import softplus_ranking
from tagger.method.heads.clip_decoder import ClipDecoderModule
from tagger.method.heads.fewshot import prototype_weights
from tagger.method.heads.mkt import MktModule
from tagger.method.heads.ovml import OvmlModule
from tagger.method.mapping import MemoryBank
from tagger.method.scoring import ScoreConfig

D, P, N, L = 8, 3, 4, 5


def unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


@pytest.fixture
def toy() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    g = unit(torch.randn(N, D, generator=gen))
    p = unit(torch.randn(N, P, D, generator=gen))
    t = unit(torch.randn(L, D, generator=gen))
    y = torch.tensor([[1, 0, 1, 0, 0], [1, 1, 0, 0, 0], [0, 1, 1, 0, 1], [1, 0, 0, 1, 0]], dtype=torch.float32)
    return g, p, t, y


def jiggle(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Move every parameter off its (identity / zero) start so the formulas are exercised."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for prm in module.parameters():
            prm.add_(0.3 * torch.randn(prm.shape, generator=gen))
    return module


def lin(layer: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return x @ layer.weight.T + layer.bias


def rank_formula(s: torch.Tensor, y: torch.Tensor) -> float:
    total = 0.0
    for i in range(len(s)):
        pos = [j for j in range(s.shape[1]) if y[i, j] == 1]
        neg = [k for k in range(s.shape[1]) if y[i, k] == 0]
        if pos:
            total += sum(math.log(1 + math.exp(float(s[i, k] - s[i, j]))) for j in pos for k in neg) / len(pos)
    return total / len(s)


def test_ranking_loss(toy) -> None:
    g, p, t, y = toy
    s = torch.randn(N, L, generator=torch.Generator().manual_seed(1))
    y2 = y.clone()
    y2[0] = 0  # an image without a positive adds 0
    assert softplus_ranking(s, y2, chunk=2).item() == pytest.approx(rank_formula(s, y2), rel=1e-5)


# ------------------------------------------------------------------ OVML
def ovml_features(m: OvmlModule, p: torch.Tensor, t: torch.Tensor, heads: int, temp: float) -> torch.Tensor:
    o = torch.zeros(len(p), len(t), D)
    dh = D // heads
    for i in range(len(p)):
        keys, vals = lin(m.attn.k, p[i]), lin(m.attn.v, p[i])
        for j in range(len(t)):
            q = lin(m.attn.q, t[j])
            parts = []
            for h in range(heads):
                sl = slice(h * dh, (h + 1) * dh)
                w = torch.softmax(torch.stack([q[sl] @ keys[r, sl] / temp for r in range(len(p[i]))]), 0)
                parts.append(sum(w[r] * vals[r, sl] for r in range(len(p[i]))))
            o[i, j] = lin(m.attn.o, torch.cat(parts))
    return o


def supcon_formula(z: torch.Tensor, y: torch.Tensor, tau: float) -> float:
    anchors = [(i, j) for i in range(y.shape[0]) for j in range(y.shape[1]) if y[i, j] == 1]
    losses = []
    for a in anchors:
        others = [b for b in anchors if b != a]
        pos = [b for b in others if b[1] == a[1]]
        if not pos:
            continue
        den = sum(math.exp(float(z[a] @ z[b]) / tau) for b in others)
        losses.append(-sum(math.log(math.exp(float(z[a] @ z[b]) / tau) / den) for b in pos) / len(pos))
    return sum(losses) / len(losses)


def test_ovml_forward_and_loss_match_the_formula(toy) -> None:
    g, p, t, y = toy
    cfg = OvmlConfig(n_heads=2, attn_temp=0.3, d_z=4, con_tau=0.5, interp=0.3, logit_scale=2.0)
    m = jiggle(OvmlModule(cfg, D)).eval()
    o = unit(ovml_features(m, p, t, 2, 0.3))
    expect = torch.stack([torch.stack([(0.3 * o[i, j] + 0.7 * g[i]) @ t[j] for j in range(L)]) for i in range(N)])
    with torch.no_grad():
        assert torch.allclose(m(g, p, t), expect, atol=1e-5)
        s = torch.stack([torch.stack([2.0 * o[i, j] @ t[j] for j in range(L)]) for i in range(N)])
        z = unit(lin(m.proj, o))
        want = rank_formula(s, y) + supcon_formula(z, y, 0.5)
        assert m.loss(g, p, y, t).item() == pytest.approx(want, rel=1e-4)


# ------------------------------------------------------------------ MKT
def test_mkt_forward_and_loss_match_the_formula(toy) -> None:
    g, p, t, y = toy
    cfg = MktConfig(local_weight=0.4, topk=2, kd_weight=0.7, logit_scale=3.0)
    m = jiggle(MktModule(cfg, D)).eval()
    torch.set_grad_enabled(False)
    eg = unit(g + lin(m.adapt_global, g))
    el = unit(p + lin(m.adapt_local, p))
    tp = unit(t + lin(m.prompt, t))
    expect = torch.zeros(N, L)
    for i in range(N):
        for c in range(L):
            local = sorted((float(el[i, r] @ tp[c]) for r in range(P)), reverse=True)[:2]
            expect[i, c] = 0.6 * (eg[i] @ tp[c]) + 0.4 * sum(local) / 2
    with torch.no_grad():
        assert torch.allclose(m(g, p, t), expect, atol=1e-5)
        kd = sum(float((eg[i] - g[i]).abs().sum()) for i in range(N)) / N + \
            sum(float((tp[c] - t[c]).abs().sum()) for c in range(L)) / L
        assert m.loss(g, p, y, t).item() == pytest.approx(rank_formula(3.0 * expect, y) + 0.7 * kd, rel=1e-4)
    torch.set_grad_enabled(True)


# ------------------------------------------------------------------ CLIP-Decoder
def layer_norm(x: torch.Tensor, ln: torch.nn.LayerNorm) -> torch.Tensor:
    mu, var = x.mean(), ((x - x.mean()) ** 2).mean()
    return (x - mu) / torch.sqrt(var + ln.eps) * ln.weight + ln.bias


def decoder_h(m: ClipDecoderModule, g_i, p_i, t_c, temp: float, heads: int) -> torch.Tensor:
    q = lin(m.shared, t_c)
    tokens = [lin(m.shared, g_i)] + [lin(m.shared, p_i[r]) for r in range(len(p_i))]
    qq, dh, parts = lin(m.attn.q, q), D // heads, []
    for h in range(heads):
        sl = slice(h * dh, (h + 1) * dh)
        w = torch.softmax(torch.stack([qq[sl] @ lin(m.attn.k, tok)[sl] / temp for tok in tokens]), 0)
        parts.append(sum(w[r] * lin(m.attn.v, tok)[sl] for r, tok in enumerate(tokens)))
    x = layer_norm(q + lin(m.attn.o, torch.cat(parts)), m.ln1)
    ffn = lin(m.ffn[2], torch.relu(lin(m.ffn[0], x)))
    return layer_norm(x + ffn, m.ln2)


def decoder_logit(m: ClipDecoderModule, g_i, p_i, t_c, temp: float, heads: int) -> torch.Tensor:
    return m.cfg.logit_scale * unit(lin(m.scorer, decoder_h(m, g_i, p_i, t_c, temp, heads))) @ t_c + m.bias


def asl_formula(logits: torch.Tensor, y: torch.Tensor, gn: float, gp: float, clip: float) -> float:
    total = 0.0
    for i in range(logits.shape[0]):
        for c in range(logits.shape[1]):
            pr = 1 / (1 + math.exp(-float(logits[i, c])))
            if y[i, c] == 1:
                total -= (1 - pr) ** gp * math.log(pr)
            else:
                pm = max(pr - clip, 0.0)
                total -= pm ** gn * math.log(1 - pm)
    return total / logits.shape[0]


def test_clip_decoder_forward_and_loss_match_the_formula(toy) -> None:
    g, p, t, y = toy
    cfg = ClipDecoderConfig(n_heads=2, attn_temp=0.5, alpha=0.6, beta=1.3, clip_tau=0.2, logit_scale=4.0)
    m = jiggle(ClipDecoderModule(cfg, D)).eval()
    with torch.no_grad():
        expect = torch.stack([torch.stack([decoder_logit(m, g[i], p[i], t[c], 0.5, 2) for c in range(L)])
                              for i in range(N)])
        assert torch.allclose(m.logits(g, p, t), expect, atol=1e-4)
        # test time: each output mixed with the global feature at cfg.interp before the cosine
        mixed = torch.stack([torch.stack([
            4.0 * ((1 - cfg.interp) * unit(lin(m.scorer, decoder_h(m, g[i], p[i], t[c], 0.5, 2)))
                   + cfg.interp * g[i]) @ t[c] + m.bias for c in range(L)]) for i in range(N)])
        assert cfg.interp > 0 and torch.allclose(m(g, p, t), mixed, atol=1e-4)
        u = [unit(lin(m.shared, g[i])) for i in range(N)]
        v = [unit(sum(lin(m.shared, t[c]) for c in range(L) if y[i, c]) / y[i].sum()) for i in range(N)]
        sim = [[float(u[i] @ v[k]) / 0.2 for k in range(N)] for i in range(N)]
        i2t = -sum(sim[i][i] - math.log(sum(math.exp(x) for x in sim[i])) for i in range(N)) / N
        t2i = -sum(sim[i][i] - math.log(sum(math.exp(sim[k][i]) for k in range(N))) for i in range(N)) / N
        want = 0.6 * 0.5 * (i2t + t2i) + 1.3 * asl_formula(expect, y, 4.0, 0.0, 0.05)
        assert m.loss(g, p, y, t).item() == pytest.approx(want, rel=1e-4)


# ------------------------------------------------------------------ training, save/load, unseen labels
KINDS = {"ovml": OvmlConfig, "mkt": MktConfig, "clip-decoder": ClipDecoderConfig}


def training_set(seed: int = 0, n: int = 40, d: int = 16, n_labels: int = 6):
    rng = np.random.default_rng(seed)
    t = rng.normal(size=(n_labels, d)).astype(np.float32)
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    y = (rng.random((n, n_labels)) < 0.35).astype(np.uint8)
    y[np.arange(n), rng.integers(0, n_labels, n)] = 1
    p = y @ t
    p = p[:, None, :] + 0.3 * rng.normal(size=(n, 4, d))
    p = (p / np.linalg.norm(p, axis=2, keepdims=True)).astype(np.float32)
    g = p.mean(1)
    g = (g / np.linalg.norm(g, axis=1, keepdims=True)).astype(np.float32)
    return g, p, y, t


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_training_is_deterministic_and_round_trips(kind: str, tmp_path) -> None:
    g, p, y, t = training_set()
    seen = [0, 1, 2, 3]
    cfg = KINDS[kind](fit=FitConfig(epochs=3, batch_size=16, seed=5))
    fit = lambda c: fit_head(kind, g, p, y[:, seen], t, seen=seen, labels=list("abcdef"), cfg=c, data_id="d1")
    a, b = fit(cfg), fit(cfg)
    for (name, wa), wb in zip(a.module.state_dict().items(), b.module.state_dict().values()):
        assert torch.equal(wa, wb), name
    other = fit(KINDS[kind](fit=FitConfig(epochs=3, batch_size=16, seed=6)))
    assert not np.array_equal(other.scores(g, p), a.scores(g, p))
    a.save(tmp_path / "h")
    assert is_head_dir(tmp_path / "h")
    back = load_head(tmp_path / "h")
    assert back.labels == list("abcdef") and back.seen == list("abcd") and back.data_id == "d1"
    assert back.config == cfg
    np.testing.assert_array_equal(back.scores(g, p), a.scores(g, p))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_unseen_labels_score_from_their_text_embedding(kind: str) -> None:
    g, p, y, t = training_set()
    head = fit_head(kind, g, p, y[:, :4], t[:4], cfg=KINDS[kind](fit=FitConfig(epochs=2, batch_size=16)))
    assert head.scores(g, p).shape == (len(g), 4)
    new = t[3:]  # one seen label, two it never saw
    s = head.scores(g, p, new)
    assert s.shape == (len(g), 3) and np.isfinite(s).all()
    moved = new.copy()
    moved[2] = -moved[2]
    s2 = head.scores(g, p, moved)
    np.testing.assert_allclose(s2[:, :2], s[:, :2], rtol=1e-5, atol=1e-6)
    assert not np.allclose(s2[:, 2], s[:, 2])
    # an image without patches is scored from its global embedding alone
    assert head.scores(g, None, new).shape == (len(g), 3)


def test_a_head_needs_labelled_images() -> None:
    from tagger.errors import ConfigError
    g, p, y, t = training_set()
    with pytest.raises(ConfigError, match="no labelled image"):
        fit_head("ovml", g, p, np.zeros_like(y[:, :4]), t[:4])
    with pytest.raises(ConfigError, match="unknown head"):
        fit_head("nope", g, p, y, t)


# ------------------------------------------------------------------ few-shot CoMC
def comc_model(t: np.ndarray, labels: list[str]) -> ComcModel:
    clf = TextClassifier(weight=2.0 * t, labels=labels, model_id="m", corpus_id="c")
    return ComcModel(clf, {"prompts": MemoryBank(t, "prompts")}, ScoreConfig(use_local=False))


def test_prototypes_follow_the_formula() -> None:
    rng = np.random.default_rng(0)
    w, x = rng.normal(size=(3, 4)), rng.normal(size=(5, 4))
    y = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 1, 0], [1, 0, 0]], bool)
    out = prototype_weights(w, x, y, 0.5)
    mean = x.mean(0)
    for c in range(2):
        proto = x[y[:, c]].mean(0) - mean
        np.testing.assert_allclose(out[c], w[c] + 0.5 * np.linalg.norm(w[c]) * proto / np.linalg.norm(proto),
                                   rtol=1e-5)
    np.testing.assert_allclose(out[2], w[2], rtol=1e-6)  # no labelled image: unchanged
    shrunk = prototype_weights(w, x, y, 0.5, shrinkage=3.0)  # label 0 has 3 images, label 1 has 3
    for c in range(2):
        proto = x[y[:, c]].mean(0) - mean
        step = 0.5 * 3 / (3 + 3.0) * np.linalg.norm(w[c]) * proto / np.linalg.norm(proto)
        np.testing.assert_allclose(shrunk[c], w[c] + step, rtol=1e-5)


@pytest.mark.parametrize("mode", ["prototype", "finetune", "both"])
def test_fewshot_moves_the_classifier_toward_the_images(mode: str) -> None:
    g, p, y, t = training_set(d=16)
    rng = np.random.default_rng(1)
    wrong = t + 0.8 * rng.normal(size=t.shape).astype(np.float32)  # a poor text classifier
    base = comc_model(wrong / np.linalg.norm(wrong, axis=1, keepdims=True), list("abcdef"))
    from tagger.evaluate.metrics import mean_average_precision
    before = mean_average_precision(base.scores(g, None), y)
    cfg = FewShotConfig(mode=mode, epochs=30)
    better = fit_fewshot(base, g, y, cfg)
    assert mean_average_precision(better.scores(g, None), y) > before
    again = fit_fewshot(base, g, y, cfg)
    np.testing.assert_array_equal(again.classifier.weight, better.classifier.weight)  # deterministic
    assert better.labels == base.labels and better.classifier.metrics["fewshot"]["mode"] == mode


def test_shots_per_label() -> None:
    _, _, y, _ = training_set(n=60)
    for k in (1, 2, 4):
        idx = sample_shots(y, k, seed=0)
        assert (y[idx].sum(0) >= np.minimum(k, y.sum(0))).all()
        assert len(set(idx.tolist())) == len(idx)
    np.testing.assert_array_equal(sample_shots(y, 2, seed=3), sample_shots(y, 2, seed=3))
