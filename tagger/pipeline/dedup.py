"""Near-duplicate groups of a workspace's images (``tagger dedup``).

A scan compares the images not compared yet (all of them on the first scan, or when a threshold
changes) with every stored image, in two steps:

1. candidates from the global embeddings: pairs of cosine similarity >= ``threshold`` among each
   image's ``k`` nearest neighbours (:func:`tagger.store.dedup.near_pairs`, through the approximate
   index when the corpus has one);
2. confirmation from the pixels (unless ``verify`` is off): the colour histograms of the two images
   (:func:`colour_histogram`: the centre square at 64 x 64, 6 levels per channel) must overlap by at
   least ``pixel_threshold`` (histogram intersection, 1 = the same colours). Only the images of
   candidate pairs are read.

Confirmed pairs are joined with the groups already in the catalog and the changed groups written in
one transaction (:mod:`tagger.catalog.duplicates`). The second step exists because an embedding
trained to name what an image shows puts two different pictures of the same thing close together:
on toy-world images the shipped toy-vit gives distinct scenes of one object cosine up to 0.997, above
many true duplicates (a 90 % crop: 0.69 at the 5th percentile), so no embedding threshold alone
reaches precision and recall 0.95 there; a histogram is blind to what the image shows but not to its
colours, and is unchanged by re-encoding, resizing, mirroring and nearly so by small crops. The
defaults were measured on toy-world images with known duplicates (bench/dedup.py, docs/search.md);
measure them again for another model (``python bench/dedup.py --model NAME``).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError, StoreError

if TYPE_CHECKING:
    from ..workspace import Workspace

__all__ = ["DedupConfig", "colour_histogram", "confirm_pairs", "run_dedup"]

logger = logging.getLogger(__name__)

HIST_SIDE, HIST_LEVELS = 64, 6


@dataclass(frozen=True)
class DedupConfig:
    """Thresholds of a scan (defaults measured for toy-vit in docs/search.md)."""

    threshold: float = 0.66  # cosine of the global embeddings: candidates
    pixel_threshold: float = 0.6  # colour-histogram intersection: confirmation
    verify: bool = True
    k: int = 16  # neighbours of each image looked at

    def __post_init__(self) -> None:
        if not -1.0 <= self.threshold <= 1.0:
            raise ConfigError(f"--threshold is a cosine similarity in [-1, 1], got {self.threshold}")
        if not 0.0 <= self.pixel_threshold <= 1.0:
            raise ConfigError(f"--pixel-threshold is a histogram overlap in [0, 1], got {self.pixel_threshold}")
        if self.k < 1:
            raise ConfigError(f"k must be >= 1, got {self.k}")

    def thresholds(self) -> tuple[float, float | None]:
        """(cosine threshold, pixel threshold or None when not checked): what the catalog records."""
        return float(self.threshold), float(self.pixel_threshold) if self.verify else None


def colour_histogram(data: bytes) -> np.ndarray | None:
    """The normalised joint colour histogram (float32 [6**3]) of an encoded image's centre square at
    64 x 64, or None when it cannot be decoded."""
    from PIL import Image

    from .decode import decode_one
    im, _, _ = decode_one(data, target=HIST_SIDE)
    if im is None:
        return None
    w, h = im.size
    m = min(w, h)
    im = im.crop(((w - m) // 2, (h - m) // 2, (w - m) // 2 + m, (h - m) // 2 + m))
    px = np.asarray(im.resize((HIST_SIDE, HIST_SIDE), Image.Resampling.BILINEAR), np.int32).reshape(-1, 3)
    q = px * HIST_LEVELS // 256
    counts = np.bincount((q[:, 0] * HIST_LEVELS + q[:, 1]) * HIST_LEVELS + q[:, 2], minlength=HIST_LEVELS ** 3)
    return (counts / counts.sum()).astype(np.float32)


def confirm_pairs(a: np.ndarray, b: np.ndarray, histograms: dict[int, np.ndarray | None],
                  pixel_threshold: float) -> np.ndarray:
    """Mask of the pairs whose images' histograms overlap by >= ``pixel_threshold`` (unreadable: no)."""
    keep = np.zeros(a.size, bool)
    for i, (x, y) in enumerate(zip(a.tolist(), b.tolist())):
        hx, hy = histograms.get(x), histograms.get(y)
        keep[i] = hx is not None and hy is not None and float(np.minimum(hx, hy).sum()) >= pixel_threshold
    return keep


def _histograms(cat, ids: np.ndarray) -> dict[int, np.ndarray | None]:
    from .sources import read_bytes
    out: dict[int, np.ndarray | None] = {}
    for image_id, uri in cat.uris_of(ids.tolist()).items():
        try:
            out[image_id] = colour_histogram(read_bytes(uri))
        except Exception as e:  # an unreadable image confirms nothing; the scan goes on
            logger.warning("near-duplicates: cannot read %s (%s)", uri, e)
            out[image_id] = None
    return out


def run_dedup(workspace: "Workspace", cfg: DedupConfig | None = None, *, model: str | None = None,
              pretrained: str | None = None, rescan: bool = False) -> dict[str, Any]:
    """Update the near-duplicate groups of the workspace's model; returns counts and seconds."""
    from ..catalog import Catalog
    from ..catalog.duplicates import dedup_state, group_counts, group_rows, write_groups
    from ..models.resolve import workspace_model_id
    from ..store import index_paths
    from ..store.ann import Exact
    from ..store.annsync import load_ann
    from ..store.dedup import merge_groups, near_pairs
    from ..store.global_index_file import mapped_rows
    cfg = cfg or DedupConfig()
    t0 = time.time()
    model_id = workspace_model_id(workspace, model, pretrained)
    g_path = index_paths(workspace.root, model_id)[0]
    rows = mapped_rows(g_path) if g_path.exists() else None
    if rows is None:
        raise StoreError(f"no exact global index for model {model_id} at {g_path}: run `tagger encode` first")
    exact = Exact(*rows)
    ann = load_ann(g_path)
    with Catalog.for_job(workspace.catalog, "dedup") as cat:
        previous, scanned = dedup_state(cat, model_id)
        reset = rescan or previous != cfg.thresholds()
        todo = exact.ids if reset else np.setdiff1d(exact.ids, scanned)
        a, b, sim = near_pairs(exact, todo, cfg.threshold, k=cfg.k, ann=ann)
        n_candidates = int(a.size)
        if cfg.verify and a.size:
            keep = confirm_pairs(a, b, _histograms(cat, np.unique(np.concatenate([a, b]))), cfg.pixel_threshold)
            a, b, sim = a[keep], b[keep], sim[keep]
        known = (np.empty(0, np.int64),) * 2 + (np.empty(0),) if reset else group_rows(cat, model_id)
        changed = merge_groups(known, a, b, sim)
        write_groups(cat, model_id, cfg.thresholds(), *changed, todo, reset=reset)
        n_groups, n_grouped = group_counts(cat, model_id)
    logger.info("near-duplicates of %s: compared %d images, %d candidate pairs, %d confirmed, %d groups", model_id,
                todo.size, n_candidates, a.size, n_groups)
    return {"model_id": model_id, "mode": "full" if reset else "incremental", "compared": int(todo.size),
            "candidates": n_candidates, "pairs": int(a.size), "groups": int(n_groups),
            "grouped_images": int(n_grouped), "approximate": ann is not None, "total_s": round(time.time() - t0, 2)}
