"""The readout states a tag run keeps beside its tags, for the next incremental nightly.

Each shard a run tags with a memory of at least ``TagConfig.readout_states`` rows gets
``readout-<shard>.npz`` in the run's folder (:meth:`tagger.workspace.Workspace.readout_file`): each
image's attention over the run's scoring memory (:class:`tagger.method.readout.ReadoutState`, about
``4 d`` bytes per image), with the image ids and a key of the memory and temperature it was taken
over. An incremental nightly edits the base run's states by the rows that changed instead of
re-reading the whole memory per image; a state whose key or ids do not match is not used (the
readout is computed in full), so a stale or missing file costs time, never correctness. The state
file is written before the shard's tag file, which marks the shard done.
"""
from __future__ import annotations

import hashlib
import io
import logging
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write_bytes
from ..method.readout import ReadoutState
from ..workspace import Workspace

__all__ = ["kept_for", "load_state", "memory_key", "save_state", "scoring_memory"]

logger = logging.getLogger(__name__)


def scoring_memory(model: Any) -> tuple[np.ndarray, float] | None:
    """The memory rows a CoMC model's (or an extended one's) global readout reads and its temperature;
    None for a model without one (an image head, no memory, alpha 1, or a top-k search)."""
    score, memory = getattr(model, "score", None), getattr(model, "memory", None)
    if score is None or not callable(memory) or score.alpha >= 1.0 or score.topk is not None:
        return None
    bank = memory()
    return None if bank is None else (bank.vectors, float(score.tau))


def memory_key(vectors: np.ndarray, tau: float) -> str:
    """A key of the memory rows and the temperature a state was taken over."""
    h = hashlib.sha256(np.ascontiguousarray(vectors, np.float32).tobytes())
    h.update(repr(float(tau)).encode())
    return h.hexdigest()[:24]


def kept_for(mem: tuple[np.ndarray, float] | None, min_rows: int | None) -> bool:
    """Whether states over this memory are kept (``min_rows``: ``TagConfig.readout_states``)."""
    return mem is not None and min_rows is not None and len(mem[0]) >= min_rows


def save_state(run_dir: str | Path, shard: str, ids: np.ndarray, state: ReadoutState, key: str) -> None:
    """Write a shard's states atomically (before its tag file)."""
    buf = io.BytesIO()
    arrays: dict[str, Any] = {"ids": np.asarray(ids, np.int64), "key": np.array(key), **state.to_arrays()}
    np.savez(buf, **arrays)
    atomic_write_bytes(Workspace.readout_file(run_dir, shard), buf.getvalue())


def load_state(run_dir: str | Path, shard: str, ids: np.ndarray, key: str) -> ReadoutState | None:
    """A shard's states from a run's folder when they were taken over the memory ``key`` for these
    image ids, in this order; else None."""
    path = Workspace.readout_file(run_dir, shard)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            if str(f["key"]) != key or not np.array_equal(f["ids"], np.asarray(ids, np.int64)):
                return None
            return ReadoutState.from_arrays(f)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        logger.warning("readout states %s unreadable (%s): computing them in full", path, exc)
        return None
