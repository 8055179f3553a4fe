"""Per-image marginal cost of a nightly against a full re-encode, projected to a large corpus.

    python bench/nightly.py [--model ViT-B-16] [--n-encode 64] [--n-tag 2048] [--labels 1000 10000] [--add 10]
    python bench/nightly.py --toy-change [--n 1000] [--labels 1000 10000] [--work DIR]  # mAP: incremental vs full retrain
    python bench/nightly.py --toy [--n 1000]    # toy world: end-to-end ratio and the mAP cost of PQ

Re-encode: toy scenes saved as JPEG at --size px, encoded by ``run_encode`` (decode, global and
patch features, shards, catalog, FAISS stores) into fresh workspaces of N and 2N images, with the
model's random weights (``pretrained=None``). Nightlies: copies of the 2N workspace grown to --n-tag
images and to twice that (extra images are links to the same JPEG files, their stored embeddings
copies of the encoded ones, registered from a manifest as the nightly registers new images). In each,
--labels made-up labels start with a corpus whose text embeddings, and those of their class prompts,
are random unit vectors (untimed: the text tower has random weights too); then

- ``full`` (label counts in --full-labels): a timed nightly with no run before it trains the
  classifier on that corpus and tags every image with every label. Other label counts get the same
  starting run untimed, from a classifier with random rows (training 10,000 labels on 2 CPUs takes
  hours; the weights are random anyway);
- both starting runs hold about --start-positives positive tags per image: the random weights give
  every label noise for scores, which a fitted rule would call positive in a large share of the
  images (over 150 labels per image at 1,000), so each starting label's threshold is pinned, as a
  user pins one, at the calibrated score a standard normal exceeds with probability
  start_positives / labels. The cost of carrying tags over follows the tags, so this keeps it real;
- ``incremental``: --add labels are added and a timed nightly runs; it picks the incremental mode
  (10 of 1,000 labels is 1 %), extends the corpus (offline generator, --n-sentences label sets),
  embeds its new sentences and the new labels' prompts, trains only the new rows and scores and
  decides only the new columns, carrying the rest over.

The nightlies at 2 x --n-tag images run before those at --n-tag: whatever a first run pays once
(workers started, files first read) lands on the larger corpus, so the marginal is an upper bound
(run the other way round, on a machine loaded by other jobs, it came out negative).
Marginal cost per image = (cost at 2N - cost at N) / N; fixed cost = cost at N - N x marginal, on
two clocks: wall seconds, and CPU seconds of this process and its descendants (Ray's processes and
workers, sampled in a thread), which stays meaningful on a shared, busy machine; ``ratio`` uses CPU
seconds and ``ratio_wall`` wall seconds. A nightly's text and train stages are metered around their
calls and count in full as fixed cost. The calibration sample is min(--n-tag, 4096) images in both
nights, so it cancels; the projection adds the rest of the default 4,096-image sample at the marginal
rate. Ray starts once, before any clock (its start is reported apart), and an untimed encode of 4
images warms its workers first. The projection at --project images is (fixed + images x
marginal) of the nightly over the same of the re-encode, per mode and label count. Ends with one
JSON line. The quality side (``--toy-change``) is in ``bench/nightly_toy.py``.
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from encode import make_images
from nightly_toy import change_main, toy_main
from tagger.catalog import Catalog
from tagger.models.registry import model_id_for
from tagger.pipeline.encode import EncodeConfig, register_source, run_encode
from tagger.pipeline.nightly import NightlyConfig, run_nightly
from tagger.pipeline.raycluster import ray_session
from tagger.pipeline.tag import TagConfig
from tagger.store import list_done_shards, load_shard, model_dir, shard_name_for, write_shard
from tagger.store.updates import update_indexes
from tagger.workspace import Workspace

AIM_INCREMENTAL, AIM_FULL = 1 / 1000, 1 / 100  # of a re-encode, projected to --project images
TEXT_TRAIN = ("run_generate_text", "run_nightly_train", "run_train", "train_increment")  # the nightly's image-independent stages


def label_names(n: int) -> list[str]:
    """``n`` distinct made-up words (three syllables, a fourth from the 4,901st on), the same for every call."""
    syl = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
    return [syl[i % 70] + syl[i // 70 % 70] + syl[(7 * i + 3) % 70] + (syl[i // 4900 % 70] if i >= 4900 else "")
            for i in range(n)]


def unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


class CpuMeter:
    """CPU seconds used by this process and its descendants (Ray's processes and workers). A thread
    samples them every ``interval`` s and a process that exits keeps its last sample, so at most one
    interval of its work goes uncounted."""

    def __init__(self, interval: float = 0.25) -> None:
        import psutil  # Ray bundles it

        self.psutil, self.me, self.seen = psutil, psutil.Process(), {}
        self.lock, self.done = threading.Lock(), threading.Event()
        self.thread = threading.Thread(target=self._run, args=(interval,), daemon=True)
        self.thread.start()

    def total(self) -> float:
        with self.lock:
            for proc in [self.me, *self.me.children(recursive=True)]:
                try:
                    t = proc.cpu_times()
                    self.seen[(proc.pid, proc.create_time())] = t.user + t.system
                except self.psutil.Error:
                    pass
            return sum(self.seen.values())

    def _run(self, interval: float) -> None:
        while not self.done.wait(interval):
            self.total()

    def close(self) -> None:
        self.done.set()
        self.thread.join()


METER: CpuMeter | None = None


def timed(fn, *args, **kw) -> tuple[object, float, float]:
    """``fn``'s result, wall seconds and CPU seconds (:class:`CpuMeter`)."""
    c, t = METER.total(), time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t, METER.total() - c


@contextmanager
def metered(module, names: tuple[str, ...]) -> Iterator[dict]:
    """Meter the calls of ``module``'s functions ``names`` (those it has): yields {"s", "cpu_s"} totals."""
    spent, saved = {"s": 0.0, "cpu_s": 0.0}, {n: getattr(module, n) for n in names if hasattr(module, n)}

    def wrap(fn):
        def call(*args, **kw):
            out, wall, cpu = timed(fn, *args, **kw)
            spent["s"], spent["cpu_s"] = spent["s"] + wall, spent["cpu_s"] + cpu
            return out
        return call

    for name, fn in saved.items():
        setattr(module, name, wrap(fn))
    try:
        yield spent
    finally:
        for name, fn in saved.items():
            setattr(module, name, fn)


def marginal(n: int, wall: list[float], cpu: list[float]) -> dict:
    """Wall and CPU seconds per image of the extra n images, and the fixed costs left at n images."""
    per, per_cpu = (wall[1] - wall[0]) / n, (cpu[1] - cpu[0]) / n
    return {"s": wall, "cpu_s": cpu, "marginal_s": per, "fixed_s": wall[0] - n * per,
            "marginal_cpu_s": per_cpu, "fixed_cpu_s": cpu[0] - n * per_cpu}


def encode_costs(tmp: Path, a: argparse.Namespace) -> tuple[dict, Workspace, Path]:
    """Full encodes of N and 2N JPEGs into fresh workspaces; returns costs, the 2N workspace, its folder."""
    folders = make_images(tmp / "jpeg", a.n_encode, a.size)
    cfg = EncodeConfig(model=a.model, partition_size=a.partition_size, batch_size=a.batch_size)
    warm = tmp / "jpeg" / "warm-up"  # untimed: Ray workers and file caches start warm for both runs
    warm.mkdir()
    for f in sorted(folders[0].iterdir())[:4]:
        (warm / f.name).hardlink_to(f)
    run_encode(Workspace.at(tmp / "encode-warm-up"), str(warm), cfg, progress=False)
    wall, cpu, stats = [], [], []
    for folder in folders:
        ws = Workspace.at(tmp / f"encode-{folder.name}")
        st, w, c = timed(run_encode, ws, str(folder), cfg, progress=False)
        wall, cpu, stats = wall + [w], cpu + [c], stats + [st]
    out = {"n": [a.n_encode, 2 * a.n_encode], **marginal(a.n_encode, wall, cpu),
           "index_s": [round(s.get("total_s", 0) - s.get("encode_s", 0), 2) for s in stats]}
    return out, ws, folders[1]


class Grower:
    """Adds images to a copy of an encoded workspace: links to its JPEG files, listed in a manifest,
    registered as the nightly registers a source, with copies of the stored embeddings."""

    def __init__(self, src: Workspace, root: Path, model_id: str) -> None:
        shutil.copytree(src.root, root)
        self.ws, self.model_id = Workspace.at(root), model_id
        shards = [load_shard(model_dir(root, model_id) / s, mmap=False) for s in list_done_shards(root, model_id)]
        ids = np.concatenate([s.ids for s in shards])
        self.g = np.concatenate([s.global_vecs for s in shards])
        self.p = np.concatenate([s.patches for s in shards])
        with Catalog.open(self.ws.catalog) as cat:
            uris, hashes = cat.uris_of(ids), cat.content_hashes(ids)
        self.files = [Path(uris[int(i)]) for i in ids]
        self.hashes = [hashes[int(i)] for i in ids]
        self.uris = [uris[int(i)] for i in ids]
        self.manifest = root.parent / f"{root.name}-images.txt"
        self.links = root.parent / f"{root.name}-images"
        self.links.mkdir()
        self.source: dict[str, int] = {}  # link uri -> row of the encoded image it copies

    def grow(self, n: int, chunk: int = 256) -> None:
        """Bring the workspace to ``n`` images and its indexes up to date."""
        for j in range(len(self.uris), n):
            k = j % len(self.files)
            link = self.links / f"x{j:07d}{self.files[k].suffix}"
            link.hardlink_to(self.files[k])
            self.uris.append(str(link))
            self.source[str(link)] = k
        self.manifest.write_text("\n".join(self.uris) + "\n")
        root = str(self.ws.root)
        with Catalog.open(self.ws.catalog) as cat:
            register_source(cat, str(self.manifest))
            pending = cat.pending_images(self.model_id)
            for i in range(0, len(pending), chunk):
                ids = np.array([p[0] for p in pending[i:i + chunk]], np.int64)
                rows = [self.source[p[1]] for p in pending[i:i + chunk]]
                name = shard_name_for(ids)
                write_shard(root, self.model_id, name, ids, self.g[rows], self.p[rows])
                cat.record_encodings(ids, self.model_id, [self.hashes[r] for r in rows], name)
        update_indexes(root, self.model_id)


def seed_vocabulary(ws: Workspace, model_id: str, names: list[str], n_sentences: int, dim: int) -> None:
    """Activate ``names`` with a corpus whose text embeddings (and class prompts') are random unit vectors."""
    from tagger.method.zeroshot import ENSEMBLE_PROMPTS
    from tagger.pipeline.text import run_generate_text
    from tagger.pipeline.train import write_text_embeddings
    from tagger.text import TextCorpus

    rng = np.random.default_rng(0)
    with Catalog.open(ws.catalog) as cat:
        cat.add_labels(names)
    corpus_id = run_generate_text(ws, n_sentences)["corpus_id"]
    n = len(TextCorpus.load(ws.text_dir(corpus_id)).sentences)
    np.save(ws.text_embeddings(corpus_id, model_id), unit_rows(rng, n, dim))
    prompts = [t.format(c) for c in names for t in ENSEMBLE_PROMPTS]
    write_text_embeddings(ws.prompt_embeddings(model_id), dict(zip(prompts, unit_rows(rng, len(prompts), dim))))


def pin_start(ws: Workspace, names: list[str], per_image: float) -> float:
    """Pin every label of ``names`` where about ``per_image`` of them are positive per image (module docstring)."""
    from scipy.stats import norm

    z = float(norm.isf(min(1.0, per_image / len(names))))
    with Catalog.open(ws.catalog) as cat:
        for name in names:
            cat.set_threshold(name, z)
    return z


def random_classifier(ws: Workspace, model_id: str, names: list[str], dim: int) -> str:
    """A CoMC classifier over ``names`` with random rows and the seeded class prompts as its memory,
    recorded as trained (timing only: the model has random weights anyway)."""
    from dataclasses import asdict

    from tagger.method.classifier import TextClassifier, TrainConfig
    from tagger.method.comc import ComcModel, save_comc
    from tagger.method.mapping import MemoryBank
    from tagger.method.scoring import ScoreConfig
    from tagger.method.zeroshot import ENSEMBLE_PROMPTS
    from tagger.pipeline.train import read_text_embeddings

    with Catalog.open(ws.catalog) as cat:
        corpus_id = cat.corpora()[-1]["corpus_id"]
    known = read_text_embeddings(ws.prompt_embeddings(model_id))
    single = np.stack([known[ENSEMBLE_PROMPTS[0].format(n)] for n in names])
    ensemble = np.stack([np.mean([known[t.format(n)] for t in ENSEMBLE_PROMPTS], 0) for n in names])
    clf = TextClassifier(unit_rows(np.random.default_rng(1), len(names), dim), names, model_id, corpus_id)
    cid = f"random-{len(names)}"
    save_comc(ComcModel(clf, {"prompts": MemoryBank(single), "prompts-ensemble": MemoryBank(ensemble)},
                        ScoreConfig()), ws.classifier_dir(cid))
    with Catalog.open(ws.catalog) as cat:
        cat.add_classifier(cid, model_id=model_id, labels=names, corpus_id=corpus_id,
                           config={"train": asdict(TrainConfig()), "score": asdict(ScoreConfig())},
                           path=ws.relative(ws.classifier_dir(cid)))
    return cid


def nightly_once(ws: Workspace, source: Path, a: argparse.Namespace, cal: int) -> dict:
    """One timed nightly run: wall and CPU seconds in all, and those of its text and train stages."""
    import tagger.pipeline.nightly as nightly_module

    enc = EncodeConfig(model=a.model, partition_size=a.partition_size, batch_size=a.batch_size)
    cfg = NightlyConfig(n_sentences=a.n_sentences, tag=TagConfig(calibration_images=cal))
    with metered(nightly_module, TEXT_TRAIN) as text_train:
        out, wall, cpu = timed(run_nightly, ws, str(source), enc, cfg)
    with Catalog.open(ws.catalog, read_only=True) as cat:
        run = cat.get_run(out["run_id"])
    return {"s": wall, "cpu_s": cpu, "rest_s": wall - text_train["s"], "rest_cpu_s": cpu - text_train["cpu_s"],
            "text_train_s": text_train["s"], "text_train_cpu_s": text_train["cpu_s"], "stages": out["timings"],
            "n_tags": run.n_tags, "n_images": run.n_images, "labels": len(run.labels or []), "mode": out["mode"],
            "new_sentences": out["text_stats"].get("new_sentences", 0)}


def _summary(a: argparse.Namespace, runs: list[dict], cal: int) -> dict:
    """Marginal and fixed costs of two timed nightlies (at --n-tag and twice as many images)."""
    cost = marginal(a.n_tag, [r["rest_s"] for r in runs], [r["rest_cpu_s"] for r in runs])
    cost["fixed_s"] += runs[0]["text_train_s"]
    cost["fixed_cpu_s"] += runs[0]["text_train_cpu_s"]
    tag_s = [r["stages"]["tag"] for r in runs]
    out = {"n": [a.n_tag, 2 * a.n_tag], "labels": [r["labels"] for r in runs], "mode": runs[0]["mode"], **cost,
           "marginal_tag_stage_s": (tag_s[1] - tag_s[0]) / a.n_tag, "stages": [r["stages"] for r in runs],
           "calibration_images": cal, "tags_per_image": runs[1]["n_tags"] / max(1, runs[1]["n_images"]),
           "new_sentences": [r["new_sentences"] for r in runs]}
    for key in ("total_s", "total_cpu_s", "text_train_s", "text_train_cpu_s"):
        out[key] = [r[key.replace("total_", "")] for r in runs]
    return out


def retag_costs(tmp: Path, src: Workspace, labels: int, a: argparse.Namespace) -> dict[str, dict]:
    """At --n-tag and twice as many images: a full nightly at ``labels`` labels (timed when ``labels``
    is in --full-labels; else the same run made untimed by tagging with a random classifier), then
    +--add labels, timed (incremental: the mode the nightly picks)."""
    from tagger.pipeline.tag import run_tag
    model_id = model_id_for(a.model)
    names = label_names(labels + a.add)
    cal = min(a.n_tag, TagConfig.calibration_images)
    full, inc = [], []
    for n in (2 * a.n_tag, a.n_tag):  # the larger first: a first run's warm-up lands on it (marginal: upper bound)
        grower = Grower(src, tmp / f"retag-{labels}-{n}", model_id)
        grower.grow(n)
        seed_vocabulary(grower.ws, model_id, names[:labels], a.n_sentences, grower.g.shape[1])
        if a.start_positives > 0:
            pin_start(grower.ws, names[:labels], a.start_positives)
        if labels in a.full_labels:
            full.append(nightly_once(grower.ws, grower.manifest, a, cal))
        else:
            cid = random_classifier(grower.ws, model_id, names[:labels], grower.g.shape[1])
            run_tag(grower.ws, model_id, TagConfig(calibration_images=cal), cid)
        with Catalog.open(grower.ws.catalog) as cat:
            cat.add_labels(names[labels:])
        inc.append(nightly_once(grower.ws, grower.manifest, a, cal))
        shutil.rmtree(grower.ws.root)  # GBs of copied shards at ViT-B/16 size
        shutil.rmtree(grower.links)
    out = {"incremental": _summary(a, inc[::-1], cal)}
    if full:
        out["full"] = _summary(a, full[::-1], cal)
    return out


def project(images: float, enc: dict, tag: dict, clock: str = "") -> float:
    """Projected nightly / re-encode time at ``images`` on one clock ("" wall, "cpu_" CPU); fixed
    costs floored at 0, the rest of the default calibration sample added at the marginal rate."""
    m, f = f"marginal_{clock}s", f"fixed_{clock}s"
    extra_cal = max(0, TagConfig.calibration_images - tag["calibration_images"]) * tag[m]
    nightly = max(0.0, tag[f]) + extra_cal + images * tag[m]
    return nightly / (max(0.0, enc[f]) + images * enc[m])


def report(a: argparse.Namespace, ray_s: float, enc: dict, tags: dict[int, dict[str, dict]], bench_s: float) -> None:
    print(f"model {a.model} (random weights), JPEG {a.size} px, Ray start {ray_s:.1f} s (not counted)")
    print(f"{'part':<26} | {'images':>11} | {'wall s':>13} | {'CPU s':>13} | {'marginal s/img':>15} | "
          f"{'fixed s':>11}")
    rows = [("re-encode", enc)] + [(f"{mode} {k}" + (f" +{a.add}" if mode == "incremental" else ""), v)
                                   for k, modes in tags.items() for mode, v in modes.items()]
    for name, r in rows:
        print(f"{name:<26} | {r['n'][0]:>5}/{r['n'][1]:<5} | {r['s'][0]:>6.1f}/{r['s'][1]:<6.1f} | "
              f"{r['cpu_s'][0]:>6.1f}/{r['cpu_s'][1]:<6.1f} | {r['marginal_s']:>6.4f} {r['marginal_cpu_s']:>6.4f}cpu "
              f"| {r['fixed_s']:>5.1f} {r['fixed_cpu_s']:>5.1f}")
    ratios: dict[str, dict[str, float]] = {}
    walls: dict[str, dict[str, float]] = {}
    for k, modes in tags.items():
        for mode, r in modes.items():
            ratios.setdefault(mode, {})[str(k)] = project(a.project, enc, r, "cpu_")
            walls.setdefault(mode, {})[str(k)] = project(a.project, enc, r)
            print(f"{mode} nightly at {k} labels: stages (wall s) {r['stages'][0]} / {r['stages'][1]}; "
                  f"{r['tags_per_image']:.1f} tags per image; marginal nightly/re-encode "
                  f"{r['marginal_cpu_s'] / enc['marginal_cpu_s']:.5f} CPU; projected at {a.project:,.0f} images: "
                  f"1/{1 / ratios[mode][str(k)]:.0f} CPU, 1/{1 / walls[mode][str(k)]:.0f} wall")
    print(f"aims: incremental <= 1/{1 / AIM_INCREMENTAL:.0f}, full at 1,000 labels <= 1/{1 / AIM_FULL:.0f}; "
          f"bench took {bench_s:.0f} s")
    rnd = lambda d: {k: round(v, 6) if isinstance(v, float) else v for k, v in d.items()}
    print(json.dumps({"bench": "nightly", "model": a.model, "size": a.size, "ray_start_s": round(ray_s, 2),
                      "added": a.add, "encode": rnd(enc),
                      "retag": {str(k): {m: rnd(v) for m, v in modes.items()} for k, modes in tags.items()},
                      "projected_images": a.project,
                      "ratio": {m: {k: round(v, 7) for k, v in r.items()} for m, r in ratios.items()},
                      "ratio_wall": {m: {k: round(v, 7) for k, v in r.items()} for m, r in walls.items()},
                      "aim_incremental": AIM_INCREMENTAL, "aim_full": AIM_FULL, "bench_s": round(bench_s, 1)}))


def marginal_main(a: argparse.Namespace) -> None:
    global METER
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="tagger-bench-nightly-"))
    try:
        with ray_session():
            ray_s = time.perf_counter() - t0
            METER = CpuMeter()
            enc, ws, _ = encode_costs(tmp, a)
            tags = {k: retag_costs(tmp, ws, k, a) for k in a.labels}
            METER.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report(a, ray_s, enc, tags, time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="ViT-B-16", help="open_clip architecture, random weights")
    p.add_argument("--size", type=int, default=224, help="side of the JPEG files")
    p.add_argument("--n-encode", type=int, default=64, help="images of the smaller re-encode (the larger has 2N)")
    p.add_argument("--n-tag", type=int, default=2048, help="images of the smaller re-tag (the larger has 2N)")
    p.add_argument("--labels", type=int, nargs="+", default=[1000, 10000], help="label counts before the change")
    p.add_argument("--full-labels", type=int, nargs="*", default=[1000],
                   help="label counts whose full nightly is timed too (the others start from an untimed run)")
    p.add_argument("--add", type=int, default=10, help="labels the timed incremental nightly adds")
    p.add_argument("--start-positives", type=float, default=5.0,
                   help="positive tags per image the starting run holds (0: as its rule decides)")
    p.add_argument("--n-sentences", type=int, default=2000, help="label sets of the text corpus")
    p.add_argument("--partition-size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--project", type=float, default=1e6, help="corpus size of the projected ratio")
    p.add_argument("--toy", action="store_true", help="the toy-world comparison and the mAP cost of PQ instead")
    p.add_argument("--toy-change", action="store_true",
                   help="the toy world's mAP after +10 labels to each --labels: incremental against full retrain")
    p.add_argument("--n", type=int, default=1000, help="--toy, --toy-change: images")
    p.add_argument("--toy-model", default="toy-vit", help="--toy, --toy-change: model")
    p.add_argument("--toy-sentences", type=int, default=20000, help="--toy-change: label sets of the corpus")
    p.add_argument("--work", default=None,
                   help="--toy-change: a folder kept after the run; a rerun resumes there, skipping finished steps")
    a = p.parse_args()
    if a.toy:
        toy_main(a)
    elif a.toy_change:
        change_main(a)
    elif a.n_tag < 2 * a.n_encode or not 0 < a.add < min(a.labels):
        p.error("--n-tag must be at least 2 x --n-encode, and 0 < --add < every --labels")
    else:
        marginal_main(a)


if __name__ == "__main__":
    main()
