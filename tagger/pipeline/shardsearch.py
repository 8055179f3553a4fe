"""Search the shards of an approximate index together, one Ray actor per shard, and merge.

:class:`ShardedSearch` starts one actor per shard file (:mod:`tagger.store.annshards`) of the global
index or of the patch index; a global shard memory-maps the exact file for re-ranking, so the workspace
must be on a file system every node sees. A query goes to every actor at once and their top-k are
merged by score. Actors can be pinned to nodes offering a custom Ray resource (``node_resource``, as
encode's are). :func:`search_sharded` is what ``tagger search --shards N`` runs: split when the split is
missing, stale or of another count, then one sharded search in a Ray session.
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
    """One shard, loaded in its actor: a patch shard (its header names the patches per image) searches
    images by their best patch, a global shard re-ranks from the exact file ``exact_path`` when given."""

    def __init__(self, shard_path: str, exact_path: str | None) -> None:
        from ..store.ann import AnnIndex, Exact, read_meta
        from ..store.global_index_file import mapped_rows
        from ..store.patchann import PatchAnn
        meta = read_meta(shard_path) or {}
        self.ann: Any
        if "patches_per_image" in meta:
            self.ann = PatchAnn.load(shard_path)
            return
        self.ann = AnnIndex.load(shard_path)
        rows = mapped_rows(exact_path) if exact_path else None
        if rows is not None and int(self.ann.meta.get("rerank", 1)) > 1:
            self.ann.exact = Exact(*rows)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, ...]:
        """(scores, ids) of a global shard; (scores, image ids, patches) of a patch shard."""
        return self.ann.search(queries, k)

    def ntotal(self) -> int:
        return self.ann.ntotal

    def higher_is_better(self) -> bool:
        import faiss
        return self.ann.index.metric_type == faiss.METRIC_INNER_PRODUCT


class ShardedSearch:
    """Actors over the shards of the approximate index file ``ann_file`` (split it first with
    :func:`tagger.store.annshards.split_ann`), ``num_cpus`` each (default: one, or an equal share of the
    cluster's CPUs when there are more shards); ``exact_path``: the exact global index, for re-ranking.
    Use inside a Ray session; :meth:`close` ends them."""

    def __init__(self, ann_file: str | os.PathLike[str], exact_path: str | os.PathLike[str] | None = None, *,
                 node_resource: str | None = None, num_cpus: float | None = None) -> None:
        import ray

        from ..store.annshards import shard_paths, shards_in_step
        from .capacity import check_fits, search_ask
        from .raycluster import placement
        paths = shard_paths(ann_file)
        if not paths or not shards_in_step(ann_file):
            raise StoreError(f"no current shard split of the approximate index {ann_file}")
        if num_cpus is None:  # one CPU each, or a share, so that every shard's actor fits the cluster
            num_cpus = min(1.0, float(ray.cluster_resources().get("CPU", 1.0)) / len(paths))
        check_fits([search_ask(num_cpus, node_resource)])
        remote = ray.remote(num_cpus=num_cpus, **placement(node_resource))(ShardSearcher)
        exact = os.fspath(exact_path) if exact_path is not None else None
        self.actors: list[Any] = [remote.remote(str(p), exact) for p in paths]
        self.ntotal = sum(ray.get([a.ntotal.remote() for a in self.actors]))
        self.higher_is_better = bool(ray.get(self.actors[0].higher_is_better.remote()))
        logger.info("searching %d shards (%d vectors) with Ray actors", len(self.actors), self.ntotal)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, ...]:
        """Top-``k`` (scores, ids) of every query over all shards; patch shards add the best patch."""
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


def search_sharded(ann_file: str | os.PathLike[str], queries: np.ndarray, k: int, shards: int, *,
                   exact_path: str | os.PathLike[str] | None = None,
                   node_resource: str | None = None) -> tuple[np.ndarray, ...]:
    """Top-``k`` of ``queries`` over the approximate index file ``ann_file`` split in ``shards``: (scores,
    ids), and the best patch at the patch level. The split is (re)written first when it is missing, stale
    or of another count; the search runs on the connected Ray cluster (or a local one) and its actors end
    with it."""
    from ..store.annshards import shard_paths, shards_in_step, split_ann
    from .raycluster import ray_session
    if shards < 1:
        raise StoreError(f"shards must be >= 1, got {shards}")
    if len(shard_paths(ann_file)) != shards or not shards_in_step(ann_file):
        logger.info("splitting the approximate index %s into %d shards", ann_file, shards)
        split_ann(ann_file, shards)
    with ray_session():
        sharded = ShardedSearch(ann_file, exact_path, node_resource=node_resource)
        try:
            return sharded.search(queries, k)
        finally:
            sharded.close()
