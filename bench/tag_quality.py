"""Quality of the fast scoring path against the exact one, on the toy world (companion of bench/tag.py).

    python bench/tag_quality.py [--models toy-vit toy-rn] [--vocab toy|large] [--labels N]
                                [--n-val 1000] [--n-test 2000] [--patch-labels 5 8 12 16]

For each model: CoMC fitted as ``bench/quality.py`` fits it (the 20 toy labels, or with ``--vocab
large`` the 305 labels with truth of ``tagger.toyworld.large``, plus distractors up to ``--labels``),
the val and test scenes embedded through the evaluation harness (cached), then the mAP (over the
labels with truth and at least one positive) of ``comc_scores`` with the exact path
(``patch_labels=None``), with the shipped default ``ScoreConfig()``, with each
``--patch-labels`` k and with each ``--patch-memory`` r (the default, patches attending over r rows), and how often an image's true labels are among its k candidates. A default
that does not prune at this vocabulary size says so (``default_prunes``). Ends with one JSON line.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from tagger.evaluate.datasets import read_toy
from tagger.evaluate.harness import embed_dataset
from tagger.method.comc import ComcConfig, ComcModel, fit_comc
from tagger.method.metrics import mean_average_precision
from tagger.method.scoring import ScoreConfig, candidate_labels, global_scores
from tagger.models import load_clip


def fit(name: str, vocab: str, n_labels: int | None, n_sentences: int | None):
    """(clip, model, labels with truth) for ``vocab``."""
    if vocab == "toy":
        from tagger.text import comc_corpus
        from tagger.toyworld import LABEL_SYNONYMS, LABELS
        clip, cfg = load_clip(name, device="cpu"), ComcConfig()
        model = fit_comc(clip, LABELS, LABEL_SYNONYMS, cfg, corpus=comc_corpus(LABELS, LABEL_SYNONYMS, cfg))
        return clip, model, len(LABELS)
    sys.path.insert(0, str(Path(__file__).parent))
    from large_vocab import fit_large, text_memo, vocab_of  # bench/ is the script's folder
    words = vocab_of(n_labels)
    clip = text_memo(load_clip(name, device="cpu"))
    model, _ = fit_large(clip, words, ComcConfig(), n_sentences)
    return clip, model, words.n_truth


def split_quality(model: ComcModel, g: np.ndarray, p: np.ndarray, y: np.ndarray, truth: int,
                  ks: list[int], rows: list[int] = ()) -> dict:
    """mAP of the exact path, the default and each k, and the candidates' recall of the true labels;
    then the default with the patches attending over each image's ``rows`` memory rows."""
    keep = y.sum(0) > 0

    def score(cfg: ScoreConfig) -> float:
        return round(mean_average_precision(model.scores(g, p, cfg)[:, :truth][:, keep], y[:, keep]), 3)

    exact_cfg = replace(model.score, patch_labels=None)
    default = replace(model.score, patch_labels=ScoreConfig().patch_labels)
    out = {"exact": score(exact_cfg), "default": score(default)}
    out["default_delta"] = round(out["default"] - out["exact"], 3)
    gs = global_scores(g, model.classifier.weight, model.memory(exact_cfg.memory), exact_cfg)
    pos = y > 0
    for k in ks:
        cand = np.zeros(gs.shape, bool)
        np.put_along_axis(cand, candidate_labels(gs, k), True, axis=1)
        out[f"k{k}"] = {"delta": round(score(replace(model.score, patch_labels=k)) - out["exact"], 3),
                        "recall": round(float((cand[:, :truth] & pos).sum() / max(pos.sum(), 1)), 4)}
    for r in rows:
        out[f"memory{r}"] = {"delta": round(score(replace(default, patch_memory=r)) - out["exact"], 3)}
    return out


def evaluate(name: str, a: argparse.Namespace) -> dict:
    clip, model, truth = fit(name, a.vocab, a.labels, a.n_sentences)
    res: dict = {"labels": len(model.labels), "labels_with_truth": truth,
                 "default_prunes": (ScoreConfig().patch_labels or len(model.labels)) < len(model.labels)}
    for split, n in (("val", a.n_val), ("test", a.n_test)):
        kw = {} if a.vocab == "toy" else {"vocab": "large"}
        data = embed_dataset(clip, read_toy(n=n, split=split, **kw))
        res[split] = split_quality(model, data.global_, data.patches, data.labels, truth, a.patch_labels,
                                   a.patch_memory)
        print(name, split, json.dumps(res[split]), flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["toy-vit", "toy-rn"])
    ap.add_argument("--vocab", choices=("toy", "large"), default="toy")
    ap.add_argument("--labels", type=int, default=None, help="with --vocab large: distractors up to this many")
    ap.add_argument("--n-sentences", type=int, default=None, help="with --vocab large: corpus label sets")
    ap.add_argument("--n-val", type=int, default=1000)
    ap.add_argument("--n-test", type=int, default=2000)
    ap.add_argument("--patch-labels", type=int, nargs="+", default=[5, 8, 12, 16])
    ap.add_argument("--patch-memory", type=int, nargs="*", default=[16, 32, 64, 128],
                    help="memory rows each image's patches attend over (ScoreConfig.patch_memory)")
    a = ap.parse_args()
    if a.vocab == "toy" and (a.labels or a.n_sentences):
        ap.error("--labels and --n-sentences go with --vocab large")
    out = {name: evaluate(name, a) for name in a.models}
    print(json.dumps({"bench": "tag_quality", "vocab": a.vocab, "labels": a.labels, "n_val": a.n_val,
                      "n_test": a.n_test, "default": ScoreConfig().to_dict(), "results": out}))


if __name__ == "__main__":
    main()
