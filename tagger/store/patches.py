"""Patch (local) embeddings stored as compact FAISS codes, image-major, P rows per image.

Storage choice. The codes live exactly once, inside a FAISS flat-codes index (``IndexPQ`` by
default, ``IndexFlat`` for the uncompressed "Flat" mode, optionally behind a transform such
as OPQ). Images are stored image-major: image ``i`` in storage order owns code rows
``[i*P, (i+1)*P)``. That layout gives, without a second copy of the codes:

* search: the FAISS index itself is the search structure (an exhaustive asymmetric scan of the
  codes), so scores equal ``query . decode(code)`` exactly;
* bulk decoding for re-tagging: a batch of images is one contiguous slice of the code array
  (a zero-copy numpy view of the index's buffer) and one ``sa_decode`` call (``pq.decode`` for
  PQ); :meth:`PatchStore.iter_decoded` streams the whole store that way;
* ids at 8 bytes per *image*, not per patch: the logical FAISS id ``image_id * P + patch`` is
  implied by the position, so no per-patch id map (which would cost more than a 16-byte code)
  is kept. :func:`patch_ids` / :func:`split_patch_ids` convert between the two forms.

Replacing an image overwrites its P code rows in place; new images are appended. A corpus too
small to train the configured codec is stored uncompressed (:mod:`tagger.store.codec`) until it
is large enough.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import faiss
import numpy as np

from tagger.errors import ConfigError, StoreError, UnknownIdError
from tagger.store.codec import flat_stand_in, min_train_vectors, train_checked
from tagger.store.config import IndexConfig
from tagger.store.gpu import GPU_MAX_K, to_gpu_if_available
from tagger.store.patch_store_file import read_patch_file, write_patch_file
from tagger.store.shard_table import ShardSet
from tagger.store.vectors import as_ids, as_matrix

logger = logging.getLogger(__name__)

#: Code rows a memory-mapped store searches at a time (16 MB of 16-byte PQ codes).
SEARCH_SLICE_ROWS = 1 << 20


def patch_ids(image_ids: np.ndarray, patches_per_image: int) -> np.ndarray:
    """Logical patch ids ``image_id * P + patch`` as int64 [n, P]."""
    ids = np.asarray(image_ids, dtype=np.int64)
    return ids[:, None] * patches_per_image + np.arange(patches_per_image, dtype=np.int64)


def split_patch_ids(pids: np.ndarray, patches_per_image: int) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`patch_ids`: (image_ids, patch index)."""
    return np.divmod(np.asarray(pids, dtype=np.int64), patches_per_image)


def _flat_codes_of(index: faiss.Index) -> faiss.IndexFlatCodes:
    """The flat-codes index holding the codes (``index`` itself or under an IndexPreTransform)."""
    inner = index
    while isinstance(inner, faiss.IndexPreTransform):
        inner = faiss.downcast_index(inner.index)
    if not isinstance(inner, faiss.IndexFlatCodes):
        raise ConfigError("patch factory must give a flat-codes index (Flat, PQ, SQ, OPQ..,PQ..), "
                          f"got {type(inner).__name__}")
    return inner


def _scan_slice(codec: faiss.Index, q: np.ndarray, codes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` rows of ``codes`` per query (scores, rows; best first): read where they lie by an
    inner-product PQ codec (no copy: 20 % less CPU than copying), else appended to a copy of the codec."""
    if isinstance(codec, faiss.IndexPQ) and codec.metric_type == faiss.METRIC_INNER_PRODUCT:
        part = np.ascontiguousarray(codes)
        dist, rows = np.empty((q.shape[0], k), np.float32), np.empty((q.shape[0], k), np.int64)
        heap = faiss.float_minheap_array_t()
        heap.nh, heap.k, heap.val, heap.ids = q.shape[0], k, faiss.swig_ptr(dist), faiss.swig_ptr(rows)
        x = np.ascontiguousarray(q, np.float32)  # held here: FAISS reads it through a bare pointer
        codec.pq.search_ip(faiss.swig_ptr(x), x.shape[0], faiss.swig_ptr(part), part.shape[0], heap, True)
        return dist, rows
    index = faiss.clone_index(codec)
    _append_codes(index, codes)
    return index.search(q, k)


def _append_codes(index: faiss.Index, codes: np.ndarray) -> None:
    """Append raw codes to the flat-codes index inside ``index`` and update the wrappers' counts."""
    flat = _flat_codes_of(index)
    flat.add_sa_codes(np.ascontiguousarray(codes))
    outer = index
    while isinstance(outer, faiss.IndexPreTransform):
        outer.ntotal = flat.ntotal
        outer = faiss.downcast_index(outer.index)


class PatchStore:
    """Compressed patch embeddings of many images, P per image, keyed by image_id."""

    def __init__(self, dim: int, patches_per_image: int, cfg: IndexConfig | None = None, *,
                 index: faiss.Index | None = None, image_ids: np.ndarray | None = None,
                 mapped_codes: np.ndarray | None = None, codec: faiss.Index | None = None) -> None:
        if patches_per_image < 1:
            raise StoreError(f"patches_per_image must be >= 1, got {patches_per_image}")
        self.cfg = cfg or IndexConfig()
        if index is None:
            try:
                index = faiss.index_factory(dim, self.cfg.patch_factory_string,
                                            self.cfg.faiss_metric)
            except RuntimeError as exc:
                raise ConfigError(f"bad patch factory {self.cfg.patch_factory_string!r} for "
                                  f"d={dim}: {str(exc).strip().splitlines()[-1]}") from exc
        self.index = index
        self._flat = _flat_codes_of(index)
        if isinstance(self._flat, faiss.IndexPQ):
            # The factory turns on polysemous training (a slow code reordering that only
            # helps Hamming filtering under L2); it does not change the codes' quality.
            self._flat.do_polysemous_training = False
        self.dim = int(index.d)
        self.patches_per_image = int(patches_per_image)
        self.image_ids = np.empty(0, np.int64) if image_ids is None else as_ids(image_ids)
        self._mapped = mapped_codes  # read-only memory map of the codes; self.index is then the codec
        self._codec = codec  # the trained codec without codes (what save() writes after the codes)
        rows = mapped_codes.shape[0] if mapped_codes is not None else self.index.ntotal
        if rows != self.image_ids.size * self.patches_per_image:
            raise StoreError("code rows do not match image ids x patches per image")
        self._lookup: tuple[np.ndarray, np.ndarray] | None = None
        self._device: faiss.Index | None = None
        # > 0: the store holds an uncompressed stand-in because its configured codec needs this
        # many training vectors (set by build_patch_store; the index state records it)
        self.provisional_until = 0

    # ----- sizes and raw codes -------------------------------------------------------------
    @property
    def n_images(self) -> int:
        """Number of stored images."""
        return int(self.image_ids.size)

    @property
    def is_trained(self) -> bool:
        """False until the codec (PQ codebooks, ...) is trained; "Flat" needs no training."""
        return bool(self.index.is_trained)

    @property
    def code_size(self) -> int:
        """Bytes per patch vector."""
        return int(self.index.sa_code_size())

    def bytes_per_image(self) -> int:
        """Code bytes per image (P x code size); the 8-byte image id is not counted."""
        return self.patches_per_image * self.code_size

    @property
    def codes(self) -> np.ndarray:
        """Zero-copy uint8 view [n_images * P, code_size] of the stored codes.

        Valid until the next :meth:`add`; take a fresh view after mutating the store.
        """
        if self._mapped is not None:
            return self._mapped
        size = int(self._flat.codes.size())
        if size == 0:
            return np.empty((0, self.code_size), dtype=np.uint8)
        return faiss.rev_swig_ptr(self._flat.codes.data(), size).reshape(-1, self.code_size)

    # ----- training and adding -------------------------------------------------------------
    def train(self, vecs: np.ndarray) -> None:
        """Train the codec on sample patch vectors [m, d]; only while the store is empty."""
        if self.n_images:
            raise StoreError("cannot retrain a store that holds codes; build a new one")
        x = as_matrix(vecs, self.dim, self.cfg.normalize, name="patch vectors")
        train_checked(self.index, x, f"patch codec {self.cfg.patch_factory_string}")
        self._codec = faiss.clone_index(self.index)  # empty: cheap

    def _writable(self) -> None:
        if self._mapped is not None:
            raise StoreError("this patch store was opened memory-mapped (decode and search only); load it "
                             "without mmap to add")

    def _check_patches(self, ids: np.ndarray, patches: np.ndarray) -> np.ndarray:
        arr = np.asarray(patches)
        pp = self.patches_per_image
        if arr.shape != (ids.size, pp, self.dim):
            raise StoreError(f"patches must be [{ids.size}, {pp}, {self.dim}], got {arr.shape}")
        if ids.size and (ids.min() < 0 or ids.max() > (np.iinfo(np.int64).max - pp) // pp):
            raise StoreError("image ids must be >= 0 and small enough for image_id * P + patch")
        if not self.is_trained:
            raise StoreError("train the patch store before adding")
        self._writable()
        return as_matrix(arr.reshape(-1, self.dim), self.dim, self.cfg.normalize,
                         name="patch vectors")

    def add(self, image_ids: np.ndarray, patches: np.ndarray) -> None:
        """Add images' patches [n, P, d]; images already stored are replaced in place."""
        ids = as_ids(image_ids)
        x = self._check_patches(ids, patches).reshape(ids.size, self.patches_per_image, self.dim)
        present, pos = self._find(ids)
        if present.any():
            rows = self._rows(pos[present])
            self.codes[rows] = self.index.sa_encode(
                x[present].reshape(-1, self.dim))
        self._append(ids[~present], x[~present].reshape(-1, self.dim))

    def _append(self, ids: np.ndarray, flat_vecs: np.ndarray) -> None:
        """Append new images (absent ids, prepared vectors [n*P, d]) without checks."""
        self._writable()
        if ids.size:
            self.index.add(flat_vecs)
            self.image_ids = np.concatenate([self.image_ids, ids])
        self._lookup = None
        self._device = None

    # ----- lookup and decoding -------------------------------------------------------------
    def _find(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(present mask, storage position or -1) of each id; uses a cached sorted view."""
        if self._lookup is None:
            order = np.argsort(self.image_ids, kind="stable")
            self._lookup = (self.image_ids[order], order)
        sorted_ids, order = self._lookup
        if sorted_ids.size == 0:
            return np.zeros(ids.size, dtype=bool), np.full(ids.size, -1, dtype=np.int64)
        at = np.minimum(np.searchsorted(sorted_ids, ids), sorted_ids.size - 1)
        present = sorted_ids[at] == ids
        return present, np.where(present, order[at], -1).astype(np.int64)

    def positions(self, image_ids: np.ndarray) -> np.ndarray:
        """Storage positions of ``image_ids``; :class:`UnknownIdError` if any is absent."""
        ids = as_ids(image_ids, unique=False)
        present, pos = self._find(ids)
        if not present.all():
            missing = ids[~present]
            raise UnknownIdError(f"{missing.size} image ids not in the patch store, "
                                 f"e.g. {missing[:5].tolist()}")
        return pos

    def _rows(self, positions: np.ndarray) -> np.ndarray:
        pp = self.patches_per_image
        return (positions[:, None] * pp + np.arange(pp, dtype=np.int64)).ravel()

    def _decode_rows(self, codes: np.ndarray, n: int) -> np.ndarray:
        out = self.index.sa_decode(np.ascontiguousarray(codes))
        return out.reshape(n, self.patches_per_image, self.dim)

    def decode(self, image_ids: np.ndarray) -> np.ndarray:
        """Reconstructed patches (float32 [n, P, d]) of ``image_ids``: one gather, one decode."""
        pos = self.positions(image_ids)
        return self._decode_rows(self.codes[self._rows(pos)], pos.size)

    def decode_range(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """(image_ids, patches [m, P, d]) of storage positions ``start:stop`` (a contiguous slice)."""
        start, stop = max(0, start), min(stop, self.n_images)
        pp = self.patches_per_image
        codes = self.codes[start * pp:stop * pp]
        return self.image_ids[start:stop].copy(), self._decode_rows(codes, max(stop - start, 0))

    def iter_decoded(self, batch_images: int = 1024) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Stream every image's decoded patches in storage order, ``batch_images`` at a time."""
        if batch_images < 1:
            raise StoreError("batch_images must be >= 1")
        for start in range(0, self.n_images, batch_images):
            yield self.decode_range(start, start + batch_images)

    # ----- search --------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Top-``k`` images per query by their best patch: (scores, image_ids, patch_idx).

        All three are [nq, k]; missing slots hold score NaN and ids -1. The scan asks FAISS for
        the best ``k * P`` patches, which always contain the best patch of each of the top-k
        images (at most ``(k-1) * P`` patches can outrank it), so the aggregation is exact
        with respect to the stored codes. A memory-mapped store is scanned a slice of
        ``SEARCH_SLICE_ROWS`` codes at a time (same results; memory bounded by one slice).
        """
        if k < 1:
            raise StoreError(f"k must be >= 1, got {k}")
        q = as_matrix(queries, self.dim, self.cfg.normalize, name="queries")
        pp = self.patches_per_image
        kk = min(k * pp, int(self.codes.shape[0]))
        scores = np.full((q.shape[0], k), np.nan, dtype=np.float32)
        img = np.full((q.shape[0], k), -1, dtype=np.int64)
        patch = np.full((q.shape[0], k), -1, dtype=np.int64)
        if kk == 0:
            return scores, img, patch
        if self._mapped is not None:
            dist, rows = self._scan_mapped(q, kk)
        else:
            index = self.index if kk > GPU_MAX_K else self._search_index()
            dist, rows = index.search(q, kk)
        for qi in range(q.shape[0]):
            valid = rows[qi] >= 0
            r, d = rows[qi][valid], dist[qi][valid]
            pos = r // pp
            _, first = np.unique(pos, return_index=True)  # results come best first
            best = np.sort(first)[:k]
            m = best.size
            scores[qi, :m], img[qi, :m], patch[qi, :m] = d[best], self.image_ids[pos[best]], r[best] % pp
        return scores, img, patch

    def _scan_mapped(self, q: np.ndarray, kk: int) -> tuple[np.ndarray, np.ndarray]:
        """Best ``kk`` code rows per query (scores, rows; best first) over the memory-mapped codes, a
        slice at a time (:func:`_scan_slice`), merged in a heap; few queries: the slices over the
        FAISS threads (FAISS lets go of the GIL), merged in order, so the results do not change."""
        codes = self._mapped
        if codes is None:
            raise StoreError("only a memory-mapped store is scanned slice by slice")
        heap = faiss.ResultHeap(q.shape[0], kk, keep_max=self.index.metric_type == faiss.METRIC_INNER_PRODUCT)
        codec = faiss.downcast_index(self.index)

        def scan(start: int, threads: int = 0) -> tuple[np.ndarray, np.ndarray]:
            if threads:
                faiss.omp_set_num_threads(threads)  # this worker thread's own FAISS calls only
            part = codes[start:start + SEARCH_SLICE_ROWS]
            dist, rows = _scan_slice(codec, q, part, min(kk, part.shape[0]))
            return dist, np.where(rows >= 0, rows + start, -1)

        starts = range(0, codes.shape[0], SEARCH_SLICE_ROWS)
        threads = faiss.omp_get_max_threads()
        if q.shape[0] < threads and len(starts) > 1:
            with ThreadPoolExecutor(min(threads, len(starts))) as pool:
                for dist, rows in pool.map(scan, starts, [1] * len(starts)):
                    heap.add_result(dist, rows)
        else:  # a batch: FAISS spreads its queries over the threads
            for start in starts:
                heap.add_result(*scan(start))
        heap.finalize()
        return heap.D, heap.I

    def _search_index(self) -> faiss.Index:
        if self._device is None:
            self._device = to_gpu_if_available(self.index, self.cfg.use_gpu)
        return self._device

    # ----- persistence ---------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the store to one file atomically (format in :mod:`tagger.store.patch_store_file`)."""
        header = {"dim": self.dim, "patches_per_image": self.patches_per_image,
                  "n_images": self.n_images, "code_size": self.code_size,
                  "config": self.cfg.to_dict()}
        write_patch_file(path, header, self.image_ids, self._codec_only(), self.codes)
        logger.info("saved patch store (%d images, %d B/image) to %s", self.n_images,
                    self.bytes_per_image(), path)

    def _codec_only(self) -> faiss.Index:
        """The trained codec without codes (kept since training or loading; else cloned once)."""
        if self._codec is None:
            codec = faiss.clone_index(self.index)
            codec.reset()
            self._codec = codec
        return self._codec

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, use_gpu: bool | None = None,
             mmap: bool = False) -> PatchStore:
        """Read a file written by :meth:`save` (config included); optionally override use_gpu.

        With ``mmap`` the codes stay on disk, memory-mapped, and only the codec is in memory: the
        store can decode (what tagging needs) and search (a slice at a time) but not add.
        """
        header, image_ids, index, codes = read_patch_file(path, mmap=mmap)
        cfg = IndexConfig.from_dict(header["config"])
        if use_gpu is not None:
            cfg = dataclasses.replace(cfg, use_gpu=use_gpu)
        mapped: np.ndarray | None = None
        codec = index if codes is not None else None
        if codes is not None and mmap:
            mapped = codes
        elif codes is not None:  # a full load: the codes go into a copy of the (empty) codec
            index = faiss.clone_index(codec)
            if len(codes):
                _append_codes(index, codes)
        store = cls(int(header["dim"]), int(header["patches_per_image"]), cfg, index=index,
                    image_ids=image_ids, mapped_codes=mapped, codec=codec)
        if store.code_size != int(header["code_size"]):
            raise StoreError(f"{path}: code size {store.code_size} != header {header['code_size']}")
        return store


def build_patch_store(root: str | os.PathLike[str], model_id: str,
                      cfg: IndexConfig | None = None) -> PatchStore:
    """Build the patch store from every done shard of ``model_id``.

    Deterministic: the codec trains on a seeded sample of patch vectors drawn by position in
    ascending image id order, and images are encoded in that order, so the same rows give the
    same store whatever the shard write order or partitioning. With fewer patch vectors than the
    codec needs to train, the store is an uncompressed stand-in (``provisional_until`` > 0).
    """
    cfg = cfg or IndexConfig()
    rows = ShardSet.from_root(root, model_id)
    if rows.patches_per_image is None:
        raise StoreError(f"shards of {model_id!r} hold no patch embeddings")
    pp = rows.patches_per_image
    store = PatchStore(rows.dim, pp, cfg)
    need = min_train_vectors(store.index)
    if rows.n * pp < need:
        store = PatchStore(rows.dim, pp, cfg, index=flat_stand_in(rows.dim, cfg.faiss_metric))
        store.provisional_until = need
        logger.info("patch store of %s kept uncompressed: %d vectors, %s trains from %d", model_id,
                    rows.n * pp, cfg.patch_factory_string, need)
    elif not store.is_trained:
        sample = rows.sample(rows.n * pp, max(cfg.train_size, need), cfg.seed)
        store.train(rows.gather_patch_vectors(sample))
    for pos in rows.batches(cfg.batch_size):
        flat = rows.gather_patches(pos).reshape(-1, rows.dim)
        store._append(rows.ids[pos], as_matrix(flat, rows.dim, cfg.normalize))
    logger.info("built patch store for %s: %d images x %d patches, %d B/image", model_id,
                store.n_images, pp, store.bytes_per_image())
    return store
