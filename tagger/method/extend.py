"""A trained CoMC model extended by a few labels without retraining it: the incremental nightly's model.

:class:`ExtendedModel` keeps a base model (a CoMC model, or an extended one) frozen and adds the rows
of new labels (trained against the frozen ones, :func:`tagger.method.classifier.train_rows`). Its
labels are the base labels it keeps (retired ones and those whose row was retrained are left out)
followed by the new ones. The base labels' columns are the base model's scores, unchanged. The new
columns are CoMC's scores with the patch branch's memory attention narrowed: the global branch maps
the image embedding over the whole memory (the kept labels' prompts and the new labels'), and each
patch attends only over the new labels' prompts and the ``patch_rows`` rows the image's global
embedding attends to most (with every row this is CoMC exactly). The new columns then cost one
memory readout per image and a small attention per patch, whatever the number of base labels.

With ``patch_rows = 0`` the patches' readout is the image's global one, and the local branch reads
``max_p (p . w_j)`` from the PQ codes with one lookup table per new label
(:func:`pq_patch_max`, no patch decoded): cheaper, and on the toy world 2.4 mAP points lower.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..atomic import atomic_write_text
from .anchors import TextAnchors
from .classifier import TextClassifier
from .mapping import MemoryBank, attend, image_memory_rows
from .readout import TOP_ROWS, ReadoutState, edit_state, readout_state
from .scoring import ScoreConfig, fuse
from .zeroshot import ENSEMBLE_PROMPTS, SINGLE_PROMPT

__all__ = ["EXTENDS_FILE", "PROMPT_TEMPLATES", "ExtendedModel", "is_extended_dir", "pq_patch_max"]

logger = logging.getLogger(__name__)

EXTENDS_FILE = "extends.json"

#: The memories with one class-prompt row per label, and their templates. An extended model carries
#: those its new labels' prompts were embedded for (the one its scores read, and ``prompts``, which
#: names images); a per-label memory it was not given is left out rather than left a row short.
PROMPT_TEMPLATES = {"prompts": SINGLE_PROMPT, "prompts-ensemble": ENSEMBLE_PROMPTS}
_ROWS_DIR = "rows"


def is_extended_dir(directory: str | Path) -> bool:
    """Whether ``directory`` holds an :class:`ExtendedModel`."""
    return (Path(directory) / EXTENDS_FILE).is_file()


def _lookup_sum(codes: np.ndarray, tables: np.ndarray, per_image: bool) -> np.ndarray:
    """``sum_m tables[m, codes[i, p, m]]`` (``per_image``: ``tables[m, codes[i, p, m], i]``) for codes
    ``(n, P, M)`` and tables ``(M, ksub, [n,] C)`` -> ``(n, P, C)``: one summed gather of C floats per
    patch and sub-quantizer (torch's embedding bag, without a gathered copy per sub-quantizer)."""
    import torch
    n, num_p, m = codes.shape
    ksub, c = tables.shape[1], tables.shape[-1]
    at = np.arange(m, dtype=np.int64) * ksub + codes.astype(np.int64)
    if per_image:
        at *= n
        at += np.arange(n, dtype=np.int64)[:, None, None]
    flat = torch.from_numpy(np.ascontiguousarray(tables, np.float32).reshape(-1, c))
    offsets = torch.arange(0, n * num_p * m, m, dtype=torch.int64)
    out = torch.nn.functional.embedding_bag(torch.from_numpy(at.reshape(-1)), flat, offsets, mode="sum")
    return out.numpy().reshape(n, num_p, c)


def pq_products(codes: np.ndarray, centroids: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``p . w_j`` of PQ-coded patches without decoding them: codes ``(n, P, M)`` (uint8), the
    codebooks ``(M, ksub, dsub)`` and rows ``(C, M * dsub)`` -> ``(n, P, C)``, one lookup table per row."""
    m = codes.shape[2]
    if len(weight) == 0:  # no rows (a nightly that only retires labels trains none)
        return np.zeros((*codes.shape[:2], 0), np.float32)
    w = np.asarray(weight, np.float32).reshape(len(weight), m, -1)
    lut = np.einsum("mkd,cmd->mkc", np.asarray(centroids, np.float32), w)  # (M, ksub, C)
    return _lookup_sum(codes, lut, per_image=False)


def pq_image_products(codes: np.ndarray, centroids: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``p . r`` for each image's own rows: codes ``(n, P, M)``, codebooks ``(M, ksub, dsub)``, rows
    ``(n, R, M * dsub)`` -> ``(n, P, R)``, one small lookup table per image and row (one product per
    sub-quantizer for all images at once)."""
    n, num_p, m = codes.shape
    r = rows.shape[1]
    if n == 0 or r == 0:
        return np.zeros((n, num_p, r), np.float32)
    books = np.asarray(centroids, np.float32)
    sub = np.asarray(rows, np.float32).reshape(n * r, m, -1)
    lut = np.empty((m, books.shape[1], n * r), np.float32)  # (M, ksub, n, R): no transposed copy
    for k in range(m):
        np.matmul(books[k], sub[:, k, :].T, out=lut[k])
    return _lookup_sum(codes, lut.reshape(m, books.shape[1], n, r), per_image=True)


def pq_patch_max(codes: np.ndarray, centroids: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``max_p (p . w_j)`` of PQ-coded patches (:func:`pq_products`) -> ``(n, C)``."""
    if not len(codes):
        return np.zeros((0, len(weight)), np.float32)
    return pq_products(codes, centroids, weight).max(axis=1)


def _merged_anchors(a: TextAnchors | None, b: TextAnchors | None, keep: np.ndarray) -> TextAnchors | None:
    if a is None or b is None:
        return None
    robust = None if a.robust_separation is None or b.robust_separation is None else \
        np.concatenate([a.robust_separation[keep], b.robust_separation])
    both = {k: np.concatenate([getattr(a, k)[keep], getattr(b, k)]) for k in ("neg_mean", "pos_mean", "neg_sd", "pos_sd")}
    alike = None if a.alike is None and b.alike is None else \
        tuple(a.alike[i] if a.alike is not None else None for i in np.asarray(keep).tolist()) + \
        (tuple(b.alike) if b.alike is not None else (None,) * len(b.neg_mean))
    return TextAnchors(both["neg_mean"], both["pos_mean"], both["neg_sd"], both["pos_sd"], robust, alike)


@dataclass
class ExtendedModel:
    """A frozen base model, the base labels kept, and the rows (and class prompts) of new labels."""

    base: Any  # ComcModel or ExtendedModel: .labels, .scores(g, p), .memories, .classifier
    kept: list[str]
    rows: TextClassifier  # the new labels' rows, their text anchors included
    prompts: dict[str, np.ndarray]  # prompt memory kind -> the new labels' prompt embeddings
    score: ScoreConfig
    patch_rows: int = 0  # > 0: each patch attends over this many memory rows (module docstring)

    def __post_init__(self) -> None:
        where = {n: j for j, n in enumerate(self.base.labels)}
        missing = [n for n in self.kept if n not in where]
        if missing:
            raise ValueError(f"kept labels {missing[:5]} are not labels of the base model")
        self.kept_idx = np.asarray([where[n] for n in self.kept], np.int64)
        self.memories: dict[str, MemoryBank] = {}
        for kind, bank in self.base.memories.items():
            if kind in self.prompts:  # one prompt row per label: the kept ones, then the new ones
                self.memories[kind] = MemoryBank(np.concatenate([bank.vectors[self.kept_idx], self.prompts[kind]]),
                                                 bank.kind)
            elif kind not in PROMPT_TEMPLATES:  # not one row per label (sentences): kept as it is
                self.memories[kind] = bank
        self.classifier = TextClassifier(np.concatenate([self.base.classifier.weight[self.kept_idx],
                                                         self.rows.weight]), self.labels, self.rows.model_id,
                                         self.rows.corpus_id, self.rows.config, self.rows.metrics,
                                         _merged_anchors(self.base.classifier.anchors, self.rows.anchors,
                                                         self.kept_idx))

    @property
    def labels(self) -> list[str]:
        return list(self.kept) + list(self.rows.labels)

    @property
    def new_labels(self) -> list[str]:
        return list(self.rows.labels)

    def memory(self) -> MemoryBank | None:
        """The memory the scores read (None when they read none)."""
        if self.score.memory == "none" or self.score.alpha >= 1.0:
            return None
        if self.score.memory not in self.memories:
            raise ValueError(f"the scores read memory {self.score.memory!r}, which this model was not given")
        return self.memories[self.score.memory]

    def global_logits(self, g: np.ndarray) -> np.ndarray | None:
        """``g . m`` of global embeddings ``(n, d)`` with every row of the memory the scores read (None
        when they read none): computed once, read by both branches."""
        mem = self.memory()
        return None if mem is None else np.asarray(g, np.float32) @ mem.vectors.T

    def readout_state(self, g: np.ndarray, base_state: ReadoutState | None = None,
                      logits: np.ndarray | None = None) -> ReadoutState | None:
        """Each image's attention over the memory the scores read (None when they read none): edited
        from ``base_state``, the images' state over the base model's memory, when given (the cost of
        the changed rows only); else computed in full (``logits``: :meth:`global_logits`)."""
        mem = self.memory()
        if mem is None:
            return None
        g, kind, tau = np.asarray(g, np.float32), self.score.memory, self.score.tau
        if base_state is None:
            return readout_state(g, mem.vectors, tau, TOP_ROWS, logits)
        if kind not in self.prompts:  # not one row per label: the base's memory, unchanged
            return base_state
        return edit_state(base_state, g, self.base.memories[kind].vectors, self.kept_idx, mem.vectors[len(self.kept):],
                          tau, need=self.patch_rows)

    def new_scores(self, g: np.ndarray, patch_max: np.ndarray | None, local_mapped: bool = False,
                   logits: np.ndarray | None = None, state: ReadoutState | None = None) -> np.ndarray:
        """The new labels' scores from global embeddings ``(n, d)`` and ``max_p (p . w_j)`` ``(n, N)``
        (``local_mapped``: ``patch_max`` is already the mapped local branch, :meth:`patch_scores`;
        ``logits``: :meth:`global_logits`, or ``state``: :meth:`readout_state`, when already computed)."""
        cfg, w = self.score, self.rows.weight
        g = np.asarray(g, np.float32)
        direct = g @ w.T
        mem = self.memory()
        if mem is None:  # the scores read no memory (or alpha is 1)
            readout = np.zeros_like(direct)
            alpha = 1.0
        else:
            u = state.readout() if state is not None and cfg.topk is None else attend(g, mem, cfg.tau, cfg.topk, logits)
            readout, alpha = u @ w.T, cfg.alpha
        gs = alpha * direct + (1 - alpha) * readout
        ls = None if patch_max is None or not cfg.use_local else \
            patch_max if local_mapped else alpha * patch_max + (1 - alpha) * readout
        return fuse(gs, ls, cfg).astype(np.float32)

    def _n_forced(self) -> int:
        """How many memory rows every image's patches attend to: the new labels' prompts."""
        return len(self.memories[self.score.memory].vectors) - len(self.kept) if self.score.memory in self.prompts else 0

    def _patch_rows(self, g: np.ndarray, logits: np.ndarray | None = None,
                    state: ReadoutState | None = None) -> np.ndarray:
        """Each image's memory rows for its patches ``(n, r)``: the ``patch_rows`` rows its global
        embedding attends to most (from ``state`` where it lists them), and the new labels' prompts."""
        bank = self.memories[self.score.memory]
        m = bank.vectors
        forced = np.arange(len(self.kept), len(m)) if self.score.memory in self.prompts else np.zeros(0, np.int64)
        skip, rows = (len(self.kept) if len(forced) else None), min(self.patch_rows, len(m) - len(forced))
        if state is None or self.score.topk is not None:
            best = np.full((len(g), rows), -1, np.int64)
        else:
            best = state.best(rows, skip).astype(np.int64)
        lacking = np.flatnonzero((best < 0).any(axis=1))  # images whose state lists too few: from logits
        if len(lacking) and rows:
            gl = np.asarray(g, np.float32)[lacking]
            lg = gl @ m.T if logits is None else logits[lacking].copy()
            lg[:, forced] = -np.inf
            best[lacking] = image_memory_rows(gl, bank, rows, lg)
        return np.concatenate([best, np.broadcast_to(forced, (len(best), len(forced)))], axis=1).astype(np.int64)

    def _patch_memory(self, g: np.ndarray, logits: np.ndarray | None = None) -> np.ndarray:
        """Each image's memory rows for its patches as vectors ``(n, r, d)`` (:meth:`_patch_rows`)."""
        return self.memories[self.score.memory].vectors[self._patch_rows(g, logits)]

    def patch_scores(self, g: np.ndarray, p: np.ndarray) -> np.ndarray:
        """The local branch of the new labels with each patch attending over a few memory rows
        (:meth:`_patch_memory`). Decoded patches ``(n, P, d)`` -> ``(n, N)``."""
        p = np.asarray(p, np.float32)
        if self.memory() is None:  # the scores read no memory (or alpha is 1)
            return (p @ self.rows.weight.T).max(axis=1)
        mr = self._patch_memory(g)
        return self._mapped_max(p @ self.rows.weight.T, np.matmul(p, mr.transpose(0, 2, 1)), mr)

    def patch_scores_pq(self, g: np.ndarray, codes: np.ndarray, centroids: np.ndarray,
                        logits: np.ndarray | None = None, state: ReadoutState | None = None) -> np.ndarray:
        """:meth:`patch_scores` from PQ codes ``(n, P, M)`` and codebooks, no patch decoded: the rows
        every image shares (the new labels' rows and prompts) read one lookup table each, an image's
        own memory rows one per image (:func:`pq_image_products`)."""
        w = self.rows.weight
        if self.memory() is None:  # the scores read no memory (or alpha is 1)
            return pq_products(codes, centroids, w).max(axis=1)
        idx = self._patch_rows(g, logits, state)
        vectors = self.memories[self.score.memory].vectors
        forced = self._n_forced()
        own = idx.shape[1] - forced
        shared = pq_products(codes, centroids, np.concatenate([w, vectors[len(vectors) - forced:]]))
        att = np.concatenate([pq_image_products(codes, centroids, vectors[idx[:, :own]]), shared[:, :, len(w):]], axis=2)
        return self._mapped_max(shared[:, :, :len(w)], att, vectors[idx])

    def _mapped_max(self, direct: np.ndarray, att: np.ndarray, mr: np.ndarray) -> np.ndarray:
        """``max_p`` of the mapped patch scores from ``p . w`` ``(n, P, N)``, ``p . m`` ``(n, P, r)``
        and the rows ``mr``."""
        cfg, w = self.score, self.rows.weight
        att = att * np.float32(1.0 / cfg.tau)
        att -= att.max(axis=2, keepdims=True)
        np.exp(att, out=att)  # softmax numerators: num / norm does not change with their scale
        num = np.matmul(att, np.matmul(mr, w.T))  # (n, P, N)
        norm = np.sqrt(np.einsum("npk,npk->np", np.matmul(att, np.matmul(mr, mr.transpose(0, 2, 1))), att))
        mapped = cfg.alpha * direct + (1 - cfg.alpha) * num / np.maximum(norm, 1e-12)[..., None]
        return mapped.max(axis=1)

    def new_scores_decoded(self, g: np.ndarray, p: np.ndarray | None) -> np.ndarray:
        """The new labels' scores from decoded patches (the patch branch as ``patch_rows`` says)."""
        if p is None:
            return self.new_scores(g, None)
        if self.patch_rows > 0:
            return self.new_scores(g, self.patch_scores(g, p), local_mapped=True)
        return self.new_scores(g, (np.asarray(p, np.float32) @ self.rows.weight.T).max(axis=1))

    def scores(self, g: np.ndarray, p: np.ndarray | None) -> np.ndarray:
        """Scores of every label: the base model's kept columns, then the new ones (patches decoded)."""
        old = np.asarray(self.base.scores(g, p), np.float32)[:, self.kept_idx]
        return np.concatenate([old, self.new_scores_decoded(g, p)], axis=1)

    def save(self, directory: str | Path, base_ref: str) -> None:
        """Write the new rows, their prompts and ``extends.json`` (last) into ``directory``; ``base_ref``
        names the base model's directory relative to this one's parent."""
        d = Path(directory)
        self.rows.save(d / _ROWS_DIR)
        for kind, vectors in self.prompts.items():
            np.save(d / f"prompts-{kind}.npy", np.asarray(vectors, np.float32))
        atomic_write_text(d / EXTENDS_FILE, json.dumps({"base": base_ref, "kept": self.kept, "score": self.score.to_dict(),
                                                        "patch_rows": self.patch_rows}, indent=2))

    @classmethod
    def load(cls, directory: str | Path, load_base: Callable[[Path], Any]) -> "ExtendedModel":
        """Read what :meth:`save` wrote; ``load_base`` loads the base model from its directory."""
        d = Path(directory)
        meta = json.loads((d / EXTENDS_FILE).read_text())
        prompts = {p.stem[len("prompts-"):]: np.load(p) for p in sorted(d.glob("prompts-*.npy"))}
        return cls(load_base(d.parent / meta["base"]), list(meta["kept"]), TextClassifier.load(d / _ROWS_DIR),
                   prompts, ScoreConfig(**meta["score"]), int(meta.get("patch_rows", 0)))
