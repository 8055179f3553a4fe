"""Encode stage: partitions of images -> decoded uint8 pixels -> CLIP global + patch embeddings -> shards.

A partition (a fixed, sorted list of image ids) is the unit of work and of idempotency: its
shard name is derived from its ids, so a rerun after a crash recomputes exactly the partitions
that have no done-marker, with the same composition, and writes the same bytes. A partition whose
shard is done but was never recorded (a crash in between) keeps its shard: its images are only
probed for their hash and size, not decoded or encoded again (:func:`mark_reusable`).

Both stages are callables over a batch dict and drop into Ray Data ``map_batches``:
``DecodePartitions`` (from :mod:`tagger.pipeline.decode`, which never imports torch, so its workers start
fast) on CPU, ``EncodePartitions`` as actors (model loaded once, on a GPU
when present), which ``EncodeConfig.node_resource`` can keep on the nodes offering that custom
resource (:func:`~tagger.pipeline.raycluster.placement`).
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from .decode import DecodePartitions
from .sources import max_image_bytes
from .raycluster import check_node_resource
from ..errors import ConfigError, SimulatedCrash
from ..store.shards import exists_done, load_shard, model_dir, shard_name_for, write_shard

if TYPE_CHECKING:
    from ..workspace import Workspace

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncodeConfig:
    """Model and throughput knobs of an encode run."""

    model: str = "toy-vit"
    pretrained: str | None = None
    partition_size: int = 256
    batch_size: int = 64
    concurrency: int = 1  # encoder actors
    decode_concurrency: int = 1  # decode tasks in flight
    decode_cpus: float = 1.0  # Ray CPUs reserved per decode actor
    encode_cpus: float = 1.0  # Ray CPUs reserved per CPU encoder actor (GPU encoders reserve none)
    num_gpus: float | None = 0.0  # per encoder actor (0 = CPU; None = 1 if the cluster has GPUs)
    device: str | None = None
    precision: str | None = None
    global_mode: str = "standard"
    dense_mode: str = "value"
    max_pixels: int = 100_000_000
    node_resource: str | None = None  # custom Ray resource the encoder actors need (None: any node)

    def __post_init__(self) -> None:
        check_node_resource(self.node_resource)
        for name in ("decode_cpus", "encode_cpus", "num_gpus"):
            value = getattr(self, name)
            if value is not None and (not math.isfinite(value) or value < 0):
                raise ConfigError(f"{name} must be a finite number >= 0, got {value}")
        for name in ("partition_size", "batch_size", "concurrency", "decode_concurrency", "max_pixels"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")

    def to_dict(self) -> dict:
        return asdict(self)


def register_source(catalog, source: str, workspace: str | None = None) -> dict[str, Any]:
    """Register ``source``'s images (never the files tagger keeps in the folder ``workspace``: its
    thumbnails, report and stores, where the source holds them); the summary's ``listed``/``skipped``
    counts (and why), plus a ``warning`` when the source holds no image at all (logged too)."""
    from ..workspace import OWNED
    from .sources import IMAGE_EXTENSIONS, scan_images
    listing = scan_images(source, exclude=[os.path.join(workspace, name) for name in OWNED] if workspace else ())
    catalog.register_images(listing.images)
    out: dict[str, Any] = {"listed": listing.images.num_rows, "skipped": listing.n_skipped}
    gone = mark_gone(catalog, source, listing.images)
    if gone:
        out["gone"] = gone
    if listing.n_skipped:
        out["skipped_why"] = listing.skipped_text()
    if listing.images.num_rows == 0:
        exts = ", ".join(sorted(e.lstrip(".") for e in IMAGE_EXTENSIONS))
        out["warning"] = f"no images in {source} (image extensions: {exts})"
    return out


def mark_gone(catalog, source: str, listed) -> int:
    """Images known under the local folder ``source`` that its listing ``listed`` lacks and whose
    file is gone: error rows (``read failed: ... gone``), so they are not counted as encoded; read
    again when a later listing finds them. Files there but not listed (hidden ones, say) are left
    alone, and so is any other kind of source (a glob or manifest names no whole folder)."""
    from ..uris import local_uri, to_local_path
    folder = to_local_path(source)
    if folder is None or not os.path.isdir(folder):
        return 0
    prefix = local_uri(os.path.join(folder, ""))
    gone = [(i, u) for i, u in catalog.unlisted_images(prefix, listed)
            if not os.path.lexists(to_local_path(u) or u)]
    if gone:
        catalog.mark_errors([i for i, _ in gone], [f"read failed: {u} is gone (not found when {source} "
                                                   "was listed)" for _, u in gone])
        logger.warning("%d image(s) known under %s are gone: marked as errors (read again if they come back)",
                       len(gone), source)
    return len(gone)


def plan_partitions(pending: list[tuple[int, str]], size: int) -> list[dict[str, Any]]:
    """Split pending (image_id, uri) pairs, sorted by id, into named partitions."""
    pending = sorted(pending)
    parts = []
    for i in range(0, len(pending), size):
        chunk = pending[i:i + size]
        ids = np.array([c[0] for c in chunk], np.int64)
        parts.append({"partition": shard_name_for(ids), "image_ids": ids, "uris": [c[1] for c in chunk]})
    return parts


class EncodePartitions:
    """Device stage (an actor): embed the ok images of each partition and write its shard."""

    def __init__(self, cfg: EncodeConfig, root: str, model_id: str) -> None:
        from ..models import load_clip
        from ..models.dense import FeatureConfig
        from ..models.preprocess import pixel_spec
        self.cfg, self.root, self.model_id = cfg, root, model_id
        self.clip = load_clip(cfg.model, cfg.pretrained, device=cfg.device, precision=cfg.precision)
        self.spec = pixel_spec(cfg.model, cfg.pretrained)
        self.fcfg = FeatureConfig(cfg.global_mode, cfg.dense_mode)

    def embed(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from ..models.dense import image_features
        gs, ps = [], []
        for i in range(0, len(pixels), self.cfg.batch_size):
            x = self.spec.normalize(pixels[i:i + self.cfg.batch_size], self.clip.device, self.clip.dtype)
            g, p = image_features(self.clip.model, x, self.fcfg)
            gs.append(g.cpu().numpy().astype(np.float16))
            ps.append(p.cpu().numpy().astype(np.float16))
        return np.concatenate(gs), np.concatenate(ps)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        written = []
        for name, ids, pixels, status in zip(batch["partition"], batch["image_ids"], batch["pixels"],
                                             batch["status"]):
            ok = np.asarray(status) == "ok"
            if ok.any() and not exists_done(self.root, self.model_id, name):
                g, p = self.embed(np.stack(list(pixels))[ok])
                write_shard(self.root, self.model_id, name, np.asarray(ids)[ok], g, p)
            written.append(int(ok.sum()))
        out = {k: batch[k] for k in ("partition", "image_ids", "status", "error", "content_hash", "width", "height")}
        out["n_encoded"] = np.asarray(written, np.int64)
        return out


def mark_reusable(parts: list[dict[str, Any]], root: str, model_id: str) -> int:
    """Give each planned partition its ``reuse_ids``: the image ids of its shard when that shard is
    already done (written before a crash, never recorded in the catalog), else none. Those images
    are only probed for what the catalog records, not decoded or encoded again. Returns how many
    partitions reuse their shard."""
    n = 0
    for part in parts:
        ids = np.zeros(0, np.int64)
        if exists_done(root, model_id, part["partition"]):
            ids = np.asarray(load_shard(model_dir(root, model_id) / part["partition"]).ids, np.int64)
            n += 1
        part["reuse_ids"] = ids
    if n:
        logger.info("%d partitions reuse the shards a crashed run wrote", n)
    return n


def _record(catalog, row: dict[str, Any], model_id: str) -> tuple[int, int]:
    """Record one encoded partition in the catalog: image metadata, errors and encodings."""
    ids = np.asarray(row["image_ids"], np.int64)
    status = np.asarray(row["status"]).astype(str)
    ok = status == "ok"
    size = {k: [int(v) if good else None for v, good in zip(np.asarray(row[k], np.int64), ok)]
            for k in ("width", "height")}  # an error row has no size: the image was not decoded
    catalog.update_images({
        "image_id": ids, "content_hash": [str(h) or None for h in row["content_hash"]], **size,
        "status": status, "error": [str(e) for e in row["error"]]})
    if ok.any():
        catalog.record_encodings(ids[ok], model_id, [str(h) for h in np.asarray(row["content_hash"])[ok]],
                                 str(row["partition"]))
    return int(ok.sum()), int((~ok).sum())


def run_encode(workspace: "Workspace", source: str | None, cfg: EncodeConfig, *, crash_after: int | None = None,
               progress: bool | None = None) -> dict[str, Any]:
    """Register ``source``'s images, encode every pending one into shards, then update the indexes.

    Runs on the connected Ray cluster (or a local one). ``crash_after`` raises
    :class:`~tagger.errors.SimulatedCrash` after that many partitions are recorded (crash tests).
    """
    import time

    from ..catalog import Catalog
    from ..store.updates import update_indexes
    from ..models.registry import absolute_checkpoint, check_model, model_id_for
    from ..models.preprocess import pixel_spec
    from .progress import Progress
    from .capacity import check_fits, encode_asks, with_gpus
    from .raycluster import placement, ray_session

    t0 = time.time()
    cfg = replace(cfg, pretrained=absolute_checkpoint(cfg.pretrained))  # the actors run elsewhere
    check_model(cfg.model, cfg.pretrained)  # a clear error here, not a dead actor later
    model_id = model_id_for(cfg.model, cfg.pretrained)
    root = str(workspace.root)
    with Catalog.for_job(workspace.catalog, "encode") as cat:
        listed = register_source(cat, source, root) if source is not None else {}
        parts = plan_partitions(cat.pending_images(model_id), cfg.partition_size)
        n_reused = mark_reusable(parts, root, model_id)
        n_ok = n_err = 0
        if parts:
            with ray_session() as ray:
                cfg = with_gpus(cfg)  # the cluster's resources decide, not the driver's machine
                check_fits(encode_asks(cfg))  # an actor no node can hold would wait for good
                ds = ray.data.from_items(parts, override_num_blocks=len(parts))
                spec = pixel_spec(cfg.model, cfg.pretrained)
                ds = ds.map_batches(DecodePartitions, fn_constructor_args=(spec, cfg.max_pixels, max_image_bytes()),
                                    batch_size=1,
                                    concurrency=cfg.decode_concurrency, num_cpus=cfg.decode_cpus)
                ds = ds.map_batches(EncodePartitions, fn_constructor_args=(cfg, root, model_id), batch_size=1,
                                    concurrency=cfg.concurrency, num_gpus=cfg.num_gpus,
                                    num_cpus=0 if cfg.num_gpus else cfg.encode_cpus, **placement(cfg.node_resource))
                with Progress(sum(len(p["image_ids"]) for p in parts), f"encode {cfg.model}", "image",
                              enabled=progress) as bar:
                    for k, row in enumerate(ds.iter_rows()):
                        ok, err = _record(cat, row, model_id)
                        n_ok, n_err = n_ok + ok, n_err + err
                        bar.update(ok + err)
                        if crash_after is not None and k + 1 >= crash_after:
                            raise SimulatedCrash(f"encode: crash after {k + 1} partitions")
        t_enc = time.time() - t0
        stats = update_indexes(workspace.root, model_id)
    return {"model_id": model_id, **listed, "partitions": len(parts), "reused_shards": n_reused,
            "encoded": n_ok, "errors": n_err,
            "encode_s": round(t_enc, 2), "total_s": round(time.time() - t0, 2), **stats}
