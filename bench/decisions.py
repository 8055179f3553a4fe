"""Per-label tag decisions on held-out toy scenes: fitted without labels, against a label-picked oracle.

    python bench/decisions.py [--models toy-rn toy-vit] [--n 2000] [--absent 200] [--tune | --tune-only]

For each model: CoMC scores of the test split (and val, for --tune), then the ways to mark
positives: the per-image standardised rule (threshold 1.0 on the calibrated score), the per-label
mixture fit on the scores alone, and the anchored rule, the default (positives on the classifier's
text scale, negatives and prior fitted on the scores; both in ``tagger.method.decisions``, fitted as a tag run does
on its corpus), against an oracle that picks each label's best-F1 threshold on the test labels
themselves. Also: a corpus from which four world labels are withheld (scenes showing them dropped). Reported:
micro/macro-F1 and their share of the oracle's, positives per image against the truth (mean
absolute error, overall and by object count), the confidence column's expected calibration error
(10 bins), and, with ``--absent`` labels that never occur in the world added to the vocabulary,
positives per image from those labels. Then the fit's time and peak memory at 1,000 and 10,000
labels. ``--tune`` first searches the anchored rule's knobs on each model's val scenes (n/2, with the
absent labels in the vocabulary) and evaluates the test split with the best of them; ``--tune-only``
searches val alone, with the first drawn noun list of ``bench/changes.py`` as the absent labels, and
prints the one setting best over all the models given (the shipped defaults come from ``--tune-only
--n 1000`` over toy-rn and toy-vit, and ``bench/changes.py``'s edits on val). Then the section of changes
(``bench/changes.py``, skipped with ``--no-changes``): per-label F1 against each label's oracle,
vocabulary edits (unknown-word synonyms, parents, a label retired and re-added) and absence on five
drawn noun lists, and every image head behind the guard (``bench/heads_guard.py``). Ends with a
JSON line.
"""
from __future__ import annotations

import argparse
import json
import time
import tracemalloc
from dataclasses import replace

import numpy as np

from changes import evaluate as evaluate_changes, named, noun_classifier, noun_lists, summary_lines as change_lines
from tagger.method.comc import ComcConfig
from tagger.text.comcfit import fit_comc_generated
from tagger.method.decisions import DecisionConfig, TextAnchors, fit_anchored, fit_decisions
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
    "mitten monkey mop motorcycle mouse mushroom napkin necklace needle notebook octopus onion walnut ostrich "
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


RULES = ("standardised rule", "per-label mixture", "anchored")
WITHHELD = ("star", "key", "ring", "moon")  # world labels the classifier knows, left out of a corpus


def decide(rule: str, s: np.ndarray, labels: list[str], model, dcfg: DecisionConfig, top1=None):
    """(positives, confidence or None) of one rule on raw scores ``s``."""
    if rule == "standardised rule":
        return today_rule(s), None
    d = fit_decisions(s, labels, dcfg) if rule == "per-label mixture" else \
        fit_anchored(s, labels, model.classifier.anchors, dcfg, zeroshot_top1=top1)
    return d.positive(s), d.confidence(s)


def comc_with_absent(clip, n_absent: int):
    labels = list(LABELS) + ABSENT[:n_absent]
    per_label = ComcConfig().n_sentences // len(LABELS)
    cfg = replace(ComcConfig(), n_sentences=per_label * len(labels), memory_size=20000)
    return labels, fit_comc_generated(clip, labels, LABEL_SYNONYMS, cfg)


KNOBS = ("neg_anchor", "pos_anchor", "anchor_sd", "neg_sd_shift", "max_tail_share", "corroborate_below",
         "min_text_separation", "min_name_ratio")


def evaluate_model(name: str, n: int, n_absent: int, dcfg: DecisionConfig, tune: bool,
                   fitted: dict | None = None) -> dict:
    """Every report for one model; with ``tune`` the anchored rule's knobs are searched on val first
    and the test reports use the best of them. ``fitted`` (model name -> (labels, CoMC with the
    absent labels)) keeps the classifier with the absent labels for the heads part."""
    clip = load_clip(name, device="cpu")
    model = fit_comc_generated(clip, LABELS, LABEL_SYNONYMS, ComcConfig())
    tuned = None
    if tune and n_absent:
        labels, big = comc_with_absent(clip, n_absent)
        tuned = tune_on_val(val_data(clip, big, labels, model, max(1, n // 2)))
        dcfg = replace(dcfg, **{x: tuned["best"][x] for x in KNOBS})
    test = embed_dataset(clip, read_toy(n=n, split="test"))
    y = test.labels.astype(bool)
    s = model.scores(test.global_, test.patches.astype("float32"))
    top1 = named(model, test.global_)
    best = f1(oracle(s, y), y)
    res = {"oracle": {"micro_F1": round(best[0], 1), "macro_F1": round(best[1], 1)}}
    for rule in RULES:
        pred, conf = decide(rule, s, list(LABELS), model, dcfg, top1)
        res[rule] = rule_report(pred, y, best)
        if conf is not None:
            res[rule]["ECE"] = round(ece(conf, y), 4)
    res["withheld"] = withheld_report(s, y, model, dcfg, top1)
    if n_absent:
        if tuned is None:
            labels, big = comc_with_absent(clip, n_absent)
        res["absent"] = absent_report(big, labels, test, y, dcfg)
        if fitted is not None:
            fitted[name] = (labels, big)
    if tuned is not None:
        res["tune"] = tuned
    res["config"] = dcfg.to_dict()
    return res


def withheld_report(s: np.ndarray, y: np.ndarray, model, dcfg: DecisionConfig, top1=None) -> dict:
    """A corpus without any scene of the ``WITHHELD`` labels (which the classifier knows): positives
    per image those labels still get."""
    cols = [LABELS.index(w) for w in WITHHELD]
    keep = ~y[:, cols].any(1)
    out = {"labels": list(WITHHELD), "images": int(keep.sum())}
    for rule in RULES:
        pred, _ = decide(rule, s[keep], list(LABELS), model, dcfg, None if top1 is None else top1[keep])
        out[rule] = {"withheld_positives_per_image": round(float(pred[:, cols].sum(1).mean()), 3),
                     "withheld_labels_tagged": int(pred[:, cols].any(0).sum())}
    return out


def absent_report(model, labels: list[str], test, y: np.ndarray, dcfg: DecisionConfig) -> dict:
    s = model.scores(test.global_, test.patches.astype("float32"))
    top1 = named(model, test.global_)
    k = len(LABELS)
    sep = model.classifier.anchors.separation()
    out = {"n_absent_labels": len(labels) - k,
           "absent_not_learned_from_text": int((sep[k:] < dcfg.min_text_separation).sum()),
           "world_not_learned_from_text": int((sep[:k] < dcfg.min_text_separation).sum())}
    for rule in RULES:
        pred, _ = decide(rule, s, labels, model, dcfg, top1)
        mi, ma = f1(pred[:, :k], y)
        out[rule] = {"absent_positives_per_image": round(float(pred[:, k:].sum(1).mean()), 3),
                     "absent_labels_tagged": int(pred[:, k:].any(0).sum()),
                     "micro_F1_world_labels": round(mi, 1), "macro_F1_world_labels": round(ma, 1)}
    return out


def _val_row(val: dict, cfg: DecisionConfig) -> dict:
    """One knob setting on val: micro-F1 over the world's labels plus the absent ones (classifier of
    all of them) and world macro-F1 of the world's own classifier; the objective is their sum."""
    k = len(LABELS)
    s, y, labels, big, top1 = val["big"]
    d = fit_anchored(s, labels, big.classifier.anchors, cfg, zeroshot_top1=top1)
    pred = d.positive(s)
    s20, y20, model, top1_20 = val["world"]
    d20 = fit_anchored(s20, list(LABELS), model.classifier.anchors, cfg, zeroshot_top1=top1_20)
    pred20 = d20.positive(s20)
    micro, macro = round(f1(pred, y)[0], 1), round(f1(pred20, y20)[1], 1)
    return {**{x: getattr(cfg, x) for x in KNOBS}, "objective": round(micro + macro, 1),
            "micro_F1_with_absent": micro, "world_macro_F1": macro,
            "world_labels_absent": int((~d20.present).sum()),
            "ECE_world": round(ece(d20.confidence(s20), y20), 4),
            "absent_tagged": int(pred[:, k:].any(0).sum()),
            "absent_positives_per_image": round(float(pred[:, k:].sum(1).mean()), 3),
            "positives_per_image": round(float(pred20.sum(1).mean()), 2)}


def val_data(clip, big, labels: list[str], model, n: int) -> dict:
    """Val scenes scored two ways: by ``big`` (the world's labels plus absent ones: a positive of an
    absent label is a false positive) and by the world's own 20-label ``model`` (whose weaker text
    separations a gate must not mistake for absent labels)."""
    ds = embed_dataset(clip, read_toy(n=n, split="val"))
    k, y20 = len(LABELS), ds.labels.astype(bool)
    y = np.zeros((len(y20), len(labels)), bool)
    y[:, :k] = y20
    return {"big": (big.scores(ds.global_, ds.patches.astype("float32")), y, labels, big, named(big, ds.global_)),
            "world": (model.scores(ds.global_, ds.patches.astype("float32")), y20, model, named(model, ds.global_))}


def anchor_grid(val: dict) -> list[dict]:
    """The positives' anchor, sd and shift on val (gates at their defaults), best first."""
    grid = [_val_row(val, replace(DecisionConfig(), pos_anchor=pos, anchor_sd=sd, neg_sd_shift=shift))
            for pos in (1.0, 1.1, 1.15, 1.2, 1.25) for sd in (0.15, 0.2, 0.25) for shift in (0.0, 0.3, 0.5, 0.7)]
    return sorted(grid, key=lambda r: -r["objective"])


def gate_grid(val: dict, anchored: DecisionConfig) -> list[dict]:
    """The gates on val with the anchors of ``anchored``, best first (ties: fewer absent positives,
    then nearest the defaults)."""
    dflt = DecisionConfig()
    gates = [_val_row(val, replace(anchored, max_tail_share=w, corroborate_below=c, min_text_separation=t,
                                   min_name_ratio=r))
             for w in (0.8, 1.0) for c in (2.5, 3.0, float("inf")) for t in (2.0, 2.5) for r in (0.25, 0.35, 0.5)]
    near = lambda r: sum(abs(r[x] - getattr(dflt, x)) for x in KNOBS[4:])  # noqa: E731
    return sorted(gates, key=lambda r: (-r["objective"], r["absent_positives_per_image"], near(r)))


def tune_on_val(val: dict) -> dict:
    """The anchored rule's knobs on one model's val scenes: first the anchors, then the gates with
    those anchors."""
    grid = anchor_grid(val)
    gates = gate_grid(val, replace(DecisionConfig(), **{x: grid[0][x] for x in ("pos_anchor", "anchor_sd", "neg_sd_shift")}))
    default = _val_row(val, DecisionConfig())
    return {"best": gates[0], "default": default, "anchors": grid, "gates": gates,
            "default_is_best": all(default[x] == gates[0][x] for x in KNOBS),
            "truth_positives_per_image": round(float(val["world"][1].sum(1).mean()), 2)}


def shared_best(grids: list[list[dict]]) -> dict:
    """The knob setting with the highest objective summed over several models' val grids."""
    key = lambda r: tuple(r[x] for x in KNOBS)  # noqa: E731
    totals: dict[tuple, float] = {}
    for grid in grids:
        for r in grid:
            totals[key(r)] = totals.get(key(r), 0.0) + r["objective"]
    best = max((k for k in totals if all(k in {key(r) for r in g} for g in grids)), key=lambda k: totals[k])
    return {**dict(zip(KNOBS, best)), "objective_sum": round(totals[best], 1),
            "per_model": [next(r for r in g if key(r) == best) for g in grids]}


def fit_cost(n_labels: int, n_images: int = 4096, seed: int = 0) -> dict:
    """Time and peak traced memory of fitting every label's decision, both rules, on a synthetic sample."""
    rng = np.random.default_rng(seed)
    s = rng.normal(size=(n_images, n_labels)).astype(np.float32)
    s[rng.random(s.shape) < 0.02] += 4.0
    ones = np.ones(n_labels)
    anchors = TextAnchors(0 * ones, 4.0 * ones, ones, ones)
    labels = [f"l{i}" for i in range(n_labels)]
    out = {"labels": n_labels, "images": n_images, "input_MB": round(s.nbytes / 2**20, 1)}
    for rule, fit in (("mixture", lambda: fit_decisions(s, labels)),
                      ("anchored", lambda: fit_anchored(s, labels, anchors, DecisionConfig(neg_anchor=0.0,
                                                                                           pos_anchor=1.0, anchor_sd=0.25)))):
        tracemalloc.start()
        t0 = time.perf_counter()
        d = fit()
        d.thresholds()
        dt = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        out[rule] = {"fit_s": round(dt, 2), "peak_MB": round(peak / 2**20, 1), "present": int(d.present.sum())}
    return out


def tune_only(a: argparse.Namespace) -> None:
    """Each model's knobs on its val scenes, then one setting for all of them (the shipped defaults):
    the anchors with the best objective summed over the models, then the gates with those anchors.
    The absent labels are the first noun list of bench/changes.py (drawn from a word list, not picked
    by hand), with its corpus (200 label sets per label)."""
    vals = {}
    for name in a.models:
        clip = load_clip(name, device="cpu")
        labels, big = noun_classifier(clip, noun_lists(1)[0])  # absent labels: the first drawn noun list
        vals[name] = val_data(clip, big, labels, fit_comc_generated(clip, LABELS, LABEL_SYNONYMS, ComcConfig()), a.n)
    tuned = {name: tune_on_val(val) for name, val in vals.items()}
    for name, r in tuned.items():
        print(f"{name}: best on val {r['best']}\n  default {r['default']}\n  truth positives/image "
              f"{r['truth_positives_per_image']}")
    shared = {"anchors": shared_best([r["anchors"] for r in tuned.values()])}
    anchored = replace(DecisionConfig(), **{x: shared["anchors"][x] for x in ("pos_anchor", "anchor_sd", "neg_sd_shift")})
    shared["gates"] = shared_best([gate_grid(val, anchored) for val in vals.values()])
    for part, r in shared.items():
        print(f"best {part} over all models on val: {r}")
    print(json.dumps({"bench": "decisions-tune", "n_val": a.n, "n_absent": a.absent, "results": tuned,
                      "shared": shared}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["toy-rn", "toy-vit"])
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--absent", type=int, default=200)
    p.add_argument("--tune", action="store_true")
    p.add_argument("--tune-only", action="store_true", help="only the search on val (no test split, no scale)")
    p.add_argument("--scale", nargs="*", type=int, default=[1000, 10000])
    p.add_argument("--no-changes", action="store_true", help="skip the section of changes (bench/changes.py)")
    p.add_argument("--lists", type=int, default=5, help="noun lists of the absence part of the changes")
    p.add_argument("--no-heads", action="store_true", help="skip the heads part of the changes (bench/heads_guard.py)")
    a = p.parse_args()
    dcfg = DecisionConfig()
    if a.tune_only:
        tune_only(a)
        return
    text_heads: dict = {}
    out = {name: evaluate_model(name, a.n, a.absent, dcfg, a.tune, text_heads) for name in a.models}
    for name, res in out.items():
        print(f"\n{name}: oracle micro/macro-F1 {res['oracle']['micro_F1']} / {res['oracle']['macro_F1']}")
        for rule in RULES:
            r = res[rule]
            print(f"  {rule:18s} micro {r['micro_F1']:5.1f} ({r['micro_vs_oracle']:.2f} of oracle)  macro "
                  f"{r['macro_F1']:5.1f} ({r['macro_vs_oracle']:.2f})  positives/image {r['positives_per_image']} "
                  f"vs {r['truth_per_image']} (MAE {r['mae']}, by objects {r['mae_by_objects']})"
                  + (f"  ECE {r['ECE']}" if "ECE" in r else ""))
        if "tune" in res:
            print(f"  tuned on val: {res['tune']['best']}")
        print(f"  decision config used: {res['config']}")
        w = res["withheld"]
        for rule in RULES:
            print(f"  corpus without {', '.join(w['labels'])} ({w['images']} images), {rule}: "
                  f"{w[rule]['withheld_positives_per_image']} positives/image from them")
        if "absent" in res:
            for rule in RULES:
                r = res["absent"][rule]
                print(f"  + {a.absent} absent labels, {rule}: {r['absent_positives_per_image']} absent positives/image, "
                      f"{r['absent_labels_tagged']} absent labels tagged at all")
            print(f"  absent labels the classifier did not learn from text: "
                  f"{res['absent']['absent_not_learned_from_text']} of {a.absent}")
    scale = [fit_cost(k) for k in a.scale]
    for row in scale:
        for rule in ("mixture", "anchored"):
            r = row[rule]
            print(f"{rule} fit at {row['labels']:,} labels x {row['images']:,} images: {r['fit_s']} s, "
                  f"peak {r['peak_MB']} MB (input {row['input_MB']} MB), {r['present']} present")
    changes = {} if a.no_changes else {name: evaluate_changes(name, a.n, a.lists, dcfg) for name in a.models}
    for name, r in changes.items():
        print("\n".join(change_lines(name, r)))
    if changes and not a.no_heads:  # every head behind the guard, with absent labels in the vocabulary
        import heads_guard
        changes["heads"] = heads_guard.run(a.models, n=a.n, n_absent=a.absent, text_heads=text_heads)
        print(f"heads behind the guard: ok = {changes['heads'].get('ok')}")
    print(json.dumps({"bench": "decisions", "n_test": a.n, "config": dcfg.to_dict(), "results": out, "scale": scale,
                      "changes": changes}))


if __name__ == "__main__":
    main()
