"""Seen/unseen benchmark of the heads on the toy world, for each toy model.

    python bench/seen_unseen.py [--models toy-rn toy-vit] [--n 2000] [--n-train 3000] [--n-val 1000]

Split: tagger.evaluate.seen_unseen.TOY_UNSEEN unseen (5 labels), the other 15 seen. Image-trained
heads learn from the train scenes' seen labels; rows are scored on test scenes; every knob (OVML's and
CLIP-Decoder's test-time interpolation, each fusion weight) is chosen on val scenes by the mean of ZSL and GZSL
mAP. Rows: zero-shot CLIP, CoMC text only, OVML, MKT, CLIP-Decoder, few-shot CoMC (16 train images
per seen label), and CoMC's text classifier fused with each image-trained head. Columns: ZSL and
GZSL mAP, F1@3, F1@5. Then the few-shot curve of CoMC with every label novel (k train images per
label, k = 0..16, mean over seeds): the prototype update with its blend and shrinkage chosen on
val, and each update mode at its defaults. Ends with one JSON line of everything.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import numpy as np

from tagger.evaluate.metrics import mean_average_precision
from tagger.evaluate.seen_unseen import SeenUnseenData, fuse_scores, load_seen_unseen
from tagger.evaluate.splits import zsl_gzsl_metrics
from tagger.method.comc import ComcConfig, fit_comc
from tagger.method.heads import IMAGE_HEADS, FewShotConfig, fit_fewshot, fit_head, sample_shots
from tagger.models import load_clip
from tagger.text import comc_corpus
from tagger.toyworld import LABEL_SYNONYMS

COLUMNS = ("mAP", "F1@3", "F1@5")
NAMES = {"ovml": "OVML", "mkt": "MKT", "clip-decoder": "CLIP-Decoder"}
WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
BLENDS = (0.1, 0.2, 0.5, 1.0)  # few-shot prototype update, searched on val
SHRINKAGES = (0.0, 4.0, 16.0)


def row(scores: np.ndarray, data: SeenUnseenData) -> dict[str, float]:
    m = zsl_gzsl_metrics(scores, data.test.labels, data.split)
    return {f"{task.upper()} {c}": round(m[task][c], 2) for task in ("zsl", "gzsl") for c in COLUMNS}


def val_key(scores: np.ndarray, data: SeenUnseenData) -> float:
    m = zsl_gzsl_metrics(scores, data.test.labels, data.split)
    return 0.5 * (m["zsl"]["mAP"] + m["gzsl"]["mAP"])


def both(fn, val: SeenUnseenData, test: SeenUnseenData) -> tuple[np.ndarray, np.ndarray]:
    return fn(val.test), fn(test.test)


def patches(s) -> np.ndarray:
    return s.patches.astype(np.float32)


def image_heads(val: SeenUnseenData, test: SeenUnseenData, knobs: dict) -> dict[str, tuple]:
    """Each image head trained once on the train scenes; OVML's interpolation chosen on val."""
    out = {}
    seen = list(test.split.seen)
    tr = test.train
    for kind in IMAGE_HEADS:
        t0 = time.time()
        head = fit_head(kind, tr.global_, patches(tr), tr.labels[:, seen], test.label_emb, seen=seen)
        cfg = head.module.cfg
        if hasattr(cfg, "interp"):  # OVML and CLIP-Decoder: the test-time mix with CLIP's feature
            best = max((0.0, 0.25, 0.5, 0.75, 1.0), key=lambda lam: val_key(
                _with_cfg(head, replace(cfg, interp=lam)).scores(val.test.global_, patches(val.test)), val))
            head.module.cfg = replace(cfg, interp=best)
            knobs[f"{kind}_interp"] = best
        out[kind] = both(lambda s: head.scores(s.global_, patches(s)), val, test)
        knobs[f"{kind}_fit_s"] = round(time.time() - t0, 1)
    return out


def _with_cfg(head, cfg):
    head.module.cfg = cfg
    return head


def fewshot_map(comc, data: SeenUnseenData, k: int, seeds: int, cfg: FewShotConfig) -> float:
    """Mean mAP over all labels of ``data``'s scenes with k train images per label (every label novel)."""
    tr, te = data.train, data.test
    if k == 0:
        return mean_average_precision(comc.scores(te.global_, patches(te)), te.labels)
    maps = []
    for seed in range(seeds):
        idx = sample_shots(tr.labels, k, seed)
        model = fit_fewshot(comc, tr.global_[idx], tr.labels[idx], replace(cfg, seed=seed))
        maps.append(mean_average_precision(model.scores(te.global_, patches(te)), te.labels))
    return float(np.mean(maps))


def tune_fewshot(comc, val: SeenUnseenData, shots: list[int], seeds: int) -> FewShotConfig:
    """The prototype update's blend and shrinkage with the best mean val mAP over the shot counts."""
    ks = [k for k in shots if k > 0]
    grid = [FewShotConfig(blend=b, shrinkage=sh) for b in BLENDS for sh in SHRINKAGES]
    return max(grid, key=lambda c: np.mean([fewshot_map(comc, val, k, seeds, c) for k in ks]))


def fewshot_curve(comc, test: SeenUnseenData, shots: list[int], seeds: int,
                  tuned: FewShotConfig) -> dict[str, dict[int, float]]:
    """mAP over all labels on test with k train images per label, for the val-chosen prototype
    update and for each mode at its shipped defaults."""
    configs = {"prototype (chosen on val)": tuned, **{m: FewShotConfig(mode=m) for m in ("prototype", "finetune", "both")}}
    base = round(fewshot_map(comc, test, 0, seeds, tuned), 2)  # 0 shots: the text classifier, whatever the mode
    return {name: {k: base if k == 0 else round(fewshot_map(comc, test, k, seeds, cfg), 2) for k in shots}
            for name, cfg in configs.items()}


def evaluate_model(name: str, args) -> dict:
    clip = load_clip(name, device="cpu")
    test = load_seen_unseen(clip, args.n, args.n_train, "test")
    val = load_seen_unseen(clip, args.n_val, args.n_train, "val")
    knobs: dict = {}
    t0 = time.time()
    comc_cfg = ComcConfig(n_sentences=args.n_sentences)
    names = test.test.class_names
    comc = fit_comc(clip, names, LABEL_SYNONYMS, comc_cfg, corpus=comc_corpus(names, LABEL_SYNONYMS, comc_cfg))
    knobs["comc_fit_s"] = round(time.time() - t0, 1)
    scores = {"zero-shot CLIP": both(lambda s: s.global_ @ test.label_emb.T, val, test),
              "CoMC (text only)": both(lambda s: comc.scores(s.global_, patches(s)), val, test)}
    heads = image_heads(val, test, knobs)
    scores.update({NAMES[k]: v for k, v in heads.items()})
    y = test.train.labels.copy()
    y[:, list(test.split.unseen)] = 0
    idx = sample_shots(y[:, list(test.split.seen)], 16, 0)
    tuned = tune_fewshot(comc, val, args.shots, max(1, args.seeds - 1))
    knobs["fewshot_blend"], knobs["fewshot_shrinkage"] = tuned.blend, tuned.shrinkage
    few = fit_fewshot(comc, test.train.global_[idx], y[idx], tuned)
    scores["few-shot CoMC (16/seen label)"] = both(lambda s: few.scores(s.global_, patches(s)), val, test)
    text = scores["CoMC (text only)"]
    for kind in IMAGE_HEADS:
        img = heads[kind]
        # per-label statistics from the val scores: nothing is learnt from the test scenes
        w = max(WEIGHTS, key=lambda w: val_key(fuse_scores(text[0], img[0], w), val))
        knobs[f"fuse_{kind}_weight"] = w
        scores[f"CoMC text + {NAMES[kind]} (fused)"] = (None, fuse_scores(text[1], img[1], w, text[0], img[0]))
    table = {r: row(s[1], test) for r, s in scores.items()}
    curve = fewshot_curve(comc, test, args.shots, args.seeds, tuned)
    return {"table": table, "fewshot_all_novel": curve, "knobs": knobs}


def print_table(name: str, out: dict) -> None:
    cols = list(next(iter(out["table"].values())))
    print(f"\n== {name}: seen/unseen (ZSL = unseen labels only, GZSL = all labels), test split")
    print(f"{'row':36s}" + "".join(f"{c:>11s}" for c in cols))
    for r, m in out["table"].items():
        print(f"{r:36s}" + "".join(f"{m[c]:11.2f}" for c in cols))
    print(f"-- few-shot CoMC, every label novel (mAP, all labels), knobs: {out['knobs']}")
    for mode, pts in out["fewshot_all_novel"].items():
        print(f"{mode:26s}" + "".join(f"  {k}-shot {v:6.2f}" for k, v in pts.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["toy-rn", "toy-vit"])
    ap.add_argument("--n", type=int, default=2000, help="test scenes")
    ap.add_argument("--n-val", type=int, default=None, help="val scenes (default n/2)")
    ap.add_argument("--n-train", type=int, default=3000, help="train scenes the image heads learn from")
    ap.add_argument("--n-sentences", type=int, default=ComcConfig.n_sentences, help="CoMC text corpus size")
    ap.add_argument("--shots", type=int, nargs="+", default=[0, 1, 2, 4, 8, 16])
    ap.add_argument("--seeds", type=int, default=3, help="support sets per shot count")
    args = ap.parse_args()
    args.n_val = args.n_val or max(1, args.n // 2)
    result = {}
    for name in args.models:
        result[name] = evaluate_model(name, args)
        print_table(name, result[name])
    print(json.dumps({"bench": "seen_unseen", "config": vars(args), "results": result}))


if __name__ == "__main__":
    main()
