"""Per-label tag decisions on held-out toy scenes: fitted without labels, against a label-picked oracle.

    python bench/decisions.py [--models toy-rn toy-vit] [--n 2000] [--absent 200] [--tune | --tune-only]

For each model: CoMC scores of the test split (and val, for --tune), then three ways to mark
positives: the per-image standardised rule (threshold 1.0 on the calibrated score), the per-label
mixture fit (``tagger.method.decisions``, fitted on the scores alone, as a tag run does on its corpus),
and an oracle that picks each label's best-F1 threshold on the test labels themselves. Reported:
micro/macro-F1 and their share of the oracle's, positives per image against the truth (mean
absolute error, overall and by object count), the confidence column's expected calibration error
(10 bins), and, with ``--absent`` labels that never occur in the world added to the vocabulary,
positives per image from those labels. Then the fit's time and peak memory at 1,000 and 10,000
labels. ``--tune`` searches the decision knobs on val and prints the best. Ends with a JSON line.
"""
from __future__ import annotations

import argparse
import json
import time
import tracemalloc
from dataclasses import replace

import numpy as np

from tagger.method.comc import ComcConfig, fit_comc
from tagger.method.decisions import DecisionConfig, fit_decisions
from tagger.evaluate.datasets import read_toy
from tagger.evaluate.harness import embed_dataset
from tagger.models import load_clip
from tagger.pipeline.tag import label_statistics, positive_mask
from tagger.toyworld import LABEL_SYNONYMS, LABELS

ABSENT = (
    "accordion anchor apron avocado backpack badge bagel balloon banana bandage banjo barrel basket bathtub "
    "battery beaver bench bicycle binoculars blender blanket boot bottle bracelet bread brick bridge broom "
    "bucket buffalo bulldozer bus butter cabbage cactus calculator camel camera candle canoe carpet carrot "
    "castle caterpillar cauliflower cello chair cheese cherry chimney chisel chocolate clarinet cloud coconut "
    "comb compass cookie corn couch cow crab crayon crocodile cucumber cup curtain cushion dolphin donkey "
    "dragonfly drill drum duck eagle eggplant elephant envelope eraser feather fence ferret fireplace flag "
    "flashlight flute fork fox frog garlic giraffe glove goat gorilla grape guitar hammer hamster harp "
    "helicopter helmet hippo honey horse igloo iguana jacket jar jeans kangaroo kettle kite koala ladder "
    "ladle lamp laptop lemon leopard lettuce lobster lock magnet mango mask mattress microphone mirror "
    "mitten monkey mop motorcycle mouse mushroom napkin necklace needle notebook octopus onion orange ostrich "
    "otter owl paintbrush pancake panda parrot peach peanut pear pelican pencil penguin pepper piano pickle "
    "pig pillow pineapple pizza plate plum potato pumpkin rabbit raccoon radio rake rhino robot rocket "
    "saddle sandwich saxophone scarf scissors scooter seal shark sheep shovel skateboard skunk sled snail "
    "sock sofa spatula spider spoon squirrel stapler strawberry submarine suitcase sweater table teapot "
    "telescope tiger toaster tomato toothbrush tractor train trombone trumpet truck turtle typewriter "
    "vacuum violin volcano waffle wagon walrus wallet watermelon whale whistle wolf yacht zebra").split()


def f1(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(micro-F1, macro-F1) in percent over label columns."""
    tp, npred, ntrue = (pred & truth).sum(0), pred.sum(0), truth.sum(0)
    micro = 2 * tp.sum() / max(1, npred.sum() + ntrue.sum())
    macro = np.mean(2 * tp / np.maximum(1, npred + ntrue))
    return 100 * float(micro), 100 * float(macro)


def oracle(scores: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Positives at each label's best-F1 threshold, chosen on the truth."""
    out = np.zeros_like(truth, bool)
    for j in range(truth.shape[1]):
        order = np.argsort(-scores[:, j], kind="stable")
        tp = np.cumsum(truth[order, j])
        f = 2 * tp / (np.arange(1, len(order) + 1) + truth[:, j].sum())
        k = int(np.argmax(f)) + 1
        out[order[:k], j] = True
    return out


def ece(conf: np.ndarray, truth: np.ndarray, bins: int = 10) -> float:
    c, t = conf.ravel(), truth.ravel().astype(np.float64)
    b = np.minimum((c * bins).astype(int), bins - 1)
    return float(sum(abs(c[b == i].mean() - t[b == i].mean()) * (b == i).mean() for i in range(bins) if (b == i).any()))


def today_rule(scores: np.ndarray) -> np.ndarray:
    mean, std = (np.asarray(v) for v in label_statistics(scores[:4096]))
    return positive_mask((scores - mean) / std, 1.0)


def count_report(pred: np.ndarray, truth: np.ndarray) -> dict:
    n_true, n_pred = truth.sum(1), pred.sum(1)
    out = {"positives_per_image": round(float(n_pred.mean()), 2), "truth_per_image": round(float(n_true.mean()), 2),
           "mae": round(float(np.abs(n_pred - n_true).mean()), 2)}
    out["mae_by_objects"] = {int(k): round(float(np.abs(n_pred - n_true)[n_true == k].mean()), 2)
                             for k in np.unique(n_true)}
    return out


def rule_report(pred: np.ndarray, truth: np.ndarray, best: tuple[float, float]) -> dict:
    mi, ma = f1(pred, truth)
    return {"micro_F1": round(mi, 1), "macro_F1": round(ma, 1), "micro_vs_oracle": round(mi / best[0], 3),
            "macro_vs_oracle": round(ma / best[1], 3), **count_report(pred, truth)}


def evaluate_model(name: str, n: int, n_absent: int, dcfg: DecisionConfig, tune: bool) -> dict:
    clip = load_clip(name, device="cpu")
    test = embed_dataset(clip, read_toy(n=n, split="test"))
    y = test.labels.astype(bool)
    model = fit_comc(clip, LABELS, LABEL_SYNONYMS, ComcConfig())
    s = model.scores(test.global_, test.patches.astype("float32"))
    best = f1(oracle(s, y), y)
    d = fit_decisions(s, list(LABELS), dcfg)
    res = {"oracle": {"micro_F1": round(best[0], 1), "macro_F1": round(best[1], 1)},
           "standardised rule": rule_report(today_rule(s), y, best),
           "per-label mixture": {**rule_report(d.positive(s), y, best), "ECE": round(ece(d.confidence(s), y), 4)}}
    if n_absent:
        res["absent"] = absent_report(clip, test, y, n_absent, dcfg)
    if tune:
        res["tune"] = tune_on_val(clip, n, n_absent)
    return res


def absent_report(clip, test, y: np.ndarray, n_absent: int, dcfg: DecisionConfig) -> dict:
    labels = list(LABELS) + ABSENT[:n_absent]
    per_label = ComcConfig().n_sentences // len(LABELS)
    cfg = replace(ComcConfig(), n_sentences=per_label * len(labels), memory_size=20000)
    model = fit_comc(clip, labels, LABEL_SYNONYMS, cfg)
    s = model.scores(test.global_, test.patches.astype("float32"))
    k = len(LABELS)
    out = {"n_absent_labels": n_absent}
    for rule, pred in (("standardised rule", today_rule(s)), ("per-label mixture", fit_decisions(s, labels, dcfg).positive(s))):
        mi, ma = f1(pred[:, :k], y)
        out[rule] = {"absent_positives_per_image": round(float(pred[:, k:].sum(1).mean()), 3),
                     "absent_labels_tagged": int(pred[:, k:].any(0).sum()),
                     "micro_F1_world_labels": round(mi, 1), "macro_F1_world_labels": round(ma, 1)}
    return out


def tune_on_val(clip, n: int, n_absent: int) -> dict:
    """The decision knobs with the best micro-F1 on val over the world's labels plus ``n_absent``
    labels that never occur (a positive of those is a false positive), as a vocabulary meets a corpus."""
    val = embed_dataset(clip, read_toy(n=n, split="val"))
    labels = list(LABELS) + ABSENT[:n_absent]
    y = np.zeros((len(val.labels), len(labels)), bool)
    y[:, :len(LABELS)] = val.labels.astype(bool)
    per_label = ComcConfig().n_sentences // len(LABELS)
    model = fit_comc(clip, labels, LABEL_SYNONYMS, replace(ComcConfig(), n_sentences=per_label * len(labels),
                                                           memory_size=20000))
    s = model.scores(val.global_, val.patches.astype("float32"))
    grid = []
    for sep in (1.0, 1.5, 2.0, 2.5):
        for gain in (0.5, 1.0, 2.0, 3.0):
            for cutoff in (0.3, 0.4, 0.5):
                cfg = DecisionConfig(min_separation=sep, min_gain=gain, cutoff=cutoff)
                pred = fit_decisions(s, labels, cfg).positive(s)
                mi, ma = f1(pred, y)
                k = len(LABELS)
                grid.append({"min_separation": sep, "min_gain": gain, "cutoff": cutoff, "micro_F1": round(mi, 1),
                             "world_macro_F1": round(f1(pred[:, :k], y[:, :k])[1], 1),
                             "world_present": int(pred[:, :k].any(0).sum()),
                             "absent_tagged": int(pred[:, k:].any(0).sum()),
                             "positives_per_image": round(float(pred.sum(1).mean()), 2)})
    grid.sort(key=lambda r: -r["micro_F1"])
    return {"best": grid[0], "default": next((r for r in grid if r["min_separation"] == DecisionConfig.min_separation
                                              and r["min_gain"] == DecisionConfig.min_gain
                                              and r["cutoff"] == DecisionConfig.cutoff), None),
            "top5": grid[:5], "truth_positives_per_image": round(float(y.sum(1).mean()), 2)}


def fit_cost(n_labels: int, n_images: int = 4096, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    s = rng.normal(size=(n_images, n_labels)).astype(np.float32)
    s[rng.random(s.shape) < 0.02] += 4.0
    tracemalloc.start()
    t0 = time.perf_counter()
    d = fit_decisions(s, [f"l{i}" for i in range(n_labels)])
    d.thresholds()
    dt = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {"labels": n_labels, "images": n_images, "fit_s": round(dt, 2), "peak_MB": round(peak / 2**20, 1),
            "input_MB": round(s.nbytes / 2**20, 1), "present": int(d.present.sum())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["toy-rn", "toy-vit"])
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--absent", type=int, default=200)
    p.add_argument("--tune", action="store_true")
    p.add_argument("--tune-only", action="store_true", help="only the search on val (no test split, no scale)")
    p.add_argument("--scale", nargs="*", type=int, default=[1000, 10000])
    a = p.parse_args()
    dcfg = DecisionConfig()
    if a.tune_only:
        tuned = {name: tune_on_val(load_clip(name, device="cpu"), a.n, a.absent) for name in a.models}
        for name, r in tuned.items():
            print(f"{name}: best on val {r['best']}\n  default {r['default']}\n  truth positives/image "
                  f"{r['truth_positives_per_image']}")
        print(json.dumps({"bench": "decisions-tune", "n_val": a.n, "n_absent": a.absent, "results": tuned}))
        return
    out = {name: evaluate_model(name, a.n, a.absent, dcfg, a.tune) for name in a.models}
    for name, res in out.items():
        print(f"\n{name}: oracle micro/macro-F1 {res['oracle']['micro_F1']} / {res['oracle']['macro_F1']}")
        for rule in ("standardised rule", "per-label mixture"):
            r = res[rule]
            print(f"  {rule:18s} micro {r['micro_F1']:5.1f} ({r['micro_vs_oracle']:.2f} of oracle)  macro "
                  f"{r['macro_F1']:5.1f} ({r['macro_vs_oracle']:.2f})  positives/image {r['positives_per_image']} "
                  f"vs {r['truth_per_image']} (MAE {r['mae']})" + (f"  ECE {r['ECE']}" if "ECE" in r else ""))
        if "tune" in res:
            print(f"  tuned on val: {res['tune']['best']}")
        if "absent" in res:
            for rule in ("standardised rule", "per-label mixture"):
                r = res["absent"][rule]
                print(f"  + {a.absent} absent labels, {rule}: {r['absent_positives_per_image']} absent positives/image, "
                      f"{r['absent_labels_tagged']} absent labels tagged at all")
    scale = [fit_cost(k) for k in a.scale]
    for row in scale:
        print(f"fit at {row['labels']:,} labels x {row['images']:,} images: {row['fit_s']} s, peak {row['peak_MB']} MB "
              f"(input {row['input_MB']} MB)")
    print(json.dumps({"bench": "decisions", "n_test": a.n, "config": dcfg.to_dict(), "results": out, "scale": scale}))


if __name__ == "__main__":
    main()
