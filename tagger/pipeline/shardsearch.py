"""Search the shards of the approximate global index together, one Ray actor per shard, and merge.

:class:`ShardedSearch` starts one actor per shard file (:mod:`tagger.store.annshards`), each loading
its shard and memory-mapping the exact file for re-ranking (so the workspace must be on a file system
every node sees); a query goes to every actor at once and their top-k are merged by score. Actors can
be pinned to nodes offering a custom Ray resource (``node_resource``, as encode's are).
:func:`search_sharded` is what ``tagger search --shards N`` runs: split when the split is missing, stale
or of another count, then one sharded search in a Ray session.
"""
from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from ..errors import StoreError

__all__ = ["ShardSearcher", "ShardedSearch", "search_sharded"]

logger = logging.getLogger(__name__)


class ShardSearcher:
    """One shard, loaded in its actor."""

    def __init__(self, shard_path: str, global_path: str) -> None:
        from ..store.ann import AnnIndex, Exact
        from ..store.global_index_file import mapped_rows
        rows = mapped_rows(global_path)
        self.ann = AnnIndex.load(shard_path)
        if rows is not None and int(self.ann.meta.get("rerank", 1)) > 1:
            self.ann.exact = Exact(*rows)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.ann.search(queries, k)

    def ntotal(self) -> int:
        return self.ann.ntotal

    def higher_is_better(self) -> bool:
        import faiss
        return self.ann.index.metric_type == faiss.METRIC_INNER_PRODUCT


class ShardedSearch:
    """Actors over the shards of the approximate index beside ``global_path`` (split it first with
    :func:`tagger.store.annshards.write_shards`), ``num_cpus`` each (default: one, or an equal share of
    the cluster's CPUs when there are more shards). Use inside a Ray session; :meth:`close` ends them."""

    def __init__(self, global_path: str | os.PathLike[str], *, node_resource: str | None = None,
                 num_cpus: float | None = None) -> None:
        import ray

        from ..store.annshards import shard_paths, shards_in_step
        from .raycluster import placement
        paths = shard_paths(global_path)
        if not paths or not shards_in_step(global_path):
            raise StoreError(f"no current shard split of the approximate index beside {global_path}")
        if num_cpus is None:  # one CPU each, or a share, so that every shard's actor fits the cluster
            num_cpus = min(1.0, float(ray.cluster_resources().get("CPU", 1.0)) / len(paths))
        remote = ray.remote(num_cpus=num_cpus, **placement(node_resource))(ShardSearcher)
        self.actors: list[Any] = [remote.remote(str(p), os.fspath(global_path)) for p in paths]
        self.ntotal = sum(ray.get([a.ntotal.remote() for a in self.actors]))
        self.higher_is_better = bool(ray.get(self.actors[0].higher_is_better.remote()))
        logger.info("searching %d shards (%d vectors) with Ray actors", len(self.actors), self.ntotal)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores, ids) of every query over all shards."""
        import ray

        from ..store.annshards import merge_topk
        q = np.ascontiguousarray(np.atleast_2d(queries), np.float32)
        ref = ray.put(q)
        return merge_topk(ray.get([a.search.remote(ref, k) for a in self.actors]), k, self.higher_is_better)

    def close(self) -> None:
        import ray
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []


def search_sharded(global_path: str | os.PathLike[str], queries: np.ndarray, k: int, shards: int, *,
                   node_resource: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` (scores, ids) of ``queries`` over the approximate index beside ``global_path`` split in
    ``shards``: the split is (re)written first when it is missing, stale or of another count; the
    search runs on the connected Ray cluster (or a local one) and its actors end with it."""
    from ..store.annshards import shard_paths, shards_in_step, write_shards
    from .raycluster import ray_session
    if shards < 1:
        raise StoreError(f"shards must be >= 1, got {shards}")
    if len(shard_paths(global_path)) != shards or not shards_in_step(global_path):
        logger.info("splitting the approximate index beside %s into %d shards", global_path, shards)
        write_shards(global_path, shards)
    with ray_session():
        sharded = ShardedSearch(global_path, node_resource=node_resource)
        try:
            return sharded.search(queries, k)
        finally:
            sharded.close()
