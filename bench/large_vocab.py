"""The large toy vocabulary in ``bench/quality.py --vocab large`` (also imported by bench/text_scale.py),
and the sentences-per-label sweep when run alone:

    python bench/large_vocab.py [--counts 2500 5000 10000 20000 40000] [--models toy-rn toy-vit] [--split val]

305 labels with exact truth (:mod:`tagger.toyworld.large`), optionally with distractor words up to
any vocabulary size: zero-shot CLIP, the CoMC ablation ladder and the linear-probe ceiling, mAP over
the labels with truth. The CoMC corpus is the offline one the 20-label benchmark uses
(``ComcConfig()``: 20,000 label sets plus the prompt templates), built for the whole vocabulary with
its hierarchy (a red hexagon is a hexagon), trained on its targets as the train stage does.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import numpy as np

from tagger.evaluate.datasets import read_toy
from tagger.evaluate.harness import cache_root, embed_dataset, linprobe_head
from tagger.evaluate.metrics import per_class_ap, summarize
from tagger.ids import short_sha256
from tagger.method.comc import ComcConfig, fit_comc
from tagger.method.zeroshot import ENSEMBLE_PROMPTS, SINGLE_PROMPT, class_embeddings, zero_shot_scores
from tagger.models import load_clip
from tagger.pipeline.train import TextMemo
from tagger.text import OfflineGenerator, TextCorpus, Vocabulary, build_corpus
from tagger.text.offline import generator_words
from tagger.toyworld import LABELS
from tagger.toyworld.large import LargeVocab, large_vocabulary

__all__ = ["evaluate_large", "fit_large", "large_corpus", "text_memo", "vocab_of"]

PROBE = "Supervised linear probe (ceiling)"


def vocab_of(n_labels: int | None) -> LargeVocab:
    """The large vocabulary with distractors up to ``n_labels`` (none of the generator's words)."""
    return large_vocabulary(n_labels, exclude=generator_words())


def text_memo(clip) -> TextMemo:
    """``clip`` whose text embeddings are kept in the harness cache, one file per model."""
    return TextMemo(clip, cache_root() / "text" / f"{short_sha256(clip.model_id, 16)}.npz")


def large_corpus(vocab: LargeVocab, cfg: ComcConfig, n_sentences: int | None = None) -> TextCorpus:
    """The offline corpus of ``cfg`` (``n_sentences`` label sets when given) for the whole vocabulary."""
    gen = OfflineGenerator(Vocabulary.create(vocab.labels, vocab.synonyms), seed=cfg.text_seed)
    return build_corpus(vocab.labels, vocab.synonyms, n_sentences or cfg.n_sentences, gen, seed=cfg.text_seed,
                        max_labels=cfg.max_labels, include_templates=cfg.include_templates, parents=vocab.parents)


def fit_large(clip, vocab: LargeVocab, cfg: ComcConfig, n_sentences: int | None = None):
    """CoMC fitted on :func:`large_corpus` (targets with ancestors); returns (model, corpus)."""
    corpus = large_corpus(vocab, cfg, n_sentences)
    emb = clip.encode_text(corpus.sentences)
    model = fit_comc(clip, vocab.labels, vocab.synonyms, cfg, corpus=replace(corpus, label_matrix=corpus.targets()),
                     embeddings=emb)
    return model, corpus


def label_groups(vocab: LargeVocab) -> dict[str, tuple[int, int]]:
    """Column ranges of the kinds of labels with truth (objects, backgrounds, colour and size compounds)."""
    kinds = ["objects" if i < len(LABELS) else "backgrounds" if lab.endswith(" background") else
             "sizes" if lab.split(" ", 1)[0] in ("small", "big") else "colours" for i, lab in enumerate(vocab.truth)]
    out: dict[str, tuple[int, int]] = {}
    for i, k in enumerate(kinds):
        a, _ = out.get(k, (i, i))
        out[k] = (a, i + 1)
    return out


def evaluate_large(name: str, n: int, n_small: int, n_labels: int | None = None, n_sentences: int | None = None,
                   split: str = "test", quick: bool = False) -> dict:
    """The quality table of one model on the large vocabulary (mAP over the labels with truth);
    ``quick`` keeps the rows of the summary only (zero-shot, CoMC global and full, the ceiling)."""
    from quality import ablation_rows  # bench/ is the script's folder

    vocab = vocab_of(n_labels)
    clip = text_memo(load_clip(name, device="cpu"))
    test = embed_dataset(clip, read_toy(n=n, split=split, vocab="large"))
    small = embed_dataset(clip, read_toy(n=n_small, split=split, small_only=True, vocab="large"))
    t = vocab.n_truth
    table: dict[str, dict] = {}
    groups = label_groups(vocab)

    def add(row: str, scores_test: np.ndarray, scores_small: np.ndarray) -> None:
        m, ms = summarize(scores_test[:, :t], test.labels), summarize(scores_small[:, :t], small.labels)
        table[row] = {"mAP": round(m["mAP"], 2), "F1@3": round(m["F1@3"], 2), "mAP_small": round(ms["mAP"], 2)}
        table[row]["labels_with_positives"] = m["n_classes_with_positives"]
        ap = per_class_ap(scores_test[:, :t], test.labels)
        table[row]["groups"] = {g: round(float(100 * np.nanmean(ap[a:b])), 1) for g, (a, b) in groups.items()}

    for row, prompts, std in (("ZS-CLIP (1 prompt)", SINGLE_PROMPT, False),
                              ("ZS-CLIP (ensemble)", ENSEMBLE_PROMPTS, False),
                              ("ZS-CLIP (ensemble + standardisation)", ENSEMBLE_PROMPTS, True)):
        if quick and row == "ZS-CLIP (ensemble)":
            continue
        cls = class_embeddings(clip, vocab.labels, prompts)
        add(row, zero_shot_scores(test.global_, cls, std), zero_shot_scores(small.global_, cls, std))
    cfg = ComcConfig()
    t0 = time.time()
    model, corpus = fit_large(clip, vocab, cfg, n_sentences)
    fit_s = time.time() - t0
    rows = ablation_rows(cfg.score)
    if quick:
        rows = [(r, sc) for r, sc in rows if r.startswith(("full CoMC (shipped", "CoMC global only"))]
    for row, sc in rows:
        add(row, model.scores(test.global_, test.patches.astype("float32"), sc),
            model.scores(small.global_, small.patches.astype("float32"), sc))
    probe = linprobe_head(vocab="large")
    add(PROBE, probe(clip, test), probe(clip, small))
    summary = {"ceiling_mAP": table[PROBE]["mAP"], "ceiling_mAP_small": table[PROBE]["mAP_small"],
               "zs_1prompt_mAP": table["ZS-CLIP (1 prompt)"]["mAP"],
               "full_mAP": table["full CoMC (shipped defaults)"]["mAP"]}
    summary["full_over_ceiling"] = round(summary["full_mAP"] / max(summary["ceiling_mAP"], 1e-9), 3)
    return {"summary": summary, "rows": table, "labels": len(vocab.labels),
            "labels_with_truth": table[PROBE]["labels_with_positives"], "split": split,
            "corpus_sentences": len(corpus), "generated_sentences": corpus.stats["kept"],
            "comc_fit_s": round(fit_s, 1)}



def sweep(name: str, counts: list[int], n: int, split: str, n_labels: int | None) -> list[dict]:
    """Full CoMC (shipped defaults) mAP over the labels with truth for each corpus size."""
    vocab = vocab_of(n_labels)
    clip = text_memo(load_clip(name, device="cpu"))
    data = embed_dataset(clip, read_toy(n=n, split=split, vocab="large"))
    t = vocab.n_truth
    ceiling = summarize(linprobe_head(vocab="large")(clip, data), data.labels)["mAP"]
    rows = []
    for count in counts:
        t0 = time.time()
        model, corpus = fit_large(clip, vocab, ComcConfig(), count)
        gen = corpus.label_matrix[np.array([s == "generated" for s in corpus.sources])]
        m = summarize(model.scores(data.global_, data.patches.astype("float32"))[:, :t], data.labels)["mAP"]
        rows.append({"model": name, "split": split, "labels": len(vocab.labels), "n_sentences": count,
                     "sentences_per_label": round(float(gen.sum(0).mean()), 1), "full_mAP": round(m, 2),
                     "ceiling_mAP": round(ceiling, 2), "over_ceiling": round(m / ceiling, 3),
                     "fit_s": round(time.time() - t0, 1)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description="Sentences per label needed on the large toy vocabulary: "
                                "full CoMC mAP against the ceiling for several corpus sizes (one JSON line each).")
    p.add_argument("--counts", type=int, nargs="+", default=[2500, 5000, 10000, 20000, 40000])
    p.add_argument("--models", nargs="+", default=["toy-rn", "toy-vit"])
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--split", choices=("val", "test"), default="val")
    p.add_argument("--labels", type=int, default=None, help="distractors up to this many labels")
    a = p.parse_args()
    out = [r for name in a.models for r in sweep(name, a.counts, a.n, a.split, a.labels)]
    print(json.dumps({"bench": "sentences_per_label", "results": out}))


if __name__ == "__main__":
    main()
