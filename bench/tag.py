"""Tagging throughput from stored embeddings against the matrix-multiply roofline of the same shapes.

    python bench/tag.py [--n 256] [--dim 512] [--patches 196] [--labels 80 1000 10000] [--repeat 5]

Inputs are random fp32 unit vectors shaped like ViT-B/16 output (d=512, P=196 patches per image),
a random classifier (C labels) and a random memory bank (K rows, default K=C as the "prompts"
memory). The measured path is ``tagger.method.scoring.comc_scores`` with the default ScoreConfig
(the same one at every label count): mapping of the global and every patch embedding onto the
memory, classification (of the patches: only each image's ``patch_labels`` best labels by global
score), max over patches and fusion. It is timed again as the exact path
(``ScoreConfig(patch_labels=None)``: every patch scored against every label). The roofline is the
time of the bare matrix multiplies of the exact path, timed in the same process: ``v @ M.T`` and
``a @ M`` of the mapping and ``v' @ W.T`` of the classifier, for the global and the patch rows.
``fraction`` = roofline time / default time and ``fraction_exact`` = roofline time / exact time
(1.0 = no overhead beyond the multiplies). The default path skips most of the patch classifier
(``P * (C - patch_labels) * d`` multiply-adds per image), and when K and C are small next to d
``comc_scores`` folds the mapping into the classifier (``tagger.method.mapping.mapped_scores``),
so fractions above 1 are possible. Decoding the patches of the same images from a PQ patch
store (``PatchStore.decode``) is timed separately, in memory and from a memory-mapped file (as the
tag workers open it). Repetitions are interleaved and the median is kept. The quality of the
default against the exact path is measured on the toy world by ``bench/tag_quality.py``. Ends
with one JSON line.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from tagger.method.mapping import MemoryBank
from tagger.method.scoring import ScoreConfig, comc_scores
from tagger.store import IndexConfig, PatchStore


def unit(rng: np.random.Generator, *shape: int) -> np.ndarray:
    x = rng.standard_normal(shape, dtype=np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def roofline(g: np.ndarray, flat: np.ndarray, w: np.ndarray, mem: np.ndarray, bufs: dict) -> float:
    """Seconds of the bare multiplies of comc_scores, into preallocated outputs."""
    t0 = CLOCK()
    for name, v in (("g", g), ("p", flat)):
        np.matmul(v, mem.T, out=bufs[name + "_sim"])  # attention logits
        np.matmul(bufs[name + "_att"], mem, out=bufs[name + "_read"])  # memory read-out
        np.matmul(v, w.T, out=bufs[name + "_score"])  # classifier
    return CLOCK() - t0


def buffers(rows: dict[str, int], k: int, c: int, d: int, rng: np.random.Generator) -> dict:
    out = {}
    for name, n in rows.items():
        out[name + "_sim"] = np.empty((n, k), np.float32)
        out[name + "_att"] = rng.random((n, k), dtype=np.float32)
        out[name + "_read"] = np.empty((n, d), np.float32)
        out[name + "_score"] = np.empty((n, c), np.float32)
    return out


CLOCK = time.perf_counter  # --clock cpu: time.process_time (CPU seconds of this process, all threads)


def timed(fn, *args) -> float:
    t0 = CLOCK()
    fn(*args)
    return CLOCK() - t0


def bench_labels(g: np.ndarray, p: np.ndarray, c: int, k: int, repeat: int, seed: int) -> dict:
    """Median comc_scores time (default and exact ScoreConfig) and roofline time for C labels, K memory rows."""
    rng = np.random.default_rng(seed)
    n, num_p, d = p.shape
    w, mem = unit(rng, c, d), MemoryBank(unit(rng, k, d))
    cfg, exact = ScoreConfig(), replace(ScoreConfig(), patch_labels=None)
    flat = p.reshape(n * num_p, d)
    bufs = buffers({"g": n, "p": n * num_p}, k, c, d, rng)
    comc_scores(g[:2], p[:2], w, mem, cfg)  # warm-up
    roofline(g, flat, w, mem.vectors, bufs)
    comc, roof, exact_s = [], [], []
    for _ in range(repeat):
        comc.append(timed(comc_scores, g, p, w, mem, cfg))
        roof.append(roofline(g, flat, w, mem.vectors, bufs))
        exact_s.append(timed(comc_scores, g, p, w, mem, exact))
    comc_s, roof_s, ex_s = statistics.median(comc), statistics.median(roof), statistics.median(exact_s)
    flops = 2 * (n + n * num_p) * d * (2 * k + c)
    return {"labels": c, "memory_rows": k, "comc_s": comc_s, "roofline_s": roof_s, "exact_s": ex_s,
            "img_s": n / comc_s, "fraction": roof_s / comc_s, "fraction_exact": roof_s / ex_s,
            "roofline_gflops": flops / roof_s / 1e9}


def bench_pq_decode(p: np.ndarray, patch_bytes: int, train: int, repeat: int, seed: int) -> dict:
    """Median time of PatchStore.decode for all images of ``p`` (PQ trained on a sample)."""
    n, num_p, d = p.shape
    store = PatchStore(d, num_p, IndexConfig(patch_bytes=patch_bytes, use_gpu=False))
    flat = p.reshape(-1, d)
    rng = np.random.default_rng(seed)
    store.train(flat[rng.choice(flat.shape[0], min(train, flat.shape[0]), replace=False)])
    ids = np.arange(n, dtype=np.int64)
    store.add(ids, p)
    store.decode(ids)
    times = [timed(store.decode, ids) for _ in range(repeat)]
    s = statistics.median(times)
    with tempfile.TemporaryDirectory() as tmp:  # what tag workers do: codes memory-mapped from the file
        store.save(Path(tmp) / "patches.tgp")
        mapped = PatchStore.load(Path(tmp) / "patches.tgp", mmap=True)
        mapped.decode(ids)
        s_map = statistics.median([timed(mapped.decode, ids) for _ in range(repeat)])
    return {"patch_bytes": patch_bytes, "decode_s": s, "img_s": n / s, "mmap_decode_s": s_map}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=256, help="images per call (a tag shard holds 256)")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--patches", type=int, default=196)
    ap.add_argument("--labels", type=int, nargs="+", default=[80, 1000, 10000])
    ap.add_argument("--memory-rows", type=int, default=0, help="K (0: as many as labels)")
    ap.add_argument("--patch-bytes", type=int, default=16, help="PQ code bytes per patch")
    ap.add_argument("--pq-train", type=int, default=20000, help="patch vectors to train PQ on")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="BLAS threads (0: the library's default)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="cpu: CPU seconds of the process (steadier on a shared machine; use with --threads 1)")
    a = ap.parse_args()
    global CLOCK
    CLOCK = time.process_time if a.clock == "cpu" else time.perf_counter
    if a.threads:
        from threadpoolctl import threadpool_limits
        threadpool_limits(a.threads)
    rng = np.random.default_rng(a.seed)
    g, p = unit(rng, a.n, a.dim), unit(rng, a.n, a.patches, a.dim)
    rows = [bench_labels(g, p, c, a.memory_rows or c, a.repeat, a.seed + c) for c in a.labels]
    dec = bench_pq_decode(p, a.patch_bytes, a.pq_train, a.repeat, a.seed)
    print(f"{a.n} images, d={a.dim}, P={a.patches}, fp32; median of {a.repeat}; {a.clock} clock, "
          f"{a.threads or 'default'} BLAS threads; {ScoreConfig()}")
    print(f"{'labels':>6} | {'K':>5} | {'comc s':>7} | {'roof s':>7} | {'fraction':>8} | {'exact s':>7} | "
          f"{'exact fr':>8} | {'img/s':>7} | {'GFLOP/s':>7} | {'PQ dec/comc':>11}")
    for r in rows:
        print(f"{r['labels']:>6} | {r['memory_rows']:>5} | {r['comc_s']:>7.3f} | {r['roofline_s']:>7.3f} | "
              f"{r['fraction']:>8.2f} | {r['exact_s']:>7.3f} | {r['fraction_exact']:>8.2f} | {r['img_s']:>7.0f} | "
              f"{r['roofline_gflops']:>7.1f} | {dec['decode_s'] / r['comc_s']:>11.2f}")
    print(f"PQ{dec['patch_bytes']} decode of {a.n} x {a.patches} patches: {dec['decode_s']:.3f} s "
          f"({dec['img_s']:.0f} img/s); memory-mapped store, as tag workers open it: {dec['mmap_decode_s']:.3f} s")
    print(json.dumps({"bench": "tag", "n": a.n, "dim": a.dim, "patches": a.patches, "clock": a.clock,
                      "threads": a.threads or None,
                      "score_config": ScoreConfig().to_dict(),
                      "ratio": {str(r["labels"]): round(r["fraction"], 3) for r in rows},
                      "ratio_exact": {str(r["labels"]): round(r["fraction_exact"], 3) for r in rows},
                      "exact_s": {str(r["labels"]): round(r["exact_s"], 4) for r in rows},
                      "img_s": {str(r["labels"]): round(r["img_s"], 1) for r in rows},
                      "comc_s": {str(r["labels"]): round(r["comc_s"], 4) for r in rows},
                      "roofline_s": {str(r["labels"]): round(r["roofline_s"], 4) for r in rows},
                      "pq_decode_s": round(dec["decode_s"], 4), "pq_decode_img_s": round(dec["img_s"], 1),
                      "pq_mmap_decode_s": round(dec["mmap_decode_s"], 4), "patch_bytes": dec["patch_bytes"]}))


if __name__ == "__main__":
    main()
