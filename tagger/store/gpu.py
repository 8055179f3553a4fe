"""Optional GPU placement of search indexes; CPU is the fallback and the same code path."""
from __future__ import annotations

import logging

import faiss

logger = logging.getLogger(__name__)

GPU_MAX_K = 2048  # FAISS GPU search supports k up to this value


def num_gpus() -> int:
    """GPUs FAISS can use (0 with faiss-cpu)."""
    getter = getattr(faiss, "get_num_gpus", None)
    return int(getter()) if getter is not None else 0


def to_gpu_if_available(index: faiss.Index, use_gpu: bool) -> faiss.Index:
    """A clone of ``index`` spread over all GPUs when allowed and possible, else ``index`` itself.

    Indexes the GPU cannot hold (e.g. flat PQ) stay on CPU. Callers cache the result, drop it
    when the CPU index changes, and search the CPU index for ``k`` above :data:`GPU_MAX_K`.
    """
    if not use_gpu or num_gpus() == 0:
        return index
    try:
        return faiss.index_cpu_to_all_gpus(index)
    except (RuntimeError, AttributeError) as exc:
        logger.info("index stays on CPU: %s", str(exc).strip().splitlines()[:1])
        return index
