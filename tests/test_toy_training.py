"""The toy CLIP training recipe: both stages run for both towers, resume from a checkpoint, load back."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tagger.models import load_clip
from tagger.toyworld import clip_train
from tagger.toyworld.captions import make_caption, mentioned_labels
from tagger.toyworld.clip_train import ClipTrainConfig, train_clip
from tagger.toyworld.render import render_split
from tagger.toyworld.scenes import make_scene
from tagger.toyworld.vocab import LABELS

TINY = dict(batch_size=8, n_train=24, n_val=16, warmup=1, eval_every=2, threads=1, render_workers=1)


def test_rendered_split_matches_scenes_and_is_cached(tmp_path):
    a = render_split("val", 6, 96, tmp_path, workers=2)
    assert a.pixels.shape == (6, 3, 96, 96) and a.pixels.dtype == np.uint8
    assert [s.index for s in a.scenes] == list(range(6)) and all(s.image is None for s in a.scenes)
    np.testing.assert_array_equal(a.labels[3], make_scene(3, "val").labels)
    assert len(list(tmp_path.glob("*.npy"))) == 1
    b = render_split("val", 6, 96, tmp_path, workers=1)  # read back, not drawn again
    np.testing.assert_array_equal(a.pixels, b.pixels)


def test_mentioned_labels_are_what_the_caption_names():
    scene = next(s for s in (make_scene(i, "train") for i in range(50))
                 if len(s.objects) >= 3 and min(map(s.area, s.objects)) < 0.03)
    for seed in range(20):
        m = mentioned_labels(scene, np.random.default_rng(seed))
        assert set(np.flatnonzero(m)) <= set(np.flatnonzero(scene.labels))
        caption = make_caption(scene, np.random.default_rng(seed))
        largest = max(scene.objects, key=scene.area).label
        assert m[LABELS.index(largest)] == 1 and caption
    # across captions small objects are sometimes named and sometimes not
    counts = sum(mentioned_labels(scene, np.random.default_rng(s)) for s in range(200))
    assert counts[scene.labels == 1].max() == 200 and 0 < counts[scene.labels == 1].min() < 200
    assert counts[scene.labels == 0].max() == 0


@pytest.mark.parametrize("model", ["toy-rn", "toy-vit"])
def test_both_stages_train_and_load_through_the_loader(model, tmp_path):
    cache = tmp_path / "cache"
    labels_cfg = ClipTrainConfig(model=model, stage="labels", steps=2, **TINY)
    m1 = train_clip(labels_cfg, tmp_path / "s1", cache_dir=cache)
    assert m1["history"][-1]["step"] == 2 and "head_map" in m1["history"][-1]
    init = str(tmp_path / "s1" / f"{model}.pt")
    cfg = ClipTrainConfig(model=model, stage="contrastive", steps=3, init_from=init, lock_image_steps=2,
                          image_lr_scale=0.1, **TINY)
    m2 = train_clip(cfg, tmp_path / "s2", cache_dir=cache)
    assert m2["init_sha256"] and m2["train_config"]["stage"] == "contrastive"
    s1 = torch.load(init, weights_only=True)
    s2 = torch.load(tmp_path / "s2" / f"{model}.pt", weights_only=True)
    visual = [k for k in s1 if k.startswith("visual.") and s1[k].is_floating_point() and "running" not in k]
    text = [k for k in s1 if k.startswith("transformer.")]
    # stage 2 moved the text tower; with the image tower locked for 2 of 3 steps at 0.1x it moved less
    assert any(not torch.equal(s1[k], s2[k]) for k in text)
    clip = load_clip(model, pretrained=str(tmp_path / "s2" / f"{model}.pt"), device="cpu")
    assert clip.model.visual.output_dim == 128 and visual


def test_a_killed_run_resumes_from_its_checkpoint_to_the_same_weights(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cfg = ClipTrainConfig(model="toy-vit", stage="labels", steps=4, checkpoint_every=2, **TINY)
    train_clip(cfg, tmp_path / "clean", cache_dir=cache)
    clean = torch.load(tmp_path / "clean" / "toy-vit.pt", weights_only=True)

    real_step, calls = clip_train._step, []

    def dying_step(run, *a):
        if run.step == 3:
            raise KeyboardInterrupt("killed")
        calls.append(run.step)
        return real_step(run, *a)

    monkeypatch.setattr(clip_train, "_step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        train_clip(cfg, tmp_path / "crash", cache_dir=cache)
    assert (tmp_path / "crash" / "toy-vit-labels.ckpt").exists()
    calls.clear()
    monkeypatch.setattr(clip_train, "_step", real_step)
    monkeypatch.setattr(clip_train, "_step", lambda run, *a: (calls.append(run.step), real_step(run, *a))[1])
    manifest = train_clip(cfg, tmp_path / "crash", cache_dir=cache)
    assert calls == [2, 3]  # steps 0-1 came from the checkpoint
    assert not (tmp_path / "crash" / "toy-vit-labels.ckpt").exists()
    assert [h["step"] for h in manifest["history"]] == [2, 4]
    resumed = torch.load(tmp_path / "crash" / "toy-vit.pt", weights_only=True)
    for k in clean:
        assert torch.equal(clean[k], resumed[k]), k


def test_a_vit_distils_a_trained_teacher_tower(tmp_path):
    cache = tmp_path / "cache"
    teacher = train_clip(ClipTrainConfig(model="toy-rn", stage="labels", steps=1, **TINY), tmp_path / "t",
                         cache_dir=cache)
    cfg = ClipTrainConfig(model="toy-vit", stage="labels", steps=8, teacher_model="toy-rn", distill_weight=5.0,
                          dense_distill_weight=1.0, pos_init="sincos", lr=3e-3,
                          teacher_weights=str(tmp_path / "t" / "toy-rn.pt"), **TINY)
    m = train_clip(cfg, tmp_path / "s", cache_dir=cache)
    assert m["teacher_sha256"] == teacher["sha256"]
    targets = np.load(next(cache.glob("teacher-toy-rn-*-global.npy")))
    dense = np.load(next(cache.glob("teacher-toy-rn-*-dense.npy")))
    assert targets.shape == (2, TINY["n_train"], 128) and dense.shape == (2, TINY["n_train"], 16, 128)
    np.testing.assert_allclose(np.linalg.norm(targets.astype(np.float32), axis=-1), 1.0, atol=2e-3)
    np.testing.assert_allclose(np.linalg.norm(dense.astype(np.float32), axis=-1), 1.0, atol=2e-3)
    assert not np.allclose(targets[0], targets[1])  # mirrored scenes embed differently
    from tagger.toyworld.distill import teacher_targets
    again = teacher_targets("toy-rn", str(tmp_path / "t" / "toy-rn.pt"), TINY["n_train"], cache)
    np.testing.assert_array_equal(again.global_, targets)
    np.testing.assert_array_equal(again.dense, dense)
    assert again.sha == teacher["sha256"] and again.grid == (4, 4)

    def agreement(weights) -> tuple[float, float]:  # mean cosine to the teacher: global, and dense on its grid
        from tagger.models.dense import FeatureConfig, image_features
        from tagger.models.preprocess import pixel_spec
        from tagger.toyworld.distill import pool_to_grid
        data = render_split("train", TINY["n_train"], 96, cache)
        model = load_clip("toy-vit", pretrained=str(weights), device="cpu").model
        g, p = image_features(model, pixel_spec("toy-vit").normalize(data.pixels), FeatureConfig())
        p = torch.nn.functional.normalize(pool_to_grid(p, (8, 8), (4, 4)), dim=-1)
        return (float((g * torch.from_numpy(targets[0]).float()).sum(-1).mean()),
                float((p * torch.from_numpy(dense[0]).float()).sum(-1).mean()))

    before = train_clip(ClipTrainConfig(model="toy-vit", stage="labels", steps=1, lr=1e-9, **TINY),
                        tmp_path / "b", cache_dir=cache)
    (g_after, p_after), (g_before, p_before) = agreement(tmp_path / "s" / "toy-vit.pt"), agreement(tmp_path / "b" / "toy-vit.pt")
    assert g_after > g_before + 0.05 and p_after > p_before + 0.05
    assert before["teacher_sha256"] == ""


def test_sincos_start_of_a_vit_position_table():
    from tagger.toyworld.clip_train import init_positions, sincos_table
    t = sincos_table((8, 8), 128)
    assert t.shape == (65, 128) and torch.all(t[0] == 0)
    # rows are distinct, neighbours on the grid are more alike than far-apart cells
    cos = torch.nn.functional.cosine_similarity
    assert cos(t[1], t[2], dim=0) > cos(t[1], t[8], dim=0)
    assert len({tuple(r.tolist()) for r in t[1:]}) == 64
    import open_clip
    from tagger.models import registry
    registry.register_configs()
    vit, rn = open_clip.create_model("toy-vit"), open_clip.create_model("toy-rn")
    init_positions(vit, "sincos")
    init_positions(rn, "sincos")  # a ResNet has no position table to start: left as it is
    torch.testing.assert_close(vit.visual.positional_embedding.detach(), t)
    with pytest.raises(ValueError):
        init_positions(vit, "learned")
