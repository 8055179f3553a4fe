"""Encode throughput: the project's pipeline against a plain PyTorch loop, on the same images.

    python bench/encode.py [--n 400] [--size 256] [--model toy-vit] [--pretrained PATH]

Images are toy-world scenes (export_scenes) re-saved as JPEG at --size px. The pipeline is
``run_encode`` on a fresh workspace (decode + encode of global and patch features + shards +
catalog + FAISS stores) on a local Ray instance started beforehand (its start time is reported
apart). The baseline is what a user would write: PIL decode + the model's open_clip preprocess in
a torch DataLoader (same worker count and batch size), ``model.encode_image``, one .npy file.
The pipeline runs at N and 2N images with the peak RSS of the whole process tree (driver, Ray
and its workers) sampled in a thread: flat peaks mean memory does not grow with the corpus.
Ends with one JSON line; ``ratio`` = pipeline_img_s / loop_img_s at 2N images.
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
from pathlib import Path

import numpy as np
import ray  # noqa: F401  (Ray ships psutil and puts it on sys.path)
import psutil
import torch
from PIL import Image


class PeakRSS:
    """Context manager sampling the summed RSS of this process and all its descendants."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval, self.peak = interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        me = psutil.Process()
        total = 0
        for proc in [me, *me.children(recursive=True)]:
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakRSS":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_mb(self) -> float:
        return round(self.peak / 2**20, 1)


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


def run_loop(folder: Path, out: Path, args: argparse.Namespace) -> dict:
    """The plain loop, timed end to end (model load included, as in the pipeline)."""
    from tagger.models import load_clip

    torch.set_num_threads(args.loop_threads)  # as many as the encoder actor (1 CPU) gets
    with PeakRSS() as rss:
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
    return {"n": len(data), "s": dt, "img_s": len(data) / dt, "peak_rss_mb": rss.peak_mb}


def run_pipeline(folder: Path, ws_root: Path, args: argparse.Namespace) -> dict:
    """``run_encode`` on a fresh workspace (Ray already running)."""
    from tagger.encode import EncodeConfig, run_encode
    from tagger.workspace import Workspace

    cfg = EncodeConfig(model=args.model, pretrained=args.pretrained, batch_size=args.batch_size,
                       partition_size=args.partition_size, decode_concurrency=args.workers)
    idle_mb = round(PeakRSS()._sample() / 2**20, 1)
    with PeakRSS() as rss:
        t0 = time.perf_counter()
        stats = run_encode(Workspace.at(ws_root), str(folder), cfg, progress=False)
        dt = time.perf_counter() - t0
    n = stats["encoded"] + stats["errors"]
    return {"n": n, "s": dt, "img_s": n / dt, "peak_rss_mb": rss.peak_mb, "idle_rss_mb": idle_mb, "stats": stats}


def actor_threads() -> int:
    """torch threads inside a 1-CPU Ray task (what the CPU encoder actor gets)."""
    import ray

    @ray.remote(num_cpus=1)
    def probe() -> int:
        import torch as t
        return t.get_num_threads()
    return int(ray.get(probe.remote()))


def print_table(rows: list[tuple]) -> None:
    head = ("run", "images", "seconds", "img/s", "peak RSS MB")
    print(" | ".join(f"{h:>12}" for h in head))
    for r in rows:
        print(" | ".join(f"{v:>12.1f}" if isinstance(v, float) else f"{v!s:>12}" for v in r))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=400, help="N: the pipeline runs at N and 2N images")
    p.add_argument("--size", type=int, default=256, help="side of the JPEG files (toy scenes are 128)")
    p.add_argument("--model", default="toy-vit")
    p.add_argument("--pretrained", default=None, help="hub tag or checkpoint path (default: shipped/random)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--partition-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=1, help="decode tasks in flight = DataLoader workers")
    p.add_argument("--loop-threads", type=int, default=1, help="torch threads of the loop (the actor has 1 CPU)")
    a = p.parse_args()
    from tagger.raycluster import ray_session

    tmp = Path(tempfile.mkdtemp(prefix="tagger-bench-encode-"))
    try:
        small, big = make_images(tmp, a.n, a.size)
        loop = run_loop(big, tmp / "loop.npy", a)  # first: no Ray processes in its tree
        t0 = time.perf_counter()
        with ray_session():
            ray_s = time.perf_counter() - t0
            threads = actor_threads()
            pipe_n = run_pipeline(small, tmp / "ws-n", a)
            pipe_2n = run_pipeline(big, tmp / "ws-2n", a)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"model {a.model}, {a.size}px JPEG, batch {a.batch_size}, decode workers {a.workers}, "
          f"torch threads loop {a.loop_threads} / actor {threads}; Ray start {ray_s:.1f} s (not counted)")
    print_table([("pipeline N", pipe_n["n"], pipe_n["s"], pipe_n["img_s"], pipe_n["peak_rss_mb"]),
                 ("pipeline 2N", pipe_2n["n"], pipe_2n["s"], pipe_2n["img_s"], pipe_2n["peak_rss_mb"]),
                 ("plain loop 2N", loop["n"], loop["s"], loop["img_s"], loop["peak_rss_mb"])])
    st = pipe_2n["stats"]
    print(f"pipeline 2N: encode {st['encode_s']} s, index build {st.get('global_build_s')} + "
          f"{st.get('patch_build_s')} s, errors {st['errors']}; tree RSS before each run (Ray idle) "
          f"{pipe_n['idle_rss_mb']} / {pipe_2n['idle_rss_mb']} MB")
    print(json.dumps({"bench": "encode", "model": a.model, "size": a.size, "n": [a.n, 2 * a.n],
                      "pipeline_img_s": round(pipe_2n["img_s"], 2), "loop_img_s": round(loop["img_s"], 2),
                      "ratio": round(pipe_2n["img_s"] / loop["img_s"], 3), "ray_start_s": round(ray_s, 2),
                      "peak_rss_mb": {"pipeline_n": pipe_n["peak_rss_mb"], "pipeline_2n": pipe_2n["peak_rss_mb"],
                                      "loop_2n": loop["peak_rss_mb"]},
                      "rss_growth_2n_over_n": round(pipe_2n["peak_rss_mb"] / pipe_n["peak_rss_mb"], 3)}))


if __name__ == "__main__":
    main()
