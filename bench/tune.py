"""Choose the CoMC inference defaults on the toy world's *validation* split (never on test).

    python bench/tune.py [--model toy-vit] [--n 1000]

Grid over memory variant, tau, alpha, local weight and standardisation; prints the best
settings by val mAP and ends with a JSON line.
"""
from __future__ import annotations

import argparse
import itertools
import json
from dataclasses import replace

from tagger.comc import ComcConfig, fit_comc
from tagger.evaluate.datasets import read_toy
from tagger.evaluate.harness import embed_dataset
from tagger.evaluate.metrics import mean_average_precision
from tagger.models import load_clip
from tagger.scoring import ScoreConfig
from tagger.toyworld import LABEL_SYNONYMS, LABELS

GRID = {
    "memory": ["prompts", "prompts-ensemble", "sentences"],
    "tau": [0.01, 0.03, 0.1],
    "alpha": [0.5, 0.7, 0.9],
    "local_weight": [0.0, 0.25, 0.5, 0.75],
    "standardize": [False, True],
}


def best_threshold(scores, labels) -> tuple[float, float]:
    """The score threshold that maximises micro F1 of positive tags on val."""
    truth = labels.astype(bool)
    best_t, best_f1 = 0.0, -1.0
    for t in [0.5 + 0.25 * i for i in range(11)]:
        pred = scores >= t
        f1 = 2 * (pred & truth).sum() / max(1, pred.sum() + truth.sum())
        if f1 > best_f1:
            best_t, best_f1 = t, float(f1)
    return best_t, best_f1


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="toy-vit")
    p.add_argument("--n", type=int, default=1000)
    a = p.parse_args()
    clip = load_clip(a.model, device="cpu")
    val = embed_dataset(clip, read_toy(n=a.n, split="val"))
    model = fit_comc(clip, LABELS, LABEL_SYNONYMS, ComcConfig())
    patches = val.patches.astype("float32")
    results = []
    for values in itertools.product(*GRID.values()):
        cfg = replace(ScoreConfig(), **dict(zip(GRID, values)), use_local=values[3] > 0)
        results.append((mean_average_precision(model.scores(val.global_, patches, cfg), val.labels), cfg))
    results.sort(key=lambda r: -r[0])
    for m, cfg in results[:8]:
        print(f"{m:6.2f}  {cfg}")
    best = results[0][1]
    thr, f1 = best_threshold(model.scores(val.global_, patches, replace(best, standardize=True)), val.labels)
    print(f"positive threshold {thr} (val micro-F1 {100 * f1:.1f})")
    print(json.dumps({"bench": "tune", "model": a.model, "val_mAP": round(results[0][0], 2),
                      "best": best.to_dict(), "threshold": thr}))


if __name__ == "__main__":
    main()
