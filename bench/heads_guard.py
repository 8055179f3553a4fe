"""Every head behind the same guard, on held-out toy scenes of both toy models.

    python bench/heads_guard.py [--models toy-rn toy-vit] [--sizes 50 200 1000] [--n 2000] [--absent 200]
                                [--per-label N] [--quick]

For each model: the text-only CoMC head over the world's 20 labels plus ``--absent`` labels that
occur in no scene (``bench/decisions.py``'s nouns, via its ``comc_with_absent``), and the test
scenes as the corpus (decisions are fitted on it as a tag run fits them on its calibration sample).
Annotated images are the first 50, 200 and 1,000 train scenes with the labels of
``TOY_UNSEEN`` removed (five labels with no annotated image; the absent ones have none either).
For each size, OVML, MKT, CLIP-Decoder and few-shot CoMC go through the guard ``tagger train``
uses (:mod:`tagger.pipeline.guard`): fitted on the annotations minus a held-out part, wrapped with
the text-only head, validated against it on the held-out part, kept when better. Reported on test:
micro-F1 over every label (a positive of an absent label counts as false) of the text-only head,
the guarded head, and the head the guard keeps (must never be worse than text-only by more than
0.01, i.e. 1 point); absent-label positives per image under every head (must be <= 0.05), and, for
contrast, under the head alone (unguarded, decided as a head without text anchors was: mixture
rule; few-shot CoMC with its base's anchors). ``run(models, ...)`` returns everything; the
``__main__`` prints one JSON line. ``--quick``: one model, 500 test scenes, sizes 50 and 200, a tenth
of the text corpus.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from dataclasses import replace

import numpy as np

from tagger.method.comc import ComcConfig
from tagger.text.comcfit import fit_comc_generated
from tagger.evaluate.datasets import read_toy
from tagger.evaluate.harness import embed_dataset
from tagger.evaluate.seen_unseen import TOY_UNSEEN
from tagger.method.decisions import fit_decisions
from tagger.method.heads import IMAGE_HEADS, FewShotConfig, fit_fewshot, fit_head
from tagger.method.heads.guarded import GuardConfig, GuardedModel, heldout_split, image_columns
from tagger.method.zeroshot import SINGLE_PROMPT, class_embeddings
from tagger.models import load_clip
from tagger.pipeline.guard import decide_like_tag, validate, verdict
from tagger.pipeline.tag import apply_statistics, prompt_vectors
from tagger.toyworld import LABEL_SYNONYMS, LABELS

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the sibling benchmarks (decisions.py)
HEADS = (*IMAGE_HEADS, "comc-fewshot")
MAX_LOSS = 1.0  # micro-F1 points the kept head may lose to text-only on test
MAX_ABSENT = 0.05  # absent-label positives per image


def _patches(s) -> np.ndarray:
    return s.patches.astype(np.float32)


def _padded(y20: np.ndarray, n_labels: int) -> np.ndarray:
    y = np.zeros((len(y20), n_labels), bool)
    y[:, :y20.shape[1]] = y20.astype(bool)
    return y


def _fit(kind: str, text, emb: np.ndarray, labels: list[str], g, p, y):
    if kind == "comc-fewshot":
        return fit_fewshot(text, g, y, FewShotConfig())
    seen = [int(j) for j in np.flatnonzero(y.any(0))]
    return fit_head(kind, g, p, y[:, seen], emb, seen=seen, labels=labels)


def _unguarded(kind: str, head, text, labels: list[str], test, ctx_top1: np.ndarray) -> np.ndarray:
    """Positives of the head alone, decided as before the guard (mixture rule without text anchors)."""
    s = head.scores(test.global_, _patches(test))
    if kind == "comc-fewshot":
        stats, d = decide_like_tag(s, labels, text.classifier.anchors, zeroshot_top1=ctx_top1)
    else:
        stats = None
        d = fit_decisions(s, labels)
    return d.positive(apply_statistics(s, stats))


def one_case(kind: str, size: int, ctx: dict, gcfg: GuardConfig) -> dict:
    """One head on the first ``size`` annotated images: the guard's table and verdict, then test."""
    from decisions import f1
    text, labels, test, y_test, k = ctx["text"], ctx["labels"], ctx["test"], ctx["y_test"], len(LABELS)
    tr = ctx["train"]
    g, p, y = tr.global_[:size], _patches(tr)[:size], ctx["y_train"][:size]
    t0 = time.time()
    train, held = heldout_split(y, gcfg.heldout, gcfg.seed)
    head = _fit(kind, text, ctx["emb"], labels, g[train], p[train], y[train])
    cands = image_columns(y[train], y[held], gcfg.min_positives)
    candidate = GuardedModel(kind, text, head, [labels[j] for j in cands])
    text_held = text.scores(g[held], p[held])
    table = validate(labels, y[held], np.flatnonzero(y.any(0)),
                     (ctx["text_test"], text_held, text.classifier.anchors),
                     (candidate.scores(test.global_, _patches(test)), candidate.scores(g[held], p[held])), cands,
                     ("text-only", kind), cfg=gcfg, zeroshot_top1=ctx["top1"]) if len(cands) else None
    guarded = GuardedModel(kind, text, head, [labels[j] for j in (table or {}).get("head_labels", [])])
    cols = guarded.image_cols
    keep, why = verdict(table if len(held) >= gcfg.min_heldout_images else None, False, gcfg.min_heldout_images)
    gm_test, gm_held = guarded.scores(test.global_, _patches(test)), guarded.scores(g[held], p[held])
    y_lab = np.zeros_like(y[held])
    y_lab[:, cols] = y[held][:, cols]
    stats, d = decide_like_tag(gm_test, labels, guarded.anchors, labelled=(gm_held, y_lab) if len(cols) else None,
                               zeroshot_top1=ctx["top1"])
    pred_guarded = d.positive(apply_statistics(gm_test, stats))
    pred_text = ctx["pred_text"]
    pred_kept = pred_guarded if keep else pred_text
    raw = _unguarded(kind, head, text, labels, test, ctx["top1"])
    micro = {name: round(f1(pr, y_test)[0], 2) for name, pr in
             (("text", pred_text), ("guarded", pred_guarded), ("kept", pred_kept), ("unguarded", raw))}
    absent = {name: round(float(pr[:, k:].sum(1).mean()), 4) for name, pr in
              (("text", pred_text), ("guarded", pred_guarded), ("kept", pred_kept), ("unguarded", raw))}
    return {"head": kind, "annotated": size, "heldout": int(len(held)), "head_labels": int(len(cols)),
            "kept": keep, "verdict": why, "validation": table, "micro_F1": micro,
            "kept_minus_text": round(micro["kept"] - micro["text"], 2), "absent_positives_per_image": absent,
            "fit_s": round(time.time() - t0, 1)}


def text_head(clip, n_absent: int, per_label: int | None = None):
    """(labels, text-only CoMC head) of the world's labels plus ``n_absent`` absent ones: bench/decisions.py's
    (1,000 sentences per label), or with ``per_label`` sentences per label."""
    from decisions import ABSENT, comc_with_absent
    if per_label is None:
        return comc_with_absent(clip, n_absent)
    labels = list(LABELS) + ABSENT[:n_absent]
    cfg = replace(ComcConfig(), n_sentences=per_label * len(labels), memory_size=20000)
    return labels, fit_comc_generated(clip, labels, LABEL_SYNONYMS, cfg)


def evaluate_model(name: str, sizes: list[int], n: int, n_absent: int, gcfg: GuardConfig,
                   per_label: int | None = None, text: tuple | None = None) -> dict:
    """Every head and annotation size on one toy model (``text``: its (labels, text head) if already fitted)."""
    clip = load_clip(name, device="cpu")
    t0 = time.time()
    labels, text = text or text_head(clip, n_absent, per_label)
    test = embed_dataset(clip, read_toy(n=n, split="test"))
    train = embed_dataset(clip, read_toy(n=max(sizes), split="train"))
    y_train = _padded(train.labels, len(labels))
    y_train[:, [LABELS.index(u) for u in TOY_UNSEEN]] = False  # five labels with no annotated image
    ctx = {"text": text, "labels": labels, "test": test, "train": train, "y_train": y_train,
           "y_test": _padded(test.labels, len(labels)), "emb": class_embeddings(clip, labels, SINGLE_PROMPT)}
    ctx["text_test"] = text.scores(test.global_, _patches(test))
    ctx["top1"] = (test.global_ @ prompt_vectors(text).T).argmax(1)  # as the tag run corroborates by names
    stats, d = decide_like_tag(ctx["text_test"], labels, text.classifier.anchors, zeroshot_top1=ctx["top1"])
    ctx["pred_text"] = d.positive(apply_statistics(ctx["text_test"], stats))
    setup_s = round(time.time() - t0, 1)
    cases = [one_case(kind, size, ctx, gcfg) for size in sizes for kind in HEADS]
    worst_loss = max(c["micro_F1"]["text"] - c["micro_F1"]["kept"] for c in cases)
    worst_absent = max(max(c["absent_positives_per_image"][h] for h in ("text", "guarded", "kept")) for c in cases)
    return {"cases": cases, "setup_s": setup_s, "n_labels": len(labels), "n_test": n,
            "worst_kept_loss_vs_text": round(worst_loss, 2), "worst_absent_positives_per_image": worst_absent,
            "ok": bool(worst_loss <= MAX_LOSS and worst_absent <= MAX_ABSENT)}


def run(models=("toy-rn", "toy-vit"), sizes=(50, 200, 1000), n: int = 2000, n_absent: int = 200,
        quick: bool = False, guard: GuardConfig | None = None, text_heads: dict | None = None,
        per_label: int | None = None) -> dict:
    """The guard on every head, model and annotation size (module doc). ``quick``: the first model,
    500 test scenes, the two smaller sizes, 100 sentences per label. ``text_heads``: model name ->
    (labels, text-only CoMC head over the world's and the absent labels), to reuse ones already
    fitted; ``per_label``: sentences per label of the text heads fitted here (default: bench/decisions.py's)."""
    if quick:
        models, sizes, n = list(models)[:1], [s for s in sizes if s <= 200] or list(sizes)[:1], min(n, 500)
        per_label = per_label or 100
    gcfg = guard or GuardConfig()
    results = {m: evaluate_model(m, list(sizes), n, n_absent, gcfg, per_label, (text_heads or {}).get(m))
               for m in models}
    return {"bench": "heads_guard", "sizes": list(sizes), "n_test": n, "n_absent": n_absent, "guard": gcfg.to_dict(),
            "sentences_per_label": per_label or 1000,
            "max_loss": MAX_LOSS, "max_absent": MAX_ABSENT, "results": results,
            "ok": all(r["ok"] for r in results.values())}


def print_report(out: dict) -> None:
    for name, res in out["results"].items():
        print(f"\n{name}: {res['n_labels']} labels ({out['n_absent']} absent), {res['n_test']} test scenes")
        print(f"  {'head':13s} {'ann':>5s} {'held':>5s} {'cols':>5s} {'kept':>5s}  micro-F1 text / guarded / kept / "
              f"unguarded   absent pos/img text / guarded / unguarded")
        for c in res["cases"]:
            m, a = c["micro_F1"], c["absent_positives_per_image"]
            print(f"  {c['head']:13s} {c['annotated']:5d} {c['heldout']:5d} {c['head_labels']:5d} {str(c['kept']):>5s}  "
                  f"{m['text']:6.1f} / {m['guarded']:6.1f} / {m['kept']:6.1f} / {m['unguarded']:6.1f}   "
                  f"{a['text']:.3f} / {a['guarded']:.3f} / {a['unguarded']:.3f}")
        print(f"  worst kept-vs-text loss {res['worst_kept_loss_vs_text']} points, worst absent positives/image "
              f"{res['worst_absent_positives_per_image']}: {'ok' if res['ok'] else 'FAILED'}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["toy-rn", "toy-vit"])
    p.add_argument("--sizes", nargs="+", type=int, default=[50, 200, 1000])
    p.add_argument("--n", type=int, default=2000, help="test scenes")
    p.add_argument("--absent", type=int, default=200)
    p.add_argument("--per-label", type=int, default=None, help="sentences per label of the text heads")
    p.add_argument("--quick", action="store_true")
    a = p.parse_args()
    out = run(a.models, a.sizes, a.n, a.absent, a.quick, per_label=a.per_label)
    print_report(out)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
