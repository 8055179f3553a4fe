"""All done shards of a model seen as one table, deduplicated and ordered by image id.

Index builds read through this view so that their result depends only on the set of
(image_id, vectors) rows, not on which worker wrote which shard or when: rows are taken in
ascending image id, and an id that appears in several shards keeps the row of the shard that
sorts last by name.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import numpy as np

from tagger.errors import ShardError
from tagger.store.shards import Shard, iter_shards

logger = logging.getLogger(__name__)


class ShardSet:
    """Done shards of one model, addressed by position in ascending-id order."""

    def __init__(self, shards: list[Shard]) -> None:
        if not shards:
            raise ShardError("no done shards to read")
        dims = {s.dim for s in shards}
        pps = {s.patches_per_image for s in shards}
        if len(dims) != 1 or len(pps) != 1:
            raise ShardError(f"shards disagree: dims {sorted(dims)}, patches per image {pps}")
        self.shards = shards
        self.dim: int = dims.pop()
        self.patches_per_image: int | None = pps.pop()
        all_ids = np.concatenate([np.asarray(s.ids, dtype=np.int64) for s in shards])
        src = np.concatenate([np.full(s.n, i, dtype=np.int32) for i, s in enumerate(shards)])
        rows = np.concatenate([np.arange(s.n, dtype=np.int64) for s in shards])
        order = np.argsort(all_ids, kind="stable")
        sorted_ids = all_ids[order]
        last = np.append(sorted_ids[1:] != sorted_ids[:-1], True)
        keep = order[last]
        if keep.size != all_ids.size:
            logger.warning("%d duplicate image ids across shards; the last shard wins",
                           all_ids.size - keep.size)
        self.ids: np.ndarray = all_ids[keep]
        self._src = src[keep]
        self._row = rows[keep]

    @classmethod
    def from_root(cls, root: str | os.PathLike[str], model_id: str) -> ShardSet:
        """Open every done shard of ``model_id`` (memory-mapped)."""
        shards = list(iter_shards(root, model_id))
        if not shards:
            raise ShardError(f"no done shards for model {model_id!r} under {root}")
        return cls(shards)

    @property
    def n(self) -> int:
        """Number of distinct images."""
        return int(self.ids.size)

    def gather_global(self, positions: np.ndarray) -> np.ndarray:
        """Global vectors (float32 [m, d]) of the images at ``positions``."""
        out = np.empty((positions.size, self.dim), dtype=np.float32)
        for s, sel, rows in self._by_shard(positions):
            out[sel] = self.shards[s].global_vecs[rows]
        return out

    def gather_patches(self, positions: np.ndarray) -> np.ndarray:
        """Patch vectors (float32 [m, P, d]) of the images at ``positions``."""
        pp = self._require_patches()
        out = np.empty((positions.size, pp, self.dim), dtype=np.float32)
        for s, sel, rows in self._by_shard(positions):
            out[sel] = self.shards[s].patches[rows]  # type: ignore[index]
        return out

    def gather_patch_vectors(self, flat: np.ndarray) -> np.ndarray:
        """Single patch vectors (float32 [m, d]) at flat positions ``image_pos * P + patch``."""
        pp = self._require_patches()
        image_pos, patch = np.divmod(flat, pp)
        out = np.empty((flat.size, self.dim), dtype=np.float32)
        for s, sel, rows in self._by_shard(image_pos):
            out[sel] = self.shards[s].patches[rows, patch[sel]]  # type: ignore[index]
        return out

    def sample(self, population: int, size: int, seed: int) -> np.ndarray:
        """Sorted positions of a seeded sample without replacement (all of them if size >= population)."""
        if size >= population:
            return np.arange(population, dtype=np.int64)
        rng = np.random.default_rng(seed)
        return np.sort(rng.choice(population, size=size, replace=False)).astype(np.int64)

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        """Consecutive position ranges of at most ``batch_size`` images."""
        for start in range(0, self.n, batch_size):
            yield np.arange(start, min(start + batch_size, self.n), dtype=np.int64)

    def _require_patches(self) -> int:
        if self.patches_per_image is None:
            raise ShardError("these shards hold no patch embeddings")
        return self.patches_per_image

    def _by_shard(self, positions: np.ndarray) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """(shard index, selector into ``positions``, rows in that shard, ascending) groups."""
        src = self._src[positions]
        for s in np.unique(src):
            sel = np.flatnonzero(src == s)
            rows = self._row[positions[sel]]
            order = np.argsort(rows, kind="stable")
            yield int(s), sel[order], rows[order]
