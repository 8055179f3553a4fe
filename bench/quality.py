"""Quality ablation on held-out toy-world scenes, for both toy models.

    python bench/quality.py [--n 2000] [--n-small 500] [--models toy-vit toy-rn]
    python bench/quality.py --vocab large [--labels 10000] [--n-sentences N] [--split val]

Rows: zero-shot CLIP (one prompt, ensemble, + standardisation); CoMC global only; + mapping with
each memory variant; + local; + standardisation; the full method with the shipped defaults
(``ScoreConfig()``, chosen on val by bench/tune.py) and without its mapping or local branch; and
the supervised linear-probe ceiling. Columns: mAP and F1@3 on the test split, and mAP on the small-object
subset. Ends with one JSON line of the whole table.

``--vocab large`` scores the 305 labels with exact truth of :mod:`tagger.toyworld.large` (objects,
backgrounds, colour- and size-object compounds; compounds have their object as parent) instead of
the 20 objects; ``--labels N`` adds distractor words up to N labels in all, which every head and
the CoMC corpus and memory carry, while mAP is taken over the labels with truth. Text embeddings
are kept under the harness cache (``<cache>/text/``) so reruns and sweeps embed each text once.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

from tagger.method.comc import ComcConfig, fit_comc
from tagger.evaluate.datasets import read_toy
from tagger.evaluate.harness import embed_dataset, image_text_retrieval, linprobe_head, zsclip_head
from tagger.evaluate.metrics import summarize
from tagger.models import load_clip
from tagger.method.scoring import ScoreConfig
from tagger.text import comc_corpus
from tagger.toyworld import LABEL_SYNONYMS, LABELS


def ablation_rows(default: ScoreConfig) -> list[tuple[str, ScoreConfig]]:
    """The CoMC ablation ladder, each row adding one component, then the defaults and their ablations."""
    base = replace(default, memory="none", use_local=False, standardize=False)
    rows = [("CoMC global only", base)]
    for mem in ("prompts", "prompts-ensemble", "sentences"):
        rows.append((f"+ mapping [{mem}]", replace(base, memory=mem)))
    mapped = replace(base, memory=default.memory)
    rows.append((f"+ local ({default.memory})", replace(mapped, use_local=True)))
    rows.append(("+ standardisation", replace(mapped, use_local=True, standardize=True)))
    rows.append(("full CoMC (shipped defaults)", default))
    rows.append(("full CoMC without mapping", replace(default, memory="none")))
    rows.append(("full CoMC without local", replace(default, use_local=False)))
    return rows


def evaluate_model(name: str, n: int, n_small: int, vocab: str = "toy", n_labels: int | None = None,
                   n_sentences: int | None = None, split: str = "test", quick: bool = False) -> dict:
    if vocab == "large":
        from large_vocab import evaluate_large  # bench/ is the script's folder
        return evaluate_large(name, n, n_small, n_labels, n_sentences, split, quick)
    clip = load_clip(name, device="cpu")
    test = embed_dataset(clip, read_toy(n=n, split="test"))
    small = embed_dataset(clip, read_toy(n=n_small, split="test", small_only=True))
    table: dict[str, dict] = {}

    def add(row: str, scores_test, scores_small) -> None:
        m, ms = summarize(scores_test, test.labels), summarize(scores_small, small.labels)
        table[row] = {"mAP": round(m["mAP"], 2), "F1@3": round(m["F1@3"], 2), "mAP_small": round(ms["mAP"], 2)}

    for row, head in (("ZS-CLIP (1 prompt)", zsclip_head("single")),
                      ("ZS-CLIP (ensemble)", zsclip_head("ensemble")),
                      ("ZS-CLIP (ensemble + standardisation)", zsclip_head("ensemble", True))):
        add(row, head(clip, test), head(clip, small))
    cfg = ComcConfig()
    t0 = time.time()
    model = fit_comc(clip, LABELS, LABEL_SYNONYMS, cfg, corpus=comc_corpus(LABELS, LABEL_SYNONYMS, cfg))
    fit_s = time.time() - t0
    for row, sc in ablation_rows(cfg.score):
        add(row, model.scores(test.global_, test.patches.astype("float32"), sc),
            model.scores(small.global_, small.patches.astype("float32"), sc))
    probe = linprobe_head()
    add("Supervised linear probe (ceiling)", probe(clip, test), probe(clip, small))
    summary = {"ceiling_mAP": table["Supervised linear probe (ceiling)"]["mAP"],
               "ceiling_mAP_small": table["Supervised linear probe (ceiling)"]["mAP_small"],
               "zs_1prompt_mAP": table["ZS-CLIP (1 prompt)"]["mAP"],
               "full_mAP": table["full CoMC (shipped defaults)"]["mAP"]}
    summary["full_over_ceiling"] = round(summary["full_mAP"] / max(summary["ceiling_mAP"], 1e-9), 3)
    return {"summary": summary, "rows": table, "i2t_R@1": round(image_text_retrieval(clip, n=1000), 2),
            "comc_fit_s": round(fit_s, 1)}


def print_table(name: str, res: dict) -> None:
    if "i2t_R@1" in res:
        print(f"\n{name}  (image->text R@1 on 1000 held-out pairs: {res['i2t_R@1']:.1f}%)")
    else:
        print(f"\n{name}  ({res['labels_with_truth']} labels with truth, {res['labels']} in all, "
              f"{res['split']} split)")
    print(f"| {'method':40s} | {'mAP':>6s} | {'F1@3':>6s} | {'mAP small':>9s} |")
    print(f"|{'-' * 42}|{'-' * 8}|{'-' * 8}|{'-' * 11}|")
    for row, m in res["rows"].items():
        print(f"| {row:40s} | {m['mAP']:6.1f} | {m['F1@3']:6.1f} | {m['mAP_small']:9.1f} |")
    for row, m in res["rows"].items():
        if "groups" in m:
            print(f"  {row}: mAP by kind " + ", ".join(f"{k} {v:.1f}" for k, v in m["groups"].items()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--n-small", type=int, default=500)
    p.add_argument("--models", nargs="+", default=["toy-vit", "toy-rn"])
    p.add_argument("--vocab", choices=("toy", "large"), default="toy",
                   help="toy: the 20 objects; large: 305 labels with truth (tagger/toyworld/large.py)")
    p.add_argument("--labels", type=int, default=None, help="with --vocab large: distractors up to this many labels")
    p.add_argument("--n-sentences", type=int, default=None, help="with --vocab large: corpus label sets")
    p.add_argument("--split", choices=("val", "test"), default="test", help="with --vocab large")
    p.add_argument("--quick", action="store_true", help="with --vocab large: the summary's rows only")
    a = p.parse_args()
    if a.vocab == "toy" and (a.labels or a.n_sentences or a.split != "test" or a.quick):
        p.error("--labels, --n-sentences, --split and --quick go with --vocab large")
    out = {}
    for name in a.models:
        out[name] = evaluate_model(name, a.n, a.n_small, a.vocab, a.labels, a.n_sentences, a.split, a.quick)
        print_table(name, out[name])
    extra = {} if a.vocab == "toy" else {"vocab": "large", "split": a.split, "labels": a.labels,
                                         "n_sentences": a.n_sentences}
    print(json.dumps({"bench": "quality", "n_test": a.n, "n_small": a.n_small, **extra, "results": out}))


if __name__ == "__main__":
    main()
