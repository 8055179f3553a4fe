"""Targets for distilling one toy image tower into another: a trained teacher's global and dense
(patch) image features of every training scene, as drawn and mirrored, computed once and cached
beside the rendered scenes; and the student-side loss that matches them."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..models import registry
from ..models.dense import FeatureConfig, grid_size, image_features, train_features
from ..models.preprocess import pixel_spec
from ..atomic import atomic_open
from .render import render_split

__all__ = ["TeacherTargets", "distill_loss", "teacher_targets"]

logger = logging.getLogger(__name__)


class TeacherTargets:
    """Unit float16 teacher features: ``global_`` ``(2, n, d)`` and ``dense`` ``(2, n, P, d)``
    (index 0: as drawn, 1: mirrored) on the teacher's ``grid``."""

    def __init__(self, global_: np.ndarray, dense: np.ndarray, grid: tuple[int, int], sha: str):
        self.global_, self.dense, self.grid, self.sha = global_, dense, grid, sha

    def batch(self, flip: torch.Tensor, idx: torch.Tensor, device: str) -> tuple[torch.Tensor, torch.Tensor]:
        f, i = flip.long().numpy(), idx.numpy()
        g = torch.from_numpy(self.global_[f, i]).to(device).float()
        return g, torch.from_numpy(self.dense[f, i]).to(device).float()


@torch.no_grad()
def teacher_targets(model: str, weights: str, n_train: int, cache_dir: Path | None, device: str = "cpu",
                    render_workers: int = 0) -> TeacherTargets:
    """The teacher's features of train scenes ``0..n_train-1`` (cached by weights sha and count)."""
    import open_clip

    sha = registry.sha256_file(Path(weights))
    stem = f"teacher-{model}-{sha[:12]}-{n_train}"
    paths = [Path(cache_dir) / f"{stem}-{part}.npy" for part in ("global", "dense")] if cache_dir else None
    registry.register_configs()
    teacher = open_clip.create_model(model, pretrained=weights).to(device).eval()
    grid = grid_size(teacher)
    if paths is not None and all(p.exists() for p in paths):
        return TeacherTargets(np.load(paths[0]), np.load(paths[1], mmap_mode="r"), grid, sha)
    t0 = time.time()
    spec = pixel_spec(model)
    data = render_split("train", n_train, spec.image_size, cache_dir, render_workers,
                        interpolation=spec.interpolation)
    d = teacher.visual.output_dim
    glob = np.empty((2, n_train, d), np.float16)
    dense = np.empty((2, n_train, grid[0] * grid[1], d), np.float16)
    for i in range(0, n_train, 256):
        x = spec.normalize(data.pixels[i:i + 256], device=device)
        for k, xx in enumerate((x, x.flip(-1))):
            g, p = image_features(teacher, xx, FeatureConfig())
            glob[k, i:i + len(x)], dense[k, i:i + len(x)] = g.cpu().numpy(), p.cpu().numpy()
    logger.info("teacher %s embedded %d scenes (x2 mirrored) in %.0f s", model, n_train, time.time() - t0)
    if paths is not None:
        for path, arr in zip(paths, (glob, dense)):
            with atomic_open(path) as f:
                np.save(f, arr)
    return TeacherTargets(glob, dense, grid, sha)


def pool_to_grid(patches: torch.Tensor, src: tuple[int, int], dst: tuple[int, int]) -> torch.Tensor:
    """``(n, P, d)`` features on grid ``src`` averaged (adaptively) onto grid ``dst``."""
    if src == dst:
        return patches
    n, _, d = patches.shape
    x = patches.transpose(1, 2).reshape(n, d, *src)
    return F.adaptive_avg_pool2d(x, dst).reshape(n, d, -1).transpose(1, 2)


def distill_loss(model, x: torch.Tensor, target_global: torch.Tensor, target_dense: torch.Tensor,
                 teacher_grid: tuple[int, int], dense_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss, raw global embedding)``: one minus the cosine to the teacher's global feature, plus
    ``dense_weight`` times the mean over the teacher's grid of one minus the cosine between the
    student's dense features (the ones tagging scores, pooled onto that grid) and the teacher's."""
    g, p = train_features(model, x)
    loss = (1.0 - F.cosine_similarity(g, target_global, dim=-1)).mean()
    if dense_weight > 0:
        p = pool_to_grid(p, grid_size(model), teacher_grid)
        loss = loss + dense_weight * (1.0 - F.cosine_similarity(p, target_dense, dim=-1)).mean()
    return loss, g
