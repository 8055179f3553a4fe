"""Tag stage: stored embeddings (global + PQ patch codes) -> CoMC scores -> top-k + positive tags.

No image is decoded: each shard's global embeddings come from its shard file and its patch
embeddings from the PQ patch store. Each shard's tags are written as one Parquet file, atomically,
so a rerun of a killed run skips what is done. The driver loads all files into DuckDB in one
transaction and only then switches ``current_tags`` to the run.
"""
from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .zeroshot import standardize

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TagConfig:
    """What a run keeps: the top-k labels per image plus every label over the threshold."""

    top_k: int = 5
    threshold: float = 1.0  # on the per-image standardised calibrated score (~3.5-4 labels per toy image)
    calibrate: bool = True  # z-score each label over a sample of the corpus, so every label can rank
    calibration_images: int = 4096  # images (whole shards, in shard order) behind the label statistics
    patch_source: str = "pq"  # "pq" (compressed store) | "raw" (fp16 patches in the shards)
    concurrency: int = 1
    num_gpus: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def label_statistics(scores: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-label mean and std (floored) of a score matrix: the calibration of a tag run."""
    s = np.asarray(scores, np.float64)
    return s.mean(0).tolist(), np.maximum(s.std(0), 1e-6).tolist()


def positive_mask(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Positive tags: the per-image standardised score reaches ``threshold``."""
    return standardize(scores) >= threshold


def tag_rows(image_ids: np.ndarray, scores: np.ndarray, labels: list[str], cfg: TagConfig) -> pa.Table:
    """Long-format tags of a score matrix: top-k per image plus every positive."""
    k = min(cfg.top_k, scores.shape[1])
    order = np.argsort(-scores, axis=1, kind="stable")
    rank = np.empty_like(order)
    rows_idx = np.arange(scores.shape[0])[:, None]
    rank[rows_idx, order] = np.arange(scores.shape[1])[None, :]
    positive = positive_mask(scores, cfg.threshold)  # per-image calibrated, whatever the ranking scores
    keep = (rank < k) | positive
    r, c = np.nonzero(keep)
    return pa.table({
        "image_id": pa.array(np.asarray(image_ids, np.int64)[r]),
        "label": pa.array(np.asarray(labels, object)[c].tolist(), pa.string()),
        "score": pa.array(scores[r, c].astype(np.float32)),
        "rank": pa.array((rank[r, c] + 1).astype(np.int16)),
        "positive": pa.array(positive[r, c]),
    })


def write_parquet_atomic(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


class ShardScorer:
    """Scores the images of a stored shard with a trained classifier (global + patches)."""

    def __init__(self, root: str, model_id: str, classifier_dir: str, cfg: TagConfig) -> None:
        from .comc import load_comc
        from .store import PatchStore, index_paths
        self.root, self.model_id, self.cfg = root, model_id, cfg
        self.model = load_comc(classifier_dir)
        # memory-mapped: each tag worker keeps only the codec, and reads the codes of its shards
        self.patches = PatchStore.load(index_paths(root, model_id)[1], mmap=True) if cfg.patch_source == "pq" \
            else None

    def load(self, name: str):
        from .store import load_shard, model_dir
        return load_shard(model_dir(self.root, self.model_id) / str(name))

    def scores(self, shard) -> np.ndarray:
        g = np.asarray(shard.global_vecs, np.float32)
        if self.patches is not None:
            p = self.patches.decode(np.asarray(shard.ids))
        else:
            p = np.asarray(shard.patches, np.float32)
        return self.model.scores(g, p)

    def label_stats(self, shards: list[str]) -> tuple[list[float], list[float]]:
        """Per-label mean and std of the scores over the first shards (deterministic for a shard list)."""
        parts, n = [], 0
        for name in sorted(shards):
            if n >= self.cfg.calibration_images:
                break
            parts.append(self.scores(self.load(name)))
            n += len(parts[-1])
        return label_statistics(np.concatenate(parts))


class TagShards(ShardScorer):
    """Actor stage: rows are shard names; writes ``tags-<shard>.parquet`` for each into the run dir."""

    def __init__(self, root: str, model_id: str, classifier_dir: str, run_dir: str, cfg: TagConfig,
                 stats: tuple[list[float], list[float]] | None = None) -> None:
        super().__init__(root, model_id, classifier_dir, cfg)
        self.run_dir = Path(run_dir)
        self.mean, self.std = (np.asarray(v, np.float32) for v in stats) if stats else (None, None)

    def calibrated(self, shard) -> np.ndarray:
        s = self.scores(shard)
        return s if self.mean is None else (s - self.mean) / self.std

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n_tags = []
        for name in batch["shard"]:
            out = self.run_dir / f"tags-{name}.parquet"
            if out.exists():
                n_tags.append(pq.ParquetFile(out).metadata.num_rows)
                continue
            shard = self.load(name)
            table = tag_rows(shard.ids, self.calibrated(shard), self.model.labels, self.cfg)
            write_parquet_atomic(table, out)
            n_tags.append(table.num_rows)
        return {"shard": batch["shard"], "n_tags": np.asarray(n_tags, np.int64)}


def _shards_key(shards: list[str]) -> str:
    import hashlib
    return f"{len(shards)}:" + hashlib.sha256("\n".join(sorted(shards)).encode()).hexdigest()[:16]


def _resume_or_start(cat, model_id: str, classifier_id: str, labels: list[str], cfg: TagConfig,
                     shards_key: str) -> tuple[int, str]:
    """Resume the newest run with the same inputs (unfinished, or loaded but not yet superseded);
    otherwise start a new one. Returns (run_id, status)."""
    for run in reversed(cat.runs(kind="tag")):
        same = run.model_id == model_id and run.classifier_id == classifier_id \
            and (run.config or {}).get("tag") == cfg.to_dict() and (run.config or {}).get("shards") == shards_key
        if same and run.status in ("running", "loaded", "current"):
            return run.run_id, run.status
        if same:
            break
    run_id = cat.start_run("tag", model_id=model_id, classifier_id=classifier_id, labels=labels,
                           config={"tag": cfg.to_dict(), "shards": shards_key})
    return run_id, "running"


def run_tag(workspace, model_id: str, cfg: TagConfig | None = None, classifier_id: str | None = None,
            *, make_current: bool = True, crash_after: int | None = None) -> dict[str, Any]:
    """Tag every encoded image of ``model_id`` into a new run, load it, and make it current."""
    import time

    from .catalog import Catalog
    from .raycluster import ray_session
    from .store import list_done_shards
    from .textjob import latest_classifier

    cfg = cfg or TagConfig()
    t0 = time.time()
    root = str(workspace.root)
    with Catalog.for_job(workspace.catalog, "tag") as cat:
        clf = cat.get_classifier(classifier_id) if classifier_id else latest_classifier(cat, model_id)
        shards = list_done_shards(root, model_id)
        run_id, status = _resume_or_start(cat, model_id, clf["classifier_id"], list(clf["labels"]), cfg,
                                          _shards_key(shards))
        if status != "running":  # already tagged and loaded by an earlier (interrupted) call
            if make_current and status == "loaded":
                cat.set_current(run_id)
            run = cat.get_run(run_id)
            return {"run_id": run_id, "n_tags": run.n_tags, "n_images": run.n_images, "tag_s": 0.0}
        run_dir = workspace.run_dir(str(run_id))
        run_dir.mkdir(parents=True, exist_ok=True)
        stats = ShardScorer(root, model_id, clf["path"], cfg).label_stats(shards) if cfg.calibrate and shards \
            else None
        with ray_session() as ray:
            ds = ray.data.from_items([{"shard": s} for s in shards], override_num_blocks=max(1, len(shards)))
            ds = ds.map_batches(TagShards, fn_constructor_args=(root, model_id, clf["path"], str(run_dir), cfg, stats),
                                batch_size=1, concurrency=cfg.concurrency, num_gpus=cfg.num_gpus)
            for k, _ in enumerate(ds.iter_rows()):
                if crash_after is not None and k + 1 >= crash_after:
                    os._exit(17)
        t_tag = time.time() - t0
        paths = [run_dir / f"tags-{s}.parquet" for s in shards]
        n = cat.load_tags(run_id, paths) if paths else 0
        n_images = cat.query("SELECT count(DISTINCT image_id) FROM tags WHERE run_id = ?", [run_id])[0][0]
        cat.finish_run(run_id, n_images=n_images, timings={"tag_s": round(t_tag, 2),
                                                          "total_s": round(time.time() - t0, 2)})
        if make_current:
            cat.set_current(run_id)
    return {"run_id": run_id, "n_tags": n, "n_images": n_images, "tag_s": round(t_tag, 2)}
