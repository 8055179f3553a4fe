"""The harness cache: an explicit folder, then $TAGGER_CACHE_DIR, then $TAGGER_CACHE, then ~/.cache."""
from __future__ import annotations

from pathlib import Path

from tagger.evaluate.harness import cache_root, evaluate


def test_cache_root_precedence(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("TAGGER_CACHE_DIR", raising=False)
    monkeypatch.delenv("TAGGER_CACHE", raising=False)
    assert cache_root() == Path.home() / ".cache" / "tagger"
    monkeypatch.setenv("TAGGER_CACHE", str(tmp_path / "old"))
    assert cache_root() == tmp_path / "old"
    monkeypatch.setenv("TAGGER_CACHE_DIR", str(tmp_path / "env"))
    assert cache_root() == tmp_path / "env"
    assert cache_root(tmp_path / "ws" / "cache") == tmp_path / "ws" / "cache"


def test_evaluate_caches_in_the_given_folder(tmp_path, monkeypatch) -> None:
    from tagger.evaluate.datasets import read_toy
    from tagger.models import load_clip

    monkeypatch.setenv("TAGGER_CACHE_DIR", str(tmp_path / "env"))
    clip = load_clip("toy-vit", device="cpu")
    ds = read_toy(n=16, split="val")
    metrics = evaluate(clip, ds, "zsclip", cache_dir=tmp_path / "ws")
    assert metrics["n_images"] == 16
    assert len(list((tmp_path / "ws" / "eval").glob("*.npz"))) == 1 and not (tmp_path / "env").exists()
    assert evaluate(clip, ds, "zsclip", cache_dir=tmp_path / "ws") == metrics  # read back from the cache
