"""Approximate search over the patch store: an IVF over the store's own PQ codes.

The patch store (:mod:`.patches`) keeps one PQ code per patch and answers ``--level patch`` by an
exhaustive scan (linear in the corpus: 0.3 s at 10^5 images of 196 patches). Above
``PatchAnnConfig.exact_upto`` images an inverted-file index is kept beside it (``patches.ann``):

* **Codes reused, not re-encoded.** The index is a FAISS ``IndexIVFPQ`` without residuals whose
  product quantizer is the store's codec, so a patch's code in a list is its code in the store, byte
  for byte, and an approximate score equals the exhaustive scan's score; only the choice of lists can
  miss a result. Building copies codes into lists; it never decodes and re-encodes them.
* **Cheap list assignment.** Each code is assigned to a list in a ``reduce_dim``-d PCA space, computed
  straight from the code (the PCA of each sub-quantizer centroid, summed by FAISS's additive decoder:
  16 lookups of 64 floats per patch, no 512-d decode). From ``nested_from`` lists the nearest list is
  found through a small two-level quantizer (an IVF over the list centroids), so assigning 10^8 patches
  stays minutes, not hours, on CPUs.
* **Layout by size and memory** (:func:`choose_patch_layout`): exact up to ``exact_upto`` images or when
  the codec is not a plain 8-bit PQ; else ``nlist`` ~ ``lists_per_sqrt * sqrt(patches)`` (power of two),
  and exact again when the lists (code + 8-byte id per patch) would pass ``memory_budget``.
* **Probing** (:meth:`PatchAnn.probe`): lists are taken alternately by L2 to the query's PCA coordinates
  and to those coordinates times ``coarse_scale``, which suits text queries (off the patches' manifold).
* **Both cores for one query**: a search of fewer queries than FAISS threads splits each query's
  lists over the threads (``parallel_mode`` 1: 1.7x less wall time on 2 cores), a batch one query
  per thread (mode 3; FAISS's default, 0, runs ``search_preassigned`` on one thread).
* **nprobe tuned** at each build to recall@k (images, by their best patch) against the exhaustive
  scan on held-out queries: stored patches moved by noise and renormalised.

Ids in the lists are logical patch ids ``image_id * P + patch`` (:func:`~.patches.patch_ids`). The file
is :class:`~.ann.AnnIndex`'s (JSON header, FAISS serialisation; written atomically). Keeping it in step
with the store is :mod:`.patchannsync`.
"""
from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import faiss
import numpy as np

from tagger.errors import ConfigError, StoreError
from tagger.store.ann import AnnIndex, nprobe_steps, recall_at
from tagger.store.patches import PatchStore
from tagger.store.vectors import as_matrix

__all__ = ["PatchAnn", "PatchAnnConfig", "PatchLayout", "build_patch_ann", "choose_patch_layout",
           "codec_fingerprint", "store_pq"]

logger = logging.getLogger(__name__)

ADD_ROWS = 1 << 18  # patch codes assigned and added at a time


@dataclass(frozen=True)
class PatchAnnConfig:
    """How the approximate patch index is chosen, built and tuned (defaults measured in docs/search.md)."""

    exact_upto: int = 20_000  # images; the exhaustive scan takes ~65 ms here alone, and a build minutes
    memory_budget: int = 8 << 30  # bytes the lists may take in memory
    lists_per_sqrt: float = 1.0  # nlist ~ lists_per_sqrt * sqrt(patch vectors), a power of two
    min_lists: int = 64
    max_lists: int = 1 << 16
    reduce_dim: int = 64  # PCA dimension in which codes are assigned to lists
    coarse_scale: float = 2.0  # queries' PCA coordinates are multiplied by this to pick lists (measured)
    nested_from: int = 2048  # from this many lists, assignment goes through a two-level quantizer
    inner_probe: int = 8  # lists of the two-level quantizer visited per assignment
    train_per_list: int = 32  # k-means sample per list
    kmeans_iter: int = 12
    recall_target: float = 0.95
    k: int = 10  # recall@k of images is what is tuned
    tune_queries: int = 100
    tune_noise: float = 1.25  # with the scaled probe: text queries at 10^5 reach 0.97 where 1.5 over-probes 1.5x (measured)
    seed: int = 1234

    def __post_init__(self) -> None:
        if not self.coarse_scale > 0:
            raise ConfigError(f"coarse_scale must be > 0, got {self.coarse_scale}")
        if not 0 < self.recall_target <= 1:
            raise ConfigError(f"recall_target must be in (0, 1], got {self.recall_target}")
        for name in ("exact_upto", "memory_budget", "min_lists", "reduce_dim", "train_per_list", "k",
                     "tune_queries", "inner_probe", "kmeans_iter"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class PatchLayout:
    """The patch index a store gets: ``family`` "exact" (the scan) or "ivf-pq" (lists over its codes)."""

    family: str
    nlist: int
    nested: bool
    est_bytes: int
    reason: str = ""

    @property
    def exact(self) -> bool:
        return self.family == "exact"

    @property
    def name(self) -> str:
        return "exact" if self.exact else f"IVF{self.nlist}{'(2-level)' if self.nested else ''},PQ-shared"


def store_pq(index: faiss.Index) -> faiss.IndexPQ | None:
    """The store's codec when it is a plain PQ with 8-bit codes (what the index can share), else None."""
    inner = faiss.downcast_index(index)
    if isinstance(inner, faiss.IndexPQ) and inner.pq.nbits == 8:
        return inner
    return None


def codec_fingerprint(index: faiss.Index) -> str:
    """A hash of the codec's serialisation without codes: a rebuilt (retrained) store changes it."""
    codec = faiss.clone_index(index)
    codec.reset()
    return hashlib.sha1(faiss.serialize_index(codec).tobytes()).hexdigest()[:16]


def choose_patch_layout(n_images: int, patches_per_image: int, code_size: int, shared: bool,
                        cfg: PatchAnnConfig | None = None) -> PatchLayout:
    """The layout for ``n_images`` of ``patches_per_image`` codes of ``code_size`` bytes; ``shared``:
    the codec is a plain 8-bit PQ whose codes lists can hold."""
    cfg = cfg or PatchAnnConfig()
    n = n_images * patches_per_image
    scan = int(n * code_size)
    if n_images <= cfg.exact_upto:
        return PatchLayout("exact", 0, False, scan, f"{n_images} images: the scan is fast enough")
    if not shared:
        return PatchLayout("exact", 0, False, scan, "the patch codec is not a plain 8-bit PQ")
    want = cfg.lists_per_sqrt * math.sqrt(n)
    nlist = int(min(max(1 << max(0, round(math.log2(want))), cfg.min_lists), cfg.max_lists, max(n // 39, 1)))
    est = int(n * (code_size + 8) + nlist * cfg.reduce_dim * 4)
    if est > cfg.memory_budget:
        return PatchLayout("exact", 0, False, scan, f"lists would take {est >> 20} MiB, over the budget")
    return PatchLayout("ivf-pq", nlist, nlist >= cfg.nested_from, est)


class Assigner:
    """Assigns PQ codes to lists: PCA coordinates summed from per-code tables, then the coarse quantizer."""

    def __init__(self, pq: faiss.ProductQuantizer, pca: faiss.PCAMatrix, inner: faiss.Index) -> None:
        m, ksub, dsub = int(pq.M), int(pq.ksub), int(pq.dsub)
        cents = faiss.vector_to_array(pq.centroids).reshape(m, ksub, dsub)
        a = faiss.vector_to_array(pca.A).reshape(pca.d_out, pca.d_in)
        tables = np.einsum("mkd,omd->mko", cents, a.reshape(pca.d_out, m, dsub)).astype(np.float32)
        self.decoder = faiss.ResidualQuantizer(int(pca.d_out), m, 8)
        faiss.copy_array_to_vector(np.ascontiguousarray(tables).ravel(), self.decoder.codebooks)
        self.decoder.is_trained = True
        self.bias = faiss.vector_to_array(pca.b).astype(np.float32)
        self.inner = inner

    def project(self, codes: np.ndarray) -> np.ndarray:
        """PCA coordinates [n, reduce_dim] of the vectors ``codes`` decode to."""
        return self.decoder.decode(np.ascontiguousarray(codes)) + self.bias

    def lists(self, codes: np.ndarray) -> np.ndarray:
        return self.inner.search(self.project(codes), 1)[1][:, 0]


def _parts(index: faiss.Index) -> tuple[faiss.PCAMatrix, faiss.Index]:
    ivf = faiss.downcast_index(index)
    quantizer = faiss.downcast_index(ivf.quantizer)
    return faiss.downcast_VectorTransform(quantizer.chain.at(0)), faiss.downcast_index(quantizer.index)


class PatchAnn:
    """An IVF over patch codes keyed by logical patch id, with its build metadata."""

    def __init__(self, index: faiss.Index, meta: dict[str, Any]) -> None:
        self.index = index if isinstance(index, faiss.IndexIVFPQ) else faiss.downcast_index(index)
        self.meta = meta
        self.patches_per_image = int(meta["patches_per_image"])
        self._assigner: Assigner | None = None
        self._probe_parts: tuple[faiss.PCAMatrix, faiss.Index] | None = None

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def nprobe(self) -> int:
        return int(self.index.nprobe)

    @property
    def assigner(self) -> Assigner:
        if self._assigner is None:
            pca, flat = _parts(self.index)
            if self.meta.get("nested"):
                cfg = self.meta.get("config", {})
                flat = two_level(flat.reconstruct_n(0, flat.ntotal), int(cfg.get("inner_probe", 8)),
                                 int(cfg.get("seed", 1234)))
            self._assigner = Assigner(self.index.pq, pca, flat)
        return self._assigner

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Top-``k`` images per query by their best patch: (scores, image_ids, patch), [nq, k] each;
        missing slots hold NaN and -1, as :meth:`PatchStore.search` returns them."""
        if k < 1:
            raise StoreError(f"k must be >= 1, got {k}")
        q = as_matrix(queries, int(self.index.d), bool(self.meta.get("normalize", True)), name="queries")
        pp = self.patches_per_image
        # fewer queries than threads: each query's lists split over the threads; else a query per thread
        # (search_preassigned runs on one thread in FAISS's default mode 0)
        self.index.parallel_mode = 1 if q.shape[0] < faiss.omp_get_max_threads() else 3
        dist, ids = self.index.search_preassigned(q, max(1, min(k * pp, self.ntotal)), *self.probe(q))
        scores = np.full((q.shape[0], k), np.nan, np.float32)
        img, patch = np.full((q.shape[0], k), -1, np.int64), np.full((q.shape[0], k), -1, np.int64)
        for qi in range(q.shape[0]):
            valid = ids[qi] >= 0
            im, pa = np.divmod(ids[qi][valid], pp)
            _, first = np.unique(im, return_index=True)  # results come best first
            best = np.sort(first)[:k]
            scores[qi, :best.size], img[qi, :best.size], patch[qi, :best.size] = dist[qi][valid][best], im[best], pa[best]
        return scores, img, patch

    def probe(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(lists [nq, nprobe], zeros: no residual) a query probes, alternately the next nearest centroid to
        its PCA coordinates y (L2: right for queries on the patches' manifold, e.g. a stored patch) and to
        ``coarse_scale`` * y, which ranks centroids c by y.c - |c|^2 / 2s: a text query lies off the
        manifold (y is shorter) and finds its results in fewer lists so (measured in docs/search.md)."""
        if self._probe_parts is None:
            self._probe_parts = _parts(self.index)
        pca, flat = self._probe_parts
        y, n = pca.apply(np.ascontiguousarray(q)), int(self.index.nprobe)
        scale = float(self.meta.get("config", {}).get("coarse_scale", 1.0))
        lists = flat.search(y, n)[1]
        if scale != 1.0:
            both = np.stack([lists, flat.search(y * np.float32(scale), n)[1]], axis=2).reshape(len(y), 2 * n)
            for i, row in enumerate(both):
                _, first = np.unique(row, return_index=True)
                lists[i] = row[np.sort(first)[:n]]
        return lists, np.zeros(lists.shape, np.float32)

    def add_codes(self, image_ids: np.ndarray, codes: np.ndarray) -> None:
        """Add images' codes ([n * P, code_size], image-major); images already held are replaced."""
        pp = self.patches_per_image
        ids = (np.asarray(image_ids, np.int64)[:, None] * pp + np.arange(pp)).ravel()
        if codes.shape[0] != ids.size:
            raise StoreError(f"{codes.shape[0]} codes for {image_ids.size} images of {pp} patches")
        if self.ntotal and ids.size:
            self.index.remove_ids(faiss.IDSelectorBatch(ids.size, faiss.swig_ptr(ids)))
        width = int(self.index.coarse_code_size())
        for start in range(0, ids.size, ADD_ROWS):
            part = np.ascontiguousarray(codes[start:start + ADD_ROWS])
            lists = self.assigner.lists(part)
            sa = np.empty((part.shape[0], width + part.shape[1]), np.uint8)
            sa[:, :width] = lists.astype("<i8").view(np.uint8).reshape(-1, 8)[:, :width]
            sa[:, width:] = part
            self.index.add_sa_codes(sa, np.ascontiguousarray(ids[start:start + ADD_ROWS]))

    def save(self, path) -> None:
        AnnIndex(self.index, self.meta).save(path)

    @classmethod
    def load(cls, path) -> PatchAnn:
        ann = AnnIndex.load(path)
        return cls(ann.index, ann.meta)


def _coarse(sample: np.ndarray, nlist: int, cfg: PatchAnnConfig) -> faiss.IndexPreTransform:
    """PCA to ``reduce_dim`` and k-means in that space: the coarse quantizer queries probe exactly."""
    d = sample.shape[1]
    pca = faiss.PCAMatrix(d, min(cfg.reduce_dim, d))
    pca.train(sample)
    y = pca.apply(sample)
    km = faiss.Kmeans(y.shape[1], nlist, niter=cfg.kmeans_iter, seed=cfg.seed, max_points_per_centroid=10**9)
    km.train(y)
    flat = faiss.IndexFlatL2(y.shape[1])
    flat.add(km.centroids)
    quantizer = faiss.IndexPreTransform(pca, flat)
    pca.this.disown()  # owned by the quantizer from here on, which the IVF owns
    flat.this.disown()
    quantizer.own_fields = True
    return quantizer


def two_level(centroids: np.ndarray, probe: int, seed: int) -> faiss.Index:
    """An IVF over the list centroids (sqrt(nlist) groups, ``probe`` visited): the nearest list of a
    code in ~2 sqrt(nlist) distances instead of nlist, for adding many codes."""
    groups = max(4, int(round(math.sqrt(centroids.shape[0]))))
    inner = faiss.IndexIVFFlat(faiss.IndexFlatL2(centroids.shape[1]), centroids.shape[1], groups)
    inner.cp.seed = seed
    inner.train(centroids)
    inner.add(centroids)
    inner.nprobe = min(probe, groups)
    return inner


def build_patch_ann(store: PatchStore, layout: PatchLayout, cfg: PatchAnnConfig | None = None) -> PatchAnn:
    """Train the lists on a seeded sample of the store's decoded patches, add every code, tune nprobe."""
    cfg = cfg or PatchAnnConfig()
    pq = store_pq(store.index)
    if layout.exact or pq is None:
        raise StoreError("an exact patch layout has no approximate index")
    pp, codes = store.patches_per_image, store.codes
    t0 = time.perf_counter()
    rng = np.random.default_rng([cfg.seed, 11])
    size = min(codes.shape[0], max(layout.nlist * cfg.train_per_list, 4 * cfg.reduce_dim))
    sample = pq.sa_decode(np.ascontiguousarray(codes[np.sort(rng.choice(codes.shape[0], size, replace=False))]))
    quantizer = _coarse(sample, layout.nlist, cfg)
    index = faiss.IndexIVFPQ(quantizer, store.dim, layout.nlist, int(pq.pq.M), 8, store.index.metric_type)
    quantizer.this.disown()
    index.own_fields = True
    index.by_residual = False
    index.pq = pq.pq
    index.is_trained = True
    meta = {"family": layout.family, "factory": layout.name, "nlist": layout.nlist, "nested": layout.nested,
            "patches_per_image": pp, "normalize": store.cfg.normalize, "codec": codec_fingerprint(store.index),
            "built_for": store.n_images, "recall_target": cfg.recall_target, "k": cfg.k, "config": asdict(cfg)}
    ann = PatchAnn(index, meta)
    t1 = time.perf_counter()
    step = max(1, ADD_ROWS // pp)
    for start in range(0, store.n_images, step):
        ann.add_codes(store.image_ids[start:start + step], codes[start * pp:(start + step) * pp])
    t2 = time.perf_counter()
    nprobe, recall = tune_patch_nprobe(ann, store, cfg)
    meta.update(nprobe=nprobe, tuned_recall=round(recall, 4), train_s=round(t1 - t0, 2), add_s=round(t2 - t1, 2),
                tune_s=round(time.perf_counter() - t2, 2))
    logger.info("built patch index %s over %d images: nprobe %d, recall@%d %.3f (%.1f s)", layout.name,
                store.n_images, nprobe, cfg.k, recall, time.perf_counter() - t0)
    return ann


def tune_queries(store: PatchStore, cfg: PatchAnnConfig) -> np.ndarray:
    """Held-out queries: a seeded sample of stored patches, decoded, moved by noise, renormalised."""
    rng = np.random.default_rng([cfg.seed, 13])
    rows = np.sort(rng.choice(store.codes.shape[0], size=min(cfg.tune_queries, store.codes.shape[0]), replace=False))
    x = store.index.sa_decode(np.ascontiguousarray(store.codes[rows]))
    noise = rng.standard_normal(x.shape).astype(np.float32)
    noise *= cfg.tune_noise / np.linalg.norm(noise, axis=1, keepdims=True)
    return as_matrix(x + noise, store.dim, True)


def tune_patch_nprobe(ann: PatchAnn, store: PatchStore, cfg: PatchAnnConfig) -> tuple[int, float]:
    """Smallest nprobe whose recall@k of images reaches the target against the exhaustive scan."""
    q = tune_queries(store, cfg)
    k = min(cfg.k, store.n_images)
    truth = store.search(q, k)[1]
    best = (ann.index.nlist, 0.0)
    for nprobe in nprobe_steps(int(ann.index.nlist)):
        ann.index.nprobe = nprobe
        best = (nprobe, recall_at(ann.search(q, k)[1], truth))
        if best[1] >= cfg.recall_target:
            break
    ann.index.nprobe = best[0]
    if best[1] < cfg.recall_target:
        logger.warning("patch recall@%d %.3f < target %.2f even with nprobe = nlist", k, best[1], cfg.recall_target)
    return best
