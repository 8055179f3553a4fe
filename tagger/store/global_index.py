"""FAISS index of global image embeddings, keyed by int64 image_id."""
from __future__ import annotations

import logging
import os

import faiss
import numpy as np

from tagger.errors import ConfigError, StoreError, UnknownIdError
from tagger.atomic import atomic_open
from tagger.store.codec import flat_stand_in, min_train_vectors, train_checked
from tagger.store.config import IndexConfig
from tagger.store.gpu import GPU_MAX_K, to_gpu_if_available
from tagger.store.shard_table import ShardSet
from tagger.store.vectors import as_ids, as_matrix

logger = logging.getLogger(__name__)


def _ivf_of(index: faiss.Index) -> faiss.IndexIVF | None:
    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


def _prepare(index: faiss.Index, cfg: IndexConfig) -> faiss.Index:
    """Make ``index`` keyed by id with working removal and reconstruct-by-id.

    Flat-codes indexes (Flat, SQ, PQ, ...) live inside ``IndexIDMap2`` (added here when the
    factory did not say so); IVF indexes keep ids natively and get a hashtable direct map.
    """
    if isinstance(index, faiss.IndexIDMap):
        inner = faiss.downcast_index(index.index)
        if not isinstance(inner, faiss.IndexFlatCodes):
            raise ConfigError("IDMap only over flat-codes indexes; IVF indexes keep ids natively")
        if not isinstance(index, faiss.IndexIDMap2):
            raise ConfigError("use IDMap2 (reconstruct by id), not IDMap")
        return index
    ivf = _ivf_of(index)
    if ivf is not None:
        ivf.nprobe = cfg.nprobe
        ivf.set_direct_map_type(faiss.DirectMap.Hashtable)
        return index
    if isinstance(index, faiss.IndexFlatCodes):
        wrapped = faiss.IndexIDMap2(index)
        wrapped.own_fields = True
        index.this.disown()
        return wrapped
    raise ConfigError(f"global factory {cfg.global_factory!r} supports neither ids nor removal")


class GlobalIndex:
    """Global embeddings in FAISS, keyed by image_id.

    Vectors (and queries) are L2-normalised when ``cfg.normalize``, so inner product is cosine.
    ``add`` replaces ids that are already present. The default factory is exact, so
    ``reconstruct`` returns the stored (normalised) vectors bit for bit.
    """

    def __init__(self, dim: int, cfg: IndexConfig | None = None, *,
                 index: faiss.Index | None = None) -> None:
        self.cfg = cfg or IndexConfig()
        if index is None:
            index = faiss.index_factory(dim, self.cfg.global_factory, self.cfg.faiss_metric)
        self.index = _prepare(index, self.cfg)
        self.dim = int(self.index.d)
        self._device: faiss.Index | None = None
        # > 0: an exact stand-in held because the configured factory needs this many training
        # vectors (set by build_global_index; the index state records it)
        self.provisional_until = 0
        self.read_only = False  # loaded memory-mapped: search and reconstruct only

    def _writable(self) -> None:
        if self.read_only:
            raise StoreError("this global index was opened memory-mapped (search only); load it without "
                             "mmap to change it")

    @property
    def ntotal(self) -> int:
        """Number of stored vectors."""
        return int(self.index.ntotal)

    @property
    def is_trained(self) -> bool:
        """False for IVF/PQ factories until :meth:`train` ran."""
        return bool(self.index.is_trained)

    def train(self, vecs: np.ndarray) -> None:
        """Train the index (IVF centroids, codebooks) on sample vectors."""
        self._writable()
        x = as_matrix(vecs, self.dim, self.cfg.normalize)
        train_checked(self.index, x, f"global factory {self.cfg.global_factory!r}")
        self._device = None

    def ids(self) -> np.ndarray:
        """Every stored id (storage order)."""
        if isinstance(self.index, faiss.IndexIDMap):
            return faiss.vector_to_array(self.index.id_map).astype(np.int64, copy=False)
        ivf = _ivf_of(self.index)
        if ivf is None:
            raise StoreError("index type does not expose its ids")
        lists = ivf.invlists
        parts = [faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
                 for i in range(ivf.nlist) if lists.list_size(i) > 0]
        return np.concatenate(parts).astype(np.int64) if parts else np.empty(0, np.int64)

    def contains(self, ids: np.ndarray) -> np.ndarray:
        """Boolean mask: which of ``ids`` are stored."""
        ids = as_ids(ids, unique=False)
        return np.isin(ids, self.ids()) if self.ntotal else np.zeros(ids.size, dtype=bool)

    def add(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        """Add vectors under ``ids``; ids already present are replaced, never duplicated.

        The presence check reads all stored ids (O(ntotal)); add in large batches.
        """
        self._writable()
        ids = as_ids(ids)
        x = as_matrix(vecs, self.dim, self.cfg.normalize)
        if x.shape[0] != ids.size:
            raise StoreError(f"{ids.size} ids for {x.shape[0]} vectors")
        if not self.is_trained:
            raise StoreError("train the index before adding vectors")
        present = self.contains(ids)
        if present.any():
            self.remove(ids[present])
        self._add_new(ids, x)

    def _add_new(self, ids: np.ndarray, x: np.ndarray) -> None:
        """Add ids known to be absent (no presence check)."""
        self._writable()
        self.index.add_with_ids(x, ids)
        self._device = None

    def remove(self, ids: np.ndarray) -> int:
        """Remove ``ids`` (absent ones are ignored); returns how many were removed."""
        self._writable()
        ids = as_ids(ids, unique=False)
        if ids.size == 0 or self.ntotal == 0:
            return 0
        if isinstance(self.index, faiss.IndexIDMap):
            selector = faiss.IDSelectorBatch(ids.size, faiss.swig_ptr(ids))
        else:  # the hashtable direct map of IVF accepts only an id array
            selector = faiss.IDSelectorArray(ids.size, faiss.swig_ptr(ids))
        removed = int(self.index.remove_ids(selector))
        self._device = None
        return removed

    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        """Stored vectors (float32 [n, d]) of ``ids``, in the order given."""
        ids = as_ids(ids, unique=False)
        if ids.size == 0:
            return np.empty((0, self.dim), dtype=np.float32)
        try:
            return self.index.reconstruct_batch(ids)
        except RuntimeError:
            missing = ids[~self.contains(ids)]
            if missing.size:
                raise UnknownIdError(f"{missing.size} ids not in the index, e.g. {missing[:5].tolist()}")
            raise

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores float32 [nq, k], ids int64 [nq, k]); missing slots have id -1."""
        if k < 1:
            raise StoreError(f"k must be >= 1, got {k}")
        q = as_matrix(queries, self.dim, self.cfg.normalize, name="queries")
        index = self.index if k > GPU_MAX_K else self._search_index()
        scores, ids = index.search(q, k)
        return scores, ids.astype(np.int64, copy=False)

    def _search_index(self) -> faiss.Index:
        if self._device is None:
            self._device = to_gpu_if_available(self.index, self.cfg.use_gpu)
        return self._device

    def to_bytes(self) -> bytes:
        """The FAISS serialisation of the index (what :meth:`save` writes)."""
        return faiss.serialize_index(self.index).tobytes()

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write a plain FAISS index file atomically (temp file, fsync, rename)."""
        with atomic_open(path) as fh:
            faiss.write_index(self.index, faiss.PyCallbackIOWriter(fh.write))
        logger.info("saved global index (%d vectors) to %s", self.ntotal, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str], cfg: IndexConfig | None = None, *,
             mmap: bool = False) -> GlobalIndex:
        """Read a file written by :meth:`save`; ``cfg`` supplies normalize/nprobe/use_gpu.

        Without ``cfg`` the defaults apply, with the metric taken from the file. With ``mmap`` the
        vectors of a flat index stay in the file, memory-mapped (FAISS's ``IO_FLAG_MMAP_IFC``), so a
        search reads them from the page cache instead of a private copy; such an index is read-only.
        """
        index = faiss.read_index(os.fspath(path), faiss.IO_FLAG_MMAP_IFC if mmap else 0)
        if cfg is None:
            metric = "ip" if index.metric_type == faiss.METRIC_INNER_PRODUCT else "l2"
            cfg = IndexConfig(metric=metric)
        gi = cls(int(index.d), cfg, index=index)
        gi.read_only = mmap
        return gi


def build_global_index(root: str | os.PathLike[str], model_id: str,
                       cfg: IndexConfig | None = None) -> GlobalIndex:
    """Build the global index from every done shard of ``model_id``.

    Deterministic: rows are added in ascending image id (duplicates resolved as in
    :class:`ShardSet`) and training uses a seeded sample, so the same rows give the same
    index bytes whatever the shard write order or partitioning. With fewer vectors than the
    factory needs to train, the index is an exact stand-in (``provisional_until`` > 0).
    """
    cfg = cfg or IndexConfig()
    rows = ShardSet.from_root(root, model_id)
    gi = GlobalIndex(rows.dim, cfg)
    need = min_train_vectors(gi.index)
    if rows.n < need:
        gi = GlobalIndex(rows.dim, cfg, index=flat_stand_in(rows.dim, cfg.faiss_metric))
        gi.provisional_until = need
        logger.info("global index of %s kept exact: %d vectors, %r trains from %d", model_id,
                    rows.n, cfg.global_factory, need)
    elif not gi.is_trained:
        sample = rows.sample(rows.n, max(cfg.train_size, need), cfg.seed)
        gi.train(rows.gather_global(sample))
    for pos in rows.batches(cfg.batch_size):
        gi._add_new(rows.ids[pos], as_matrix(rows.gather_global(pos), rows.dim, cfg.normalize))
    logger.info("built global index for %s: %d vectors, factory %s", model_id, gi.ntotal,
                cfg.global_factory)
    return gi
