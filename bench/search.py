"""Search at scale: the approximate global index against exact search, and the patch store's scan.

    nice -n 10 python bench/search.py [--sizes 100000,1000000] [--queries 1000] [--patch-sizes 10000,100000] [--dedup]

Prints one JSON line. For each size N, a synthetic ViT-B/16-shaped corpus (512-d unit vectors, low
intrinsic dimension: a common direction, 4,096 clusters in a 48-d subspace, plus full-dimensional
noise; a query's best match has cosine ~0.77, a random pair ~0.43) is written as the exact global index
(``IDMap2,Flat``, the file an index update keeps), then, through the same code an index update runs
(:func:`tagger.store.annsync.sync_ann`):

* build: the layout :func:`choose_layout` picks for N, k-means training, adding, nprobe tuning (s);
* recall@10 against exact search on held-out queries never stored ("image" queries: new points of the
  corpus distribution; "text" queries: those moved by a common offset of norm 1, as CLIP's text
  embeddings sit apart from its image embeddings, and by noise of norm 1), and query latency p50/p99 of single queries, one FAISS thread, text already
  embedded; the exact search's latency (memory-mapped file, as ``--exact`` searches) beside it;
* memory (the approximate index's bytes in memory: its file size) and size on disk of both files;
* incremental add: 1,000 new images added to the exact file and then to the approximate index (s);
* projection to 10^8 images: the layout chosen there and its memory, build and query time scaled from
  the largest measured size (build ~ N, query ~ the vectors scanned: nprobe * N / nlist).

Then the patch store (``--patch-sizes``): a PQ16x8 store of 196 structured codes per image (a pool of
corpus vectors encoded by a trained codec; an image shows 8 clusters, each patch mixes two pool codes of
one cluster), written as an index update writes it, its approximate index built through
:func:`tagger.store.patchannsync.sync_patch_ann`; recall@10 of images (by their best patch) against the
exhaustive scan for image and text queries, p50/p99 of both, build (train + add + tune), memory and
disk, an incremental add of 100 images, where a query's CPU time goes (:func:`patch_profile`), and a
projection to 10^6 and 10^8 images. Latencies give wall-clock p50/p99 and the p50 of CPU time (the
machine is shared); ``approx_all_cores``: the same single queries with one FAISS thread per core (each
query's lists split over them), wall clock only.
``--dedup`` adds the near-duplicate threshold measurement (bench/dedup.py).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from tagger.store import GlobalIndex, IndexConfig, PatchStore
from tagger.store.ann import AnnConfig, nprobe_steps, choose_layout, exact_knn, recall_at
from tagger.store.annsync import load_ann, sync_ann
from tagger.store.global_index_file import extend_global_file, mapped_rows
from tagger.store.patchann import PatchAnnConfig, choose_patch_layout
from tagger.store.patchannsync import load_patch_ann, patch_ann_path, sync_patch_ann
from tagger.store.patch_store_file import extend_patch_file

DIM, LATENT, CLUSTERS, PATCHES = 512, 48, 4096, 196
POOL = 1 << 17
ADD = 1000
CHUNK = 100_000


class Corpus:
    """The synthetic distribution: seeded, generated a chunk at a time."""

    def __init__(self, seed: int = 0) -> None:
        g = np.random.default_rng(seed)
        self.basis = np.linalg.qr(g.standard_normal((DIM, LATENT)))[0].T.astype(np.float32)
        mean = g.standard_normal(DIM).astype(np.float32)
        self.mean = 1.2 * np.sqrt(LATENT) * mean / np.linalg.norm(mean)
        self.centers = g.standard_normal((CLUSTERS, LATENT)).astype(np.float32)
        self.seed = seed

    def draw(self, n: int, part: int) -> np.ndarray:
        r = np.random.default_rng([self.seed, part])
        z = self.centers[r.integers(0, CLUSTERS, n)] + 0.5 * r.standard_normal((n, LATENT), dtype=np.float32)
        x = self.mean + z @ self.basis + 0.25 * r.standard_normal((n, DIM), dtype=np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)


def text_like(x: np.ndarray, seed: int) -> np.ndarray:
    """Text-like queries: a common offset of norm 1 (the gap between CLIP's text and image embeddings)
    plus noise of norm 1 per query, on the unit image vectors ``x``."""
    rng = np.random.default_rng(seed)
    gap = rng.standard_normal(DIM).astype(np.float32)
    noise = rng.standard_normal(x.shape).astype(np.float32)
    q = x + gap / np.linalg.norm(gap) + noise / np.linalg.norm(noise, axis=1, keepdims=True)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def write_exact(path: Path, corpus: Corpus, n: int) -> float:
    t0 = time.perf_counter()
    gi = GlobalIndex(DIM, IndexConfig())
    for k, start in enumerate(range(0, n, CHUNK)):
        m = min(CHUNK, n - start)
        gi._add_new(np.arange(start, start + m, dtype=np.int64), corpus.draw(m, k))
    gi.save(path)
    return time.perf_counter() - t0


def latencies(search, queries: np.ndarray) -> dict[str, float]:
    """Wall-clock p50/p99 of single queries, and the p50 of this thread's CPU time (what a query costs
    on a shared machine, where the wall clock also counts other jobs' turns)."""
    times, cpu = [], []
    for q in queries:
        c0, t0 = time.thread_time(), time.perf_counter()
        search(q[None, :])
        times.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
    ms = np.array(times) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "cpu_p50_ms": round(float(np.percentile(np.array(cpu) * 1000, 50)), 3)}


def measure(n: int, n_queries: int, work: Path, cfg: AnnConfig) -> dict[str, Any]:
    corpus = Corpus()
    g_path = work / f"global-{n}.faiss"
    out: dict[str, Any] = {"n": n, "write_exact_s": round(write_exact(g_path, corpus, n), 1)}
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    built = sync_ann(g_path, None, cfg, use_gpu=False)
    out["build_s"] = round(time.perf_counter() - t0, 1)
    out["layout"] = built.get("ann_factory")
    ann = load_ann(g_path)
    ids, vecs, metric = mapped_rows(g_path)  # type: ignore[misc]
    image_q = corpus.draw(n_queries, 10**6)
    sets = {"image": image_q, "text": text_like(image_q, 1)}
    out["peak_rss_gb"] = round(max(rss0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 2**20, 2)
    out["disk_mb"] = {"exact": round(g_path.stat().st_size / 2**20, 1)}
    if ann is not None:
        out.update(nprobe=ann.nprobe, nlist=ann.meta["nlist"], rerank=ann.meta["rerank"],
                   tuned_recall=ann.meta["tuned_recall"], train_s=ann.meta["train_s"], add_s=ann.meta["add_s"],
                   tune_s=ann.meta["tune_s"])
        out["disk_mb"]["approx"] = round((g_path.with_name("global.ann")).stat().st_size / 2**20, 1)
        out["memory_mb"] = out["disk_mb"]["approx"]
    exact = GlobalIndex.load(g_path, IndexConfig(use_gpu=False), mmap=True)
    for name, q in sets.items():
        _, truth = exact_knn(q, vecs, ids, 10, metric)
        row: dict[str, Any] = {"exact": latencies(lambda x: exact.search(x, 10), q[:min(50, len(q))])}
        if ann is not None:
            got = np.concatenate([ann.search(q[i:i + 1], 10, use_gpu=False)[1] for i in range(len(q))])
            row["recall@10"] = round(recall_at(got, truth), 4)
            row["approx"] = latencies(lambda x: ann.search(x, 10, use_gpu=False), q)
            if row["recall@10"] < cfg.recall_target:
                row["at_target"] = at_target(ann, q, truth, cfg.recall_target)
        out[name] = row
    del exact, vecs
    out["incremental"] = incremental(g_path, corpus, n, cfg) if ann is not None else None
    for p in (g_path, g_path.with_name("global.ann")):
        p.unlink(missing_ok=True)
    return out


def at_target(ann, q: np.ndarray, truth: np.ndarray, target: float) -> dict[str, Any]:
    """The smallest nprobe that reaches ``target`` on these queries, and its latency (then restored)."""
    ivf = faiss.extract_index_ivf(ann.index)
    tuned, row = ivf.nprobe, {}
    for nprobe in nprobe_steps(ivf.nlist):
        if nprobe <= tuned:
            continue
        ivf.nprobe = nprobe
        got = np.concatenate([ann.search(q[i:i + 1], 10, use_gpu=False)[1] for i in range(len(q))])
        row = {"nprobe": nprobe, "recall@10": round(recall_at(got, truth), 4)}
        if row["recall@10"] >= target:
            row.update(latencies(lambda x: ann.search(x, 10, use_gpu=False), q))
            break
    ivf.nprobe = tuned
    return row


def incremental(g_path: Path, corpus: Corpus, n: int, cfg: AnnConfig) -> dict[str, float]:
    new_ids = np.arange(10**9, 10**9 + ADD, dtype=np.int64)
    x = corpus.draw(ADD, 2 * 10**6)
    t0 = time.perf_counter()
    extend_global_file(g_path, [(new_ids, x)], True)
    t1 = time.perf_counter()
    done = sync_ann(g_path, [(new_ids, x)], cfg, use_gpu=False)
    t2 = time.perf_counter()
    ann = load_ann(g_path)
    found = float(np.mean(ann.search(x[:100], 1, use_gpu=False)[1][:, 0] == new_ids[:100]))  # type: ignore[union-attr]
    return {"images": ADD, "exact_s": round(t1 - t0, 2), "approx_s": round(t2 - t1, 2), "mode": done["ann_mode"],
            "new_found_first": found}


def patch_codes(n_images: int, seed: int = 5) -> tuple[PatchStore, np.ndarray]:
    """A trained PQ16x8 codec and ``n_images`` x 196 structured codes: a pool of 2^17 corpus vectors with
    their clusters is encoded; an image shows 8 clusters (objects), each patch is a pool vector of one of
    them with half its 16 sub-codes taken from another pool vector of the same cluster (so patches are
    distinct, clustered, and their codes are what the codec gives real vectors)."""
    c, rng = Corpus(seed), np.random.default_rng([seed, 1])
    labels = np.sort(rng.integers(0, CLUSTERS, POOL))
    z = c.centers[labels] + 0.5 * rng.standard_normal((POOL, LATENT), dtype=np.float32)
    x = c.mean + z @ c.basis + 0.25 * rng.standard_normal((POOL, DIM), dtype=np.float32)
    pool = x / np.linalg.norm(x, axis=1, keepdims=True)
    store = PatchStore(DIM, PATCHES, IndexConfig(use_gpu=False))
    store.train(pool[:16384])
    pool_codes = store.index.sa_encode(pool)
    first, count = np.searchsorted(labels, np.arange(CLUSTERS)), np.maximum(np.bincount(labels, minlength=CLUSTERS), 1)
    codes = np.empty((n_images * PATCHES, store.code_size), np.uint8)
    step = 10_000
    for s in range(0, n_images, step):
        m = min(step, n_images - s)
        objects = rng.integers(0, CLUSTERS, (m, 8))
        cl = np.take_along_axis(objects, rng.integers(0, 8, (m, PATCHES)), 1).ravel()
        a = first[cl] + rng.integers(0, 1 << 30, cl.size) % count[cl]
        b = first[cl] + rng.integers(0, 1 << 30, cl.size) % count[cl]
        part = pool_codes[a]
        mix = rng.random(part.shape) < 0.5
        part[mix] = pool_codes[b][mix]
        codes[s * PATCHES:(s + m) * PATCHES] = part
    return store, codes


def patch_measure(n_images: int, n_queries: int, work: Path, cfg: PatchAnnConfig) -> dict[str, Any]:
    """The patch store of ``n_images``: its exhaustive scan, and the approximate index built, searched
    and extended through :func:`sync_patch_ann` as an index update does."""
    trained, codes = patch_codes(n_images)
    p_path = work / f"patches-{n_images}.tgp"
    PatchStore(DIM, PATCHES, trained.cfg, index=trained.index, image_ids=np.arange(n_images),
               mapped_codes=codes, codec=trained.index).save(p_path)
    del codes
    out: dict[str, Any] = {"images": n_images, "patches": n_images * PATCHES,
                           "codes_mb": round(p_path.stat().st_size / 2**20, 1)}
    t0 = time.perf_counter()
    built = sync_patch_ann(p_path, None, cfg)
    out.update(build_s=round(time.perf_counter() - t0, 1), layout=built["patch_ann_layout"])
    store, ann = PatchStore.load(p_path, mmap=True), load_patch_ann(p_path)
    image_q = Corpus(5).draw(n_queries, 10**6)
    for name, q in {"image": image_q, "text": text_like(image_q, 1)}.items():
        row: dict[str, Any] = {"exact": latencies(lambda x: store.search(x, 10), q[:min(20, len(q))])}
        if ann is not None:
            truth = store.search(q, 10)[1]
            row["recall@10"] = round(recall_at(ann.search(q, 10)[1], truth), 4)
            row["approx"] = latencies(lambda x: ann.search(x, 10), q)
            faiss.omp_set_num_threads(os.cpu_count() or 1)  # a query's lists split over every core
            row["approx_all_cores"] = {k: v for k, v in latencies(lambda x: ann.search(x, 10), q).items()
                                       if k != "cpu_p50_ms"}  # thread_time counts the calling thread only
            faiss.omp_set_num_threads(1)
        out[name] = row
    if ann is not None:
        out["profile"] = {name: patch_profile(ann, q[:min(30, len(q))]) for name, q in
                          {"image": image_q, "text": text_like(image_q, 1)}.items()}
        out.update({k: ann.meta[k] for k in ("nlist", "nprobe", "tuned_recall", "train_s", "add_s", "tune_s")})
        out["disk_mb"] = out["memory_mb"] = round(patch_ann_path(p_path).stat().st_size / 2**20, 1)
        out["incremental"] = patch_incremental(p_path, cfg)
    for p in (p_path, patch_ann_path(p_path)):
        p.unlink(missing_ok=True)
    return out


def patch_profile(ann, queries: np.ndarray) -> dict[str, Any]:
    """Where a patch query's time goes (median CPU ms of single queries): the coarse quantizer alone, the
    list scan for the k * P patches the search asks for and for 10, the aggregation to images; the codes
    scanned (share of the corpus); how many best patches hold 10 distinct images."""
    index, pp = ann.index, ann.patches_per_image
    sizes = np.array([index.invlists.list_size(i) for i in range(index.nlist)])

    def cpu_ms(fn) -> float:
        times = []
        for q in queries:
            c0 = time.thread_time()
            fn(q[None, :])
            times.append(time.thread_time() - c0)
        return round(float(np.median(times)) * 1000, 3)

    _, lists = index.quantizer.search(queries, index.nprobe)
    _, ids = index.search(queries, 10 * pp)
    need = []
    for row in ids:
        im = row[row >= 0] // pp
        _, first = np.unique(im, return_index=True)
        need.append(int(np.sort(first)[min(9, first.size - 1)]) + 1)
    agg = ids[0]
    return {"search_ms": cpu_ms(lambda x: ann.search(x, 10)), "coarse_ms": cpu_ms(lambda x: index.quantizer.search(x, index.nprobe)),
            "scan_k_pp_ms": cpu_ms(lambda x: index.search(x, 10 * pp)), "scan_k10_ms": cpu_ms(lambda x: index.search(x, 10)),
            "aggregate_ms": cpu_ms(lambda x: np.unique(np.divmod(agg[agg >= 0], pp)[0], return_index=True)),
            "codes_scanned_share": round(float(np.median(sizes[lists].sum(1))) / max(int(index.ntotal), 1), 4),
            "patches_for_10_images_p50_max": [int(np.median(need)), max(need)]}


def patch_incremental(p_path: Path, cfg: PatchAnnConfig, n: int = 100) -> dict[str, Any]:
    """``n`` new images (patches near stored ones): extend the store file, then the index."""
    ids = np.arange(10**9, 10**9 + n, dtype=np.int64)
    x = Corpus(5).draw(n * PATCHES, 3 * 10**6).reshape(n, PATCHES, DIM)
    t0 = time.perf_counter()
    extend_patch_file(p_path, [(ids, x)], True)
    t1 = time.perf_counter()
    done = sync_patch_ann(p_path, ids, cfg)
    t2 = time.perf_counter()
    ann = load_patch_ann(p_path)
    found = float(np.mean(ann.search(x[:, 0], 1)[1][:, 0] == ids)) if ann is not None else 0.0
    return {"images": n, "store_s": round(t1 - t0, 2), "approx_s": round(t2 - t1, 2), "mode": done["patch_ann_mode"],
            "new_found_first": found}


def project_patch(largest: dict[str, Any], cfg: PatchAnnConfig, target: int) -> dict[str, Any]:
    """The patch layout at ``target`` images, with build and query CPU time scaled from ``largest``: a query's
    CPU time is linear in the codes scanned, so it grows with the corpus if the tuned share of lists scanned
    stays (``..._share_kept``), or with nprobe / nlist if the tuned nprobe stays (``..._nprobe_kept``)."""
    layout = choose_patch_layout(target, PATCHES, 16, True, cfg)
    n, scale = largest["images"], target / largest["images"]
    scanned_now = largest["nprobe"] / largest["nlist"]
    scanned_then = largest["nprobe"] / layout.nlist if not layout.exact else 1.0
    return {"images": target, "layout": layout.name, "lists_gb": round(layout.est_bytes / 2**30, 1),
            "reason": layout.reason or None,
            "build_min_2cores": round(largest["build_s"] * scale / 60, 1),
            "cpu_p50_ms_if_share_kept": round(largest["text"]["approx"]["cpu_p50_ms"] * scale, 1),
            "cpu_p50_ms_if_nprobe_kept": round(largest["text"]["approx"]["cpu_p50_ms"] * scale * scanned_then / scanned_now, 1),
            "exact_cpu_p50_ms": round(largest["image"]["exact"]["cpu_p50_ms"] * scale, 0), "from_images": n}


def project(largest: dict[str, Any], cfg: AnnConfig, target: int = 10**8) -> dict[str, Any]:
    layout = choose_layout(target, DIM, cfg)
    n = largest["n"]
    scanned_now = largest["nprobe"] * n / largest["nlist"]
    scanned_then = largest["nprobe"] * target / layout.nlist
    p50 = largest["image"]["approx"]["p50_ms"] * scanned_then / scanned_now
    return {"n": target, "layout": layout.factory, "memory_gb": round(layout.est_bytes / 2**30, 1),
            "exact_file_gb": round(target * (4 * DIM + 8) / 2**30, 1),
            "build_h_2cores": round(largest["build_s"] * target / n / 3600, 1),
            "p50_ms_if_nprobe_kept": round(p50, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="100000,1000000")
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--patch-sizes", default="10000,100000")
    p.add_argument("--patch-queries", type=int, default=100)
    p.add_argument("--work", default=None, help="scratch folder (default: a temp folder)")
    p.add_argument("--dedup", action="store_true", help="also measure the near-duplicate threshold")
    p.add_argument("--memory-budget-mb", type=int, default=None,
                   help="the approximate index's memory budget (default: AnnConfig's); small forces PQ")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    faiss.omp_set_num_threads(1)
    cfg = AnnConfig() if a.memory_budget_mb is None else AnnConfig(memory_budget=a.memory_budget_mb << 20)
    out: dict[str, Any] = {"bench": "search", "memory_budget_mb": cfg.memory_budget >> 20, "cpus": os.cpu_count(), "faiss_threads": 1, "global": []}
    with tempfile.TemporaryDirectory(dir=a.work) as tmp:
        for n in [int(s) for s in a.sizes.split(",") if s]:
            out["global"].append(measure(n, a.queries, Path(tmp), cfg))
            print(json.dumps(out["global"][-1]), file=sys.stderr, flush=True)
    measured = [g for g in out["global"] if "nprobe" in g]
    if measured:
        out["projection"] = project(measured[-1], cfg)
    pcfg = PatchAnnConfig()
    out["patch"] = []
    with tempfile.TemporaryDirectory(dir=a.work) as tmp:
        for n in [int(s) for s in a.patch_sizes.split(",") if s]:
            out["patch"].append(patch_measure(n, a.patch_queries, Path(tmp), pcfg))
            print(json.dumps(out["patch"][-1]), file=sys.stderr, flush=True)
    patch_measured = [m for m in out["patch"] if "nprobe" in m]
    if patch_measured:
        out["patch_projection"] = [project_patch(patch_measured[-1], pcfg, t) for t in (10**6, 10**8)
                                   if t > patch_measured[-1]["images"]]
    if a.dedup:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from dedup import measure_threshold  # bench/dedup.py
        out["dedup"] = measure_threshold()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
