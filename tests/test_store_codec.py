"""The training minimum of each FAISS layout, checked against FAISS itself."""
from __future__ import annotations

import faiss
import numpy as np
import pytest

from tagger.store.codec import flat_stand_in, min_train_vectors

D = 16
pytestmark = pytest.mark.usefixtures("one_faiss_thread")


@pytest.mark.parametrize(("factory", "need"), [
    ("Flat", 0), ("IDMap2,Flat", 0), ("SQ8", 1), ("PQ4x8", 256), ("PQ4x4", 16), ("OPQ4,PQ4", 256),
    ("IVF8,Flat", 8), ("IVF8,PQ4x4", 16), ("IDMap2,PQ4x6", 64), ("RQ2x6", 64), ("PCA8,SQ8", 8),
])
def test_min_train_vectors_is_what_faiss_accepts(factory: str, need: int) -> None:
    x = np.random.default_rng(0).normal(size=(need + 1, D)).astype(np.float32)
    assert min_train_vectors(faiss.index_factory(D, factory)) == need
    if need > 1:
        with pytest.raises(RuntimeError):
            faiss.index_factory(D, factory).train(x[:need - 1])
    index = faiss.index_factory(D, factory)
    index.train(x[:max(need, 1)])
    assert index.is_trained


def test_stand_in_is_exact_and_needs_no_training() -> None:
    index = flat_stand_in(D, faiss.METRIC_INNER_PRODUCT)
    x = np.eye(D, dtype=np.float32)
    index.add(x)
    assert index.is_trained and min_train_vectors(index) == 0
    np.testing.assert_array_equal(index.sa_decode(index.sa_encode(x)), x)
