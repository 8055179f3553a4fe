"""How much data a FAISS layout needs before it can be trained, and the stand-in used until then.

A store whose configured layout (PQ codes, an IVF) cannot be trained yet because the corpus is
too small holds its vectors in an uncompressed, exact ``IndexFlat`` instead: it needs no
training, searches and decodes exactly, and is replaced by the configured layout on the first
rebuild that has enough vectors (see :mod:`tagger.store.updates`).
"""
from __future__ import annotations

import logging
from collections.abc import Iterator

import faiss

logger = logging.getLogger(__name__)

OPQ_DEFAULT_KSUB = 256  # OPQMatrix trains its own 8-bit PQ when none is attached


def _parts(index: faiss.Index) -> Iterator[object]:
    """``index`` and everything inside it that trains: wrapped indexes and vector transforms."""
    node = faiss.downcast_index(index)
    while True:
        yield node
        if isinstance(node, faiss.IndexPreTransform):
            for i in range(node.chain.size()):
                yield faiss.downcast_VectorTransform(node.chain.at(i))
        elif not isinstance(node, faiss.IndexIDMap):
            return
        node = faiss.downcast_index(node.index)


def min_train_vectors(index: faiss.Index) -> int:
    """Fewest training vectors FAISS accepts for ``index`` (0 when it needs no training).

    K-means needs at least one vector per centroid: a PQ's ``2**nbits`` (also inside IVF-PQ
    and OPQ), an additive quantizer's largest codebook, an IVF's ``nlist``; a PCA needs as many
    vectors as output dimensions. Other trainable parts (scalar quantizers) take any sample.
    """
    if index.is_trained:
        return 0
    need = 1
    for part in _parts(index):
        pq = getattr(part, "pq", None)
        if isinstance(pq, faiss.ProductQuantizer):
            need = max(need, int(pq.ksub))
        elif isinstance(part, faiss.OPQMatrix):
            need = max(need, OPQ_DEFAULT_KSUB)
        aq = getattr(part, "aq", None)
        if isinstance(aq, faiss.AdditiveQuantizer):
            need = max(need, 2 ** int(faiss.vector_to_array(aq.nbits).max()))
        if isinstance(part, faiss.IndexIVF):
            need = max(need, int(part.nlist))
        if isinstance(part, faiss.PCAMatrix):
            need = max(need, int(part.d_out))
    return need


def flat_stand_in(dim: int, metric: int) -> faiss.IndexFlat:
    """The exact, training-free layout a store keeps until its configured one can be trained."""
    return faiss.IndexFlat(dim, metric)


def train_checked(index, x, what: str) -> None:
    """Train ``index`` on ``x``; too few vectors or a FAISS failure is one StoreError naming ``what``."""
    from ..errors import StoreError

    need = min_train_vectors(index)
    if x.shape[0] < need:
        raise StoreError(f"{what} needs at least {need} training vectors, got {x.shape[0]}")
    quiet = faiss.downcast_index(index)
    pq = getattr(quiet, "pq", None)
    advised = int(pq.cp.min_points_per_centroid) * int(pq.ksub) if pq is not None else 0
    if pq is not None and x.shape[0] < advised:
        # FAISS writes a bare "WARNING clustering N points" line per sub-quantizer to the terminal below
        # its min_points_per_centroid; the codec trains all the same (logged here instead)
        pq.cp.min_points_per_centroid = 1
        logger.info("%s trains on %d vectors (FAISS advises %d)", what, x.shape[0], advised)
    try:
        index.train(x)
    except RuntimeError as exc:
        raise StoreError(f"cannot train {what}: {str(exc).strip().splitlines()[-1]}") from exc
