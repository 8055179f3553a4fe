"""Helpers of the `tagger serve` tests: a small workspace of toy scenes encoded with the shipped toy-vit
(a real shard, FAISS index and catalog, no Ray) with one tag run, and a real `tagger serve` process."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tagger.catalog import Catalog
from tagger.models.registry import model_id_for
from tagger.pipeline.encode import EncodeConfig, EncodePartitions
from tagger.store import shard_name_for, write_shard
from tagger.store.updates import update_indexes
from tagger.toyworld.export import export_scenes
from tagger.workspace import Workspace

MODEL = "toy-vit"
LABELS = ["circle", "square", "star", "triangle", "heart", "moon"]
ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


def encode_into(ws: Workspace, paths: list[str]) -> np.ndarray:
    """Register ``paths``, write their toy-vit embeddings as one shard and the indexes, and record them
    as encoded (as an encode run does)."""
    from tagger.models.preprocess import pixel_spec
    from tagger.pipeline.decode import Decoder
    model_id = model_id_for(MODEL)
    spec = pixel_spec(MODEL, None)
    decoder = Decoder(preprocess=spec.to_uint8, size=spec.image_size)
    rows = [decoder.decode(p) for p in paths]
    pixels = np.stack([r["pixels"] for r in rows])
    g, patches = EncodePartitions(EncodeConfig(model=MODEL, device="cpu"), str(ws.root), model_id).embed(pixels)
    with Catalog.open(ws.catalog) as cat:
        ids = cat.register_images(paths)
        shard = shard_name_for(ids)
        write_shard(ws.root, model_id, shard, ids, g, patches)
        cat.record_encodings(ids, model_id, [str(r["content_hash"]) for r in rows], shard)
    update_indexes(ws.root, model_id)
    return np.asarray(ids)


def tag_run(ws: Workspace, ids: np.ndarray, uris: list[str], truth: dict, seed: int = 0) -> int:
    """One current tag run: a score per image and label, higher where the scene shows the label,
    confidences, thresholds at 0 (positive when the score is over it)."""
    rng = np.random.default_rng(seed)
    n = len(uris)
    s = rng.normal(size=(n, len(LABELS))) + 2.0 * np.array([[lab in truth[u] for lab in LABELS] for u in uris])
    path = ws.root / f"tags-seed{seed}.parquet"
    pq.write_table(pa.table({
        "image_id": np.repeat(ids, len(LABELS)), "label": pa.array(LABELS * n),
        "score": s.ravel().astype(np.float32), "confidence": (1 / (1 + np.exp(-2 * s.ravel()))).astype(np.float32),
        "positive": s.ravel() >= 0}), path)
    with Catalog.open(ws.catalog) as cat:
        cat.add_labels(LABELS)
        run = cat.start_run("tag", model_id=model_id_for(MODEL), labels=LABELS, config={"tag": {"decision": "mixture"}})
        cat.save_run_thresholds(run, [{"label": lab, "threshold": 0.0, "present": True, "source": "fit", "mu0": 0.0,
                                       "sd0": 1.0, "mu1": 2.0, "sd1": 1.0, "prior": 0.3} for lab in LABELS])
        cat.load_tags(run, path)
        cat.finish_run(run)
        cat.set_current(run)
    path.unlink()
    return run


def make_workspace(base: Path, n: int = 24, runs: int = 1) -> tuple[Workspace, dict, dict[int, str]]:
    """A workspace of ``n`` toy scenes, encoded, with ``runs`` tag runs (the last current).
    Returns the workspace, the truth (uri -> labels) and image_id -> uri."""
    truth = export_scenes(base / "images", n)
    uris = sorted(truth)
    ws = Workspace.at(base / "ws")
    ids = encode_into(ws, uris)
    for seed in range(runs):
        tag_run(ws, ids, uris, truth, seed)
    return ws, truth, dict(zip((int(i) for i in ids), uris))


def sql(ws: Workspace, query: str, params=None) -> list[tuple]:
    with Catalog.open(ws.catalog, read_only=True) as cat:
        return cat.query(query, params)


@contextmanager
def serving(ws: Workspace, *args: str, timeout: float = 120) -> Iterator[tuple[str, subprocess.Popen]]:
    """A real `tagger serve` on a free port; yields its address (as printed, token included) and the process."""
    cmd = [sys.executable, "-m", "tagger.cli", "serve", "-w", str(ws.root), "--port", "0", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=ENV)
    try:
        deadline = time.time() + timeout
        line = ""
        while time.time() < deadline:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                raise RuntimeError(f"tagger serve ended: {proc.stderr.read()[-2000:]}")
            m = re.search(r"at (http://\S+)", line)
            if m:
                yield m.group(1), proc
                return
        raise RuntimeError(f"tagger serve printed no address in {timeout} s")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
