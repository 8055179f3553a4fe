"""Quality ablation on held-out toy-world scenes, for both toy models.

    python bench/quality.py [--n 2000] [--n-small 500] [--models toy-vit toy-rn]

Rows: zero-shot CLIP (one prompt, ensemble, + standardisation); CoMC global only; + mapping with
each memory variant; + local; + standardisation; the full method with the shipped defaults
(``ScoreConfig()``, chosen on val by bench/tune.py) and without its mapping or local branch; and
the supervised linear-probe ceiling. Columns: mAP and F1@3 on the test split, and mAP on the small-object
subset. Ends with one JSON line of the whole table.
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


def evaluate_model(name: str, n: int, n_small: int) -> dict:
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
    print(f"\n{name}  (image->text R@1 on 1000 held-out pairs: {res['i2t_R@1']:.1f}%)")
    print(f"| {'method':40s} | {'mAP':>6s} | {'F1@3':>6s} | {'mAP small':>9s} |")
    print(f"|{'-' * 42}|{'-' * 8}|{'-' * 8}|{'-' * 11}|")
    for row, m in res["rows"].items():
        print(f"| {row:40s} | {m['mAP']:6.1f} | {m['F1@3']:6.1f} | {m['mAP_small']:9.1f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--n-small", type=int, default=500)
    p.add_argument("--models", nargs="+", default=["toy-vit", "toy-rn"])
    a = p.parse_args()
    out = {}
    for name in a.models:
        out[name] = evaluate_model(name, a.n, a.n_small)
        print_table(name, out[name])
    print(json.dumps({"bench": "quality", "n_test": a.n, "n_small": a.n_small, "results": out}))


if __name__ == "__main__":
    main()
