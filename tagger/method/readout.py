"""Each image's attention over a memory, kept so that a memory edited by a few rows is re-read at the
cost of those rows only.

CoMC's global readout of an image embedding v over a memory M (:func:`tagger.method.mapping.attend`)
is ``u = normalise(sum_k exp(v . M_k / tau) M_k)``. A :class:`ReadoutState` keeps, per image,

    shift  c = max_k v . M_k / tau
    sums   S = sum_k exp(v . M_k / tau - c) M_k        (d floats)
    weight Z = sum_k exp(v . M_k / tau - c)
    mass     Z when S was last computed in full, plus every row's term added since (never lowered
             by a removal: the scale of S's rounding error)
    top    the indices of the rows with the largest v . M_k, best first (-1 pads a shorter list)

so ``u = normalise(S)``. When rows are removed from the memory and others added (labels retired,
re-trained, added), :func:`edit_state` subtracts the removed rows' terms, adds the new rows' and
merges the new rows into ``top``: the readout over the edited memory, exact up to rounding, at
``2 d`` multiply-adds per changed row and image instead of ``2 K d``. An image is recomputed in full
where the subtraction would cancel (what is left is under 1e-3 of its mass, over however many
edits) or where too few
of its best rows are known after the edit (``need``).

``top`` stays exact under edits: rows outside an image's old list scored below every row on it, so
the old list's survivors are the best old rows left; an added row joins the list only where it
scores at least the last survivor.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

__all__ = ["TOP_ROWS", "ReadoutState", "edit_state", "readout_state"]

logger = logging.getLogger(__name__)

#: Best rows an image's state lists: the pruned patch scoring's rows (``ScoreConfig.patch_memory``).
TOP_ROWS = 32
#: A removed row's term is subtracted only where what is left holds at least this share of the
#: image's weight (else float32 cancellation; the image is recomputed).
_MIN_LEFT = 1e-3


@dataclass
class ReadoutState:
    """Per-image attention over a memory (module docstring); row i is image i."""

    shift: np.ndarray  # (n,) float32
    sums: np.ndarray  # (n, d) float32
    weight: np.ndarray  # (n,) float32
    mass: np.ndarray  # (n,) float32
    top: np.ndarray  # (n, R) int32, best first, -1 padded
    top_logit: np.ndarray  # (n, R) float32: v . M_k of the listed rows, -inf padded

    def __len__(self) -> int:
        return int(len(self.shift))

    def readout(self) -> np.ndarray:
        """The unit-norm readout ``u`` of each image ``(n, d)``."""
        u = self.sums.astype(np.float32, copy=True)
        u /= np.maximum(np.linalg.norm(u, axis=1, keepdims=True), 1e-12)
        return u

    def best(self, rows: int, skip_from: int | None = None) -> np.ndarray:
        """Each image's ``rows`` best rows ``(n, rows)``, leaving out rows numbered ``skip_from`` and
        above; an image that lists fewer has -1 in their place."""
        top = self.top if skip_from is None else np.where(self.top >= skip_from, -1, self.top)
        if rows > top.shape[1]:
            top = np.concatenate([top, np.full((len(top), rows - top.shape[1]), -1, top.dtype)], axis=1)
        order = np.argsort(top < 0, axis=1, kind="stable")  # the listed rows first, in their order
        return np.take_along_axis(top, order, axis=1)[:, :rows]

    def take(self, rows: np.ndarray) -> "ReadoutState":
        return ReadoutState(self.shift[rows], self.sums[rows], self.weight[rows], self.mass[rows], self.top[rows],
                            self.top_logit[rows])

    def put(self, rows: np.ndarray, other: "ReadoutState") -> None:
        self.shift[rows], self.sums[rows], self.weight[rows] = other.shift, other.sums, other.weight
        self.mass[rows] = other.mass
        self.top[rows], self.top_logit[rows] = -1, -np.inf
        self.top[rows, :other.top.shape[1]], self.top_logit[rows, :other.top.shape[1]] = other.top, other.top_logit

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"shift": self.shift, "sums": self.sums, "weight": self.weight, "mass": self.mass, "top": self.top,
                "top_logit": self.top_logit}

    @classmethod
    def from_arrays(cls, a) -> "ReadoutState":
        return cls(np.asarray(a["shift"], np.float32), np.asarray(a["sums"], np.float32),
                   np.asarray(a["weight"], np.float32), np.asarray(a["mass"], np.float32), np.asarray(a["top"], np.int32),
                   np.asarray(a["top_logit"], np.float32))


def readout_state(v: np.ndarray, memory: np.ndarray, tau: float, rows: int = TOP_ROWS,
                  logits: np.ndarray | None = None) -> ReadoutState:
    """The state of embeddings ``v`` ``(n, d)`` over unit-norm memory rows ``(K, d)`` (``logits``:
    ``v @ memory.T``, when already computed; read, not changed)."""
    m = np.asarray(memory, np.float32)
    lg = np.asarray(v, np.float32) @ m.T if logits is None else logits
    r = min(rows, m.shape[0])
    if r:
        top = np.argpartition(-lg, r - 1, axis=1)[:, :r]
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(lg, top, axis=1), axis=1), axis=1)
    else:
        top = np.zeros((len(lg), 0), np.int64)
    pad, pad_lg = np.full((len(lg), rows), -1, np.int32), np.full((len(lg), rows), -np.inf, np.float32)
    pad[:, :r] = top
    pad_lg[:, :r] = np.take_along_axis(lg, top, axis=1)
    e = lg * np.float32(1.0 / tau)
    shift = e.max(axis=1) if m.shape[0] else np.zeros(len(lg), np.float32)
    e -= shift[:, None]
    np.exp(e, out=e)
    weight = e.sum(axis=1).astype(np.float32)
    return ReadoutState(shift.astype(np.float32), e @ m, weight, weight.copy(), pad, pad_lg)


def _merge_top(state: ReadoutState, remap: np.ndarray, added_from: int,
               added_logits: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each image's best rows after the edit, their logits, and how many are known (module docstring)."""
    n, r = state.top.shape
    old = np.where(state.top >= 0, remap[np.maximum(state.top, 0)], -1) if len(remap) else np.full((n, r), -1)
    order = np.argsort(old < 0, axis=1, kind="stable")
    old = np.take_along_axis(old, order, axis=1)  # survivors first, best first
    survivors = (old >= 0).sum(axis=1)
    old_lg = np.take_along_axis(state.top_logit, order, axis=1)
    old_lg[old < 0] = -np.inf
    # a list that held every old row places every added row; else an added row is placed only at or
    # above the last survivor (rows the list left out scored below it), and nowhere without survivors
    complete = (state.top >= 0).sum(axis=1) >= len(remap)
    floor = np.where(survivors > 0, old_lg[np.arange(n), np.maximum(survivors - 1, 0)], np.inf)
    floor[complete] = -np.inf
    add_idx = np.broadcast_to(np.arange(added_from, added_from + added_logits.shape[1]), added_logits.shape)
    add_lg = np.where(added_logits >= floor[:, None], added_logits, -np.inf)
    idx = np.concatenate([old, add_idx], axis=1)
    lg = np.concatenate([old_lg, add_lg], axis=1)
    best = np.argsort(-lg, axis=1, kind="stable")[:, :r]
    top = np.take_along_axis(idx, best, axis=1).astype(np.int32)
    top_lg = np.take_along_axis(lg, best, axis=1).astype(np.float32)
    top[~np.isfinite(top_lg)] = -1
    return top, top_lg, (top >= 0).sum(axis=1)


def edit_state(state: ReadoutState, v: np.ndarray, old_memory: np.ndarray, keep: np.ndarray,
               added: np.ndarray, tau: float, need: int = 0) -> ReadoutState:
    """The state of embeddings ``v`` over ``old_memory[keep]`` followed by ``added`` rows, from their
    ``state`` over ``old_memory`` (module docstring); ``need``: images listing fewer best rows than
    this (or all the memory's, if fewer) afterwards are recomputed."""
    v = np.asarray(v, np.float32)
    old_memory = np.asarray(old_memory, np.float32)
    keep = np.asarray(keep, np.int64)
    added = np.asarray(added, np.float32).reshape(-1, old_memory.shape[1])
    remap = np.full(len(old_memory), -1, np.int64)
    remap[keep] = np.arange(len(keep))
    removed = np.flatnonzero(remap < 0)
    scale = np.float32(1.0 / tau)
    shift, sums, weight, mass = state.shift, state.sums, state.weight, state.mass
    if len(removed):
        w = np.exp(np.minimum((v @ old_memory[removed].T) * scale - shift[:, None], 0.0))
        sums = sums - w @ old_memory[removed]
        weight = weight - w.sum(axis=1)
        bad = weight < _MIN_LEFT * mass  # against the mass, not this edit's start: errors add up over edits
    else:
        bad = np.zeros(len(v), bool)
    add_lg = v @ added.T
    if len(added):
        new_shift = np.maximum(shift, add_lg.max(axis=1) * scale)
        factor = np.exp(shift - new_shift)
        e = np.exp(add_lg * scale - new_shift[:, None])
        sums = sums * factor[:, None]
        sums += e @ added
        weight = weight * factor + e.sum(axis=1)
        mass = mass * factor + e.sum(axis=1)
        shift = new_shift
    top, top_lg, known = _merge_top(state, remap, len(keep), add_lg)
    bad |= known < min(need, len(keep) + len(added))
    out = ReadoutState(shift.astype(np.float32), np.array(sums, np.float32), weight.astype(np.float32),
                       mass.astype(np.float32), top, top_lg)
    if bad.any():
        rows = np.flatnonzero(bad)
        memory = np.concatenate([old_memory[keep], added])
        out.put(rows, readout_state(v[rows], memory, tau, state.top.shape[1]))
        logger.debug("readout state: %d of %d images recomputed in full", len(rows), len(v))
    return out
