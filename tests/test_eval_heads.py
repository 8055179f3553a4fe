"""The CoMC evaluation head: fits on text for the dataset's classes with the toy synonyms it is given."""
from __future__ import annotations

import ast
import hashlib
from pathlib import Path

import numpy as np

import tagger.method.comc as comc
from tagger.evaluate.harness import EmbeddedSet, _head
from tagger.evaluate.heads import comc_head, toy_synonyms
from tagger.method.classifier import TrainConfig

DIM = 16


class _HashClip:
    """A text tower stand-in: each text gets a fixed pseudo-random unit vector."""

    model_id = "fake@0"

    def encode_text(self, texts):
        rows = []
        for t in texts:
            seed = int.from_bytes(hashlib.sha256(t.encode()).digest()[:4], "little")
            v = np.random.default_rng(seed).standard_normal(DIM)
            rows.append(v / np.linalg.norm(v))
        return np.asarray(rows, np.float32).reshape(len(texts), DIM)


def test_toy_synonyms_only_for_known_classes() -> None:
    assert toy_synonyms(["circle", "zebra"]) == {"circle": ("disc", "dot", "round shape")}


def test_comc_head_scores_every_image_and_class(monkeypatch) -> None:
    seen = {}
    real_fit = comc.fit_comc

    def spy(clip, names, synonyms=None, cfg=None, **kw):
        seen["synonyms"] = synonyms
        return real_fit(clip, names, synonyms, cfg, **kw)

    monkeypatch.setattr("tagger.evaluate.heads.fit_comc", spy)
    rng = np.random.default_rng(0)
    g = rng.standard_normal((5, DIM)).astype(np.float32)
    test = EmbeddedSet(g, rng.standard_normal((5, 3, DIM)).astype(np.float16), np.zeros((5, 2), np.uint8),
                       ["circle", "square"])
    cfg = comc.ComcConfig(n_sentences=40, memory_size=20, train=TrainConfig(epochs=2, batch_size=16))
    scores = comc_head(cfg)(_HashClip(), test)
    assert scores.shape == (5, 2) and np.isfinite(scores).all()
    assert seen["synonyms"] == toy_synonyms(["circle", "square"])
    assert callable(_head("comc"))


def test_method_comc_imports_no_toyworld_or_catalog() -> None:
    tree = ast.parse(Path(comc.__file__).read_text())
    names = {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    names |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not [m for m in names if {"toyworld", "catalog", "workspace", "ray"} & set(m.split("."))]
