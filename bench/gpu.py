"""One prepared check for a GPU machine: encode throughput per GPU, JPEG decode on CPU and on the
device, and tagging, written to one JSON summary.

    bench/gpu.sh                                   # on the GPU machine; results in $OUT (./gpu-out)
    bench/gpu.sh --device cpu --n 16 --unique 16 --decode-n 32 --tag-n 32   # dry run on a CPU

Encode: ViT-B-32 and ViT-B-16 with random weights (``pretrained=None``), fp16 on cuda (fp32 on
cpu), through ``run_encode`` (Ray Data decode workers, one encoder actor holding the GPU, shards,
catalog, FAISS stores) on toy scenes saved as JPEG at --size px (--unique files, linked up to the
count). Each model runs an untimed warm-up, then N and 2N images into fresh workspaces:
``img_s`` is 2N images over the encode part of the run (``encode_s``: Ray Data until the last
partition is recorded, model load included), ``marginal_img_s`` N over the difference of the two
runs' ``encode_s`` (fixed costs cancel), ``end_to_end_img_s`` adds the index update.
Decode: the project's decoder (PIL decode, resize, centre crop to 224 px, uint8) on one core and
on a process pool of every core, against ``torchvision.io.decode_jpeg`` on the device in batches
followed by the same bicubic resize and crop there (files read beforehand; JPEGs at --decode-size px).
Tag: ``bench/tag.py`` as it is (its scoring is numpy on the CPU cores) and the same multiplies in
torch on the device (fp32), the figure a device scoring path would reach.
The summary goes to ``<out>/gpu.json`` after every part (a part that fails records its error and
the rest still runs); the last line printed is the same JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from multiprocessing import get_context
from pathlib import Path

import numpy as np

ANCHORS = {"clip_retrieval_vit_b32_a100_img_s": 2500, "aim_vit_b32_h200_img_s": 4000}
ROOT = Path(__file__).resolve().parent.parent


def environment(device: str) -> dict:
    """Versions, the device and which FAISS build is installed."""
    import faiss
    import torch
    import torchvision

    from tagger.store.gpu import num_gpus

    cuda = torch.cuda.is_available()
    return {"device": device, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "cuda_available": cuda, "gpu": torch.cuda.get_device_name(0) if cuda else None,
            "gpus": torch.cuda.device_count() if cuda else 0, "cpus": os.cpu_count(),
            "faiss": faiss.__version__, "faiss_build": "gpu" if num_gpus() > 0 else "cpu"}


def make_jpegs(folder: Path, n: int, size: int, unique: int) -> list[Path]:
    """``n`` JPEG files at ``size`` px in ``folder``: ``unique`` toy scenes, the rest hard links."""
    from PIL import Image

    from tagger.toyworld.export import export_scenes

    raw = folder.parent / f"{folder.name}-raw"
    folder.mkdir(parents=True)
    files = []
    for i, src in enumerate(sorted(export_scenes(raw, min(n, unique)))):
        files.append(folder / f"{i:07d}.jpg")
        with Image.open(src) as im:
            im.convert("RGB").resize((size, size), Image.Resampling.BICUBIC).save(files[-1], quality=90)
    shutil.rmtree(raw)
    for i in range(len(files), n):
        (folder / f"{i:07d}.jpg").hardlink_to(files[i % unique])
    return sorted(folder.iterdir())


def subset(folder: Path, files: list[Path], n: int) -> Path:
    """A folder of links to the first ``n`` of ``files``."""
    folder.mkdir(parents=True)
    for f in files[:n]:
        (folder / f.name).hardlink_to(f)
    return folder


def encode_part(tmp: Path, files: list[Path], model: str, a: argparse.Namespace) -> dict:
    """Warm-up, then N and 2N images of ``model`` through run_encode into fresh workspaces."""
    from tagger.pipeline.encode import EncodeConfig, run_encode
    from tagger.workspace import Workspace

    cuda = a.device.startswith("cuda")
    cfg = EncodeConfig(model=model, device=a.device, precision="fp16" if cuda else "fp32",
                       num_gpus=1.0 if cuda else 0.0, batch_size=a.batch_size, partition_size=a.partition_size,
                       decode_concurrency=a.decoders)
    warm = subset(tmp / f"{model}-warm", files, min(a.n, a.partition_size))
    run_encode(Workspace.at(tmp / f"ws-{model}-warm"), str(warm), cfg, progress=False)
    runs = []
    for n in (a.n, 2 * a.n):
        folder = subset(tmp / f"{model}-{n}", files, n)
        t = time.perf_counter()
        stats = run_encode(Workspace.at(tmp / f"ws-{model}-{n}"), str(folder), cfg, progress=False)
        runs.append({"n": n, "s": time.perf_counter() - t, "encode_s": stats["encode_s"],
                     "encoded": stats["encoded"], "errors": stats["errors"]})
        shutil.rmtree(tmp / f"ws-{model}-{n}", ignore_errors=True)  # shards of 2N ViT-B/16 images are GBs
    extra = runs[1]["encode_s"] - runs[0]["encode_s"]
    return {"precision": cfg.precision, "batch_size": a.batch_size, "partition_size": a.partition_size,
            "decoders": a.decoders, "runs": runs, "img_s": round(runs[1]["n"] / runs[1]["encode_s"], 1),
            "marginal_img_s": round(a.n / extra, 1) if extra > 0 else None,
            "end_to_end_img_s": round(runs[1]["n"] / runs[1]["s"], 1)}


_DECODER = None


def _decode_files(paths: list[str]) -> int:
    """Decode files with the project's decoder in a pool worker; returns how many were ok."""
    global _DECODER
    if _DECODER is None:
        from tagger.models.preprocess import pixel_spec
        from tagger.pipeline.decode import Decoder
        spec = pixel_spec("ViT-B-32")
        _DECODER = Decoder(preprocess=spec.to_uint8, size=spec.image_size)
    return sum(_DECODER.decode(p)["status"] == "ok" for p in paths)


def device_decode(data: list[bytes], device: str, batch: int, size: int = 224) -> float:
    """Seconds to decode ``data`` with decode_jpeg on ``device``, resize and centre-crop each image."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg
    from torchvision.transforms.v2 import functional as F

    tensors = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in data]
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    decode_jpeg(tensors[:batch], mode=ImageReadMode.RGB, device=device)  # warm-up: codec handles, kernels
    sync()
    t = time.perf_counter()
    for i in range(0, len(tensors), batch):
        imgs = decode_jpeg(tensors[i:i + batch], mode=ImageReadMode.RGB, device=device)
        out = torch.stack([F.center_crop(F.resize(im, size, F.InterpolationMode.BICUBIC, antialias=True), size)
                           for im in imgs])
        assert out.shape[1:] == (3, size, size)
    sync()
    return time.perf_counter() - t


def decode_part(tmp: Path, a: argparse.Namespace) -> dict:
    """CPU decode (one core, every core) against device decode of the same JPEG files."""
    files = [str(f) for f in make_jpegs(tmp / "decode", a.decode_n, a.decode_size, a.unique)]
    data = [Path(f).read_bytes() for f in files]
    one = files[: max(1, len(files) // 4)]
    _decode_files(one[:2])
    t = time.perf_counter()
    assert _decode_files(one) == len(one)
    cpu1 = len(one) / (time.perf_counter() - t)
    workers = os.cpu_count() or 1
    chunks = [files[i::workers * 4] for i in range(workers * 4)]
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        list(pool.map(_decode_files, [[f] for f in files[:workers]]))  # start and import in every worker
        t = time.perf_counter()
        assert sum(pool.map(_decode_files, chunks)) == len(files)
        cpu_all = len(files) / (time.perf_counter() - t)
    dev = len(data) / device_decode(data, a.device, a.decode_batch)
    return {"files": len(files), "jpeg_px": a.decode_size, "cpu_1core_img_s": round(cpu1, 1),
            "cpu_all_cores_img_s": round(cpu_all, 1), "cpu_workers": workers,
            "device": a.device, "device_img_s": round(dev, 1), "device_over_all_cores": round(dev / cpu_all, 2)}


def device_scoring(n: int, labels: int, device: str, d: int = 512, patches: int = 196) -> float:
    """Images/s of the CoMC multiplies (memory mapping, classifier, max over patches) in torch on ``device``."""
    import torch

    gen = torch.Generator().manual_seed(0)
    unit = lambda *s: torch.nn.functional.normalize(torch.randn(*s, generator=gen), dim=-1).to(device)
    g, p, mem, w = unit(n, d), unit(n, patches, d), unit(labels, d), unit(labels, d)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def score(v: torch.Tensor) -> torch.Tensor:
        read = torch.softmax(v @ mem.T / 0.01, dim=-1) @ mem
        mapped = torch.nn.functional.normalize(0.7 * v + 0.3 * torch.nn.functional.normalize(read, dim=-1), dim=-1)
        return mapped @ w.T

    best = float("inf")
    with torch.inference_mode():
        for _ in range(3):
            sync()
            t = time.perf_counter()
            for i in range(0, n, 256):
                local = score(p[i:i + 256].reshape(-1, d)).reshape(-1, patches, labels).amax(1)
                _ = 0.5 * score(g[i:i + 256]) + 0.5 * local
            sync()
            best = min(best, time.perf_counter() - t)
    return n / best


def tag_part(a: argparse.Namespace) -> dict:
    """bench/tag.py (numpy scoring on the CPU cores) and the same multiplies on the device."""
    cmd = [sys.executable, str(ROOT / "bench" / "tag.py"), "--n", str(a.tag_n), "--repeat", "3"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=a.tag_timeout)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    cpu = json.loads(done.stdout.strip().splitlines()[-1])
    dev = {str(c): round(device_scoring(a.tag_n, c, a.device), 1) for c in (80, 1000)}
    return {"bench_tag_py": cpu, "device_scoring_img_s": dev}


def run_parts(a: argparse.Namespace, summary: dict, save) -> None:
    """Each part in turn; a failing part records its error and the others still run."""
    from tagger.pipeline.raycluster import ray_session

    tmp = Path(tempfile.mkdtemp(prefix="tagger-gpu-"))
    try:
        t = time.perf_counter()
        files = make_jpegs(tmp / "jpeg", 2 * a.n, a.size, a.unique)
        summary["jpeg_setup_s"] = round(time.perf_counter() - t, 1)
        with ray_session() if a.models else nullcontext():
            for model in a.models:
                part(summary, f"encode {model}", lambda: encode_part(tmp, files, model, a), save)
        part(summary, "decode", lambda: decode_part(tmp, a), save)
        part(summary, "tag", lambda: tag_part(a), save)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def part(summary: dict, name: str, fn, save) -> None:
    t = time.perf_counter()
    try:
        summary[name] = fn()
    except Exception as e:  # recorded, so that one failure does not lose the other parts
        summary.setdefault("errors", {})[name] = f"{type(e).__name__}: {e}"
        traceback.print_exc()
    summary.setdefault("part_s", {})[name] = round(time.perf_counter() - t, 1)
    save()
    print(f"[{name}] {json.dumps(summary.get(name, summary.get('errors', {}).get(name)))}", flush=True)


def print_table(s: dict) -> None:
    print(f"{'encode':<10} | {'img/s':>8} | {'marginal':>8} | {'end to end':>10} | anchor")
    for model in ("ViT-B-32", "ViT-B-16"):
        r = s.get(f"encode {model}")
        if r:
            anchor = (f"clip-retrieval ~{ANCHORS['clip_retrieval_vit_b32_a100_img_s']:,} img/s on one A100; "
                      f"aim > {ANCHORS['aim_vit_b32_h200_img_s']:,} on one H200") if model == "ViT-B-32" else "-"
            print(f"{model:<10} | {r['img_s']:>8} | {r['marginal_img_s']!s:>8} | {r['end_to_end_img_s']:>10} | "
                  f"{anchor}")
    if "decode" in s:
        d = s["decode"]
        print(f"decode {d['jpeg_px']} px JPEG -> 224: CPU 1 core {d['cpu_1core_img_s']} img/s, "
              f"{d['cpu_workers']} cores {d['cpu_all_cores_img_s']} img/s, {d['device']} {d['device_img_s']} img/s")
    if "tag" in s:
        t = s["tag"]
        print(f"tag img/s (80 / 1000 labels): numpy on CPU {t['bench_tag_py']['img_s']}, "
              f"torch on device {t['device_scoring_img_s']}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda | cpu (a dry run)")
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu-out")))
    p.add_argument("--models", nargs="*", default=["ViT-B-32", "ViT-B-16"], help="encode models (none: skip)")
    p.add_argument("--n", type=int, default=8192, help="images of the smaller encode run (the larger has 2N)")
    p.add_argument("--unique", type=int, default=1024, help="distinct JPEG files (the rest are links)")
    p.add_argument("--size", type=int, default=256, help="side of the encoded JPEG files")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--partition-size", type=int, default=1024)
    p.add_argument("--decoders", type=int, default=max(1, (os.cpu_count() or 2) - 2), help="decode tasks in flight")
    p.add_argument("--decode-n", type=int, default=2048)
    p.add_argument("--decode-size", type=int, default=512, help="side of the JPEG files of the decode part")
    p.add_argument("--decode-batch", type=int, default=128)
    p.add_argument("--tag-n", type=int, default=2048)
    p.add_argument("--tag-timeout", type=int, default=120)
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    summary: dict = {"bench": "gpu", "args": {k: str(v) for k, v in vars(a).items()}, "anchors": ANCHORS,
                     "env": environment(a.device)}

    def save() -> None:
        summary["total_s"] = round(time.perf_counter() - t0, 1)
        (a.out / "gpu.json").write_text(json.dumps(summary, indent=1))

    save()
    run_parts(a, summary, save)
    save()
    print_table(summary)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
