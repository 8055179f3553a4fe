"""Measure the near-duplicate threshold on toy-world images with known duplicates.

    nice -n 10 python bench/dedup.py [--model toy-vit] [--scenes 150]

Prints one JSON line. Each toy-world scene (``tagger.toyworld``) is written as a JPEG together with four
near-duplicates of it: re-encoded at JPEG quality 30, resized to half size, cropped to 90 % of each side
(a corner crop), and mirrored. Every image is encoded with ``--model`` as ``tagger encode`` does. Images
of one scene are duplicates of each other; images of different scenes are not.

For each pair of thresholds (cosine of the global embeddings; colour-histogram overlap) the pairs
reaching both are grouped as ``tagger dedup`` groups them (:func:`confirm_pairs`, then connected
components, :func:`tagger.store.dedup.merge_groups`), and two images count as found duplicates when
they share a group: pair precision and recall against the truth. The thresholds are chosen on the first
half of the scenes (the best worse-of-precision-and-recall) and measured on the other half, which they
never saw; the same for the embedding alone, to show what the pixel check adds.
"""
from __future__ import annotations

import argparse
import io
import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from tagger.pipeline.dedup import colour_histogram, confirm_pairs
from tagger.pipeline.search import encode_image_files
from tagger.store.dedup import merge_groups
from tagger.toyworld.scenes import make_scene

VARIANTS = ("jpeg30", "half", "crop90", "flip")


def variants(image: Image.Image) -> dict[str, Image.Image]:
    """The four near-duplicates of ``image``."""
    im = image.convert("RGB")
    w, h = im.size
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=30)
    return {"jpeg30": Image.open(io.BytesIO(buf.getvalue())).convert("RGB"),
            "half": im.resize((max(w // 2, 1), max(h // 2, 1)), Image.Resampling.BICUBIC),
            "crop90": im.crop((w - int(0.9 * w), h - int(0.9 * h), w, h)),
            "flip": ImageOps.mirror(im)}


def write_corpus(folder: Path, scenes: range, split: str = "corpus") -> tuple[list[str], np.ndarray, list[str]]:
    """Each scene and its variants as files; returns (paths, scene of each, kind of each)."""
    paths, scene_of, kind = [], [], []
    for i in scenes:
        image = make_scene(i, split).image.convert("RGB")
        made = variants(image)
        for name in ("original",) + VARIANTS:
            path = folder / f"scene-{i:06d}-{name}.{'jpg' if name in ('original', 'jpeg30') else 'png'}"
            if name in ("original", "jpeg30"):  # the JPEG bytes themselves, at quality 95 and 30
                image.save(path, quality=95 if name == "original" else 30)
            else:
                made[name].save(path)
            paths.append(str(path))
            scene_of.append(i)
            kind.append(name)
    return paths, np.asarray(scene_of), kind


def grouped_pairs(x: np.ndarray, hist: np.ndarray | None, threshold: float, pixel: float | None) -> np.ndarray:
    """Boolean [n, n]: the images a dedup scan puts in one group: pairs with cosine >= ``threshold``
    (and, with ``hist``, histogram overlap >= ``pixel``, :func:`confirm_pairs`), joined by
    :func:`merge_groups`."""
    sims = x @ x.T
    a, b = np.nonzero(np.triu(sims >= threshold, 1))
    a, b = a.astype(np.int64), b.astype(np.int64)
    if hist is not None:
        keep = confirm_pairs(a, b, dict(enumerate(hist)), pixel)  # type: ignore[arg-type]
        a, b = a[keep], b[keep]
    ids, groups, _ = merge_groups((np.empty(0, np.int64),) * 2 + (np.empty(0),), a, b, sims[a, b])
    label = np.arange(x.shape[0])
    label[ids] = x.shape[0] + groups
    return label[:, None] == label[None, :]


def scores(found: np.ndarray, scene_of: np.ndarray) -> dict[str, float]:
    same = scene_of[:, None] == scene_of[None, :]
    upper = np.triu(np.ones_like(same), 1)
    tp = float((found & same & upper).sum())
    pred, true = float((found & upper).sum()), float((same & upper).sum())
    p, r = (tp / pred if pred else 1.0), tp / true
    return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(2 * p * r / (p + r) if p + r else 0.0, 4)}


def choose(x: np.ndarray, hist: np.ndarray | None, scene_of: np.ndarray,
           target: float = 0.95) -> tuple[float, float | None]:
    """Thresholds in the middle of the region where precision and recall both reach ``target`` on
    these images (the median passing cosine, then the median passing overlap at it); the best
    worse-of-the-two when none passes."""
    pixels = [None] if hist is None else list(np.round(np.arange(0.3, 0.96, 0.05), 2))
    grid = [(float(t), p) for t in np.round(np.arange(0.5, 0.996, 0.01), 3) for p in pixels]
    rated = [(min(s["precision"], s["recall"]), t, p)
             for t, p in grid for s in [scores(grouped_pairs(x, hist, t, p), scene_of)]]
    passing = [(t, p) for m, t, p in rated if m >= target]
    if not passing:
        best = max(rated, key=lambda r: r[0])
        return best[1], best[2]
    t = float(np.median(sorted({t for t, _ in passing})))
    t = min({t0 for t0, _ in passing}, key=lambda t0: abs(t0 - t))
    at = sorted(p for t0, p in passing if t0 == t and p is not None)
    return t, (float(at[len(at) // 2]) if at else None)


def per_variant(found: np.ndarray, scene_of: np.ndarray, kind: list[str]) -> dict[str, float]:
    kinds = np.asarray(kind)
    out = {}
    for v in VARIANTS:
        hits = [found[np.flatnonzero((scene_of == s) & (kinds == "original"))[0],
                      np.flatnonzero((scene_of == s) & (kinds == v))[0]] for s in np.unique(scene_of)]
        out[v] = round(float(np.mean(hits)), 4)
    return out


def evaluate(x: np.ndarray, hist: np.ndarray | None, scene_of: np.ndarray, kind: list[str]) -> dict[str, Any]:
    """Thresholds chosen on the first half of the scenes, scored on both halves."""
    val = scene_of < np.median(np.unique(scene_of))
    t, p = choose(x[val], None if hist is None else hist[val], scene_of[val])
    test_found = grouped_pairs(x[~val], None if hist is None else hist[~val], t, p)
    return {"threshold": t, "pixel_threshold": p,
            "val": scores(grouped_pairs(x[val], None if hist is None else hist[val], t, p), scene_of[val]),
            "test": scores(test_found, scene_of[~val]),
            "test_recall_by_variant": per_variant(test_found, scene_of[~val], [k for k, v in zip(kind, val) if not v])}


def measure_threshold(model: str = "toy-vit", n_scenes: int = 150) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        paths, scene_of, kind = write_corpus(Path(tmp), range(n_scenes))
        x = encode_image_files(paths, model, None, "cpu")
        hist = np.stack([colour_histogram(Path(p).read_bytes()) for p in paths])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    sims = x @ x.T
    same = scene_of[:, None] == scene_of[None, :]
    off = ~np.eye(len(x), dtype=bool)
    return {"model": model, "scenes": n_scenes, "images": len(paths),
            "embedding_and_pixels": evaluate(x, hist, scene_of, kind),
            "embedding_only": evaluate(x, None, scene_of, kind),
            "cosine": {"duplicates_p5": round(float(np.percentile(sims[same & off], 5)), 4),
                       "distinct_p99.9": round(float(np.percentile(sims[~same], 99.9)), 4),
                       "distinct_max": round(float(sims[~same].max()), 4)}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="toy-vit")
    p.add_argument("--scenes", type=int, default=150)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    print(json.dumps(measure_threshold(a.model, a.scenes)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
