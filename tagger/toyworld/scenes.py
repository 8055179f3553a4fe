"""Deterministic multi-label scene generator.

Every scene is a pure function of ``(world_seed, split, index)``, so any subset of a split can be
generated independently (and in parallel) and always gives the same pixels, labels and boxes.
Splits use disjoint seed streams: the toy CLIP models are trained on ``train`` only; defaults are
chosen on ``val``; quality is reported on ``test``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from .shapes import DRAWERS, background
from .vocab import BACKGROUNDS, COLOURS, LABELS

SPLITS = {"train": 0, "val": 1, "test": 2, "corpus": 3}
SMALL_AREA = 0.03  # an object whose box covers less than this fraction of the image is "small"


@dataclass(frozen=True)
class SceneConfig:
    """Knobs of the generator (defaults are the shipped world)."""

    size: int = 128
    min_objects: int = 1
    max_objects: int = 5
    min_radius: float = 0.08  # fraction of the image side
    max_radius: float = 0.34
    noise_std: float = 4.0
    max_overlap: float = 0.25  # at most this fraction of a new object's box may cover earlier objects
    world_seed: int = 1234
    version: int = 3  # bumped whenever drawing changes, so cached embeddings of older worlds are not reused


@dataclass
class SceneObject:
    label: str
    colour: str
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels


@dataclass
class Scene:
    """One generated image with its ground truth."""

    image: Image.Image
    labels: np.ndarray  # multi-hot over LABELS, uint8
    objects: list[SceneObject] = field(default_factory=list)
    background: str = "plain"
    index: int = 0
    split: str = "train"
    size: int = 128

    def area(self, obj: SceneObject) -> float:
        x0, y0, x1, y1 = obj.box
        s = self.size
        return max(0.0, min(x1, s) - max(x0, 0)) * max(0.0, min(y1, s) - max(y0, 0)) / (s * s)

    @property
    def label_names(self) -> list[str]:
        return [LABELS[i] for i in np.flatnonzero(self.labels)]

    @property
    def all_small(self) -> bool:
        return all(self.area(o) < SMALL_AREA for o in self.objects)


def _rng(cfg: SceneConfig, split: str, index: int) -> np.random.Generator:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLITS)}")
    return np.random.default_rng([cfg.world_seed, SPLITS[split], int(index)])


def _contrasting_colour(rng: np.random.Generator, names: list[str], bg_mean: np.ndarray,
                        min_dist: float = 90.0, tries: int = 8) -> str:
    """A colour name whose RGB stands out from the background's mean colour (best of a few draws)."""
    best, best_d = names[0], -1.0
    for _ in range(tries):
        name = names[int(rng.integers(len(names)))]
        d = float(np.linalg.norm(np.asarray(COLOURS[name], np.float32) - bg_mean))
        if d >= min_dist:
            return name
        if d > best_d:
            best, best_d = name, d
    return best


def _overlap(box: tuple[float, float, float, float], others: list) -> float:
    """Largest fraction of ``box`` covered by any box in ``others``."""
    x0, y0, x1, y1 = box
    area = max(1e-6, (x1 - x0) * (y1 - y0))
    best = 0.0
    for a0, b0, a1, b1 in others:
        inter = max(0.0, min(x1, a1) - max(x0, a0)) * max(0.0, min(y1, b1) - max(y0, b0))
        best = max(best, inter / area)
    return best


def _place(rng: np.random.Generator, r: float, size: int, boxes: list, max_overlap: float,
           tries: int = 12) -> tuple[float, float]:
    """A centre that keeps the object in frame and mostly off earlier ones (least-covered of a few draws)."""
    best, best_cover = (size / 2, size / 2), 2.0
    lo, hi = r * 0.85, size - r * 0.85
    for _ in range(tries):
        cx, cy = float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi))
        cover = _overlap((cx - r, cy - r, cx + r, cy + r), boxes)
        if cover <= max_overlap:
            return cx, cy
        if cover < best_cover:
            best, best_cover = (cx, cy), cover
    return best


def make_scene(index: int, split: str = "train", cfg: SceneConfig | None = None) -> Scene:
    """Generate scene ``index`` of ``split``: deterministic for a given config."""
    cfg = cfg or SceneConfig()
    rng = _rng(cfg, split, index)
    size = cfg.size
    bg = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    arr = background(rng, size, bg)
    bg_mean = arr.reshape(-1, 3).mean(0)
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    n = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    # distinct labels per scene (a label may still be "present" once): multi-label ground truth
    chosen = rng.choice(len(LABELS), size=n, replace=False)
    # log-uniform radii: small objects are common; draw big ones first so small ones stay visible
    radii = np.exp(rng.uniform(np.log(cfg.min_radius), np.log(cfg.max_radius), size=n)) * size
    order = np.argsort(-radii)
    colour_names = list(COLOURS)
    objects: list[SceneObject] = []
    for k in order:
        label = LABELS[int(chosen[k])]
        r = float(radii[k])
        cx, cy = _place(rng, r, size, [o.box for o in objects], cfg.max_overlap)
        cname = _contrasting_colour(rng, colour_names, bg_mean)
        r_, g_, b_ = (int(np.clip(v + rng.integers(-20, 21), 0, 255)) for v in COLOURS[cname])
        col = (r_, g_, b_)
        rot = float(rng.uniform(-np.pi, np.pi))
        DRAWERS[label](draw, cx, cy, r, col, rot)
        objects.append(SceneObject(label, cname, (cx - r, cy - r, cx + r, cy + r)))
    out = np.asarray(img).astype(np.float32)
    out += rng.normal(0, cfg.noise_std, size=out.shape)
    image = Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))
    labels = np.zeros(len(LABELS), np.uint8)
    labels[chosen] = 1
    return Scene(image=image, labels=labels, objects=objects, background=bg, index=index, split=split,
                 size=size)


def scene_labels(index: int, split: str = "train", cfg: SceneConfig | None = None) -> np.ndarray:
    """Ground-truth multi-hot labels of one scene (renders it; cheap at toy sizes)."""
    return make_scene(index, split, cfg).labels
