"""Small vocabularies: each label's precision, recall and F1 with and without background nouns.

    python bench/small_vocab.py [--models toy-vit] [--split test] [--n 1000] [--sizes 2,3,5,8,12,20] [--draws 2]

A team that tags only a handful of things trains a classifier on sentences about those alone; every
other image then finds its nearest label. For each size, ``--draws`` vocabularies are drawn (seeded)
from the toy world's 20 labels; each is trained twice on the offline corpus, with no background nouns
and with the default ones (:mod:`tagger.text.background`: ``min(50, round(400 / n))`` below 16 labels),
and decided as a tag run decides (anchored rule, names gate). Scores are on held-out scenes of
``--split``; the count rule was chosen on ``val``. One JSON line at the end.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from tagger.evaluate.datasets import read_toy
from tagger.evaluate.harness import embed_dataset
from tagger.method.comc import ComcConfig
from tagger.method.decisions import DecisionConfig, fit_anchored
from tagger.method.zeroshot import best_matches
from tagger.models import load_clip
from tagger.pipeline.tag import prompt_vectors
from tagger.text.background import background_count
from tagger.text.comcfit import fit_comc_generated
from tagger.toyworld import LABEL_SYNONYMS, LABELS

DRAW_SEED = 42


def decide(model, data, labels: list[str]) -> dict[str, float]:
    """Mean precision, recall and F1 over ``labels`` of the decisions a tag run makes."""
    s = model.scores(data.global_, data.patches.astype("float32"))
    top1 = best_matches(data.global_, prompt_vectors(model), np.zeros(len(labels), bool))
    pred = fit_anchored(s, labels, model.classifier.anchors, DecisionConfig(), zeroshot_top1=top1).positive(s)
    y = data.labels[:, [LABELS.index(x) for x in labels]].astype(bool)
    tp, npred, ntrue = (pred & y).sum(0), pred.sum(0), y.sum(0)
    return {"precision": float(np.mean(tp / np.maximum(npred, 1))), "recall": float(np.mean(tp / np.maximum(ntrue, 1))),
            "f1": float(np.mean(2 * tp / np.maximum(npred + ntrue, 1))),
            "positives_vs_truth": float(npred.sum() / max(1, ntrue.sum()))}


def evaluate(name: str, split: str, n: int, sizes: list[int], draws: int) -> dict:
    clip = load_clip(name, device="cpu")
    data = embed_dataset(clip, read_toy(n=n, split=split))
    rng = np.random.default_rng(DRAW_SEED)
    rows = []
    for size in sizes:
        for _ in range(draws if size < len(LABELS) else 1):
            labels = [LABELS[i] for i in sorted(rng.choice(len(LABELS), size, replace=False))]
            row: dict = {"size": size, "labels": labels, "background": background_count(size)}
            for key, count in (("without", 0), ("with", None)):
                model = fit_comc_generated(clip, labels, LABEL_SYNONYMS, ComcConfig(background=count))
                row[key] = {k: round(v, 3) for k, v in decide(model, data, labels).items()}
            rows.append(row)
    by_size = {}
    for size in sizes:
        mine = [r for r in rows if r["size"] == size]
        by_size[size] = {key: {m: round(float(np.mean([r[key][m] for r in mine])), 3) for m in mine[0][key]}
                         for key in ("without", "with")}
        by_size[size]["background"] = mine[0]["background"]
    return {"rows": rows, "by_size": by_size}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["toy-vit"])
    p.add_argument("--split", default="test")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--sizes", default="2,3,5,8,12,20")
    p.add_argument("--draws", type=int, default=2)
    a = p.parse_args()
    t0 = time.time()
    sizes = [int(x) for x in a.sizes.split(",")]
    out = {name: evaluate(name, a.split, a.n, sizes, a.draws) for name in a.models}
    for name, r in out.items():
        for size, v in r["by_size"].items():
            print(f"{name} {size:>2} labels ({v['background']:>3} nouns): F1 {v['without']['f1']:.3f} -> {v['with']['f1']:.3f}, "
                  f"precision {v['without']['precision']:.3f} -> {v['with']['precision']:.3f}, "
                  f"recall {v['without']['recall']:.3f} -> {v['with']['recall']:.3f}")
    print(json.dumps({"bench": "small-vocab", "split": a.split, "n": a.n, "seconds": round(time.time() - t0, 1),
                      "results": out}))


if __name__ == "__main__":
    main()
