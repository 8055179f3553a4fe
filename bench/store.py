"""Embedding store footprint and build cost: FAISS global index and patch store from synthetic shards.

    python bench/store.py [--n 2000] [--dim 512] [--patches 196] [--patch-bytes 8 16 32]

Random unit vectors are written as embedding shards (``write_shard``, fp16, 256 images each), then
the project's builders run on them: ``build_global_index`` (default ``IDMap2,Flat``) and
``build_patch_store`` at each --patch-bytes (PQ) and uncompressed ("Flat"). For each store: bytes
per image of the saved file, build time (codec training + adding every image), and the time of
an incremental ``add`` of --add-n new images. Global search is checked against brute force
(recall@k and the largest score difference). The baseline is raw fp32 (ids + global + patches);
``ratio`` = raw fp32 bytes / stored bytes (global + patches) at each patch setting.
Random vectors are the worst case for PQ, so no quality is measured here: the mAP cost of the
patch compression on the toy world is what ``bench/nightly.py`` reports (PQ vs raw patches).
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from tagger.store import (
    IndexConfig,
    build_global_index,
    build_patch_store,
    model_dir,
    shard_name_for,
    write_shard,
)

MODEL_ID = "bench@synthetic"


def unit(rng: np.random.Generator, *shape: int) -> np.ndarray:
    x = rng.standard_normal(shape, dtype=np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def write_shards(root: Path, n: int, dim: int, patches: int, shard: int, seed: int) -> tuple[np.ndarray, float]:
    """Write n images of random embeddings as shards; return all global vectors (fp32) and seconds."""
    rng = np.random.default_rng(seed)
    glob = np.empty((n, dim), np.float32)
    t0 = time.perf_counter()
    for start in range(0, n, shard):
        ids = np.arange(start, min(start + shard, n), dtype=np.int64)
        g = unit(rng, ids.size, dim).astype(np.float16)
        glob[ids] = g
        write_shard(root, MODEL_ID, shard_name_for(ids), ids, g, unit(rng, ids.size, patches, dim).astype(np.float16))
    return glob, time.perf_counter() - t0


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def check_search(gi, glob: np.ndarray, nq: int, k: int, seed: int) -> dict:
    """Recall@k and max |score difference| of the index against brute force over the same vectors."""
    q = unit(np.random.default_rng(seed + 1), nq, glob.shape[1])
    ref = glob / np.linalg.norm(glob, axis=1, keepdims=True)
    brute = q @ ref.T
    top = np.argsort(-brute, axis=1)[:, :k]
    t0 = time.perf_counter()
    scores, ids = gi.search(q, k)
    search_s = time.perf_counter() - t0
    recall = np.mean([len(set(a) & set(b)) / k for a, b in zip(ids, top)])
    diff = float(np.abs(scores - np.take_along_axis(brute, top, axis=1)).max())
    return {"recall_at_k": float(recall), "max_score_diff": diff, "search_ms_per_query": 1e3 * search_s / nq}


def bench_global(root: Path, glob: np.ndarray, a: argparse.Namespace) -> dict:
    cfg = IndexConfig(use_gpu=False, train_size=a.train_size)
    t0 = time.perf_counter()
    gi = build_global_index(root, MODEL_ID, cfg)
    build_s = time.perf_counter() - t0
    path = root / "global.faiss"
    gi.save(path)
    out = {"store": cfg.global_factory, "bytes_per_image": path.stat().st_size / a.n, "build_s": build_s,
           "marginal_bytes": 4 * a.dim + 8,
           **check_search(gi, glob, a.queries, a.k, a.seed)}
    rng = np.random.default_rng(a.seed + 2)
    new_ids = np.arange(a.n, a.n + a.add_n, dtype=np.int64)
    t0 = time.perf_counter()
    gi.add(new_ids, unit(rng, a.add_n, a.dim))
    out["add_s"] = time.perf_counter() - t0
    return out


def bench_patches(root: Path, cfg: IndexConfig, name: str, a: argparse.Namespace) -> dict:
    t0 = time.perf_counter()
    store = build_patch_store(root, MODEL_ID, cfg)
    build_s = time.perf_counter() - t0
    path = root / f"patches-{name}.tgp"
    store.save(path)
    rng = np.random.default_rng(a.seed + 3)
    new = unit(rng, a.add_n, a.patches, a.dim)
    t0 = time.perf_counter()
    store.add(np.arange(a.n, a.n + a.add_n, dtype=np.int64), new)
    add_s = time.perf_counter() - t0
    out = {"store": name, "bytes_per_image": path.stat().st_size / a.n, "build_s": build_s, "add_s": add_s,
           "marginal_bytes": store.bytes_per_image() + 8}  # codes + the 8-byte image id
    path.unlink()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="images in the shards")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--patches", type=int, default=196)
    ap.add_argument("--patch-bytes", type=int, nargs="+", default=[8, 16, 32])
    ap.add_argument("--no-flat", action="store_true", help="skip the uncompressed patch store")
    ap.add_argument("--train-size", type=int, default=65536, help="codec training sample (IndexConfig)")
    ap.add_argument("--add-n", type=int, default=256, help="images in the incremental add")
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--faiss-threads", type=int, default=1,
                    help="FAISS OpenMP threads (0: FAISS default; all cores spin badly on a busy host)")
    a = ap.parse_args()
    if a.faiss_threads:
        faiss.omp_set_num_threads(a.faiss_threads)
    root = Path(tempfile.mkdtemp(prefix="tagger-bench-store-"))
    try:
        glob, write_s = write_shards(root, a.n, a.dim, a.patches, 256, a.seed)
        shard_b = dir_bytes(model_dir(root, MODEL_ID)) / a.n
        g = bench_global(root, glob, a)
        cfgs = [(f"PQ{b}", IndexConfig(patch_bytes=b, use_gpu=False, train_size=a.train_size))
                for b in a.patch_bytes]
        if not a.no_flat:
            cfgs.append(("Flat", IndexConfig(patch_factory="Flat", use_gpu=False)))
        rows = [bench_patches(root, cfg, name, a) for name, cfg in cfgs]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report(a, g, rows, shard_b, write_s)


def report(a: argparse.Namespace, g: dict, rows: list[dict], shard_b: float, write_s: float) -> None:
    raw = 8 + 4 * a.dim * (1 + a.patches)
    print(f"{a.n} images, d={a.dim}, P={a.patches}, FAISS threads {faiss.omp_get_max_threads()}; raw fp32 {raw} B/image; shards (fp16 + meta) "
          f"{shard_b:.0f} B/image, written in {write_s:.1f} s")
    print(f"{'store':<12} | {'file B/img':>10} | {'codes B/img':>11} | {'build s':>8} | "
          f"{'add ' + str(a.add_n) + ' s':>9} | {'raw/stored':>10}")
    for r in [g, *rows]:
        total = r["bytes_per_image"] + (0 if r is g else g["bytes_per_image"])
        r["ratio"] = raw / total
        print(f"{r['store']:<12} | {r['bytes_per_image']:>10.0f} | {r['marginal_bytes']:>11} | {r['build_s']:>8.2f} | "
              f"{r['add_s']:>9.3f} | {r['ratio']:>10.1f}")
    print("file B/img: saved file / n (codebooks included); codes B/img: per-image codes + id. raw/stored:\n"
          "raw fp32 / file bytes of the global index plus that patch store (global row: alone)")
    print(f"global search vs brute force: recall@{a.k} {g['recall_at_k']:.4f}, max score diff "
          f"{g['max_score_diff']:.2e}, {g['search_ms_per_query']:.3f} ms/query ({a.queries} queries)")
    print(json.dumps({"bench": "store", "n": a.n, "dim": a.dim, "patches": a.patches, "raw_bytes_per_image": raw,
                      "ratio": {r["store"]: round(r["ratio"], 2) for r in rows},
                      "bytes_per_image": {r["store"]: round(r["bytes_per_image"], 1) for r in [g, *rows]},
                      "code_bytes_per_image": {r["store"]: r["marginal_bytes"] for r in [g, *rows]},
                      "build_s": {r["store"]: round(r["build_s"], 3) for r in [g, *rows]},
                      "add_s": {r["store"]: round(r["add_s"], 4) for r in [g, *rows]},
                      "global_recall_at_k": g["recall_at_k"], "global_max_score_diff": g["max_score_diff"]}))


if __name__ == "__main__":
    main()
