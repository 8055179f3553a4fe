"""Near-duplicate pairs and groups from the global embeddings (no catalog: the caller stores them).

:func:`near_pairs` finds, for each query image, the stored images whose cosine similarity reaches a
threshold among its ``k`` nearest neighbours (the approximate index, re-ranked exactly, when given;
else exact search over the memory-mapped vectors). :func:`merge_groups` joins new pairs with the
groups already known: linked images form connected components, each a group named by its smallest
image id, with each image's highest similarity to another member.
"""
from __future__ import annotations

import logging

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from tagger.errors import StoreError
from tagger.store.ann import AnnIndex, Exact, exact_knn

__all__ = ["Groups", "merge_groups", "near_pairs"]

logger = logging.getLogger(__name__)

Groups = tuple[np.ndarray, np.ndarray, np.ndarray]  # (image_id, group_id, similarity)


def near_pairs(exact: Exact, query_ids: np.ndarray, threshold: float, *, k: int = 16, ann: AnnIndex | None = None,
               batch: int = 2048) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs ``(a, b, similarity)`` with ``a < b``, at least one of them in ``query_ids``, similarity >=
    ``threshold``, among each query's ``k`` nearest stored images (ids absent from ``exact`` are skipped)."""
    if not -1.0 <= threshold <= 1.0:
        raise StoreError(f"a cosine threshold must be in [-1, 1], got {threshold}")
    rows = exact.rows(np.asarray(query_ids, np.int64))
    rows = np.sort(rows[rows >= 0])
    out_a, out_b, out_s = [], [], []
    for start in range(0, rows.size, batch):
        part = rows[start:start + batch]
        q = np.asarray(exact.vectors[part], np.float32)
        kk = min(k + 1, exact.ids.size)
        if ann is not None:
            sims, nbr = ann.search(q, kk, use_gpu=True)
        else:
            sims, nbr = exact_knn(q, exact.vectors, exact.ids, kk, exact.metric)
        src = np.repeat(exact.ids[part], kk)
        sims, nbr = sims.ravel(), nbr.ravel()
        keep = (nbr >= 0) & (nbr != src) & (sims >= threshold)
        a, b = src[keep], nbr[keep]
        out_a.append(np.minimum(a, b))
        out_b.append(np.maximum(a, b))
        out_s.append(sims[keep].astype(np.float64))
    if not out_a:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float64)
    a, b, s = np.concatenate(out_a), np.concatenate(out_b), np.concatenate(out_s)
    _, first = np.unique(np.stack([a, b], axis=1), axis=0, return_index=True)
    return a[first], b[first], s[first]


def merge_groups(known: Groups, a: np.ndarray, b: np.ndarray, sim: np.ndarray) -> Groups:
    """The groups that change when pairs ``(a, b, sim)`` join the ``known`` groups: every member of each
    group a new pair touches, with its group id (smallest member) and similarity (the highest of what
    was known and the new pairs). Groups no pair touches are not returned."""
    k_ids, k_group, k_sim = (np.asarray(x) for x in known)
    if a.size == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float64)
    nodes = np.unique(np.concatenate([k_ids, k_group, a, b]))
    idx = {int(v): i for i, v in enumerate(nodes)}
    pos = np.vectorize(idx.__getitem__, otypes=[np.int64])
    src = np.concatenate([pos(k_ids), pos(a)]) if k_ids.size else pos(a)
    dst = np.concatenate([pos(k_group), pos(b)]) if k_ids.size else pos(b)
    graph = coo_matrix((np.ones(src.size), (src, dst)), shape=(nodes.size, nodes.size))
    _, label = connected_components(graph, directed=False)
    touched = np.unique(label[pos(np.concatenate([a, b]))])
    members = np.flatnonzero(np.isin(label, touched))
    smallest = {int(c): int(nodes[members[label[members] == c]].min()) for c in touched}
    best = np.full(nodes.size, -np.inf)
    if k_ids.size:
        np.maximum.at(best, pos(k_ids), k_sim)
    np.maximum.at(best, pos(a), sim)
    np.maximum.at(best, pos(b), sim)
    ids = nodes[members]
    groups = np.array([smallest[int(label[m])] for m in members], np.int64)
    return ids.astype(np.int64), groups, best[members]
