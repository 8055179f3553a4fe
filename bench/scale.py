"""How the stages that work on stored embeddings scale with the corpus: 10^4 and 10^5 images (10^6
with --million), each in a synthetic workspace (bench/synthetic.py: ViT-B/16 geometry, 512-d
global vectors, 196 PQ-coded patches per image, no pixels).

    python bench/scale.py [--sizes 10000 100000] [--million] [--labels 80] [--add 5] [--skip-nightly]
    python bench/scale.py --one 100000 > r.json; python bench/scale.py --from-json r*.json

Stages, in this order, on one local Ray started before the clock (2 CPUs by default):

  tag          ``run_tag``: calibration sample and decision fit, tagging actors, load into DuckDB
  load         ``Catalog.load_tags`` of that run's Parquet files again (idempotent reload)
  fit          the calibration sample (``ShardScorer.calibration_sample``) and per-label decision fit
  search-*     ``search_vector`` with one query (global FAISS index, PQ patch store), mean of 3
  nightly      ``run_nightly`` after ``--add`` labels joined the vocabulary: encode finds nothing new,
               text and train find the extended corpus and its classifier made (untimed, beforehand,
               by the synthetic text tower: ``extend_vocabulary``), train still loads ViT-B-16, every
               image is re-tagged and the run switched
  nightly-tag  the re-tag inside that nightly alone (its image-dependent part; memory: the nightly's)
  diff         ``run_diff`` of the first run against the nightly one
  index-update ``update_indexes`` after an encode added one shard of 512 images (with patches): the
               global index and the patch store are extended on disk (stored rows streamed)

Each size runs in a fresh interpreter of its own. For every stage the table gives seconds per
10^4 images and the peak RSS of the driver and of the largest Ray worker, sampled every 0.1 s over
the process tree (psutil, which Ray bundles). "anon" is RSS less its file-backed and shared pages:
memory-mapped shards and codes are page cache the kernel can drop, and Ray workers map the object
store. The baseline is the smallest size: ``time_ratio`` is seconds per image at the largest size
over the smallest (aim: at most 1.2), ``rss_ratio`` the same for the driver's peak anonymous
memory (aim: at most 1.5). DuckDB's memory is part of the driver's, bounded by ``--catalog-memory``
(``$TAGGER_CATALOG_MEMORY``, 256 MB here; beyond it the tag load spills to disk). At 10^4 images
fixed costs (tagging actor start, the 4,096-image calibration, model load) weigh, so time per image
falls with size. Ends with one JSON line. The 10^6 estimate printed extrapolates the largest size's
rates; measured on an idle 2-core machine: 27 min of stages plus 2.4 min of build, and 6.3 GB of disk.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from synthetic import SyntheticConfig, build_workspace, concepts, extend_vocabulary, geometry

STAGES = ("build", "tag", "load", "fit", "search-global", "search-patch", "nightly", "nightly-tag", "diff",
          "index-update")
UPDATE_IMAGES = 512  # images an encode adds to the workspace in the index-update stage
AIM_TIME, AIM_RSS = 1.2, 1.5


class TreeSampler:
    """Samples the RSS of this process and its descendants; :meth:`stage` keeps each window's peaks."""

    def __init__(self, interval: float = 0.1) -> None:
        import ray  # noqa: F401  (puts Ray's bundled psutil on sys.path)
        import psutil
        self.psutil, self.me, self.interval = psutil, psutil.Process(), interval
        self.peaks: dict[str, Any] | None = None
        self.lock, self.stop = threading.Lock(), threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _kind(self, proc) -> str:
        if proc.pid == self.me.pid:
            return "driver"
        cmd = " ".join(proc.cmdline())
        return "worker" if cmd.startswith("ray::") or "default_worker.py" in cmd else "system"

    def _sample(self) -> None:
        for proc in [self.me, *self.me.children(recursive=True)]:
            try:
                kind, mem = self._kind(proc), proc.memory_info()
            except self.psutil.Error:
                continue
            rss, anon = mem.rss / 2**20, (mem.rss - mem.shared) / 2**20
            with self.lock:
                if self.peaks is None:
                    return
                key = "driver" if kind == "driver" else f"{kind}:{proc.pid}"
                old = self.peaks.setdefault(key, (0.0, 0.0))
                self.peaks[key] = (max(old[0], rss), max(old[1], anon))

    def _run(self) -> None:
        while not self.stop.wait(self.interval):
            self._sample()

    @contextmanager
    def stage(self, out: dict[str, Any]) -> Iterator[None]:
        """Time the body; fill ``out`` with its seconds and peak memory (MB)."""
        with self.lock:
            self.peaks = {}
        self._sample()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            out["s"] = round(time.perf_counter() - t0, 3)
            self._sample()
            with self.lock:
                peaks, self.peaks = self.peaks or {}, None
            workers = [v for k, v in peaks.items() if k.startswith("worker:")]
            system = [v for k, v in peaks.items() if k.startswith("system:")]
            out.update(driver_rss_mb=round(peaks.get("driver", (0, 0))[0], 1),
                       driver_anon_mb=round(peaks.get("driver", (0, 0))[1], 1),
                       worker_rss_mb=round(max((w[0] for w in workers), default=0.0), 1),
                       worker_anon_mb=round(max((w[1] for w in workers), default=0.0), 1),
                       workers=len(workers), ray_system_rss_mb=round(sum(s[0] for s in system), 1))

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


def _tag_paths(ws, run_id: int) -> list[Path]:
    return sorted(ws.run_dir(str(run_id)).glob("tags-*.parquet"))


def stage_fit(ws, model_id: str) -> dict[str, Any]:
    """The tag stage's calibration sample and per-label decision fit, on their own."""
    from tagger.catalog import Catalog
    from tagger.pipeline.calibration import DecisionInputs
    from tagger.pipeline.tag import ShardScorer, TagConfig, apply_statistics, fit_run_decisions, label_statistics
    from tagger.store import list_done_shards

    cfg = TagConfig()
    with Catalog.open(ws.catalog, read_only=True) as cat:
        clf = cat.latest_classifier(model_id)
    scorer = ShardScorer(str(ws.root), model_id, str(ws.classifier_dir(clf["classifier_id"])), cfg)
    sample = scorer.calibration_sample(list_done_shards(ws.root, model_id))
    stats = label_statistics(sample)
    d, _ = fit_run_decisions(apply_statistics(sample, stats), list(clf["labels"]), cfg, DecisionInputs({}, {}),
                             None, scorer.anchors(stats))
    return {"sample": int(sample.shape[0]), "present": int(d.present.sum())}


def stage_search(ws, model_id: str, level: str, query: np.ndarray, repeat: int = 3) -> dict[str, Any]:
    from tagger.pipeline.search import search_vector
    hits = [search_vector(ws, model_id, query, 10, level) for _ in range(repeat)]
    return {"hits": len(hits[-1]), "repeat": repeat}


def stage_index_update(ws, model_id: str) -> dict[str, Any]:
    """The index stage of an encode that added one shard (:func:`new_shard`) to a built workspace."""
    from tagger.store.updates import update_indexes
    out = update_indexes(ws.root, model_id)
    if out.get("mode") != "incremental" or out.get("new_shards") != 1:
        raise RuntimeError(f"expected an incremental update of one shard, got {out}")
    return {k: out[k] for k in ("mode", "indexed", "global_build_s", "patch_build_s", "save_s")}


def new_shard(ws, model_id: str, model: str, n: int, seed: int = 7) -> str:
    """A done shard of ``n`` images after the workspace's last id, with patches of ``model``'s geometry."""
    from tagger.store import shard_name_for, write_shard

    dim, patches = geometry(model)
    first = max(int(np.load(p / "ids.npy", mmap_mode="r")[-1]) for p in (ws.root / "embeddings" / model_id).iterdir()
                if (p / "ids.npy").exists()) + 1
    ids = np.arange(first, first + n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    name = shard_name_for(ids)
    write_shard(ws.root, model_id, name, ids, rng.standard_normal((n, dim), np.float32),
                rng.standard_normal((n, patches, dim), np.float32).astype(np.float16))
    return name


def _progress(n: int, name: str, figures: dict[str, Any]) -> None:
    """One JSON line per finished stage on stderr (what a run cut short still tells)."""
    print(json.dumps({"progress": n, "stage": name, **figures}), file=sys.stderr, flush=True)


def run_stages(ws, built: dict[str, Any], a: argparse.Namespace, sampler: TreeSampler) -> dict[str, Any]:
    """Every stage after the build, each in a sampled window; returns stage -> figures."""
    from tagger.catalog import Catalog
    from tagger.pipeline.tag import run_tag

    model_id, n, out = built["model_id"], built["n_images"], {}
    with sampler.stage(out.setdefault("tag", {})):
        tagged = run_tag(ws, model_id)
    out["tag"]["result"] = {k: tagged[k] for k in ("run_id", "n_tags", "n_images", "labels_present")}
    _progress(n, "tag", out["tag"])
    with sampler.stage(out.setdefault("load", {})), Catalog.for_job(ws.catalog, "bench") as cat:
        out["load"]["n_tags"] = cat.load_tags(tagged["run_id"], _tag_paths(ws, tagged["run_id"]))
    _progress(n, "load", out["load"])
    with sampler.stage(out.setdefault("fit", {})):
        out["fit"]["result"] = stage_fit(ws, model_id)
    _progress(n, "fit", out["fit"])
    query = concepts(built["labels"][:1], 512)[0]
    for level in ("global", "patch"):
        stage = out.setdefault(f"search-{level}", {})
        with sampler.stage(stage):
            stage["result"] = stage_search(ws, model_id, level, query)
        stage["s"] = round(stage["s"] / stage["result"]["repeat"], 3)
        _progress(n, f"search-{level}", stage)
    if not a.skip_nightly:
        out.update(nightly_stages(ws, built, tagged["run_id"], a, sampler))
    new_shard(ws, model_id, built["config"]["model"], UPDATE_IMAGES)  # last: its images are not in the catalog
    with sampler.stage(out.setdefault("index-update", {})):
        out["index-update"]["result"] = stage_index_update(ws, model_id)
    _progress(n, "index-update", out["index-update"])
    return out


def nightly_stages(ws, built: dict[str, Any], first_run: int, a: argparse.Namespace,
                   sampler: TreeSampler) -> dict[str, Any]:
    """The nightly run after labels were added, its re-tag alone, and the diff against ``first_run``."""
    from tagger.catalog import Catalog
    from tagger.catalog.diff import run_diff
    from tagger.pipeline.encode import EncodeConfig
    from tagger.pipeline.nightly import NightlyConfig, run_nightly

    out: dict[str, Any] = {"nightly": {}, "diff": {}}
    t0 = time.perf_counter()
    extend_vocabulary(ws.root, built, built["reserve"][:a.add])
    prepare_s = time.perf_counter() - t0
    cfg = built["config"]
    with sampler.stage(out["nightly"]):
        night = run_nightly(ws, None, EncodeConfig(model=cfg["model"]),
                            NightlyConfig(n_sentences=cfg["n_sentences"], seed=cfg["seed"]))
    out["nightly-tag"] = {**out["nightly"], "s": night["timings"]["tag"]}
    out["nightly"]["timings"] = {**night["timings"], "vocabulary_s": round(prepare_s, 2)}
    _progress(built["n_images"], "nightly", out["nightly"])
    with sampler.stage(out["diff"]), Catalog.open(ws.catalog, read_only=True) as cat:
        diff = run_diff(cat, first_run, night["run_id"])
    out["diff"]["result"] = {k: diff[k] for k in ("gained", "lost", "labels_added")}
    _progress(built["n_images"], "diff", out["diff"])
    return out


def one_size(n: int, a: argparse.Namespace) -> dict[str, Any]:
    """Build a workspace of ``n`` images and run every stage on it (in this process)."""
    import ray

    from tagger.workspace import Workspace

    os.environ.update(RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled", TAGGER_CATALOG_MEMORY=a.catalog_memory)
    root = Path(tempfile.mkdtemp(prefix=f"tagger-scale-{n}-", dir=a.dir))
    sampler = TreeSampler()
    try:
        build: dict[str, Any] = {}
        cfg = SyntheticConfig(n, labels=a.labels, reserve=a.add, partition_size=a.partition_size,
                              n_sentences=a.n_sentences)
        with sampler.stage(build):
            built = build_workspace(root / "ws", cfg)
        build["timings"] = built["timings"]
        t0 = time.perf_counter()
        ray.init(address="local", num_cpus=a.cpus, include_dashboard=False, log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        ray_s = time.perf_counter() - t0
        try:
            stages = run_stages(Workspace.at(root / "ws"), built, a, sampler)
        finally:
            ray.shutdown()
        disk = sum(f.stat().st_size for f in (root / "ws").rglob("*") if f.is_file())
    finally:
        sampler.close()
        if not a.keep:
            shutil.rmtree(root, ignore_errors=True)
    return {"n": n, "ray_start_s": round(ray_s, 2), "disk_mb": round(disk / 2**20, 1),
            "stages": {"build": build, **stages}}


def run_child(n: int, a: argparse.Namespace) -> dict[str, Any]:
    """``one_size`` in a fresh interpreter (so no size inherits another's imports or caches)."""
    cmd = [sys.executable, __file__, "--one", str(n), "--labels", str(a.labels), "--add", str(a.add),
           "--partition-size", str(a.partition_size), "--n-sentences", str(a.n_sentences), "--cpus", str(a.cpus),
           "--catalog-memory", a.catalog_memory]
    cmd += (["--dir", a.dir] if a.dir else []) + (["--keep"] if a.keep else [])
    cmd += ["--skip-nightly"] if a.skip_nightly else []
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"size {n} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def per_1e4(stage: dict[str, Any], n: int) -> float:
    return stage["s"] / (n / 1e4)


def print_table(results: list[dict[str, Any]], stages: list[str]) -> None:
    print(f"{'stage':<14}|{'images':>9} |{'s':>9} |{'s/1e4 img':>10} |{'driver MB':>14} |{'worker MB':>14} |{'wk':>3}")
    for r in results:
        for name in stages:
            st = r["stages"][name]
            print(f"{name:<14}|{r['n']:>9} |{st['s']:>9.2f} |{per_1e4(st, r['n']):>10.3f} |"
                  f"{st['driver_rss_mb']:>7.0f}/{st['driver_anon_mb']:<6.0f}|{st['worker_rss_mb']:>7.0f}/"
                  f"{st['worker_anon_mb']:<6.0f}|{st['workers']:>3}")


def report(results: list[dict[str, Any]], a: argparse.Namespace) -> None:
    """The table, the ratios of the largest size against the smallest, the 10^6 estimate, the JSON line."""
    stages = [s for s in STAGES if all(s in r["stages"] for r in results)]
    print(f"synthetic ViT-B/16 workspaces (512-d, 196 PQ16 patches/image), {a.labels} labels (+{a.add} "
          f"nightly), {a.cpus} Ray CPUs, DuckDB memory {a.catalog_memory}; MB = peak RSS / anon")
    print_table(results, stages)
    first, last = results[0], results[-1]
    ratios = {}
    for name in stages:
        a0, a1 = first["stages"][name], last["stages"][name]
        ratios[name] = {"time_ratio": round(per_1e4(a1, last["n"]) / max(per_1e4(a0, first["n"]), 1e-9), 3),
                        "rss_ratio": round(a1["driver_anon_mb"] / max(a0["driver_anon_mb"], 1e-9), 3)}
    timed = [s for s in stages if s != "nightly-tag"]  # inside "nightly"
    estimate_min = sum(last["stages"][s]["s"] for s in timed) / last["n"] * 1e6 / 60
    print(f"ratios {last['n']} vs {first['n']} images (time per image / driver anon peak): "
          + ", ".join(f"{k} {v['time_ratio']:.2f}/{v['rss_ratio']:.2f}" for k, v in ratios.items()))
    print(f"10^6 images (--million): about {estimate_min:.0f} min and {last['disk_mb'] * 1e6 / last['n'] / 1024:.1f} GB"
          " at the largest size's rates")
    checked = [s for s in stages if s not in ("build", "nightly")]
    print(json.dumps({
        "bench": "scale", "sizes": [r["n"] for r in results], "labels": a.labels, "cpus": a.cpus,
        "catalog_memory": a.catalog_memory,
        "s_per_1e4": {s: [round(per_1e4(r["stages"][s], r["n"]), 3) for r in results] for s in stages},
        "driver_anon_mb": {s: [r["stages"][s]["driver_anon_mb"] for r in results] for s in stages},
        "driver_rss_mb": {s: [r["stages"][s]["driver_rss_mb"] for r in results] for s in stages},
        "worker_anon_mb": {s: [r["stages"][s]["worker_anon_mb"] for r in results] for s in stages},
        "ratios": ratios, "estimate_1e6_min": round(estimate_min),
        "time_flat": all(ratios[s]["time_ratio"] <= AIM_TIME for s in checked),
        "driver_memory_flat": all(ratios[s]["rss_ratio"] <= AIM_RSS for s in checked)}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--million", action="store_true", help="add 10^6 images (hours; see the estimate printed)")
    p.add_argument("--labels", type=int, default=80)
    p.add_argument("--add", type=int, default=5, help="labels added before the nightly run")
    p.add_argument("--partition-size", type=int, default=256)
    p.add_argument("--n-sentences", type=int, default=2000)
    p.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray")
    p.add_argument("--catalog-memory", default="256MB", help="DuckDB's memory limit ($TAGGER_CATALOG_MEMORY)")
    p.add_argument("--dir", default=None, help="where the workspaces go (default: the temp folder)")
    p.add_argument("--keep", action="store_true", help="keep the workspaces")
    p.add_argument("--skip-nightly", action="store_true", help="leave out the nightly run and the diff")
    p.add_argument("--from-json", nargs="+", default=None, metavar="FILE",
                   help="report on the results of earlier runs of one size each (--one N > FILE)")
    p.add_argument("--one", type=int, default=None, metavar="N", help="run N images in this process, print its JSON")
    a = p.parse_args()
    if a.one is not None:
        print(json.dumps(one_size(a.one, a)))
        return
    if a.from_json:
        results = [json.loads(Path(f).read_text().strip().splitlines()[-1]) for f in a.from_json]
    else:
        results = []
        for n in sorted(set(a.sizes + ([1_000_000] if a.million else []))):
            results.append(run_child(n, a))
            print(f"... {n} images done", file=sys.stderr, flush=True)
    report(sorted(results, key=lambda r: r["n"]), a)


if __name__ == "__main__":
    main()
