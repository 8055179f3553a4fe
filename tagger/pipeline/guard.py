"""The guard every trained head goes through: validated on held-out annotations against the text-only head.

``tagger train --head ... --annotations F`` holds out a seeded, stratified part of the annotated
images (:func:`~tagger.method.heads.guarded.heldout_split`), fits the head on the rest and wraps it
with the text-only CoMC head (:class:`~tagger.method.heads.guarded.GuardedModel`). Both are then
scored and decided on the held-out images as a tag run would decide them: each model's scores of
the corpus's calibration sample give the per-label statistics and the decisions (anchored rule,
pinned thresholds applied); the guarded model's own labels are decided from held-out images, cross-
fitted over folds so that no image judges a decision it helped to fit. The table has, per head, the
mAP and the micro precision, recall and F1 of positives over the labels the annotations show. The
new head is kept only when its F1 beats the text-only head's (or with ``force``).
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from ..evaluate.metrics import mean_average_precision
from ..method.decisions import Decisions, TextAnchors
from ..method.heads.guarded import GuardConfig, head_columns, masked_anchors
from .calibration import DecisionInputs
from .tag import TagConfig, apply_statistics, fit_run_decisions, label_statistics

if TYPE_CHECKING:
    from ..workspace import Workspace
    from ..method.names import ZeroShotNames

__all__ = ["TABLE_COLUMNS", "decide_like_tag", "format_table", "validate", "validate_in_workspace", "verdict"]

logger = logging.getLogger(__name__)

TABLE_COLUMNS = ("head", "mAP", "F1", "precision", "recall")


def decide_like_tag(sample: np.ndarray, labels: list[str], anchors: TextAnchors | None,
                    pins: dict[str, float] | None = None, labelled: tuple[np.ndarray, np.ndarray] | None = None,
                    cfg: TagConfig | None = None, zeroshot_top1: "np.ndarray | ZeroShotNames | None" = None
                    ) -> tuple[Any, Decisions]:
    """(statistics, decisions) a tag run fits from raw corpus scores ``sample`` with the model's raw
    ``anchors``, the user's ``pins``, raw ``labelled`` (scores, truth) and the sample images' best
    zero-shot label (``zeroshot_top1``)."""
    cfg = cfg or TagConfig()
    stats = label_statistics(sample) if cfg.calibrate else None
    a = anchors if anchors is None or stats is None else anchors.rescaled(*(np.asarray(v, np.float64) for v in stats))
    lab = None if labelled is None else (apply_statistics(labelled[0], stats), labelled[1])
    d, _ = fit_run_decisions(apply_statistics(sample, stats), labels, cfg, DecisionInputs(dict(pins or {}), {}),
                             lab, a, zeroshot_top1)
    return stats, d


def _metrics(name: str, scores: np.ndarray, pred: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    tp, npred, ntrue = int((pred & y).sum()), int(pred.sum()), int(y.sum())
    p, r = tp / max(1, npred), tp / max(1, ntrue)
    return {"head": name, "mAP": round(mean_average_precision(scores, y), 2),
            "F1": round(100 * 2 * tp / max(1, npred + ntrue), 2), "precision": round(100 * p, 2),
            "recall": round(100 * r, 2), "positives": npred}


def _folds(n: int, k: int, seed: int) -> list[np.ndarray]:
    return [f for f in np.array_split(np.random.default_rng(seed).permutation(n), min(k, n)) if len(f)]


def _composite(text: np.ndarray, head: np.ndarray, cols: np.ndarray) -> np.ndarray:
    out = np.array(text, np.float32, copy=True)
    out[:, cols] = np.asarray(head)[:, cols]
    return out


def validate(labels: list[str], y_held: np.ndarray, eval_cols: np.ndarray, text: tuple, head: tuple,
             candidates: np.ndarray, names: tuple[str, str] = ("text", "head"), pins: dict[str, float] | None = None,
             cfg: GuardConfig | None = None, tag_cfg: TagConfig | None = None,
             zeroshot_top1: "np.ndarray | ZeroShotNames | None" = None) -> dict[str, Any]:
    """The validation table. ``text`` is (raw calibration sample, raw held-out scores, raw anchors or
    None); ``head`` (raw sample, raw held-out scores) with the head's own scores at ``candidates``.
    Per fold of the held-out images, the labels the head scores are chosen
    (:func:`~tagger.method.heads.guarded.head_columns`) and decided from the other folds, and the
    fold is predicted; ``head_labels`` are the labels chosen on every held-out image."""
    cfg = cfg or GuardConfig()
    y = np.asarray(y_held, bool)
    stats, d = decide_like_tag(text[0], labels, text[2], pins, cfg=tag_cfg, zeroshot_top1=zeroshot_top1)
    pred_text = d.positive(apply_statistics(text[1], stats))
    pred_head = np.zeros_like(y)
    chosen = []
    for rows in _folds(len(y), cfg.folds, cfg.seed):
        rest = np.setdiff1d(np.arange(len(y)), rows)
        cols = head_columns(head[1][rest], text[1][rest], y[rest], candidates, cfg)
        chosen.append(int(len(cols)))
        held = _composite(text[1], head[1], cols)
        y_lab = np.zeros_like(y)
        y_lab[:, cols] = y[:, cols]
        stats_h, d_h = decide_like_tag(_composite(text[0], head[0], cols), labels, masked_anchors(text[2], cols), pins,
                                       (held[rest], y_lab[rest]) if len(cols) else None, tag_cfg, zeroshot_top1)
        pred_head[rows] = d_h.positive(apply_statistics(held[rows], stats_h))
    final = head_columns(head[1], text[1], y, candidates, cfg)
    e = np.asarray(eval_cols, np.int64)
    table = [_metrics(names[0], text[1][:, e], pred_text[:, e], y[:, e]),
             _metrics(names[1], _composite(text[1], head[1], final)[:, e], pred_head[:, e], y[:, e])]
    return {"rows": table, "images": int(len(y)), "labels_evaluated": int(len(e)), "head_labels": final.tolist(),
            "fold_head_labels": chosen}


def verdict(table: dict[str, Any] | None, force: bool, min_images: int,
            fallback: str = "text-only head") -> tuple[bool, str]:
    """(keep the new head, why): kept when its F1 on the held-out images beats the text-only head's;
    ``fallback`` names the head that stays in use otherwise."""
    if table is None:
        why = f"too few annotated images to validate it (fewer than {min_images} held out)"
        return (True, f"kept (--force) although {why}") if force else \
            (False, f"{fallback} kept: {why}; annotate more images or give --force")
    text, head = table["rows"]
    if not table["head_labels"]:  # chosen on all held-out images: it would tag as the text-only head does
        why = "it would score no label itself (none does better than the text-only head on the held-out images)"
        return (True, f"{head['head']} kept (--force) although {why}") if force else \
            (False, f"{fallback} kept: {why}")
    if head["F1"] > text["F1"]:
        return True, f"{head['head']} kept: F1 {head['F1']:.1f} > {text['F1']:.1f} of the text-only head"
    why = f"F1 {head['F1']:.1f} <= {text['F1']:.1f} of the text-only head on {table['images']} held-out images"
    return (True, f"{head['head']} kept (--force) although {why}") if force else \
        (False, f"{fallback} kept: {head['head']} is not better ({why}); --force keeps it")


def format_table(table: dict[str, Any]) -> list[str]:
    """The table as text lines (what ``tagger train`` prints)."""
    folds = table.get("fold_head_labels") or []
    span = f"{min(folds)}-{max(folds)}" if folds and min(folds) != max(folds) else str(folds[0]) if folds else "-"
    out = [f"validation on {table['images']} held-out annotated images, {table['labels_evaluated']} labels: the new "
           f"head scores {len(table['head_labels'])} of them, the text-only head the others (its row is cross-"
           f"validated: each fold chose its labels, {span}, on the other folds)",
           f"  {'head':28s} {'mAP':>6s} {'F1':>6s} {'precision':>9s} {'recall':>6s}"]
    out += [f"  {r['head']:28s} {r['mAP']:6.1f} {r['F1']:6.1f} {r['precision']:9.1f} {r['recall']:6.1f}"
            for r in table["rows"]]
    return out


def validate_in_workspace(workspace: "Workspace", cat, model_id: str, text_dir, head_dir,
                          heldout: dict[int, list[str]], eval_labels: list[str], names: tuple[str, str],
                          cfg: GuardConfig) -> dict[str, Any]:
    """:func:`validate` on a workspace: the text classifier and the guarded head in ``head_dir`` (its
    image labels are the candidates) scored as the tag stage scores them (calibration sample of the
    stored shards, held-out images from theirs; the sample's images named among the labels that are
    no label's parent)."""
    from ..store import list_done_shards
    from .tag import ShardScorer
    tag_cfg = TagConfig()
    shards = list_done_shards(str(workspace.root), model_id)
    by_shard: dict[str, list[int]] = {}
    for image_id, shard in cat.shards_of(model_id, sorted(heldout)):
        by_shard.setdefault(shard, []).append(image_id)
    text, head = (ShardScorer(str(workspace.root), model_id, str(d), tag_cfg) for d in (text_dir, head_dir))
    ids, text_held = text.scores_of(by_shard)
    _, head_held = head.scores_of(by_shard)
    labels = list(head.model.labels)
    col = {n: j for j, n in enumerate(labels)}
    y = np.zeros((len(ids), len(labels)), bool)
    for r, image_id in enumerate(ids):
        y[r, [col[n] for n in heldout[image_id] if n in col]] = True
    pins = {k: v for k, v in cat.pinned_thresholds().items() if k in col}
    eval_cols = np.asarray([col[n] for n in eval_labels if n in col], np.int64)
    return validate(labels, y, eval_cols, (text.calibration_sample(shards), text_held, text.model.classifier.anchors),
                    (head.calibration_sample(shards), head_held), head.model.image_cols, names, pins, cfg, tag_cfg,
                    text.zeroshot_top1(shards, cat.active_hierarchy()))  # named as the tag run names
