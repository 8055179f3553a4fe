"""Encode throughput: the project's pipeline against a plain PyTorch loop, on the same images.

    python bench/encode.py [--n 2000] [--size 256] [--model toy-vit] [--pretrained PATH]

Images are toy-world scenes (export_scenes) re-saved as JPEG at --size px. The pipeline is
``python -m jobs.encode`` on a fresh workspace (decode + encode of global and patch features +
shards + catalog + FAISS stores), a driver connecting to its own local Ray, started before the
clock starts (its start time is reported apart: on a cluster it is already up). The baseline is what a user would write: PIL decode + the model's
open_clip preprocess in a torch DataLoader (same worker count and batch size),
``model.encode_image``, one .npy file, run as its own script in a fresh interpreter (so it pays
its imports and model load, as the pipeline's workers do); its torch threads match the encoder
actor's CPU (1), which on 2 cores is faster than torch's default of 2 threads.
Each run records the peak RSS of the whole process tree (driver, Ray and its workers, DataLoader
workers), sampled in a thread: equal peaks at N and 2N mean memory does not grow with the corpus.
Both run at N and 2N images; the marginal rate of the extra N images cancels fixed costs.
Ends with one JSON line; ``ratio`` = pipeline_img_s / loop_img_s at 2N images, end to end.
Real architectures (e.g. ``--model ViT-B-32``) load with random weights when --pretrained is
not given, which is enough for timing.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import ray
import torch
from PIL import Image

from tagger.pipeline.encode import EncodeConfig


@contextmanager
def peak_rss(interval: float = 0.05) -> Iterator[dict]:
    """Yield a dict whose ``mb`` is the peak summed RSS of this process and its descendants."""
    import psutil  # Ray bundles it; importing ray first puts it on sys.path

    out, stop, me = {"mb": 0.0}, threading.Event(), psutil.Process()

    def sample() -> None:
        while not stop.is_set():
            total = 0
            for proc in [me, *me.children(recursive=True)]:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    pass
            out["mb"] = max(out["mb"], round(total / 2**20, 1))
            stop.wait(interval)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield out
    finally:
        stop.set()
        thread.join()


def make_images(tmp: Path, n: int, size: int) -> tuple[Path, Path]:
    """Export 2n toy scenes as JPEG at ``size`` px; return folders with the first n and all 2n."""
    from tagger.toyworld.export import export_scenes

    raw, small, big = tmp / "raw", tmp / f"img-{n}", tmp / f"img-{2 * n}"
    small.mkdir(parents=True)
    big.mkdir(parents=True)
    for i, src in enumerate(sorted(export_scenes(raw, 2 * n))):
        dst = big / (Path(src).stem + ".jpg")
        with Image.open(src) as im:
            im.convert("RGB").resize((size, size), Image.Resampling.BICUBIC).save(dst, quality=90)
        if i < n:
            os.link(dst, small / dst.name)
    shutil.rmtree(raw)
    return small, big


class ImageFiles(torch.utils.data.Dataset):
    """The files of a folder, decoded with PIL and preprocessed with open_clip's transform."""

    def __init__(self, folder: Path, preprocess) -> None:
        self.paths, self.preprocess = sorted(str(p) for p in folder.iterdir()), preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        with Image.open(self.paths[i]) as im:
            return self.preprocess(im.convert("RGB"))


def run_loop_script(folder: Path, out: Path, args: argparse.Namespace) -> dict:
    """The plain loop as a user runs it: ``python script.py``, timed from launch to exit."""
    import subprocess
    import sys

    cmd = [sys.executable, __file__, "--loop-only", str(folder), "--loop-out", str(out), "--model", args.model,
           "--batch-size", str(args.batch_size), "--workers", str(args.workers),
           "--loop-threads", str(args.loop_threads)] + (["--pretrained", args.pretrained] if args.pretrained else [])
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    dt = time.perf_counter() - t0
    inner = json.loads(done.stdout.strip().splitlines()[-1])
    return {**inner, "s": dt, "img_s": inner["n"] / dt, "in_script_s": inner["s"]}


def run_loop(folder: Path, out: Path, args: argparse.Namespace) -> dict:
    """The plain loop, timed end to end (model load included, as in the pipeline)."""
    from tagger.models import load_clip

    torch.set_num_threads(args.loop_threads)  # as many as the encoder actor (1 CPU) gets
    with peak_rss() as rss:
        t0 = time.perf_counter()
        clip = load_clip(args.model, args.pretrained, device="cpu")
        data = ImageFiles(folder, clip.preprocess)
        loader = torch.utils.data.DataLoader(data, batch_size=args.batch_size, num_workers=args.workers)
        feats = []
        with torch.inference_mode():
            for x in loader:
                f = torch.nn.functional.normalize(clip.model.encode_image(x), dim=-1)
                feats.append(f.numpy().astype(np.float16))
        np.save(out, np.concatenate(feats))
        dt = time.perf_counter() - t0
    return {"n": len(data), "s": dt, "img_s": len(data) / dt, "peak_rss_mb": rss["mb"]}


def run_pipeline(folder: Path, ws_root: Path, args: argparse.Namespace) -> dict:
    """``python -m jobs.encode`` on a fresh workspace, as a driver connecting to a Ray that is
    already up (started here before the clock starts), timed from launch to exit."""
    import subprocess
    import sys

    from tagger.pipeline.raycluster import ray_session

    repo = Path(__file__).resolve().parent.parent
    cmd = [sys.executable, "-m", "jobs.encode", "--workspace", str(ws_root), "--source", str(folder),
           "--model", args.model, "--batch-size", str(args.batch_size), "--partition-size", str(args.partition_size),
           "--decode-concurrency", str(args.workers), "--concurrency", str(args.encoders),
           "--encode-cpus", str(args.encode_cpus), "--decode-cpus", str(args.decode_cpus), "--num-gpus", "0",
           "--log-level", "WARNING"] + (["--pretrained", args.pretrained] if args.pretrained else [])
    t0 = time.perf_counter()
    with ray_session() as ray_mod, peak_rss() as rss:
        t1 = time.perf_counter()
        threads = actor_threads()
        env = {**os.environ, "RAY_ADDRESS": ray_mod.get_runtime_context().gcs_address,
               "PYTHONPATH": str(repo) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        t2 = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=repo)
        dt = time.perf_counter() - t2
    if done.returncode != 0:
        raise RuntimeError(f"encode job failed:\n{done.stderr[-3000:]}")
    stats = json.loads(done.stdout.strip().splitlines()[-1])
    n = stats["encoded"] + stats["errors"]
    return {"n": n, "s": dt, "img_s": n / dt, "peak_rss_mb": rss["mb"], "stats": stats,
            "ray_s": t1 - t0, "threads": threads}


def actor_threads() -> int:
    """torch threads inside a 1-CPU Ray task (what the CPU encoder actor gets)."""
    @ray.remote(num_cpus=1)
    def probe() -> int:
        import torch as t
        return t.get_num_threads()
    return int(ray.get(probe.remote()))


def print_table(rows: list[tuple]) -> None:
    print(f"{'run':<14} | {'images':>7} | {'seconds':>8} | {'img/s':>8} | {'peak RSS MB':>11}")
    for name, n, sec, rate, rss in rows:
        print(f"{name:<14} | {n:>7} | {sec:>8.1f} | {rate:>8.1f} | {rss:>11.1f}")


def marginal(first: dict, second: dict) -> float:
    """img/s of the extra images of the larger run (fixed costs cancel); NaN if it was not slower."""
    extra = second["s"] - first["s"]
    return (second["n"] - first["n"]) / extra if extra > 0 else float("nan")


def report(a: argparse.Namespace, pipe: tuple, loop: tuple) -> None:
    ray_s = sum(r["ray_s"] for r in pipe) / 2
    print(f"model {a.model}, {a.size}px JPEG, batch {a.batch_size}, decode workers {a.workers}, encoder actors "
          f"{a.encoders} ({a.encode_cpus} CPU), decoders {a.decode_cpus} CPU, torch threads loop {a.loop_threads} / "
          f"actor {pipe[0]['threads']}; Ray start {ray_s:.1f} s (not counted; a cluster is already up)")
    print(f"plain loop inside its script: {loop[0]['in_script_s']:.1f} / {loop[1]['in_script_s']:.1f} s "
          "(the rest of its time is interpreter start and imports)")
    print_table([(f"{name} {k}", r["n"], r["s"], r["img_s"], r["peak_rss_mb"])
                 for name, runs in (("pipeline", pipe), ("plain loop", loop)) for k, r in zip(("N", "2N"), runs)])
    st, m_pipe, m_loop = pipe[1]["stats"], marginal(*pipe), marginal(*loop)
    print(f"marginal img/s (2N - N images): pipeline {m_pipe:.1f}, loop {m_loop:.1f} (nan: noise; raise --n)")
    print(f"pipeline 2N: encode {st['encode_s']} s, index {st.get('mode')} {st.get('global_build_s')} + "
          f"{st.get('patch_build_s')} s, errors {st['errors']}")
    print(json.dumps({
        "bench": "encode", "model": a.model, "size": a.size, "n": [a.n, 2 * a.n], "encoders": a.encoders,
        "pipeline_img_s": round(pipe[1]["img_s"], 2), "loop_img_s": round(loop[1]["img_s"], 2),
        "ratio": round(pipe[1]["img_s"] / loop[1]["img_s"], 3),
        "marginal_ratio": None if np.isnan(m_pipe / m_loop) else round(m_pipe / m_loop, 3), "ray_start_s": round(ray_s, 2),
        "peak_rss_mb": {"pipeline": [pipe[0]["peak_rss_mb"], pipe[1]["peak_rss_mb"]],
                        "loop": [loop[0]["peak_rss_mb"], loop[1]["peak_rss_mb"]]},
        "rss_growth_2n_over_n": round(pipe[1]["peak_rss_mb"] / pipe[0]["peak_rss_mb"], 3)}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=2000, help="images of the smaller run (the larger has 2N)")
    p.add_argument("--size", type=int, default=256, help="side of the JPEG files (toy scenes are 128)")
    p.add_argument("--model", default="toy-vit")
    p.add_argument("--pretrained", default=None, help="hub tag or checkpoint path (default: shipped/random)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--partition-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=1, help="decode tasks in flight = DataLoader workers")
    p.add_argument("--loop-threads", type=int, default=1, help="torch threads of the loop (the actor has 1 CPU)")
    p.add_argument("--encoders", type=int, default=EncodeConfig.concurrency, help="encoder actors")
    p.add_argument("--encode-cpus", type=float, default=EncodeConfig.encode_cpus, help="Ray CPUs per encoder")
    p.add_argument("--decode-cpus", type=float, default=EncodeConfig.decode_cpus, help="Ray CPUs per decoder")
    p.add_argument("--loop-only", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--loop-out", type=Path, default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.loop_only is not None:  # the plain loop's own script
        print(json.dumps(run_loop(a.loop_only, a.loop_out, a)))
        return
    tmp = Path(tempfile.mkdtemp(prefix="tagger-bench-encode-"))
    try:
        small, big = make_images(tmp, a.n, a.size)
        loop_n = run_loop_script(small, tmp / "loop.npy", a)  # first: no Ray processes on the machine
        loop_2n = run_loop_script(big, tmp / "loop.npy", a)
        pipe_n = run_pipeline(small, tmp / "ws-n", a)
        pipe_2n = run_pipeline(big, tmp / "ws-2n", a)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report(a, (pipe_n, pipe_2n), (loop_n, loop_2n))


if __name__ == "__main__":
    main()
