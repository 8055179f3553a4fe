"""The patch index split over nodes: what each shard's search costs, and whether the merge is exact.

    nice -n 10 python bench/shards.py [--images 100000] [--shards 1,2,4,8] [--queries 100] [--ray]

Prints one JSON line. The patch store of ``--images`` images is written and its approximate index built
as ``bench/search.py`` does (:func:`search.patch_codes`, :func:`tagger.store.patchannsync.sync_patch_ann`).
For each shard count n the index is split by image (:func:`tagger.store.annshards.split_ann`) and every
shard is searched in this process, one FAISS thread: a query's time on n nodes is the slowest of its
shards (``critical_cpu_p50_ms``, CPU time, and ``critical_p50_ms``/``p99``, wall clock: the machine is
shared), plus a Ray round trip; ``same_as_whole`` is the share of queries whose merged top 10 has the whole
index's scores, slot for slot (the synthetic codes repeat: images of equal score may swap, also with the
11th). ``--ray`` adds the wall clock of the real thing on this machine's local
Ray (:class:`tagger.pipeline.shardsearch.ShardedSearch`: every actor on these 2 cores, so it shows the
round trip, not the spread).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from search import DIM, PATCHES, Corpus, patch_codes, text_like  # noqa: E402  (bench/search.py)

from tagger.store import PatchStore  # noqa: E402
from tagger.store.annshards import merge_topk, split_ann  # noqa: E402
from tagger.store.patchann import PatchAnn, PatchAnnConfig  # noqa: E402
from tagger.store.patchannsync import load_patch_ann, patch_ann_path, sync_patch_ann  # noqa: E402


def _ms(values: list[float], q: float) -> float:
    return round(float(np.percentile(np.array(values) * 1000, q)), 3)


def critical_path(parts: list[PatchAnn], whole: PatchAnn, queries: np.ndarray) -> dict[str, Any]:
    """Each query searched on every shard in turn: the slowest shard's CPU and wall time, and whether the
    merged result equals the whole index's."""
    cpu, wall, same = [], [], 0
    for q in queries:
        results, c_max, w_max = [], 0.0, 0.0
        for part in parts:
            c0, t0 = time.thread_time(), time.perf_counter()
            results.append(part.search(q[None, :], 10))
            c_max, w_max = max(c_max, time.thread_time() - c0), max(w_max, time.perf_counter() - t0)
        cpu.append(c_max)
        wall.append(w_max)
        scores = merge_topk(results, 10)[0]
        want_scores = whole.search(q[None, :], 10)[0]
        same += bool(np.allclose(scores, want_scores, rtol=1e-5))  # images of equal score may swap
    return {"critical_cpu_p50_ms": _ms(cpu, 50), "critical_p50_ms": _ms(wall, 50), "critical_p99_ms": _ms(wall, 99),
            "same_as_whole": round(same / len(queries), 3)}


def ray_round_trip(a_path: Path, queries: np.ndarray) -> dict[str, float]:
    """Wall clock of single queries through :class:`ShardedSearch` on a local Ray (actors started first)."""
    import ray

    from tagger.pipeline.shardsearch import ShardedSearch
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        sharded = ShardedSearch(a_path, num_cpus=0.01)
        try:
            sharded.search(queries[:2], 10)  # warm: actors loaded
            times = []
            for q in queries:
                t0 = time.perf_counter()
                sharded.search(q[None, :], 10)
                times.append(time.perf_counter() - t0)
        finally:
            sharded.close()
    finally:
        ray.shutdown()
    return {"p50_ms": _ms(times, 50), "p99_ms": _ms(times, 99)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=100_000)
    p.add_argument("--shards", default="1,2,4,8")
    p.add_argument("--queries", type=int, default=100)
    p.add_argument("--ray", action="store_true", help="also time the sharded search through Ray actors")
    p.add_argument("--work", default=None, help="scratch folder (default: a temp folder)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    faiss.omp_set_num_threads(1)
    out: dict[str, Any] = {"bench": "shards", "images": a.images, "patches": a.images * PATCHES, "faiss_threads": 1}
    with tempfile.TemporaryDirectory(dir=a.work) as tmp:
        trained, codes = patch_codes(a.images)
        p_path = Path(tmp) / "patches.tgp"
        PatchStore(DIM, PATCHES, trained.cfg, index=trained.index, image_ids=np.arange(a.images),
                   mapped_codes=codes, codec=trained.index).save(p_path)
        del codes
        t0 = time.perf_counter()
        built = sync_patch_ann(p_path, None, PatchAnnConfig())
        whole = load_patch_ann(p_path)
        if whole is None:
            raise SystemExit(f"{a.images} images get no approximate patch index ({built['patch_ann_layout']})")
        out.update(layout=built["patch_ann_layout"], nprobe=whole.nprobe, build_s=round(time.perf_counter() - t0, 1))
        image_q = Corpus(5).draw(a.queries, 10**6)
        queries = {"image": image_q, "text": text_like(image_q, 1)}
        rows = []
        for n in [int(s) for s in a.shards.split(",") if s]:
            t0 = time.perf_counter()
            parts = [PatchAnn.load(path) for path in split_ann(patch_ann_path(p_path), n)]
            row: dict[str, Any] = {"shards": n, "split_s": round(time.perf_counter() - t0, 1)}
            row.update({name: critical_path(parts, whole, q) for name, q in queries.items()})
            if a.ray and n > 1:
                row["ray_text"] = ray_round_trip(patch_ann_path(p_path), queries["text"])
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
            del parts
        out["split"] = rows
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
