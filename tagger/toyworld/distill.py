"""Targets for distilling one toy image tower into another: a trained teacher's image embeddings of
every training scene, as drawn and mirrored, computed once and cached beside the rendered scenes."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch

from ..models import registry
from ..models.preprocess import pixel_spec
from ..store.atomic import atomic_open
from .render import render_split

__all__ = ["teacher_targets"]

logger = logging.getLogger(__name__)


@torch.no_grad()
def teacher_targets(model: str, weights: str, n_train: int, cache_dir: Path | None, device: str = "cpu",
                    render_workers: int = 0) -> tuple[np.ndarray, str]:
    """``(2, n_train, d)`` float16 unit embeddings of train scenes ``0..n_train-1`` by the teacher
    (index 0: as drawn, 1: mirrored), and the teacher weights' sha256."""
    import open_clip

    sha = registry.sha256_file(Path(weights))
    path = Path(cache_dir) / f"teacher-{model}-{sha[:12]}-{n_train}.npy" if cache_dir is not None else None
    if path is not None and path.exists():
        return np.load(path), sha
    registry.register_configs()
    t0 = time.time()
    teacher = open_clip.create_model(model, pretrained=weights).to(device).eval()
    spec = pixel_spec(model)
    data = render_split("train", n_train, spec.image_size, cache_dir, render_workers,
                        interpolation=spec.interpolation)
    out = np.empty((2, n_train, teacher.visual.output_dim), np.float16)
    for i in range(0, n_train, 256):
        x = spec.normalize(data.pixels[i:i + 256], device=device)
        for k, xx in enumerate((x, x.flip(-1))):
            out[k, i:i + len(x)] = teacher.encode_image(xx, normalize=True).float().cpu().numpy()
    logger.info("teacher %s embedded %d scenes (x2 mirrored) in %.0f s", model, n_train, time.time() - t0)
    if path is not None:
        with atomic_open(path) as f:
            np.save(f, out)
    return out, sha
