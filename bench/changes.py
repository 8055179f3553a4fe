"""Decisions under the changes people make, on held-out toy scenes (the section of changes of
``bench/decisions.py``; also runs alone).

    python bench/changes.py [--models toy-rn toy-vit] [--n 2000] [--lists 5] [--quick]

- **per label**: each world label's F1 under the anchored rule against the F1 of its own oracle
  threshold (the best on the test truth), the worst and the mean, and positives per image against
  the truth;
- **edits**: the vocabulary edited as a user would -- synonyms made of words the text tower does not
  know added to 5 labels (drawn), parents added (``shape`` over every world label, ``polygon`` over
  the polygons), one label retired and then re-added; the corpus follows each edit incrementally as
  the nightly does, each step's tag run holding the labels the step before had (as a retrain's
  does: :mod:`tagger.method.keep`); and apart, one world label put under another (drawn): the
  share of the parent's own true positives its own row keeps. Per world label, the share of its true positives lost against the unedited
  vocabulary and the fall of its F1 (over-tagging shows there; worst over labels each), and every
  label whose decision flips, with its reason;
- **absence**: five disjoint lists of 200 ordinary nouns, drawn from a word list (wonderwords'
  noun list, words sharing a BPE token with the toy world's captions left out, since the toy text
  tower reads those) before measuring, each added to the 20 world labels: absent positives per image
  and the largest share of images any one absent label is positive on, at 800 images and at
  the whole test split; the worst list is what counts. Each list's corpus has 200 label sets per
  label (44,000 for 220 labels: the 20 world labels' default corpus scaled down, as a team with a
  large vocabulary and a fixed budget of LLM requests would have).
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from importlib import resources

import numpy as np

from tagger.evaluate.datasets import read_toy
from tagger.evaluate.harness import embed_dataset
from tagger.method.comc import ComcConfig
from tagger.text.comcfit import fit_comc_corpus, fit_comc_generated
from tagger.method.decisions import DecisionConfig, fit_anchored
from tagger.method.keep import keep_positives
from tagger.method.zeroshot import image_names
from tagger.models import load_clip
from tagger.pipeline.tag import prompt_vectors
from tagger.text import OfflineGenerator, Vocabulary, build_corpus
from tagger.text.incremental import extend_corpus
from tagger.toyworld import LABEL_SYNONYMS, LABELS

LIST_SEED = 20261205  # fixed before anything was measured
EDIT_SEED = 7
POLYGONS = ("square", "triangle", "diamond", "hexagon", "pentagon")


def world_words() -> set[str]:
    """Every word the toy captions use: labels, synonyms, colours, backgrounds, sizes, templates."""
    from tagger.toyworld import captions
    from tagger.toyworld.vocab import BACKGROUNDS, COLOURS
    words = set(LABELS) | {s for v in LABEL_SYNONYMS.values() for s in v} | set(COLOURS) | set(BACKGROUNDS)
    words |= {w for v in captions._BG_WORDS.values() for w in v} | {w for v in captions._SIZE_WORDS.values() for w in v}
    return words | {w.strip(".,!:{}") for t in captions._TEMPLATES for w in t.split()}


def ordinary_nouns() -> list[str]:
    """The word list's nouns (3 to 12 letters) that share no BPE token with the toy world's words."""
    import open_clip
    tok = open_clip.get_tokenizer("RN50")
    special = {0, 49406, 49407}

    def tokens(w: str) -> set[int]:
        return {int(i) for i in tok([w])[0].tolist()} - special
    known = set().union(*(tokens(w) for w in world_words()))
    raw = resources.files("wonderwords.assets").joinpath("nounlist.txt").read_text().split()
    nouns = sorted({w.lower() for w in raw if w.isalpha() and 3 <= len(w) <= 12})
    return [w for w in nouns if not tokens(w) & known]


def noun_lists(n_lists: int = 5, size: int = 200, seed: int = LIST_SEED) -> list[list[str]]:
    """``n_lists`` disjoint lists of ``size`` nouns, drawn with a fixed seed."""
    nouns = ordinary_nouns()
    order = np.random.default_rng(seed).permutation(len(nouns))
    return [[nouns[i] for i in order[k * size:(k + 1) * size]] for k in range(n_lists)]


def oracle_f1(s: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per label, the F1 at its best threshold on the truth."""
    out = np.zeros(y.shape[1])
    for j in range(y.shape[1]):
        order = np.argsort(-s[:, j], kind="stable")
        tp = np.cumsum(y[order, j])
        out[j] = (2 * tp / (np.arange(1, len(order) + 1) + y[:, j].sum())).max() if y[:, j].any() else 0.0
    return out


def per_label_report(pred: np.ndarray, s: np.ndarray, y: np.ndarray, labels: list[str]) -> dict:
    tp, npred, ntrue = (pred & y).sum(0), pred.sum(0), y.sum(0)
    f1 = 2 * tp / np.maximum(1, npred + ntrue)
    ratio = f1 / np.maximum(oracle_f1(s, y), 1e-9)
    worst = int(np.argmin(ratio))
    return {"worst_label": labels[worst], "worst_vs_oracle": round(float(ratio[worst]), 3),
            "mean_vs_oracle": round(float(ratio.mean()), 3),
            "positives_per_image": round(float(npred.sum() / len(y)), 3),
            "truth_per_image": round(float(ntrue.sum() / len(y)), 3),
            "positives_vs_truth": round(float(npred.sum() / max(1, ntrue.sum())), 3),
            "per_label": {labels[j]: {"vs_oracle": round(float(ratio[j]), 3),
                                      "recall": round(float(tp[j] / max(1, ntrue[j])), 3),
                                      "precision": round(float(tp[j] / max(1, npred[j])), 3)}
                          for j in range(len(labels))}}


def _corpus_model(clip, corpus):
    """CoMC on ``corpus`` as a training reads it (unread synonyms, alike labels, the hierarchy)."""
    return fit_comc_corpus(clip, corpus, ComcConfig())


def named(model, g: np.ndarray, hierarchy: dict | None = None):
    """Each image's best-matching label name, read under ``hierarchy`` (child -> parents) as a tag
    run gives the anchored rule (:func:`tagger.method.zeroshot.image_names`)."""
    prompts = prompt_vectors(model)
    return None if prompts is None else image_names(g, prompts, list(model.labels), hierarchy)


def _decide(model, test, dcfg: DecisionConfig, hierarchy: dict | None = None,
            former: dict[str, float] | None = None):
    """Scores and decisions; with ``former`` (each label's positives in the run before), the labels
    it had present, parents aside, held to them as a retrain's tag run holds every label no edit
    changed, or changed only by added synonyms (:mod:`tagger.method.keep`)."""
    s = model.scores(test.global_, test.patches.astype("float32"))
    top1 = named(model, test.global_, hierarchy)
    d = fit_anchored(s, model.labels, model.classifier.anchors, dcfg, zeroshot_top1=top1)
    parents = {p for ps in (hierarchy or {}).values() for p in ps}
    if former:
        targets = {j: former[x] for j, x in enumerate(d.labels) if former.get(x) and x not in parents}
        d = keep_positives(d, s, model.classifier.anchors, dcfg, targets, top1, revive=True, why="held")
    return s, d


def edited_vocabulary(seed: int = EDIT_SEED) -> dict:
    """The user's edit: unknown-word synonyms for 5 drawn labels, parents, a retired label."""
    rng = np.random.default_rng(seed)
    pool = [noun for lst in noun_lists(8) for noun in lst][1000:]  # words none of the absence lists use
    pick = [pool[i] for i in rng.permutation(len(pool))[:15]]
    edited = [LABELS[i] for i in rng.choice(len(LABELS), 5, replace=False)]
    synonyms = {k: list(v) for k, v in LABEL_SYNONYMS.items()}
    for k, lab in enumerate(edited):
        synonyms[lab] += [f"{pick[3 * k]} {pick[3 * k + 1]}", pick[3 * k + 2]]
    retired = next(lab for lab in np.asarray(LABELS)[rng.permutation(len(LABELS))] if lab not in edited)
    parents = {lab: ["shape"] for lab in LABELS} | {lab: ["polygon"] for lab in POLYGONS} | {"polygon": ["shape"]}
    return {"edited": edited, "synonyms": synonyms, "retired": str(retired), "parents": parents}


def edit_report(clip, test, dcfg: DecisionConfig, seed: int = EDIT_SEED) -> dict:
    """True positives each world label keeps through the edits (drawn with ``seed``), and the flips
    with their reasons."""
    cfg, y = ComcConfig(), test.labels.astype(bool)
    vocab = Vocabulary.create(list(LABELS), LABEL_SYNONYMS)
    base = build_corpus(list(LABELS), LABEL_SYNONYMS, cfg.n_sentences, OfflineGenerator(vocab, seed=cfg.text_seed),
                        seed=cfg.text_seed, max_labels=cfg.max_labels, include_templates=cfg.include_templates)
    e = edited_vocabulary(seed)
    steps = {"base": base}
    edited = [x for x in LABELS if x != e["retired"]] + ["shape", "polygon"]
    parents = {c: p for c, p in e["parents"].items() if c in edited}

    def extend(prev, labels):
        gen = OfflineGenerator(Vocabulary.create(labels, e["synonyms"]), seed=cfg.text_seed)
        return extend_corpus(prev, labels, e["synonyms"], gen, cfg.text_seed, max_labels=cfg.max_labels,
                             parents={c: p for c, p in parents.items() if c in labels})
    steps["edited"] = extend(base, edited)
    steps["re-added"] = extend(steps["edited"], [*edited, e["retired"]])
    decided, former = {}, None
    for k, c in steps.items():  # each step decided as a retrain's tag run: held to the step before
        model = _corpus_model(clip, c)
        tree = {x: p for x, p in parents.items() if x in model.labels} if k != "base" else None
        decided[k] = _decide(model, test, dcfg, tree, former)
        former = dict(zip(decided[k][1].labels, decided[k][1].positive(decided[k][0]).sum(0).tolist()))
    out = {"edit": {k: e[k] for k in ("edited", "retired")}, "steps": {}}
    s0, d0 = decided["base"]
    pred0 = d0.positive(s0)
    tp0 = (pred0 & y).sum(0)
    f1_0 = 2 * tp0 / np.maximum(1, pred0.sum(0) + y.sum(0))
    for step in ("edited", "re-added"):
        s, d = decided[step]
        col = {lab: j for j, lab in enumerate(d.labels)}
        pred = d.positive(s)
        lost, flips, f1_drop = {}, [], {}
        for j, lab in enumerate(LABELS):
            if lab not in col:
                continue
            k = col[lab]
            tp = int((pred[:, k] & y[:, j]).sum())
            lost[lab] = round(1 - tp / max(1, tp0[j]), 3)
            f1_drop[lab] = round(float(f1_0[j] - 2 * tp / max(1, pred[:, k].sum() + y[:, j].sum())), 3)
            if bool(d0.present[j]) != bool(d.present[k]) or abs(tp - tp0[j]) > 0.5 * max(tp0[j], 1):
                flips.append({"label": lab, "reason": d.reason(k), "true_positives": [int(tp0[j]), tp]})
        worst, drop = max(lost, key=lost.get), max(f1_drop, key=f1_drop.get)
        out["steps"][step] = {"worst_label": worst, "worst_true_positives_lost": lost[worst], "lost": lost,
                              "worst_f1_drop": f1_drop[drop], "worst_f1_drop_label": drop, "f1_drop": f1_drop,
                              "flips": flips, "flips_without_reason": sum(not f["reason"] for f in flips)}
    out["concrete_parent"] = concrete_parent(clip, test, dcfg, base, decided["base"], seed)
    return out


def concrete_parent(clip, test, dcfg: DecisionConfig, base, before, seed: int = EDIT_SEED) -> dict:
    """One world label put under another (drawn with ``seed``), the corpus's sentences kept: the share of
    the parent's own true positives its own row keeps (its child raises it at tag time besides), and
    every other label's worst loss."""
    rng = np.random.default_rng(seed + 1)
    child, parent = (str(x) for x in rng.choice(LABELS, 2, replace=False))
    cfg, y = ComcConfig(), test.labels.astype(bool)
    gen = OfflineGenerator(Vocabulary.create(list(LABELS), LABEL_SYNONYMS), seed=cfg.text_seed)
    corpus = extend_corpus(base, list(LABELS), LABEL_SYNONYMS, gen, cfg.text_seed, max_labels=cfg.max_labels,
                           parents={child: [parent]})
    s0, d0 = before
    former = dict(zip(d0.labels, d0.positive(s0).sum(0).tolist()))
    s, d = _decide(_corpus_model(clip, corpus), test, dcfg, {child: [parent]}, former)
    tp0, tp = ((dd.positive(ss) & y).sum(0) for ss, dd in ((s0, d0), (s, d)))
    kept = {lab: round(float(tp[j] / max(1, tp0[j])), 3) for j, lab in enumerate(LABELS)}
    others = {k: v for k, v in kept.items() if k != parent}
    worst = min(others, key=others.get)
    j = list(LABELS).index(parent)
    return {"child": child, "parent": parent, "parent_own_true_positives_kept": kept[parent],
            "parent_present": bool(d.present[j]), "parent_reason": d.reason(j),
            "others_worst_kept": others[worst], "others_worst_label": worst}


SENTENCES_PER_LABEL = 200  # label sets per label in the absence corpora (44,000 for 220 labels)


def noun_classifier(clip, nouns: list[str], per_label: int = SENTENCES_PER_LABEL):
    """(labels, CoMC) of the 20 world labels plus ``nouns``, ``per_label`` label sets per label."""
    labels = list(LABELS) + list(nouns)
    cfg = replace(ComcConfig(), n_sentences=per_label * len(labels), memory_size=20000)
    return labels, fit_comc_generated(clip, labels, LABEL_SYNONYMS, cfg)


def absence_report(clip, test, lists: list[list[str]], sizes: tuple[int, ...], dcfg: DecisionConfig,
                   per_label: int = SENTENCES_PER_LABEL) -> dict:
    """Absent positives per image on each noun list (the worst list counts); each list's classifier
    learns from ``per_label`` label sets per label."""
    rows = []
    for k, nouns in enumerate(lists):
        labels, model = noun_classifier(clip, nouns, per_label)
        s = model.scores(test.global_, test.patches.astype("float32"))
        top1 = named(model, test.global_)
        for n in sizes:
            d = fit_anchored(s[:n], labels, model.classifier.anchors, dcfg, zeroshot_top1=top1[:n])
            pred = d.positive(s[:n])[:, len(LABELS):]
            share = pred.mean(0)
            rows.append({"list": k, "images": int(min(n, len(s))),
                         "absent_positives_per_image": round(float(pred.sum(1).mean()), 4),
                         "max_share_one_label": round(float(share.max()), 4),
                         "worst_label": nouns[int(share.argmax())], "absent_labels_tagged": int(pred.any(0).sum())})
    worst = max(rows, key=lambda r: (r["absent_positives_per_image"], r["max_share_one_label"]))
    return {"lists": len(lists), "first_words": [lst[:5] for lst in lists], "rows": rows, "worst": worst,
            "worst_max_share": max(r["max_share_one_label"] for r in rows)}


def evaluate(name: str, n: int, n_lists: int, dcfg: DecisionConfig) -> dict:
    clip = load_clip(name, device="cpu")
    test = embed_dataset(clip, read_toy(n=n, split="test"))
    t0 = time.time()
    model = fit_comc_generated(clip, LABELS, LABEL_SYNONYMS, ComcConfig())
    s, d = _decide(model, test, dcfg)
    out = {"per_label": per_label_report(d.positive(s), s, test.labels.astype(bool), list(LABELS))}
    out["edits"] = edit_report(clip, test, dcfg)
    out["absence"] = absence_report(clip, test, noun_lists(n_lists), (800, n), dcfg)
    out["seconds"] = round(time.time() - t0, 1)
    return out


def summary_lines(name: str, r: dict) -> list[str]:
    p, a = r["per_label"], r["absence"]["worst"]
    lines = [f"{name}: per label vs oracle F1: worst {p['worst_vs_oracle']} ({p['worst_label']}), mean "
             f"{p['mean_vs_oracle']}; positives/image {p['positives_per_image']} vs truth {p['truth_per_image']}"]
    for step, e in r["edits"]["steps"].items():
        lines.append(f"  {step}: worst true positives lost {e['worst_true_positives_lost']} ({e['worst_label']}), "
                     f"worst F1 drop {e['worst_f1_drop']} ({e['worst_f1_drop_label']}), "
                     f"{len(e['flips'])} flip(s), {e['flips_without_reason']} without a reason")
    c = r["edits"]["concrete_parent"]
    lines.append(f"  {c['child']} put under {c['parent']}: {c['parent']} keeps {c['parent_own_true_positives_kept']} "
                 f"of its own true positives; the others at worst {c['others_worst_kept']} ({c['others_worst_label']})")
    lines.append(f"  absence, worst of {r['absence']['lists']} noun lists: {a['absent_positives_per_image']} absent "
                 f"positives/image (list {a['list']}, {a['images']} images); largest one-label share "
                 f"{r['absence']['worst_max_share']}")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["toy-rn", "toy-vit"])
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--lists", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="a smoke run: 400 scenes, one noun list")
    a = p.parse_args()
    n, lists = (400, 1) if a.quick else (a.n, a.lists)
    out = {name: evaluate(name, n, lists, DecisionConfig()) for name in a.models}
    for name, r in out.items():
        print("\n".join(summary_lines(name, r)))
    print(json.dumps({"bench": "decisions-changes", "n_test": n, "results": out}))


if __name__ == "__main__":
    main()
