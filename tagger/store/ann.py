"""Approximate search over the global embeddings, beside the exact index.

The exact index (``global.faiss``, ``IDMap2,Flat``) stays the source of truth: reconstruction,
``--exact`` search and the input of every approximate build. Above ``AnnConfig.exact_upto`` images
an approximate index is kept next to it (``global.ann``), its layout chosen in one place,
:func:`choose_layout`, from the corpus size and a memory budget and the frozen table
:data:`FAMILIES` (FAISS factory strings as data): the first family whose estimated memory fits.

The number of inverted lists grows with the square root of the corpus (``lists_per_sqrt``, rounded to
a power of two), so a layout is "outgrown" exactly when :func:`choose_layout` picks another one for
the current size, and the index is then rebuilt. In between, new images are added to the lists.
``nprobe`` is tuned at each build on held-out queries (stored vectors moved by noise, so that none
is a stored vector) to reach ``recall_target`` at ``k`` against exact search, and is saved inside the
FAISS file; the measured recall is saved in the file's header.

File: ``TGANN1\\n``, an 8-byte little-endian length, that many bytes of JSON metadata, then the
FAISS serialisation; written to a temp name and renamed, so a killed build leaves the old file.
"""
from __future__ import annotations

import json
import logging
import math
import os
import struct
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from tagger.errors import ConfigError, StoreError
from tagger.atomic import atomic_open
from tagger.store.codec import min_train_vectors
from tagger.store.gpu import GPU_MAX_K, num_gpus, to_gpu_if_available
from tagger.store.vectors import as_ids, as_matrix

__all__ = ["FAMILIES", "AnnConfig", "AnnIndex", "Exact", "Layout", "ann_path", "build_ann", "choose_layout",
           "exact_knn", "nprobe_steps", "read_header", "read_meta", "recall_at", "search_with", "tune_nprobe"]

logger = logging.getLogger(__name__)

MAGIC = b"TGANN1\n"
FORMAT = 1
ADD_BATCH = 65536
#: (name, FAISS factory template, stored bytes per dimension per vector, re-rank factor), in order of
#: preference. ``{nlist}`` is filled by :func:`choose_layout`; ``{m}`` is ``dim // 8`` (8 dimensions per
#: PQ byte). A re-rank factor r > 1: the index returns r * k candidates, re-scored exactly from the exact
#: file (memory-mapped), so the codes only have to rank the true top-k among the top r * k.
FAMILIES: tuple[tuple[str, str, float, int], ...] = (
    ("ivf-sq8", "IVF{nlist},SQ8", 1.0, 4),
    ("ivf-flat", "IVF{nlist},Flat", 4.0, 1),
    ("ivf-pq", "IVF{nlist},PQ{m}x8", 0.125, 16),
)
#: from this many lists on, the coarse quantizer is an HNSW graph instead of a flat scan of centroids
HNSW_COARSE_FROM = 16384


@dataclass(frozen=True)
class AnnConfig:
    """How the approximate global index is chosen, built and tuned (frozen; defaults measured in
    docs/search.md)."""

    exact_upto: int = 20_000  # up to this many images, search stays exact (no approximate index)
    memory_budget: int = 4 << 30  # bytes the approximate index may take in memory
    lists_per_sqrt: float = 2.0  # nlist ~ lists_per_sqrt * sqrt(n), rounded to a power of two
    min_lists: int = 256
    max_lists: int = 1 << 18
    train_per_list: int = 50  # k-means sample: this many vectors per list (capped by the corpus)
    recall_target: float = 0.95
    k: int = 10  # recall@k is what is tuned
    tune_queries: int = 500
    tune_noise: float = 1.5  # a tuning query is a stored vector plus noise of this norm, renormalised
    seed: int = 1234
    families: tuple[tuple[str, str, float, int], ...] = FAMILIES

    def __post_init__(self) -> None:
        if not 0 < self.recall_target <= 1:
            raise ConfigError(f"recall_target must be in (0, 1], got {self.recall_target}")
        for name in ("exact_upto", "memory_budget", "min_lists", "train_per_list", "k", "tune_queries"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class Layout:
    """The index a corpus gets: ``family`` "exact" (no approximate index) or one of :data:`FAMILIES`."""

    family: str
    factory: str
    nlist: int
    est_bytes: int
    rerank: int = 1

    @property
    def exact(self) -> bool:
        return self.family == "exact"


def _nlist(n: int, cfg: AnnConfig) -> int:
    want = cfg.lists_per_sqrt * math.sqrt(max(n, 1))
    nlist = 1 << max(0, round(math.log2(want)))
    return int(min(max(nlist, cfg.min_lists), cfg.max_lists, max(n // 39, 1)))  # FAISS: >= 39 per list


def choose_layout(n: int, dim: int, cfg: AnnConfig | None = None) -> Layout:
    """The layout for ``n`` vectors of ``dim``: exact up to ``exact_upto``, else the first family of
    ``cfg.families`` whose estimated memory (codes, ids, centroids) fits ``memory_budget``, else the
    smallest one."""
    cfg = cfg or AnnConfig()
    if n <= cfg.exact_upto:
        return Layout("exact", "", 0, int(n * (4 * dim + 8)))
    nlist = _nlist(n, cfg)
    coarse = f"IVF{nlist}_HNSW32" if nlist >= HNSW_COARSE_FROM else f"IVF{nlist}"
    options = []
    for name, template, per_dim, rerank in cfg.families:
        factory = template.format(nlist=nlist, m=max(dim // 8, 1)).replace(f"IVF{nlist}", coarse, 1)
        est = int(n * (per_dim * dim + 8) + nlist * dim * 4 * (2 if nlist >= HNSW_COARSE_FROM else 1))
        options.append(Layout(name, factory, nlist, est, rerank))
    for layout in options:
        if layout.est_bytes <= cfg.memory_budget:
            return layout
    return min(options, key=lambda o: o.est_bytes)


def ann_path(global_path: str | os.PathLike[str]) -> Path:
    """Where the approximate index of the exact index at ``global_path`` is kept."""
    return Path(global_path).with_name("global.ann")


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each row of ``truth`` (ids; -1 ignored) that ``found`` holds."""
    hits = [len(set(f[f >= 0].tolist()) & set(t[t >= 0].tolist())) / max((t >= 0).sum(), 1)
            for f, t in zip(found, truth)]
    return float(np.mean(hits)) if hits else 1.0


def exact_knn(queries: np.ndarray, vectors: np.ndarray, ids: np.ndarray, k: int, metric: int,
              block: int = 1 << 18) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` (scores, ids) of ``queries`` over ``vectors`` (e.g. a memory map), a block of
    rows at a time, merged in a FAISS result heap."""
    q = np.ascontiguousarray(queries, np.float32)
    heap = faiss.ResultHeap(q.shape[0], k, keep_max=metric == faiss.METRIC_INNER_PRODUCT)
    for start in range(0, vectors.shape[0], block):
        part = np.ascontiguousarray(vectors[start:start + block], np.float32)
        d, i = faiss.knn(q, part, min(k, part.shape[0]), metric=metric)
        if d.shape[1] < k:  # a last block smaller than k
            pad = ((0, 0), (0, k - d.shape[1]))
            fill = -np.inf if metric == faiss.METRIC_INNER_PRODUCT else np.inf
            d, i = np.pad(d, pad, constant_values=fill), np.pad(i, pad, constant_values=-1)
        heap.add_result(d, np.where(i >= 0, i + start, -1))
    heap.finalize()
    rows = heap.I
    return heap.D, np.where(rows >= 0, np.asarray(ids)[np.maximum(rows, 0)], -1)


class Exact:
    """The stored vectors (e.g. the exact file's memory map) looked up by id, to re-score candidates."""

    def __init__(self, ids: np.ndarray, vectors: np.ndarray, metric: int) -> None:
        self.ids, self.vectors, self.metric = np.asarray(ids, np.int64), vectors, metric
        self._order = np.argsort(self.ids, kind="stable")
        self._sorted = self.ids[self._order]

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """Row of each id (-1 where absent)."""
        if self._sorted.size == 0:
            return np.full(ids.shape, -1, np.int64)
        at = np.minimum(np.searchsorted(self._sorted, ids), self._sorted.size - 1)
        return np.where(self._sorted[at] == ids, self._order[at], -1)

    def rerank(self, q: np.ndarray, cand: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``k`` (scores, ids) of each query among its candidate ids (-1 ignored)."""
        ip = self.metric == faiss.METRIC_INNER_PRODUCT
        scores = np.full((q.shape[0], k), -np.inf if ip else np.inf, np.float32)
        out = np.full((q.shape[0], k), -1, np.int64)
        for i in range(q.shape[0]):
            rows = self.rows(cand[i][cand[i] >= 0])
            rows = np.sort(rows[rows >= 0])  # ascending: a forward read of the memory map
            ids, x = self.ids[rows], np.asarray(self.vectors[rows], np.float32)
            s = x @ q[i] if ip else ((x - q[i]) ** 2).sum(axis=1)
            top = np.argsort(-s if ip else s, kind="stable")[:k]
            scores[i, :top.size], out[i, :top.size] = s[top], ids[top]
        return scores, out


def search_with(index: faiss.Index, q: np.ndarray, k: int, rerank: int = 1,
                exact: Exact | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Search ``index``; with ``rerank`` > 1 and ``exact``, take ``rerank * k`` candidates and re-score
    them exactly."""
    if rerank <= 1 or exact is None:
        return index.search(q, k)
    _, cand = index.search(q, k * rerank)
    return exact.rerank(q, cand, k)


def nprobe_steps(nlist: int) -> list[int]:
    """The nprobe values tuning tries, ascending: 1, 2, 3, 4, 6, 8, 12, ... up to ``nlist``."""
    return sorted({s for p in range(0, 20) for s in (1 << p, 3 << p >> 1) if 1 <= s <= nlist})


def tune_nprobe(index: faiss.Index, vectors: np.ndarray, ids: np.ndarray, cfg: AnnConfig, rerank: int = 1,
                exact: Exact | None = None) -> tuple[int, float]:
    """Smallest ``nprobe`` whose recall@k on held-out queries reaches the target, and that recall.

    The queries are ``tune_queries`` stored vectors (seeded sample) moved by noise of norm
    ``tune_noise`` and renormalised; the truth is exact search over every stored vector."""
    ivf = faiss.extract_index_ivf(index)
    rng = np.random.default_rng([cfg.seed, 7])
    n, dim = vectors.shape
    rows = np.sort(rng.choice(n, size=min(cfg.tune_queries, n), replace=False))
    noise = rng.standard_normal((rows.size, dim)).astype(np.float32)
    noise *= cfg.tune_noise / np.linalg.norm(noise, axis=1, keepdims=True)
    q = as_matrix(np.asarray(vectors[rows], np.float32) + noise, dim, True)
    k = min(cfg.k, n)
    _, truth = exact_knn(q, vectors, ids, k, index.metric_type)
    best = (ivf.nlist, 0.0)
    for nprobe in nprobe_steps(ivf.nlist):
        ivf.nprobe = nprobe
        recall = recall_at(search_with(index, q, k, rerank, exact)[1], truth)
        best = (nprobe, recall)
        if recall >= cfg.recall_target:
            break
    ivf.nprobe = best[0]
    if best[1] < cfg.recall_target:
        logger.warning("recall@%d %.3f < target %.2f even with nprobe = nlist", k, best[1], cfg.recall_target)
    return best


class AnnIndex:
    """An approximate FAISS index of global vectors keyed by image id, with its build metadata."""

    def __init__(self, index: faiss.Index, meta: dict[str, Any], exact: Exact | None = None) -> None:
        self.index = index
        self.meta = meta
        self.exact = exact  # the stored vectors, to re-score candidates (meta["rerank"] > 1)
        self._device: faiss.Index | None = None

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    @property
    def nprobe(self) -> int:
        return int(faiss.extract_index_ivf(self.index).nprobe)

    def search(self, queries: np.ndarray, k: int, *, use_gpu: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores float32 [nq, k], ids int64 [nq, k]); missing slots have id -1."""
        if k < 1:
            raise StoreError(f"k must be >= 1, got {k}")
        q = as_matrix(queries, self.dim, bool(self.meta.get("normalize", True)), name="queries")
        index = self.index
        if use_gpu and k <= GPU_MAX_K:
            if self._device is None:
                self._device = to_gpu_if_available(self.index, True)
            index = self._device
        rerank = int(self.meta.get("rerank", 1)) if self.exact is not None else 1
        if rerank > 1 and k * rerank > GPU_MAX_K:
            index = self.index
        scores, ids = search_with(index, q, k, rerank, self.exact)
        return scores, ids.astype(np.int64, copy=False)

    def add(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        """Add vectors to their lists; ids already stored are removed first (replaced)."""
        ids = as_ids(ids)
        x = as_matrix(vecs, self.dim, bool(self.meta.get("normalize", True)))
        if x.shape[0] != ids.size:
            raise StoreError(f"{ids.size} ids for {x.shape[0]} vectors")
        if ids.size == 0:
            return
        if self.ntotal:
            self.index.remove_ids(faiss.IDSelectorBatch(ids.size, faiss.swig_ptr(ids)))
        self.index.add_with_ids(x, ids)
        self._device = None

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write header and index atomically (temp file, fsync, rename)."""
        meta = dict(self.meta, ntotal=self.ntotal, nprobe=self.nprobe, format=FORMAT)
        blob = json.dumps(meta, sort_keys=True).encode()
        with atomic_open(path) as fh:
            fh.write(MAGIC + struct.pack("<Q", len(blob)) + blob)
            faiss.write_index(self.index, faiss.PyCallbackIOWriter(fh.write))
        logger.info("saved approximate index %s (%d vectors) to %s", meta.get("factory"), self.ntotal, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str], exact: Exact | None = None) -> AnnIndex:
        """Read a file :meth:`save` wrote; ``exact`` (the stored vectors) serves the re-ranking."""
        with open(path, "rb") as fh:
            meta = read_header(fh, path)
            index = faiss.read_index(faiss.PyCallbackIOReader(fh.read, 1 << 24))
        return cls(index, meta, exact)


def read_header(fh, path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON header of an open approximate index file (positioned at its start; left after it)."""
    if fh.read(len(MAGIC)) != MAGIC:
        raise StoreError(f"{path} is not an approximate index file")
    (size,) = struct.unpack("<Q", fh.read(8))
    meta = json.loads(fh.read(size))
    if meta.get("format") != FORMAT:
        raise StoreError(f"{path}: approximate index format {meta.get('format')}, expected {FORMAT}")
    return meta


def read_meta(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The header of the approximate index at ``path``, or None when it is missing or unreadable."""
    try:
        with open(path, "rb") as fh:
            return read_header(fh, path)
    except (OSError, ValueError, StoreError, struct.error):
        return None


def _train(index: faiss.Index, vectors: np.ndarray, layout: Layout, cfg: AnnConfig, use_gpu: bool) -> None:
    n = vectors.shape[0]
    size = min(n, max(layout.nlist * cfg.train_per_list, min_train_vectors(index)))
    rows = np.sort(np.random.default_rng([cfg.seed, 3]).choice(n, size=size, replace=False))
    ivf = faiss.extract_index_ivf(index)
    if use_gpu and num_gpus() and layout.nlist < HNSW_COARSE_FROM:  # k-means on the GPU, via the seam
        ivf.clustering_index = to_gpu_if_available(faiss.IndexFlat(index.d, index.metric_type), True)
    index.train(np.ascontiguousarray(vectors[rows], np.float32))
    ivf.clustering_index = None


def build_ann(ids: np.ndarray, vectors: np.ndarray, layout: Layout, cfg: AnnConfig | None = None, *,
              metric: int = faiss.METRIC_INNER_PRODUCT, normalize: bool = True,
              use_gpu: bool = True) -> AnnIndex:
    """Train ``layout`` on a seeded sample of ``vectors`` (rows already normalised as stored, e.g. the
    exact file's memory map), add every row under ``ids``, tune ``nprobe``; returns the index."""
    cfg = cfg or AnnConfig()
    if layout.exact:
        raise StoreError("an exact layout has no approximate index")
    n, dim = vectors.shape
    t0 = time.perf_counter()
    index = faiss.index_factory(dim, layout.factory, metric)
    _train(index, vectors, layout, cfg, use_gpu)
    t1 = time.perf_counter()
    ids = np.asarray(ids, np.int64)
    for start in range(0, n, ADD_BATCH):
        index.add_with_ids(np.ascontiguousarray(vectors[start:start + ADD_BATCH], np.float32),
                           np.ascontiguousarray(ids[start:start + ADD_BATCH]))
    t2 = time.perf_counter()
    exact = Exact(ids, vectors, metric) if layout.rerank > 1 else None
    nprobe, recall = tune_nprobe(index, vectors, ids, cfg, layout.rerank, exact)
    t3 = time.perf_counter()
    meta = {"family": layout.family, "factory": layout.factory, "nlist": layout.nlist, "built_for": int(n),
            "rerank": layout.rerank,
            "normalize": normalize, "recall_target": cfg.recall_target, "k": cfg.k, "tuned_recall": round(recall, 4),
            "config": asdict(cfg), "train_s": round(t1 - t0, 2), "add_s": round(t2 - t1, 2),
            "tune_s": round(t3 - t2, 2)}
    logger.info("built %s over %d vectors: nprobe %d, recall@%d %.3f (%.1f s)", layout.factory, n, nprobe,
                cfg.k, recall, t3 - t0)
    ann = AnnIndex(index, meta, exact)
    ann.meta["nprobe"] = nprobe
    return ann
