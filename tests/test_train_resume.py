"""A killed training resumes from its last checkpoint and ends where a clean one does."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from tagger.method.classifier import TrainConfig, TrainState, train_classifier


class Killed(Exception):
    pass


def corpus(n: int = 300, d: int = 16, L: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.random((n, L)) < 0.3
    x = (y @ rng.normal(size=(L, d)) + 0.3 * rng.normal(size=(n, d))).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True), y


CFG = replace(TrainConfig(), epochs=5, batch_size=32)


def test_resumed_training_equals_a_clean_one():
    x, y = corpus()
    clean = train_classifier(x, y, [f"l{j}" for j in range(6)], "m", "c", CFG)
    kept: list[TrainState] = []

    def kill_after_two(state: TrainState) -> None:
        kept.append(state)
        if state.epoch == 2:
            raise Killed

    with pytest.raises(Killed):
        train_classifier(x, y, [f"l{j}" for j in range(6)], "m", "c", CFG, on_epoch=kill_after_two)
    assert [s.epoch for s in kept] == [1, 2]
    resumed = train_classifier(x, y, [f"l{j}" for j in range(6)], "m", "c", CFG, resume=kept[-1])
    np.testing.assert_array_equal(resumed.weight, clean.weight)
    assert resumed.metrics["loss_per_epoch"] == clean.metrics["loss_per_epoch"]
    other = train_classifier(x, y, [f"l{j}" for j in range(6)], "m", "c", CFG, resume=kept[0])
    np.testing.assert_array_equal(other.weight, clean.weight)


def test_a_state_of_another_shape_is_refused():
    x, y = corpus()
    states: list[TrainState] = []
    train_classifier(x, y[:, :4], [f"l{j}" for j in range(4)], "m", "c", CFG, on_epoch=states.append)
    with pytest.raises(ValueError, match="does not fit"):
        train_classifier(x, y, [f"l{j}" for j in range(6)], "m", "c", CFG, resume=states[0])


def _killed_training(tmp_path, monkeypatch):
    """A clean toy training and the same one killed after its second epoch (its checkpoint kept)."""
    import tagger.method.classifier as C
    import tagger.pipeline.train as T
    from tagger.catalog import Catalog
    from tagger.method.comc import ComcConfig
    from tagger.models import load_clip
    from tagger.pipeline.text import run_generate_text
    from tagger.toyworld import LABELS
    from tagger.workspace import Workspace

    cfg = replace(ComcConfig(), train=replace(ComcConfig().train, epochs=4))
    clip = load_clip("toy-vit", device="cpu")

    def workspace(name: str) -> Workspace:
        ws = Workspace.at(tmp_path / name)
        with Catalog.open(ws.catalog) as cat:
            cat.add_labels(list(LABELS[:6]))
        run_generate_text(ws, 200, 0)
        return ws

    clean_ws, killed_ws = workspace("clean"), workspace("killed")
    clean = T.run_train(clean_ws, "toy-vit", cfg=cfg, clip=clip)
    monkeypatch.setattr(T, "CHECKPOINT_EVERY_S", 0.0)
    real = C.train_classifier

    def dies_after_two(*args, on_epoch=None, **kw):
        def hook(state):
            on_epoch(state)
            if state.epoch == 2:
                raise Killed
        return real(*args, on_epoch=hook, **kw)

    monkeypatch.setattr("tagger.method.comc.train_classifier", dies_after_two)
    with pytest.raises(Killed):
        T.run_train(killed_ws, "toy-vit", cfg=cfg, clip=clip)
    monkeypatch.setattr("tagger.method.comc.train_classifier", real)
    return clean_ws, clean, killed_ws, cfg, clip, real


def _weights(ws, classifier_id):
    from tagger.method.comc import load_comc
    return load_comc(ws.classifier_dir(classifier_id)).classifier.weight


def test_run_train_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    import tagger.pipeline.train as T

    clean_ws, clean, killed_ws, cfg, clip, real = _killed_training(tmp_path, monkeypatch)
    ckpt = killed_ws.train_checkpoint(clean["classifier_id"])
    assert ckpt.exists()
    resumed_from: list[int] = []
    monkeypatch.setattr("tagger.method.comc.train_classifier",
                        lambda *a, resume=None, **kw: resumed_from.append(resume.epoch) or real(*a, resume=resume, **kw))
    again = T.run_train(killed_ws, "toy-vit", cfg=cfg, clip=clip)
    assert resumed_from == [2] and again["classifier_id"] == clean["classifier_id"]
    assert not ckpt.exists()
    np.testing.assert_array_equal(_weights(clean_ws, clean["classifier_id"]), _weights(killed_ws, again["classifier_id"]))


def test_a_checkpoint_that_does_not_fit_is_dropped_and_the_training_starts_over(tmp_path, monkeypatch, caplog):
    import torch

    import tagger.pipeline.train as T

    clean_ws, clean, killed_ws, cfg, clip, real = _killed_training(tmp_path, monkeypatch)
    ckpt = killed_ws.train_checkpoint(clean["classifier_id"])
    d = torch.load(ckpt, weights_only=True)
    d["weight"] = d["weight"][:3]  # this training's id, a head of another shape (e.g. an older version's)
    torch.save(d, ckpt)
    again = T.run_train(killed_ws, "toy-vit", cfg=cfg, clip=clip)
    assert "does not fit this training" in caplog.text and not ckpt.exists()
    np.testing.assert_array_equal(_weights(clean_ws, clean["classifier_id"]), _weights(killed_ws, again["classifier_id"]))


def test_a_foreign_or_broken_checkpoint_is_ignored(tmp_path):
    from tagger.pipeline.train import TrainCheckpoint

    x, y = corpus()
    states: list[TrainState] = []
    train_classifier(x, y, [f"l{j}" for j in range(6)], "m", "c", CFG, on_epoch=states.append)
    path = tmp_path / "c.training.pt"
    TrainCheckpoint(path, "one", every_s=0.0).save(states[1])
    assert TrainCheckpoint(path, "one").load().epoch == 2
    assert TrainCheckpoint(path, "another").load() is None
    path.write_bytes(path.read_bytes()[:100])
    assert TrainCheckpoint(path, "one").load() is None
    TrainCheckpoint(path, "one", every_s=0.0).save(replace(states[1], losses=states[1].losses[:1]))
    assert TrainCheckpoint(path, "one").load() is None  # two epochs with one loss: not whole
