"""`tagger serve` latency and memory on a synthetic workspace (one JSON line).

    python bench/serve.py [--n 100000 | --million] [--workspace DIR] [--requests 40]

The workspace is bench/synthetic.py's (ViT-B/16 geometry, 512-d global vectors in a FAISS index,
80 labels; ``--workspace`` reuses one built before) plus one current tag run written here from the
images' own vectors: each label's score is the cosine with its concept vector, positive at or over
the label's mean + 2 sd (stored as the run's threshold), a confidence from the distance to it; the
run keeps each image's top 5 labels and every positive. A real ``tagger serve`` process (search
model loaded at start: ViT-B-16, open_clip's random initialisation, on the CPU) is then asked, one
request at a time:

* ``overview``: the overview page (run totals, per-label counts and charts);
* ``label``: a random label's page at a random page among its first 20, half of them with a
  confidence filter (48 images per page);
* ``image``: a random image's page (its tags, and its 12 neighbours from the global index);
* ``text``: a text search (a label name and a random word), 48 results, from the approximate global
  index an encode keeps at this size (built here first when the workspace has none);
* ``like``: "more like this" of a random image, 48 results.

Reported per kind: the first request's time, and p50 and p95 in ms (after 3 warm-up requests each), and the server's resident
memory after the requests and its peak (VmRSS, VmHWM). Goals: label page p95 <= 300 ms, text search
p95 <= 500 ms.
"""
from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic import SyntheticConfig, build_workspace, concepts, geometry, vocabulary  # noqa: E402

from tagger.catalog import Catalog  # noqa: E402
from tagger.models.registry import model_id_for  # noqa: E402
from tagger.store import index_paths  # noqa: E402
from tagger.store.annsync import sync_ann  # noqa: E402
from tagger.store.global_index_file import mapped_rows  # noqa: E402
from tagger.workspace import Workspace  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TOP_K = 5
CHUNK = 50_000


def _tag_chunk(ids: np.ndarray, vecs: np.ndarray, table: np.ndarray, labels: list[str], thr: np.ndarray,
               sd: np.ndarray) -> pa.Table:
    s = vecs.astype(np.float32) @ table.T
    s /= np.linalg.norm(vecs.astype(np.float32), axis=1, keepdims=True)
    pos = s >= thr
    rank = np.argsort(np.argsort(-s, axis=1), axis=1)
    keep = (rank < TOP_K) | pos
    r, c = np.nonzero(keep)
    conf = 1 / (1 + np.exp(-(s[r, c] - thr[c]) / sd[c] * 2))
    return pa.table({"image_id": ids[r], "label": pa.array(np.asarray(labels, dtype=object)[c]),
                     "score": s[r, c].astype(np.float32), "rank": rank[r, c].astype(np.int32),
                     "positive": pos[r, c], "confidence": conf.astype(np.float32)})


def tag_run(ws: Workspace, cfg: SyntheticConfig) -> dict:
    """Write and load one tag run from the images' global vectors; make it current."""
    model_id = model_id_for(cfg.model, None)
    labels, _ = vocabulary(cfg)
    table = concepts(labels, geometry(cfg.model)[0], cfg.seed)
    ids, vecs, _ = mapped_rows(index_paths(ws.root, model_id)[0])
    sample = vecs[:: max(1, len(ids) // 20_000)].astype(np.float32)
    s = (sample / np.linalg.norm(sample, axis=1, keepdims=True)) @ table.T
    mu, sd = s.mean(0), s.std(0)
    thr = mu + 2 * sd
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=ws.root) as tmp:
        paths = []
        for k, start in enumerate(range(0, len(ids), CHUNK)):
            part = _tag_chunk(np.asarray(ids[start:start + CHUNK]), np.asarray(vecs[start:start + CHUNK]),
                              table, labels, thr, sd)
            paths.append(Path(tmp) / f"tags-{k:05d}.parquet")
            pq.write_table(part, paths[-1])
        with Catalog.open(ws.catalog) as cat:
            run = cat.start_run("tag", model_id=model_id, labels=labels, config={"tag": {"decision": "mixture"}})
            cat.save_run_thresholds(run, [{"label": lab, "threshold": float(thr[j]), "present": True, "source": "fit",
                                           "mu0": float(mu[j]), "sd0": float(sd[j]), "mu1": None, "sd1": None,
                                           "prior": None} for j, lab in enumerate(labels)])
            n = cat.load_tags(run, [str(p) for p in paths])
            cat.finish_run(run, n_images=len(ids))
            cat.set_current(run)
    return {"run": run, "tags": n, "tag_load_s": round(time.perf_counter() - t0, 1)}


def _memory(pid: int) -> dict[str, float]:
    text = Path(f"/proc/{pid}/status").read_text()
    grab = {k: int(re.search(rf"^{k}:\s+(\d+) kB", text, re.M).group(1)) / 1024 for k in ("VmRSS", "VmHWM")}
    return {"server_rss_mb": round(grab["VmRSS"]), "server_peak_mb": round(grab["VmHWM"])}


def _pct(values: list[float], p: float) -> float:
    return round(float(np.percentile(np.asarray(values) * 1000, p)), 1)


def measure(ws: Workspace, labels: list[str], n_images: int, requests: int, seed: int) -> dict:
    import httpx
    rng = random.Random(seed)
    cmd = [sys.executable, "-m", "tagger.cli", "serve", "-w", str(ws.root), "--port", "0", "--device", "cpu"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        line = proc.stdout.readline()
        url = re.search(r"(http://\S+)", line).group(1).rstrip("/")
        startup = time.perf_counter() - t0
        with Catalog.open(ws.catalog, read_only=True) as cat:
            ids = [i for i, in cat.query("SELECT image_id FROM images USING SAMPLE 500 ROWS")]
        words = ["red", "small", "bright", "old", "round"]
        kinds = {
            "overview": lambda: "/",
            "label": lambda: f"/label/{rng.choice(labels)}?page={rng.randint(1, 20)}"
                             + ("&min_conf=0.5" if rng.random() < 0.5 else ""),
            "image": lambda: f"/image/{rng.choice(ids)}",
            "text": lambda: f"/search?q={rng.choice(labels)}+{rng.choice(words)}",
            "like": lambda: f"/search?like={rng.choice(ids)}",
        }
        out: dict = {"startup_s": round(startup, 1)}
        with httpx.Client(base_url=url, timeout=120) as client:
            for kind, make in kinds.items():
                times = []
                for k in range(requests + 3):
                    t = time.perf_counter()
                    r = client.get(make())
                    if r.status_code != 200:
                        raise RuntimeError(f"{kind}: HTTP {r.status_code}: {r.text[:300]}")
                    if k == 0:
                        out[f"{kind}_first_ms"] = round((time.perf_counter() - t) * 1000, 1)
                    if k >= 3:
                        times.append(time.perf_counter() - t)
                out[f"{kind}_p50_ms"], out[f"{kind}_p95_ms"] = _pct(times, 50), _pct(times, 95)
        out.update(_memory(proc.pid))
        return out
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100_000, help="images")
    p.add_argument("--million", action="store_true", help="10^6 images")
    p.add_argument("--workspace", type=Path, help="build here, or reuse the synthetic workspace built here before")
    p.add_argument("--requests", type=int, default=40, help="timed requests per kind")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    n = 1_000_000 if a.million else a.n
    cfg = SyntheticConfig(n_images=n, n_sentences=500, seed=a.seed)
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        root = a.workspace or Path(tmp) / "ws"
        ws = Workspace.at(root)
        built: dict = {}
        if not ws.catalog.exists():
            t0 = time.perf_counter()
            build_workspace(root, cfg)
            built["build_s"] = round(time.perf_counter() - t0, 1)
        with Catalog.open(ws.catalog, read_only=True) as cat:
            has_run = cat.current_run() is not None
            n = int(cat.query("SELECT count(*) FROM images")[0][0])
        if not has_run:
            built.update(tag_run(ws, cfg))
        # the approximate global index an encode keeps beside the exact one (built here when missing)
        t0 = time.perf_counter()
        ann = sync_ann(index_paths(ws.root, model_id_for(cfg.model, None))[0], None, use_gpu=False)
        built.update({"ann_mode": ann["ann_mode"], "ann_factory": ann.get("ann_factory"),
                      "ann_s": round(time.perf_counter() - t0, 1)})
        labels, _ = vocabulary(cfg)
        result = measure(ws, labels, n, a.requests, a.seed)
    print(json.dumps({"bench": "serve", "n_images": n, "labels": len(labels), "requests_per_kind": a.requests,
                      **built, **result, "goals": {"label_p95_ms": 300, "text_p95_ms": 500}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
