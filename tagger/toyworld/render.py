"""Toy scenes rendered once, in parallel, and cached as uint8 pixel arrays at a model's input size.

Training reads many more scenes than it can afford to draw at every step, so a split is rendered by a
process pool and kept as one ``.npy`` of pixels plus a pickle of the scenes' metadata (objects,
background, labels: what captions are made from), keyed by the scene config and the pixel size.
"""
from __future__ import annotations

import json
import logging
import os
import pickle
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..ids import short_sha256
from ..atomic import atomic_open
from .scenes import Scene, SceneConfig, make_scene

__all__ = ["RenderedSplit", "render_split"]

logger = logging.getLogger(__name__)


class RenderedSplit:
    """``n`` scenes of one split: ``pixels`` uint8 (n, 3, S, S) and metadata-only ``scenes``."""

    def __init__(self, pixels: np.ndarray, scenes: list[Scene]):
        self.pixels, self.scenes = pixels, scenes
        self.labels = np.stack([s.labels for s in scenes])

    def __len__(self) -> int:
        return len(self.scenes)


def _render_range(args: tuple) -> tuple[np.ndarray, list[Scene]]:
    split, start, stop, size, interpolation, cfg = args
    from ..models.pixels import PixelSpec

    spec = PixelSpec(size, interpolation=interpolation)
    pixels = np.empty((stop - start, 3, size, size), np.uint8)
    scenes = []
    for k, i in enumerate(range(start, stop)):
        s = make_scene(i, split, cfg)
        pixels[k] = spec.to_uint8(s.image)
        s.image = None  # type: ignore[assignment]  # metadata only: the pixels are kept apart
        scenes.append(s)
    return pixels, scenes


def _key(split: str, n: int, size: int, interpolation: str, cfg: SceneConfig) -> str:
    blob = json.dumps({"split": split, "n": n, "size": size, "interp": interpolation, "scene": asdict(cfg)},
                      sort_keys=True)
    return f"{split}-{n}-{size}px-v{cfg.version}-{short_sha256(blob, 10)}"


def render_split(split: str, n: int, size: int, cache_dir: Path | None = None, workers: int = 0,
                 cfg: SceneConfig | None = None, interpolation: str = "bicubic") -> RenderedSplit:
    """Scenes ``0..n-1`` of ``split`` at ``size`` px (bicubic resize as the model's preprocessing),
    read from ``cache_dir`` when rendered before; ``workers`` processes (0: one per core)."""
    cfg = cfg or SceneConfig()
    if cache_dir is not None:
        base = Path(cache_dir) / _key(split, n, size, interpolation, cfg)
        if base.with_suffix(".npy").exists() and base.with_suffix(".pkl").exists():
            pixels = np.load(base.with_suffix(".npy"))
            with open(base.with_suffix(".pkl"), "rb") as f:
                return RenderedSplit(pixels, pickle.load(f))
    t0 = time.time()
    workers = workers or os.cpu_count() or 1
    chunk = max(1, min(2000, -(-n // workers)))
    jobs = [(split, a, min(n, a + chunk), size, interpolation, cfg) for a in range(0, n, chunk)]
    if workers == 1 or len(jobs) == 1:
        parts = [_render_range(j) for j in jobs]
    else:
        with ProcessPoolExecutor(workers) as pool:
            parts = list(pool.map(_render_range, jobs))
    pixels = np.concatenate([p for p, _ in parts]) if parts else np.empty((0, 3, size, size), np.uint8)
    scenes = [s for _, ss in parts for s in ss]
    logger.info("rendered %d %s scenes at %d px in %.0f s (%d workers)", n, split, size, time.time() - t0, workers)
    if cache_dir is not None:
        base.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(base.with_suffix(".npy")) as f:
            np.save(f, pixels)
        with atomic_open(base.with_suffix(".pkl")) as f:
            pickle.dump(scenes, f)
    return RenderedSplit(pixels, scenes)
