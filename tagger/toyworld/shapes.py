"""Drawing primitives for toy-world objects: each draws one object centred at (cx, cy) with radius r."""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
from PIL import ImageDraw

Colour = tuple[int, int, int]
Drawer = Callable[[ImageDraw.ImageDraw, float, float, float, Colour, float], None]


def _poly(pts: list[tuple[float, float]], cx: float, cy: float, r: float, rot: float) -> list[tuple[float, float]]:
    c, s = math.cos(rot), math.sin(rot)
    return [(cx + r * (x * c - y * s), cy + r * (x * s + y * c)) for x, y in pts]


def _regular(n: int, start: float = -math.pi / 2) -> list[tuple[float, float]]:
    return [(math.cos(start + 2 * math.pi * k / n), math.sin(start + 2 * math.pi * k / n)) for k in range(n)]


def _star_pts(n: int = 5, inner: float = 0.45) -> list[tuple[float, float]]:
    pts = []
    for k in range(2 * n):
        rad = 1.0 if k % 2 == 0 else inner
        a = -math.pi / 2 + math.pi * k / n
        pts.append((rad * math.cos(a), rad * math.sin(a)))
    return pts


def _dark(colour: Colour) -> Colour:
    return tuple(int(v * 0.55) for v in colour)  # type: ignore[return-value]


def circle(d, cx, cy, r, col, rot):
    d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=col)


def square(d, cx, cy, r, col, rot):
    d.polygon(_poly([(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)], cx, cy, r, rot * 0.25), fill=col)


def triangle(d, cx, cy, r, col, rot):
    d.polygon(_poly(_regular(3), cx, cy, r, rot * 0.3), fill=col)


def star(d, cx, cy, r, col, rot):
    d.polygon(_poly(_star_pts(), cx, cy, r, rot * 0.3), fill=col)


def heart(d, cx, cy, r, col, rot):
    pts = []
    for k in range(40):
        t = 2 * math.pi * k / 40
        x = 16 * math.sin(t) ** 3
        y = -(13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t))
        pts.append((x / 17.0, y / 17.0))
    d.polygon(_poly(pts, cx, cy, r, rot * 0.2), fill=col)


def cross(d, cx, cy, r, col, rot):
    w = 0.3
    pts = [(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1), (-w, w), (-1, w), (-1, -w), (-w, -w)]
    d.polygon(_poly(pts, cx, cy, r, rot * 0.25), fill=col)


def ring(d, cx, cy, r, col, rot):
    d.ellipse([cx - r, cy - r, cx + r, cy + r], outline=col, width=max(2, int(r * 0.32)))


def diamond(d, cx, cy, r, col, rot):
    d.polygon(_poly([(0, -1), (0.62, 0), (0, 1), (-0.62, 0)], cx, cy, r, rot * 0.15), fill=col)


def hexagon(d, cx, cy, r, col, rot):
    d.polygon(_poly(_regular(6), cx, cy, r, rot * 0.2), fill=col)


def moon(d, cx, cy, r, col, rot):
    a = rot * 2
    pts = []
    for k in range(25):  # outer arc
        t = a - math.pi / 2 + math.pi * k / 24
        pts.append((cx + r * math.cos(t), cy + r * math.sin(t)))
    for k in range(25):  # inner arc back
        t = a + math.pi / 2 - math.pi * k / 24
        pts.append((cx + 0.45 * r * math.cos(t), cy + r * 0.95 * math.sin(t)))
    d.polygon(pts, fill=col)


def arrow(d, cx, cy, r, col, rot):
    pts = [(-1, -0.22), (0.2, -0.22), (0.2, -0.6), (1, 0), (0.2, 0.6), (0.2, 0.22), (-1, 0.22)]
    d.polygon(_poly(pts, cx, cy, r, rot * 2), fill=col)


def pentagon(d, cx, cy, r, col, rot):
    d.polygon(_poly(_regular(5), cx, cy, r, rot * 0.2), fill=col)


def flower(d, cx, cy, r, col, rot):
    pr = 0.36 * r
    for k in range(6):
        a = rot + 2 * math.pi * k / 6
        px, py = cx + 0.6 * r * math.cos(a), cy + 0.6 * r * math.sin(a)
        d.ellipse([px - pr, py - pr, px + pr, py + pr], fill=col)
    c = 0.3 * r
    d.ellipse([cx - c, cy - c, cx + c, cy + c], fill=(240, 200, 30) if col[0] < 200 else (90, 50, 20))


def tree(d, cx, cy, r, col, rot):
    d.rectangle([cx - 0.14 * r, cy + 0.4 * r, cx + 0.14 * r, cy + r], fill=(110, 70, 30))
    d.polygon([(cx, cy - r), (cx + 0.7 * r, cy + 0.1 * r), (cx - 0.7 * r, cy + 0.1 * r)], fill=col)
    d.polygon([(cx, cy - 0.6 * r), (cx + 0.8 * r, cy + 0.5 * r), (cx - 0.8 * r, cy + 0.5 * r)], fill=col)


def house(d, cx, cy, r, col, rot):
    d.rectangle([cx - 0.7 * r, cy - 0.1 * r, cx + 0.7 * r, cy + 0.9 * r], fill=col)
    d.polygon([(cx - 0.9 * r, cy - 0.1 * r), (cx, cy - 0.9 * r), (cx + 0.9 * r, cy - 0.1 * r)], fill=_dark(col))
    d.rectangle([cx - 0.15 * r, cy + 0.4 * r, cx + 0.15 * r, cy + 0.9 * r], fill=_dark(col))


def lightning_bolt(d, cx, cy, r, col, rot):
    pts = [(0.1, -1), (-0.5, 0.1), (-0.05, 0.1), (-0.2, 1), (0.5, -0.2), (0.05, -0.2), (0.35, -1)]
    d.polygon(_poly(pts, cx, cy, r, rot * 0.3), fill=col)


def fish(d, cx, cy, r, col, rot):
    flip = -1 if rot > 0 else 1
    d.ellipse([cx - 0.75 * r, cy - 0.45 * r, cx + 0.45 * r, cy + 0.45 * r], fill=col)
    tail = [(0.35, 0), (1.0, -0.55), (1.0, 0.55)]
    d.polygon([(cx + flip * x * r, cy + y * r) for x, y in tail], fill=col)
    e = 0.09 * r
    ex = cx - flip * 0.45 * r
    d.ellipse([ex - e, cy - 0.12 * r - e, ex + e, cy - 0.12 * r + e], fill=(15, 15, 15))


def umbrella(d, cx, cy, r, col, rot):
    d.pieslice([cx - r, cy - 0.8 * r, cx + r, cy + 1.2 * r], 180, 360, fill=col)
    w = max(1, int(0.1 * r))
    d.line([(cx, cy + 0.2 * r), (cx, cy + r)], fill=(60, 60, 60), width=w)
    d.arc([cx - 0.3 * r, cy + 0.75 * r, cx, cy + 1.05 * r], 0, 180, fill=(60, 60, 60), width=w)


def key(d, cx, cy, r, col, rot):
    c, s = math.cos(rot), math.sin(rot)
    hx, hy = cx - 0.55 * r * c, cy - 0.55 * r * s
    d.ellipse([hx - 0.4 * r, hy - 0.4 * r, hx + 0.4 * r, hy + 0.4 * r], outline=col, width=max(2, int(0.18 * r)))
    shaft = [(-0.15, -0.1), (1.0, -0.1), (1.0, 0.35), (0.8, 0.35), (0.8, 0.1), (0.6, 0.1), (0.6, 0.3),
             (0.45, 0.3), (0.45, 0.1), (-0.15, 0.1)]
    d.polygon(_poly(shaft, cx, cy, r, rot), fill=col)


def bell(d, cx, cy, r, col, rot):
    pts = [(-0.15, -0.9), (0.15, -0.9), (0.45, -0.6), (0.55, 0.3), (0.9, 0.6), (-0.9, 0.6), (-0.55, 0.3), (-0.45, -0.6)]
    d.polygon(_poly(pts, cx, cy, r, rot * 0.15), fill=col)
    e = 0.17 * r
    d.ellipse([cx - e, cy + 0.6 * r, cx + e, cy + 0.6 * r + 2 * e], fill=_dark(col))


DRAWERS: dict[str, Drawer] = {
    "circle": circle, "square": square, "triangle": triangle, "star": star, "heart": heart,
    "cross": cross, "ring": ring, "diamond": diamond, "hexagon": hexagon, "moon": moon,
    "arrow": arrow, "pentagon": pentagon, "flower": flower, "tree": tree, "house": house,
    "lightning bolt": lightning_bolt, "fish": fish, "umbrella": umbrella, "key": key, "bell": bell,
}


def background(rng: np.random.Generator, size: int, kind: str) -> np.ndarray:
    """A textured background as an (size, size, 3) uint8 array."""
    base = rng.integers(60, 230, size=3).astype(np.float32)
    other = rng.integers(30, 250, size=3).astype(np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    if kind == "plain":
        t = np.zeros((size, size), np.float32)
    elif kind == "gradient":
        a = rng.uniform(0, 2 * np.pi)
        t = np.clip((np.cos(a) * xx + np.sin(a) * yy + 1) / 2, 0, 1)
    elif kind == "stripes":
        f = rng.uniform(4, 12)
        a = rng.uniform(0, np.pi)
        t = (np.sin(2 * np.pi * f * (np.cos(a) * xx + np.sin(a) * yy)) > 0).astype(np.float32) * 0.18
    elif kind == "checks":
        f = int(rng.integers(3, 9))
        t = (((xx * f).astype(int) + (yy * f).astype(int)) % 2).astype(np.float32) * 0.15
    else:  # speckles
        t = (rng.random((size, size)) < 0.06).astype(np.float32) * 0.3
    img = base[None, None, :] * (1 - t[..., None]) + other[None, None, :] * t[..., None]
    return img
