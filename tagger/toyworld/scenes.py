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
    min_radius: float = 0.07  # fraction of the image side
    max_radius: float = 0.34
    noise_std: float = 8.0
    world_seed: int = 1234


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


def make_scene(index: int, split: str = "train", cfg: SceneConfig | None = None) -> Scene:
    """Generate scene ``index`` of ``split``: deterministic for a given config."""
    cfg = cfg or SceneConfig()
    rng = _rng(cfg, split, index)
    size = cfg.size
    bg = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    arr = background(rng, size, bg)
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
        cx = float(rng.uniform(r * 0.6, size - r * 0.6))
        cy = float(rng.uniform(r * 0.6, size - r * 0.6))
        cname = colour_names[int(rng.integers(len(colour_names)))]
        col = tuple(int(np.clip(v + rng.integers(-20, 21), 0, 255)) for v in COLOURS[cname])
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
