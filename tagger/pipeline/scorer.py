"""Scoring stored shards with a trained classifier: the tag stage's scorer and its calibration.

:class:`ShardScorer` reads a shard's global embeddings from its shard file and its patches from the
PQ patch store (or the raw fp16 patches in the shard), and scores them with the classifier of a
directory: a CoMC model, an image-trained head, or a CoMC model extended by new labels
(:class:`~tagger.method.extend.ExtendedModel`), whose new columns it can score alone from the PQ
codes without decoding a patch (:meth:`ShardScorer.new_scores`). Calibration (a label's mean and sd
over a sample of the corpus) and the zero-shot naming of the sample's images live here too.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..method.comc import ComcModel
from ..method.decisions import TextAnchors
from ..method.hierarchy import ParentMap
from ..method.names import ZeroShotNames
from ..method.readout import TOP_ROWS, ReadoutState, readout_state
from ..method.zeroshot import image_names
from .readouts import kept_for, load_state, memory_key, scoring_memory

if TYPE_CHECKING:
    from .tag import TagConfig

__all__ = ["ShardScorer", "apply_statistics", "label_statistics", "load_scoring_model", "prompt_vectors"]

logger = logging.getLogger(__name__)


def load_scoring_model(directory: str | Path) -> Any:
    """The model of a classifier directory (:func:`tagger.pipeline.classifiers.load_model`): CoMC,
    CoMC extended by new labels, or an image-trained head."""
    from .classifiers import load_model
    return load_model(directory)


def label_statistics(scores: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-label mean and std (floored) of a score matrix: the calibration of a tag run."""
    s = np.asarray(scores, np.float64)
    return s.mean(0).tolist(), np.maximum(s.std(0), 1e-6).tolist()


def apply_statistics(scores: np.ndarray, stats: tuple[list[float], list[float]] | None) -> np.ndarray:
    """Scores z-scored per label with a run's statistics (unchanged without)."""
    if stats is None:
        return np.asarray(scores, np.float32)
    mean, std = (np.asarray(v, np.float32) for v in stats)
    return (np.asarray(scores, np.float32) - mean) / std


def prompt_vectors(model) -> np.ndarray | None:
    """The class-prompt embeddings a model carries, one per label in its order (CoMC's prompt memory,
    or that of a guarded head's text model); None for a model without them."""
    for m in (model, getattr(model, "text", None)):
        memories = getattr(m, "memories", None) or {}
        if "prompts" in memories and len(memories["prompts"].vectors) == len(model.labels):
            return np.asarray(memories["prompts"].vectors, np.float32)
    return None


class ShardScorer:
    """Scores the images of a stored shard with a trained classifier (global + patches)."""

    def __init__(self, root: str, model_id: str, classifier_dir: str, cfg: "TagConfig") -> None:
        from ..store import PatchStore, index_paths
        self.root, self.model_id, self.cfg = root, model_id, cfg
        self.model = load_scoring_model(classifier_dir)  # CoMC, extended CoMC or an image head
        # memory-mapped: each tag worker keeps only the codec, and reads the codes of its shards
        self.patches = PatchStore.load(index_paths(root, model_id)[1], mmap=True) if cfg.patch_source == "pq" \
            else None
        self.states_from: Path | None = None  # a base run's folder, whose readout states the new scores edit
        self._keys: dict[str, str | None] = {}  # memory keys: "base", "model"

    def load(self, name: str):
        from ..store import load_shard, model_dir
        return load_shard(model_dir(self.root, self.model_id) / str(name))

    def scores(self, shard, state: ReadoutState | None = None) -> np.ndarray:
        """Raw scores of a shard's images (``state``: their readout state over a CoMC model's scoring
        memory, when already computed; other models ignore it)."""
        g = np.asarray(shard.global_vecs, np.float32)
        if self.patches is not None:
            p = self.patches.decode(np.asarray(shard.ids))
        else:
            p = np.asarray(shard.patches, np.float32)
        if state is not None and isinstance(self.model, ComcModel):
            return self.model.scores(g, p, state=state)
        return self.model.scores(g, p)

    def _codebooks(self) -> np.ndarray | None:
        """The PQ codebooks ``(M, 256, dsub)`` when patches come from a plain 8-bit PQ store, else None."""
        if not hasattr(self, "_books"):
            import faiss
            idx = faiss.downcast_index(self.patches.index) if self.patches is not None else None
            self._books = None
            if isinstance(idx, faiss.IndexPQ) and idx.pq.nbits == 8:
                pq = idx.pq
                self._books = faiss.vector_to_array(pq.centroids).reshape(pq.M, pq.ksub, pq.dsub)
        return self._books

    def new_scores(self, shard) -> np.ndarray:
        """Raw scores of an extended model's new labels for a shard's images (:meth:`new_scores_state`)."""
        return self.new_scores_state(shard)[0]

    def base_state(self, shard) -> ReadoutState | None:
        """The shard's readout states from the base run (``states_from``), when taken over the base
        model's memory (:mod:`tagger.pipeline.readouts`)."""
        if self.states_from is None:
            return None
        if "base" not in self._keys:
            mem = scoring_memory(self.model.base)
            self._keys["base"] = None if mem is None else memory_key(*mem)
        key = self._keys["base"]
        return None if key is None else load_state(self.states_from, str(shard.name), shard.ids, key)

    def new_scores_state(self, shard) -> tuple[np.ndarray, tuple[ReadoutState, str] | None]:
        """Raw scores of an extended model's new labels for a shard's images, and the images' readout
        states over its memory with their key (None where not kept). From a PQ store no patch is
        decoded (:func:`~tagger.method.extend.pq_patch_max`); the global readout is edited from the
        base run's states where it kept them (:meth:`base_state`), else computed in full."""
        from ..method.extend import pq_patch_max
        model = self.model
        w = model.rows.weight
        books, store = self._codebooks(), self.patches
        g = np.asarray(shard.global_vecs, np.float32)
        if books is not None and store is not None:
            pp = store.patches_per_image
            pos = store.positions(np.asarray(shard.ids))
            codes = np.asarray(store.codes[(pos[:, None] * pp + np.arange(pp)).ravel()]).reshape(len(pos), pp, -1)
            if model.patch_rows > 0:  # each patch attends over a few memory rows, read from the codes
                mem = scoring_memory(model)
                base = self.base_state(shard)
                logits = model.global_logits(g) if base is None else None  # one product for both branches
                state = model.readout_state(g, base, logits) if mem is not None else None
                scores = model.new_scores(g, model.patch_scores_pq(g, codes, books, logits, state),
                                          local_mapped=True, logits=logits, state=state)
                if state is None or mem is None or not kept_for(mem, self.cfg.readout_states):
                    return scores, None
                return scores, (state, self._key(mem))
            return model.new_scores(g, pq_patch_max(codes, books, w)), None
        p = store.decode(np.asarray(shard.ids)) if store is not None else np.asarray(shard.patches, np.float32)
        return model.new_scores_decoded(g, p), None

    def full_state(self, g: np.ndarray) -> tuple[ReadoutState, str] | None:
        """The readout state of global embeddings ``g`` over the model's scoring memory, computed in
        full, and its key (computed once per scorer); None where no state is kept."""
        mem = scoring_memory(self.model)
        if mem is None or not kept_for(mem, self.cfg.readout_states):
            return None
        return readout_state(np.asarray(g, np.float32), mem[0], mem[1], TOP_ROWS), self._key(mem)

    def _key(self, mem: tuple[np.ndarray, float]) -> str:
        if self._keys.get("model") is None:
            self._keys["model"] = memory_key(*mem)
        return str(self._keys["model"])

    def anchors(self, stats: tuple[list[float], list[float]] | None) -> TextAnchors | None:
        """The classifier's text anchors in the units of scores calibrated with ``stats``."""
        a = self.model.classifier.anchors
        return a if a is None or stats is None else a.rescaled(*(np.asarray(v, np.float64) for v in stats))

    def _sample_shards(self, shards: list[str]):
        """The shards of the calibration sample, each with how many of its images the sample takes:
        the first ``calibration_images`` images in shard-name order (deterministic for a shard list,
        so a rerun fits the same statistics and decisions)."""
        n = 0
        for name in sorted(shards):
            if n >= self.cfg.calibration_images:
                return
            shard = self.load(name)
            k = min(len(shard.ids), self.cfg.calibration_images - n)
            yield shard, k
            n += k

    def sample_shard_names(self, shards: list[str]) -> list[str]:
        """The shards the calibration sample reads (:meth:`_sample_shards`, one per shard in name order)."""
        return [name for name, _ in zip(sorted(shards), self._sample_shards(shards))]

    def _named(self, vecs: list[np.ndarray], prompts: np.ndarray | None, hierarchy: ParentMap | None
               ) -> "np.ndarray | ZeroShotNames | None":
        """Each image's best match (:func:`~tagger.method.zeroshot.image_names`: under ``hierarchy``,
        the active parent map, a parent is read with its family); None without class prompts."""
        if prompts is None or not vecs:
            return None
        return image_names(np.concatenate(vecs), prompts, list(self.model.labels), hierarchy)

    def sample(self, shards: list[str], hierarchy: ParentMap | None = None
               ) -> tuple[np.ndarray, "np.ndarray | ZeroShotNames | None"]:
        """Raw scores of the calibration sample and, for the same images, the label whose CLIP prompt
        matches each best (None without class prompts; as :meth:`_named` reads them); each shard is
        read once."""
        prompts = prompt_vectors(self.model)
        scores, vecs = [], []
        for shard, k in self._sample_shards(shards):
            scores.append(self.scores(shard)[:k])
            if prompts is not None:
                vecs.append(np.asarray(shard.global_vecs)[:k])
        return np.concatenate(scores), self._named(vecs, prompts, hierarchy)

    def calibration_sample(self, shards: list[str]) -> np.ndarray:
        """Raw scores of the calibration sample (see :meth:`_sample_shards`), without naming images."""
        parts = [self.scores(shard)[:k] for shard, k in self._sample_shards(shards)]
        return np.concatenate(parts)

    def zeroshot_top1(self, shards: list[str], hierarchy: ParentMap | None = None
                      ) -> "np.ndarray | ZeroShotNames | None":
        """The best-matching label of each calibration-sample image (as :meth:`sample`), without scoring."""
        prompts = prompt_vectors(self.model)
        if prompts is None:
            return None
        return self._named([np.asarray(shard.global_vecs)[:k] for shard, k in self._sample_shards(shards)],
                           prompts, hierarchy)

    def label_stats(self, shards: list[str]) -> tuple[list[float], list[float]]:
        """Per-label mean and std of the scores of the calibration sample."""
        return label_statistics(self.calibration_sample(shards))

    def scores_of(self, by_shard: dict[str, list[int]]) -> tuple[list[int], np.ndarray]:
        """Raw scores of some images, given the shard holding each: (image ids, scores) by shard name."""
        ids, parts = [], []
        for name in sorted(by_shard):
            shard = self.load(name)
            where = {int(i): k for k, i in enumerate(np.asarray(shard.ids))}
            rows = [where[i] for i in by_shard[name] if i in where]
            if rows:
                ids += [int(np.asarray(shard.ids)[k]) for k in rows]
                parts.append(self.scores(shard)[rows])
        n_labels = len(self.model.labels)
        return ids, np.concatenate(parts) if parts else np.zeros((0, n_labels), np.float32)
