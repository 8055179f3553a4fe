"""Choose the CoMC inference defaults on the toy world's *validation* split (never on test).

    python bench/tune.py [--model toy-vit toy-rn] [--n 1000]

Grid over memory variant, tau, alpha, local weight and standardisation; ranks settings by the
mean val mAP over the given models (one default must serve every backbone), prints the best
and each model's own best, and ends with a JSON line.
"""
from __future__ import annotations

import argparse
import itertools
import json
from dataclasses import replace

import numpy as np

from tagger.method.comc import ComcConfig, fit_comc
from tagger.evaluate.datasets import read_toy
from tagger.evaluate.harness import embed_dataset
from tagger.evaluate.metrics import mean_average_precision
from tagger.models import load_clip
from tagger.method.scoring import ScoreConfig
from tagger.text import comc_corpus
from tagger.pipeline.tag import TagConfig, label_statistics, positive_mask
from tagger.toyworld import LABEL_SYNONYMS, LABELS

GRID = {
    "memory": ["prompts", "prompts-ensemble", "sentences"],
    "tau": [0.01, 0.03, 0.1],
    "alpha": [0.5, 0.7, 0.9],
    "local_weight": [0.0, 0.25, 0.5, 0.75],
    "standardize": [False, True],
}


def best_threshold(scores, labels) -> tuple[float, float, float]:
    """The positive threshold that maximises micro F1 on val, with the tag stage's rule: labels
    calibrated over the set (``label_statistics``), then ``positive_mask``. Also returns the
    positives per image at that threshold."""
    truth = labels.astype(bool)
    mean, std = label_statistics(scores)
    calibrated = (scores - np.asarray(mean)) / np.asarray(std)
    best_t, best_f1, best_n = 0.0, -1.0, 0.0
    for t in [0.25 * i for i in range(9)]:
        pred = positive_mask(calibrated, t)
        f1 = 2 * (pred & truth).sum() / max(1, pred.sum() + truth.sum())
        if f1 > best_f1:
            best_t, best_f1, best_n = t, float(f1), float(pred.sum(1).mean())
    return best_t, best_f1, best_n


def grid_scores(name: str, n: int) -> tuple[list[tuple[float, ScoreConfig]], tuple]:
    """Val mAP of every grid setting for one model, plus what the threshold search needs."""
    clip = load_clip(name, device="cpu")
    val = embed_dataset(clip, read_toy(n=n, split="val"))
    model = fit_comc(clip, LABELS, LABEL_SYNONYMS, ComcConfig(), corpus=comc_corpus(LABELS, LABEL_SYNONYMS))
    patches = val.patches.astype("float32")
    results = []
    for values in itertools.product(*GRID.values()):
        cfg = replace(ScoreConfig(), **dict(zip(GRID, values)), use_local=values[3] > 0)
        results.append((mean_average_precision(model.scores(val.global_, patches, cfg), val.labels), cfg))
    return results, (model, val, patches)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", nargs="+", default=["toy-vit", "toy-rn"])
    p.add_argument("--n", type=int, default=1000)
    a = p.parse_args()
    per_model = {name: grid_scores(name, a.n) for name in a.model}
    configs = [cfg for _, cfg in next(iter(per_model.values()))[0]]
    table = [(sum(res[i][0] for res, _ in per_model.values()) / len(per_model),
              [res[i][0] for res, _ in per_model.values()], cfg) for i, cfg in enumerate(configs)]
    table.sort(key=lambda r: -r[0])
    print("mean  | " + " | ".join(a.model) + " | setting")
    for m, each, cfg in table[:8]:
        print(f"{m:6.2f} | " + " | ".join(f"{v:6.2f}" for v in each) + f" | {cfg}")
    for name, (res, _) in per_model.items():
        own = max(res, key=lambda r: r[0])
        print(f"{name} alone: best {own[0]:.2f} with {own[1]}")
    best = table[0][2]
    thresholds = {}
    for name, (_, (model, val, patches)) in per_model.items():
        thr, f1, per_image = best_threshold(model.scores(val.global_, patches, best), val.labels)
        thresholds[name] = thr
        print(f"{name}: positive threshold {thr} (val micro-F1 {100 * f1:.1f}, {per_image:.2f} positives per image; "
              f"truth {val.labels.sum(1).mean():.2f}; TagConfig ships {TagConfig.threshold})")
    print(json.dumps({"bench": "tune", "models": a.model, "val_mAP_mean": round(table[0][0], 2),
                      "val_mAP": dict(zip(a.model, [round(v, 2) for v in table[0][1]])),
                      "best": best.to_dict(), "thresholds": thresholds}))


if __name__ == "__main__":
    main()
