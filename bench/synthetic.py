"""A synthetic workspace of N images' embeddings, built without decoding or encoding a pixel.

    python bench/synthetic.py WORKSPACE --n 100000 [--labels 80] [--reserve 5] [--partition-size 256]

Everything is written by the project's own code, as the encode and train stages write it:

* catalog (DuckDB, ``Catalog``): N registered images (URIs ``synthetic://images/<n>.jpg``, which
  name no file), each recorded as encoded into its shard, and the label vocabulary;
* shards (``write_shard``): one per partition of ``--partition-size`` images (the encode default),
  image ids, fp16 global vectors;
* indexes: the FAISS global index built from the shards (``build_global_index``) and a PQ patch store
  (the default ``IndexConfig``: PQ16x8, 196 codes of 16 B per image) saved with ``save_indexes``,
  so ``update_indexes`` finds both unchanged and an encode or nightly run extends them;
* text and classifier: the offline corpus of the vocabulary (``run_generate_text``) and the
  text-only CoMC classifier (``run_train``), so ``run_tag`` and ``run_nightly`` run as they would.

Model identity: open_clip's ``ViT-B-16`` architecture with random weights (model id
``ViT-B-16@random``), for its geometry: 512-d embeddings and 14 x 14 = 196 patches per image. No
model produced the vectors. Each image shows up to ``--labels-per-image`` "concepts" (one random
unit vector per label name), drawn from the vocabulary and from ``--reserve`` labels not in it yet
(the labels a later run adds): its global vector is unit noise plus those concepts, and its 196 PQ
codes are background codes with 8 codes per concept taken from patches showing it (a bank of
codes encoded once by the store's codec, trained on 10,000 random vectors). So patches are
well-formed codes, decoded at the real cost, and both branches of the classifier find the labels.
Shards hold no raw patches (``TagConfig(patch_source="raw")`` cannot run here), which keeps 10^6
images at about 4 GB (1 GB of global vectors, 3.1 GB of codes) instead of 200 GB.

The classifier's text embeddings (sentences and class prompts) come from
:class:`SyntheticTextTower`: the concept vectors of the labels a text names, plus noise seeded by
the text. They are cached in the workspace as the train stage caches them. :func:`extend_vocabulary`
adds labels and builds the new corpus and classifier with the same tower (bench/scale.py does so
before its nightly run); a train without the tower (``tagger train``) loads ViT-B-16 with
open_clip's random initialisation and embeds only the new sentences and prompts with it.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import re
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tagger.catalog import Catalog, JobLock
from tagger.models.registry import model_config, model_id_for
from tagger.pipeline.text import run_generate_text
from tagger.pipeline.train import run_train
from tagger.store import IndexConfig, PatchStore, build_global_index, index_paths, shard_name_for, write_shard
from tagger.store.annsync import sync_ann
from tagger.store.patchannsync import sync_patch_ann
from tagger.store.codec import min_train_vectors
from tagger.store.updates import save_indexes
from tagger.workspace import Workspace

logger = logging.getLogger(__name__)

MODEL = "ViT-B-16"
URI_PREFIX = "synthetic://images/"
CODEC_TRAIN_VECTORS = 10_000
OBJECT_PATCHES = 8  # patches of an image that show one of its concepts
REGISTER_CHUNK = 100_000
_CONSONANTS, _VOWELS = "bdfgklmnprstvz", "aeiou"
_SYLLABLES = [c + v for c in _CONSONANTS for v in _VOWELS]


class SyntheticError(RuntimeError):
    """A synthetic workspace cannot be built as asked."""


@dataclass(frozen=True)
class SyntheticConfig:
    """What a synthetic workspace holds."""

    n_images: int
    labels: int = 80  # the vocabulary
    reserve: int = 5  # labels the images show but the vocabulary lacks (added later, e.g. by a bench)
    labels_per_image: int = 3  # concepts drawn per image (each kept with probability 0.8)
    concept_weight: float = 0.6  # weight of each concept against unit noise
    partition_size: int = 256  # images per shard
    n_sentences: int = 2000  # label sets of the text corpus
    seed: int = 0
    model: str = MODEL
    approx_indexes: bool = True  # build the approximate global and patch indexes, as an encode does

    def __post_init__(self) -> None:
        for name in ("n_images", "labels", "labels_per_image", "partition_size", "n_sentences"):
            if getattr(self, name) < 1:
                raise SyntheticError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.labels + self.reserve > len(_SYLLABLES) ** 2:
            raise SyntheticError(f"at most {len(_SYLLABLES) ** 2} labels")


def label_names(n: int, start: int = 0) -> list[str]:
    """``n`` distinct pronounceable six-letter names (deterministic; none contains another)."""
    k = len(_SYLLABLES)
    return [_SYLLABLES[i % k] + _SYLLABLES[(i // k) % k] + _SYLLABLES[(7 * i + 3) % k] for i in range(start, start + n)]


def vocabulary(cfg: SyntheticConfig) -> tuple[list[str], list[str]]:
    """(the labels of the catalog, the reserve labels the images also show)."""
    names = label_names(cfg.labels + cfg.reserve)
    return names[:cfg.labels], names[cfg.labels:]


def geometry(model: str) -> tuple[int, int]:
    """(embedding dimension, patches per image) of an open_clip ViT config."""
    conf = model_config(model)
    vision = (conf or {}).get("vision_cfg", {})
    if conf is None or not vision.get("patch_size"):
        raise SyntheticError(f"{model!r} is not an open_clip ViT config (need embed_dim and vision patch_size)")
    side = int(vision["image_size"]) // int(vision["patch_size"])
    return int(conf["embed_dim"]), side * side


def _seed_of(text: str, seed: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{text}".encode()).digest()[:8], "little")


def concepts(names: list[str], dim: int, seed: int = 0) -> np.ndarray:
    """One random unit vector per label name (float32 [len(names), dim]), seeded by the name."""
    out = np.stack([np.random.default_rng(_seed_of(n, seed)).standard_normal(dim) for n in names])
    return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


class SyntheticTextTower:
    """A text tower for synthetic workspaces: a text's embedding is the concept vectors of the labels
    it names (a name, or its plural) plus unit noise seeded by the text, normalised."""

    def __init__(self, model_id: str, names: list[str], dim: int, weight: float = 0.6, seed: int = 0) -> None:
        self.model_id, self.dim, self.weight, self.seed = model_id, dim, weight, seed
        self.index = {n: i for i, n in enumerate(names)}
        self.concepts = concepts(names, dim, seed)
        self.pattern = re.compile(r"\b(" + "|".join(map(re.escape, names)) + r")(?:e?s)?\b")

    @property
    def embed_dim(self) -> int:
        return self.dim

    def encode_text(self, texts: list[str], batch_size: int = 512) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, text in enumerate(texts):
            v = np.random.default_rng(_seed_of(text, self.seed)).standard_normal(self.dim)
            v /= np.linalg.norm(v)
            for name in set(self.pattern.findall(text)):
                v += self.weight * self.concepts[self.index[name]]
            out[i] = v / np.linalg.norm(v)
        return out


@dataclass(frozen=True)
class PatchBank:
    """PQ codes to draw image patches from: background patches (random unit vectors) and, per concept,
    patches that show it (the concept plus unit noise), encoded once by the store's codec."""

    background: np.ndarray  # uint8 [B, code_size]
    shown: np.ndarray  # uint8 [concepts, variants, code_size]

    @classmethod
    def make(cls, codec: PatchStore, table: np.ndarray, rng: np.random.Generator, background: int = 4096,
             variants: int = 16, weight: float = 1.0) -> "PatchBank":
        dim = table.shape[1]
        bg = _unit(rng.standard_normal((background, dim), dtype=np.float32))
        noise = _unit(rng.standard_normal((table.shape[0], variants, dim), dtype=np.float32))
        shown = _unit(noise + weight * table[:, None, :]).reshape(-1, dim)
        encode = codec.index.sa_encode
        return cls(encode(bg), encode(shown).reshape(table.shape[0], variants, -1))


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def synthetic_images(n: int, table: np.ndarray, bank: PatchBank, patches: int, cfg: SyntheticConfig,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images, each showing up to ``cfg.labels_per_image`` concepts of ``table``: global vectors
    (float16 [n, d], unit norm: noise plus the concepts) and patch codes (uint8 [n, P, code_size]:
    background patches, ``OBJECT_PATCHES`` of them per concept replaced by patches showing it)."""
    pick = rng.integers(0, table.shape[0], (n, cfg.labels_per_image))
    keep = rng.random((n, cfg.labels_per_image)) < 0.8
    g = _unit(rng.standard_normal((n, table.shape[1]), dtype=np.float32))
    g += cfg.concept_weight * np.einsum("nk,nkd->nd", keep.astype(np.float32), table[pick])
    codes = bank.background[rng.integers(0, len(bank.background), (n, patches))]
    rows = np.arange(n)[:, None]
    for j in range(cfg.labels_per_image):
        slots = rng.integers(0, patches, (n, OBJECT_PATCHES))
        variant = rng.integers(0, bank.shown.shape[1], (n, OBJECT_PATCHES))
        shown = bank.shown[pick[:, j:j + 1], variant]
        codes[rows, slots] = np.where(keep[:, j, None, None], shown, codes[rows, slots])
    return _unit(g).astype(np.float16), codes


def _uri(k: int) -> str:
    return f"{URI_PREFIX}{k:010d}.jpg"


def _content_hash(k: int) -> str:
    return hashlib.sha256(_uri(k).encode()).hexdigest()


def _register(cat: Catalog, n: int) -> np.ndarray:
    """Register images ``0..n-1``; returns their ids (aligned with ``k``)."""
    ids = []
    for start in range(0, n, REGISTER_CHUNK):
        ks = range(start, min(n, start + REGISTER_CHUNK))
        ids.append(cat.register_images([{"uri": _uri(k), "bytes": 150_000, "width": 224, "height": 224,
                                         "content_hash": _content_hash(k)} for k in ks]))
    ids = np.concatenate(ids)
    if np.any(np.diff(ids) <= 0):
        raise SyntheticError("the catalog already held images: build a synthetic workspace in a new folder")
    return ids


def _write_shards(root: Path, cat: Catalog, model_id: str, ids: np.ndarray, table: np.ndarray, bank: PatchBank,
                  codes: np.ndarray, cfg: SyntheticConfig) -> list[str]:
    """One shard per partition (global vectors), its patch codes into ``codes`` (image-major rows), each
    partition recorded in the catalog as encoded into its shard."""
    names, patches = [], codes.shape[0] // ids.size
    for k, start in enumerate(range(0, ids.size, cfg.partition_size)):
        part = ids[start:start + cfg.partition_size]
        g, c = synthetic_images(part.size, table, bank, patches, cfg, np.random.default_rng([cfg.seed, k]))
        codes[start * patches:(start + part.size) * patches] = c.reshape(-1, codes.shape[1])
        name = shard_name_for(part)
        write_shard(root, model_id, name, part, g)
        cat.record_encodings(part, model_id, [_content_hash(j) for j in range(start, start + part.size)], name)
        names.append(name)
    return names


def trained_codec(dim: int, patches: int, index_cfg: IndexConfig, seed: int) -> PatchStore:
    """An empty patch store whose codec is trained on random unit vectors."""
    store = PatchStore(dim, patches, index_cfg)
    rng = np.random.default_rng([seed, 1 << 20])
    store.train(rng.standard_normal((max(CODEC_TRAIN_VECTORS, min_train_vectors(store.index)), dim), np.float32))
    return store


def _fill(ws: Workspace, model_id: str, table: np.ndarray, cfg: SyntheticConfig,
          scratch: Path) -> tuple[np.ndarray, list[str], dict[str, float]]:
    """Catalog, shards and both stores; returns the image ids, shard names and seconds per step."""
    dim, patches = geometry(cfg.model)
    index_cfg, t = IndexConfig(), {}
    t0 = time.perf_counter()
    codec = trained_codec(dim, patches, index_cfg, cfg.seed)
    bank = PatchBank.make(codec, table, np.random.default_rng([cfg.seed, 1 << 21]))
    codes = np.lib.format.open_memmap(scratch, "w+", np.uint8, (cfg.n_images * patches, codec.code_size))
    t["codec_s"] = time.perf_counter() - t0
    with JobLock(ws.catalog, "synthetic"), Catalog.open(ws.catalog) as cat:
        cat.add_labels(vocabulary(cfg)[0])
        ids = _register(cat, cfg.n_images)
        t["register_s"] = time.perf_counter() - t0 - t["codec_s"]
        shards = _write_shards(ws.root, cat, model_id, ids, table, bank, codes, cfg)
    t["shards_s"] = time.perf_counter() - t0 - t["codec_s"] - t["register_s"]
    t1 = time.perf_counter()
    gi = build_global_index(ws.root, model_id, index_cfg)
    codes.flush()
    store = PatchStore(dim, patches, index_cfg, index=codec.index, image_ids=ids, mapped_codes=codes,
                       codec=codec.index)
    save_indexes(ws.root, model_id, gi, store, index_cfg, shards, trained_on_images=int(ids.size))
    t["indexes_s"] = time.perf_counter() - t1
    if cfg.approx_indexes:  # what an encode's index update builds after saving the stores (exact when small)
        t2 = time.perf_counter()
        g_path, p_path = index_paths(ws.root, model_id)
        sync_ann(g_path, None, normalize=index_cfg.normalize, use_gpu=index_cfg.use_gpu)
        sync_patch_ann(p_path, None)
        t["approx_indexes_s"] = time.perf_counter() - t2
    return ids, shards, t


def build_workspace(root: str | Path, cfg: SyntheticConfig) -> dict[str, Any]:
    """Build the synthetic workspace ``cfg`` describes at ``root`` (which must not hold a catalog yet).
    Returns a summary: model id, images, shards, labels, corpus, classifier and seconds per step."""
    ws = Workspace.at(root)
    if ws.catalog.exists():
        raise SyntheticError(f"{ws.catalog} exists: build a synthetic workspace in a new folder")
    dim, _ = geometry(cfg.model)
    ws.update_settings(model=cfg.model)
    model_id = model_id_for(cfg.model, None)
    labels, reserve = vocabulary(cfg)
    table = concepts(labels + reserve, dim, cfg.seed)
    with tempfile.TemporaryDirectory(dir=ws.root) as tmp:
        ids, shards, t = _fill(ws, model_id, table, cfg, Path(tmp) / "codes.npy")
    t1 = time.perf_counter()
    text = run_generate_text(ws, cfg.n_sentences, cfg.seed)
    tower = SyntheticTextTower(model_id, labels + reserve, dim, cfg.concept_weight, cfg.seed)
    trained = run_train(ws, cfg.model, None, text["corpus_id"], clip=tower)
    t["text_train_s"] = time.perf_counter() - t1
    logger.info("synthetic workspace %s: %d images in %d shards, %d labels", ws.root, ids.size, len(shards),
                len(labels))
    return {"workspace": str(ws.root), "model_id": model_id, "n_images": int(ids.size), "shards": len(shards),
            "labels": labels, "reserve": reserve, "corpus_id": text["corpus_id"],
            "classifier_id": trained["classifier_id"], "config": asdict(cfg),
            "timings": {k: round(v, 2) for k, v in t.items()}}


def extend_vocabulary(root: str | Path, built: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """Add ``names`` to the vocabulary of the workspace ``build_workspace`` returned ``built`` for, then
    build the corpus and train the classifier of the new vocabulary with the synthetic text tower:
    what a nightly run's text and train stages would make, so that the nightly run finds both done."""
    ws, cfg = Workspace.at(root), SyntheticConfig(**built["config"])
    with Catalog.for_job(ws.catalog, "synthetic") as cat:
        cat.add_labels(names)
    dim, _ = geometry(cfg.model)
    text = run_generate_text(ws, cfg.n_sentences, cfg.seed)
    tower = SyntheticTextTower(built["model_id"], built["labels"] + built["reserve"], dim, cfg.concept_weight, cfg.seed)
    trained = run_train(ws, cfg.model, None, text["corpus_id"], clip=tower)
    return {"corpus_id": text["corpus_id"], "n_sentences": text["n_sentences"],
            "classifier_id": trained["classifier_id"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("workspace", help="a new folder")
    p.add_argument("--n", type=int, default=10_000, help="images")
    p.add_argument("--labels", type=int, default=80)
    p.add_argument("--reserve", type=int, default=5)
    p.add_argument("--labels-per-image", type=int, default=3)
    p.add_argument("--partition-size", type=int, default=256)
    p.add_argument("--n-sentences", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    cfg = SyntheticConfig(a.n, a.labels, a.reserve, a.labels_per_image, partition_size=a.partition_size,
                          n_sentences=a.n_sentences, seed=a.seed)
    out = build_workspace(a.workspace, cfg)
    out.pop("labels"), out.pop("reserve")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
