"""The incremental nightly: train and tag only the labels that changed, carry the rest over.

- :func:`train_increment`: the current run's classifier kept frozen; the rows of the added labels
  (and of those whose synonyms or descendants changed) trained against it on the new corpus
  (:func:`tagger.method.classifier.train_rows`), with their class prompts, as an
  :class:`~tagger.method.extend.ExtendedModel` (content-addressed, recorded as a classifier).
- :func:`run_increment_tag`: a new tag run (mode ``incremental``, ``base_run`` the current run). Only
  the new labels are calibrated (their mean and sd over the same sample) and decided; the kept labels'
  statistics and decisions are the base run's. Each shard the base run tagged keeps the base run's
  tags of the kept labels (scores, positives, confidences unchanged; ranks moved down by the new
  labels that score above them) and gains the new labels' tags (each image's positives and those in
  its top-k), raised by their descendants under a label hierarchy (:mod:`tagger.pipeline.lift`);
  retired labels and those retrained are dropped. A shard the base run did not tag (new
  images) is tagged in full with the kept labels scored by the base model, so every image of the run
  is decided alike. The rank of a new label's tag below an image's top-k counts the base run's kept
  tags above it (a lower bound).
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import ConfigError
from ..ids import short_sha256
from ..method.decisions import Decisions
from ..method.reviewed import reviewed_columns
from ..workspace import Workspace
from .calibration import (DecisionInputs, decision_inputs, decision_rows, decisions_from_rows, former_positives,
                          hold_former, parents_in, same_sample)
from .lift import Lift, plan_lift
from .readouts import save_state
from .retag import retag_images, reviewed_again
from .scorer import ShardScorer, apply_statistics, label_statistics
from .tag import (TagConfig, TagShards, _resume_or_start, _shards_key,
                  fit_run_decisions, load_run, read_label_stats, tag_all, tag_rows, write_label_stats, write_parquet_atomic)

if TYPE_CHECKING:
    from ..method.extend import ExtendedModel
    from ..method.names import ZeroShotNames

__all__ = ["carry_rows", "run_increment_tag", "start_based_run", "torch_threads", "train_increment"]

logger = logging.getLogger(__name__)

#: Memory rows each patch of an image attends to for the new labels besides their prompts: those the
#: image's global embedding attends to most (toy world, 30 -> 40 labels: new-label mAP 87.38 with 4
#: rows, 87.36 with every row, 85.00 with the global readout alone; full retrain 87.44).
PATCH_ROWS = 4

#: How the new rows are trained (:func:`tagger.method.classifier.train_rows`): every sentence about a
#: new label, and a seeded sample of the others, OTHERS_PER_POSITIVE per such sentence and at least
#: MIN_OTHERS; the base classifier's schedule with ROW_EPOCHS epochs (None: the base's). A smaller
#: sample does not keep quality: toy world, 100 labels + 10, new-label mAP 75.31 with 8 / 4,096 and
#: 67.72 with 2 / 1,024 against 74.96 after a full retrain.
OTHERS_PER_POSITIVE = 8
MIN_OTHERS = 4096
#: The sample takes fewer optimiser steps than the full corpus, and rows trained with the base's
#: learning rate stayed short of a full training's: toy world, 1,000 labels + 10 (a sample of 11,880
#: of 93,320 sentences), their text anchors sat high on the images' scale and the decisions found 4
#: of the 10 new labels absent. The rate is scaled by r = corpus / sample rows (there r = 7.9:
#: new-label mAP from scores 89.1 against 87.7, anchors in line with a full retrain's).
#: Larger vocabularies make the sample a smaller share (toy world, 3,000 labels + 10: r about 28; at
#: 10,000 labels about 100), and the rate alone fell short: new-label mAP 38.8 with the rate x 8 and 20
#: epochs, 52.0 with the rate x r, 55.0 with x r and 40 epochs, 57.0 with x r and 60 epochs, against
#: 55.1 after a full retrain. So the rate follows r up to MAX_LR_SCALE, and the epochs grow as
#: r / EPOCHS_AFTER, at most MAX_EPOCH_SCALE times (at 1,000 labels, r = 7.9: nothing changes).
MAX_LR_SCALE = 64.0
EPOCHS_AFTER = 8.0
MAX_EPOCH_SCALE = 3.0
ROW_EPOCHS: int | None = None
#: Torch threads of that training: its matrices are small (a batch of 512 against the label rows), and
#: a second thread spinning at each step's barriers cost 14x the CPU seconds on a busy 2-core machine
#: (1,611 sentences, 1,000 frozen rows: 3.1 CPU s with one thread, 43.6 with two).
ROW_THREADS = 1


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """At most ``n`` torch intra-op threads inside the block (the previous count restored after)."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, min(n, before)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_increment(workspace: Workspace, model: str, pretrained: str | None, corpus_id: str, base_id: str,
                    retrain: list[str]) -> dict[str, Any]:
    """Extend the classifier ``base_id`` to the labels of corpus ``corpus_id``: new rows for the labels
    it lacks and for ``retrain`` (changed synonyms, or descendants in the label hierarchy), the others
    frozen; labels no longer in the corpus dropped. Returns the classifier id and the labels trained."""
    from ..catalog import Catalog
    from ..method.alike import MIN_ALIKE
    from ..method.classifier import TrainConfig
    from ..method.reading import MIN_READING
    from ..text import TextCorpus
    from .classifiers import load_model
    from .renames import row_sources
    from .train import loss_rules
    from ..atomic import atomic_dir

    corpus = TextCorpus.load(workspace.text_dir(corpus_id))
    base = load_model(workspace.classifier_dir(base_id))
    names, frozen_set = list(corpus.class_names), set(base.labels) - set(retrain)
    background = set(corpus.background)  # trained beside the new rows (their negatives), then dropped
    kept = [n for n in names if n in frozen_set]
    trained = [n for n in names if n not in frozen_set or n in background]
    new = [n for n in trained if n not in background]
    if not new:  # only labels retired: nothing to train (the background rows would be dropped unused)
        trained = []
    cfg = TrainConfig(**{k: v for k, v in asdict(base.classifier.config).items()})
    if ROW_EPOCHS is not None:
        cfg = replace(cfg, epochs=ROW_EPOCHS)
    rules = loss_rules(corpus)
    sample = {"others_per_positive": OTHERS_PER_POSITIVE, "min_others": MIN_OTHERS, "max_lr_scale": MAX_LR_SCALE,
              "epochs_after": EPOCHS_AFTER, "max_epoch_scale": MAX_EPOCH_SCALE, "min_term_reading": MIN_READING,
              "min_alike": MIN_ALIKE, **({"rules": rules} if rules else {})}
    read: dict[str, Any] = {}
    with Catalog.for_job(workspace.catalog, "train") as cat:
        moved, taken, told = row_sources(workspace, cat, base, corpus, new)
        sample.update(taken)
        cid = short_sha256(json.dumps(["extend", base_id, corpus_id, asdict(cfg), kept, new, PATCH_ROWS, sample]))
        out = workspace.classifier_dir(cid)
        rec = cat.get_classifier(base_id) or {}
        if not out.exists():
            ext, read = _extend(workspace, model, pretrained, corpus, corpus_id, base, kept, trained, new, cfg,
                                moved, told)
            with atomic_dir(out, replace=False) as tmp:
                ext.save(tmp, base_id)
        config = {**(rec.get("config") or {}), "head": "comc", "extends": base_id, "trained": new}
        cat.add_classifier(cid, model_id=str(rec.get("model_id") or base.classifier.model_id), labels=kept + new, corpus_id=corpus_id,
                           config=config, path=workspace.relative(out))
    logger.info("nightly: classifier %s extended as %s: %d label rows trained, %d kept frozen", base_id, cid,
                len(new), len(kept))
    return {"classifier_id": cid, "head": "comc", "trained_labels": new, **read}


def _extend(workspace: Workspace, model: str, pretrained: str | None, corpus, corpus_id: str, base,
            kept: list[str], trained: list[str], new: list[str], cfg, moved: dict, told: dict
            ) -> tuple[ExtendedModel, dict[str, Any]]:
    """Train the rows of ``trained`` against the frozen rows of ``kept`` on ``corpus``; the extended
    model (new rows, their text anchors and class prompts) and what the text reading found."""
    from ..method.anchors import text_anchors
    from ..method.classifier import TextClassifier, train_rows
    from ..method.extend import PROMPT_TEMPLATES, ExtendedModel
    from ..method.zeroshot import class_embeddings
    from ..models import load_clip
    from ..method.alike import MIN_ALIKE
    from ..method.reading import MIN_READING
    from ..method.hierarchy import implied_labels
    from ..text.corpus import corpus_parents
    from ..text.terms import trainable
    from .renames import moved_anchors
    from .train import TextMemo, corpus_embeddings

    names, background = list(corpus.class_names), set(corpus.background)
    clip = load_clip(model, pretrained)
    emb, n_new = corpus_embeddings(workspace, clip, corpus)
    kept_text = trainable(corpus, emb, MIN_READING, MIN_ALIKE, labels=new)  # ancestors set there
    emb, y = kept_text.embeddings, kept_text.corpus.label_matrix
    where = {n: j for j, n in enumerate(base.labels)}
    frozen = base.classifier.weight[[where[n] for n in kept]]
    column = {n: j for j, n in enumerate(names)}
    cols = [column[n] for n in trained]
    implied = implied_labels(y, names, corpus_parents(corpus.config))
    with torch_threads(ROW_THREADS):
        rows, metrics = train_rows(emb, y, frozen, cols, cfg, others_per_positive=OTHERS_PER_POSITIVE,
                                   min_others=MIN_OTHERS, max_lr_scale=MAX_LR_SCALE,
                                   epochs_after=EPOCHS_AFTER, max_epoch_scale=MAX_EPOCH_SCALE,
                                   implied=implied)
    for n, (src, o) in moved.items():  # a rename keeps the row it had: the same thing, the same scores
        rows[trained.index(n)] = src.classifier.weight[list(src.labels).index(o)]
    metrics.update(told)
    anchors = moved_anchors(text_anchors(emb, rows, y[:, cols], implied=None if implied is None else implied[:, cols]),
                            trained, moved)
    labelled = np.asarray([i for i, n in enumerate(trained) if n not in background], np.int64)
    keys = _alike_keys(new, kept_text.groups, set(kept), base.classifier.anchors, list(base.labels))
    rows, anchors = rows[labelled], anchors.take(labelled).with_alike(new, keys)
    metrics["background_rows_dropped"] = len(trained) - len(new)
    read = kept_text.summary()
    metrics.update(read)
    memo = TextMemo(clip, workspace.prompt_embeddings(clip.model_id))
    templates = {k: t for k, t in PROMPT_TEMPLATES.items() if k in base.memories
                 and k in ("prompts", base.score.memory)}  # what scoring and naming read
    prompts = {k: class_embeddings(memo, new, t) if new else np.zeros((0, rows.shape[1]), np.float32)
               for k, t in templates.items()}
    ext = ExtendedModel(base, kept, TextClassifier(rows, new, clip.model_id, corpus_id, cfg,
                                                   {**metrics, "new_sentences_embedded": n_new}, anchors),
                        prompts, base.score, PATCH_ROWS)
    return ext, read


def _alike_keys(new: list[str], groups: dict[str, str], frozen: set[str], base_anchors, base_labels: list[str]
                ) -> dict[str, str]:
    """Each new label found alike -> its corroboration key: that of a frozen label of its group (as the
    base model keys it), so the two name each other, else its group's first label."""
    base_keys = _keys_of(base_anchors, base_labels)
    out = {}
    for n in new:
        if n in groups:
            held = [x for x, first in groups.items() if first == groups[n] and x in frozen]
            out[n] = base_keys.get(held[0], held[0]) if held else groups[n]
    return out


def _keys_of(anchors, labels: list[str]) -> dict[str, str]:
    """Each label -> its corroboration key as ``anchors`` key it (alike labels share one); none without anchors."""
    return dict(zip(labels, anchors.name_keys(labels))) if anchors is not None else {}


def _positions(ids: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    order = np.argsort(ids, kind="stable")
    return order[np.searchsorted(ids, wanted, sorter=order)]


def carry_rows(carried: pa.Table, image_ids: np.ndarray, scores: np.ndarray, labels: list[str],
               decisions: Decisions, top_k: int, lift: "Lift | None" = None) -> pa.Table:
    """A shard's tags: the base run's ``carried`` rows (their ranks moved down by the new labels that
    score above them) and the rows of the new ``labels`` (calibrated ``scores`` ``(n, N)``) that are
    positive or in the image's top-k, after ``lift`` raised them by their descendants."""
    ids = np.asarray(image_ids, np.int64)
    positive, conf = decisions.positive(scores), decisions.confidence(scores)
    if lift is not None:
        scores, positive, conf = lift.apply(carried, ids, scores, positive, conf)
    c_img = _positions(ids, np.asarray(carried.column("image_id").to_numpy(), np.int64)) if carried.num_rows \
        else np.zeros(0, np.int64)
    c_score = np.asarray(carried.column("score").to_numpy(zero_copy_only=False), np.float32)
    c_rank = np.asarray(carried.column("rank").to_numpy(zero_copy_only=False), np.int64)
    above_new = (scores[c_img] > c_score[:, None]).sum(1)
    slots = np.bincount(c_img, minlength=len(ids)).max(initial=0)
    dense = np.full((len(ids), max(1, slots)), -np.inf, np.float32)  # each image's carried scores
    order = np.argsort(c_img, kind="stable")
    starts = np.searchsorted(c_img[order], np.arange(len(ids)))
    dense[c_img[order], np.arange(len(order)) - starts[c_img[order]]] = c_score[order]
    rank = 1 + (dense[:, None, :] > scores[:, :, None]).sum(2) + (scores[:, None, :] > scores[:, :, None]).sum(2)
    r, c = np.nonzero(positive | (rank <= top_k))
    new = pa.table({"image_id": pa.array(ids[r]), "label": pa.array(np.asarray(labels, object)[c].tolist(), pa.string()),
                    "score": pa.array(scores[r, c].astype(np.float32)), "rank": pa.array(rank[r, c].astype(np.int16)),
                    "positive": pa.array(positive[r, c]), "confidence": pa.array(conf[r, c], pa.float32())})
    old = pa.table({"image_id": carried.column("image_id").cast(pa.int64()), "label": carried.column("label"),
                    "score": pa.array(c_score), "rank": pa.array((c_rank + above_new).astype(np.int16)),
                    "positive": carried.column("positive"), "confidence": carried.column("confidence").cast(pa.float32())})
    return pa.concat_tables([old, new])


class ExtendShards(TagShards):
    """Actor stage of an incremental run: per shard, the base run's tags of the kept labels plus the
    new labels' tags, or (a shard the base run did not tag) every label's tags."""

    def __init__(self, root: str, model_id: str, classifier_dir: str, run_dir: str, cfg: TagConfig, stats,
                 decisions: Decisions, base_dir: str, new_stats, new_decisions: Decisions, hierarchy=None,
                 reviewed=None, lift: "Lift | None" = None) -> None:
        super().__init__(root, model_id, classifier_dir, run_dir, cfg, stats, decisions, hierarchy, reviewed)
        self.base_dir, self.new_stats, self.new_decisions = Path(base_dir), new_stats, new_decisions
        self.lift = lift
        self.states_from = self.base_dir  # the base run's readout states (ShardScorer.base_state)
        self._dropped: pa.Array | None = None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n_tags = []
        model: "ExtendedModel" = self.model
        for name in batch["shard"]:
            out, base = Workspace.tag_file(self.run_dir, name), Workspace.tag_file(self.base_dir, name)
            if out.exists():
                n_tags.append(pq.ParquetFile(out).metadata.num_rows)
                continue
            shard = self.load(name)
            if base.exists():
                old = pq.read_table(base)
                if self._dropped is None:  # the base labels this run drops (retired, re-trained): a few
                    self._dropped = pa.array(sorted(set(model.base.labels) - set(model.kept)), pa.string())
                if len(self._dropped):
                    old = old.filter(pc.invert(pc.is_in(old.column("label"), self._dropped)))
                scores, state = self.new_scores_state(shard)
                table = carry_rows(old, shard.ids, apply_statistics(scores, self.new_stats),
                                   model.new_labels, self.new_decisions, self.cfg.top_k, self.lift)
                if state is not None:
                    save_state(self.run_dir, name, shard.ids, *state)
            else:
                table = tag_rows(shard.ids, self.calibrated(shard), model.labels, self.cfg, self.decisions,
                                 self.hierarchy)
                kept = self.full_state(shard.global_vecs)
                if kept is not None:
                    save_state(self.run_dir, name, shard.ids, *kept)
            write_parquet_atomic(table, out)
            n_tags.append(table.num_rows)
        return {"shard": batch["shard"], "n_tags": np.asarray(n_tags, np.int64)}


def _new_sample(scorer: ShardScorer, shards: list[str]) -> np.ndarray:
    """Raw new-label scores of the calibration sample (the same images a full run samples)."""
    parts = [scorer.new_scores(shard)[:k] for shard, k in scorer._sample_shards(shards)]
    return np.concatenate(parts) if parts else np.zeros((0, len(scorer.model.new_labels)), np.float32)


def _decide_new(cat, run_id: int, base_run: int, scorer: ShardScorer, shards: list[str], labels: list[str],
                inputs: DecisionInputs, base_stats: dict[str, tuple[float, float]]) -> tuple[Any, Decisions]:
    """The new labels' statistics and decisions, fitted on their columns of the calibration sample;
    the run's stored decisions are the base run's for the kept labels plus these (a resumed run
    reuses them)."""
    model = scorer.model
    new, n_kept = model.new_labels, len(model.kept)
    new_set = set(new)
    sample = _new_sample(scorer, shards)
    stats = label_statistics(sample) if len(sample) else ([0.0] * len(new), [1.0] * len(new))
    stored = cat.run_thresholds(run_id)
    if stored and {r["label"] for r in stored} == set(labels):
        return stats, decisions_from_rows([r for r in stored if r["label"] in new_set], new, scorer.cfg.decisions)
    kept = set(model.kept)
    base_rows = {r["label"]: r for r in cat.run_thresholds(base_run)}
    kept_rows = [r for r in base_rows.values() if r["label"] in kept]
    mean, std = (np.asarray(v, np.float64) for v in stats)
    anchors = model.rows.anchors.rescaled(mean, std) if model.rows.anchors is not None else None
    top1 = _named(scorer.zeroshot_top1(shards, cat.active_hierarchy()), model, anchors, n_kept)
    mine = DecisionInputs({k: v for k, v in inputs.pinned.items() if k in new_set}, inputs.labelled)
    calibrated = apply_statistics(sample, stats)
    d, refit = fit_run_decisions(calibrated, new, scorer.cfg, mine, _labelled_new(cat, scorer, mine, new, stats),
                                 anchors, top1, _base_placement(scorer, kept_rows, base_stats))
    if anchors is not None and scorer.cfg.decision == "anchored":
        former = former_positives(cat, base_run, labels, new, len(sample))
        skip = refit | parents_in(cat, base_run)  # a parent's count there holds its children's images too
        d = hold_former(d, calibrated, anchors, scorer.cfg.decisions, top1, former, skip,
                        "renamed or given more synonyms",
                        grow=same_sample(scorer.root, base_run, scorer.sample_shard_names(shards)))
    metrics = model.rows.metrics or {}
    stats, d = _as_renamed(d, stats, {**(metrics.get("regrouped_rows") or {}), **(metrics.get("renamed_rows") or {})},
                           base_rows, base_stats, scorer.cfg.decisions)
    cat.save_run_thresholds(run_id, kept_rows + decision_rows(d, refit))
    return stats, d


def _named(top1: "np.ndarray | ZeroShotNames | None", model: "ExtendedModel", anchors, n_kept: int
           ) -> "ZeroShotNames | None":
    """Each sample image's best zero-shot match among every label of the model, for the new labels'
    names check: a kept label's name is a rival as in a full run (``crescent`` added beside ``moon``
    is named 'moon' by moon's images), where before only the new labels' names were counted. A new
    label that is a parent keeps its family (:class:`~tagger.method.names.ZeroShotNames`)."""
    from ..method.names import ZeroShotNames
    if top1 is None:
        return None
    kept, new = list(model.kept), list(model.new_labels)
    base_keys = _keys_of(getattr(model.base.classifier, "anchors", None), list(model.base.labels))
    keys = [base_keys.get(n, n) for n in kept] + (anchors.name_keys(new) if anchors is not None else new)
    own = np.arange(len(new)) + n_kept
    if not isinstance(top1, ZeroShotNames):
        return ZeroShotNames(np.asarray(top1, np.int64), kept + new, own, keys)
    family = {j - n_kept: f for j, f in (top1.family or {}).items() if j >= n_kept}
    return ZeroShotNames(top1.top1, kept + new, own, keys, top1.wide, family)


def _as_renamed(d: Decisions, stats, renamed: dict[str, str], base_rows: dict[str, dict[str, Any]],
                base_stats: dict[str, tuple[float, float]], cfg) -> tuple[Any, Decisions]:
    """A renamed label whose row moved with it (the same scores) decided as the base run decided it
    under its old name: its statistics and fitted decision carried over, so it keeps exactly the
    images it had (then its descendants raise it). Likewise a label only regrouped by the hierarchy
    (``renamed`` maps it to itself). A pinned or labelled-refit old decision is left to the new fit."""
    carry = {n: o for n, o in renamed.items() if n in d.labels and o in base_stats and o in base_rows
             and base_rows[o].get("source", "fit") == "fit"}
    if not carry:
        return stats, d
    mean, std = list(stats[0]), list(stats[1])
    d = Decisions.from_dict(d.to_dict())
    if d.label_cutoffs is None:
        d.label_cutoffs = np.array(d.cutoffs())
    for n, o in carry.items():
        j = d.labels.index(n)
        one = decisions_from_rows([{**base_rows[o], "label": n}], [n], cfg)
        d.take_fit(j, one, 0)
        if d.text_separation is not None and one.text_separation is not None:
            d.text_separation[j] = one.text_separation[0]
        how = f"renamed from '{o}'" if o != n else "only the label hierarchy changed around it"
        d.reasons[j] = f"{one.reason(0)}; {how}: its row, and its decision, as they were"
        mean[j], std[j] = base_stats[o]
        logger.info("%s decided as '%s' was: %s, its row kept", n, o, how)
    return (mean, std), d


def _base_placement(scorer: ShardScorer, kept_rows: list[dict[str, Any]],
                    stats: dict[str, tuple[float, float]]) -> float | None:
    """Where the base run's anchored decisions placed the positives, read back from its kept labels'
    stored components (the new labels take it when too few of them fit their own)."""
    from ..method.placement import placement_of

    base = scorer.model.base
    anchors = getattr(base.classifier, "anchors", None)
    rows = [r for r in kept_rows if r["present"] and r["source"] == "fit" and r.get("mu1") is not None
            and r["label"] in stats]
    if anchors is None or not rows:
        return None
    where = {n: j for j, n in enumerate(base.labels)}
    cols = np.asarray([where[r["label"]] for r in rows], np.int64)
    mean, std = (np.asarray([stats[r["label"]][k] for r in rows], np.float64) for k in (0, 1))
    return placement_of(np.asarray([r["mu1"] for r in rows], np.float64), anchors.take(cols).rescaled(mean, std),
                        scorer.cfg.decisions)


def _labelled_new(cat, scorer: ShardScorer, inputs: DecisionInputs, new: list[str], stats):
    """Calibrated new-label scores and truth of the labelled images (None without any)."""
    if not inputs.labelled:
        return None
    by_shard: dict[str, list[int]] = {}
    for image_id, shard in cat.shards_of(scorer.model_id, sorted(inputs.labelled)):
        by_shard.setdefault(shard, []).append(image_id)
    ids, parts = [], []
    for name in sorted(by_shard):
        shard = scorer.load(name)
        rows = np.flatnonzero(np.isin(np.asarray(shard.ids), by_shard[name]))
        ids += [int(i) for i in np.asarray(shard.ids)[rows]]
        parts.append(scorer.new_scores(shard)[rows])
    scores = np.concatenate(parts) if parts else np.zeros((0, len(new)), np.float32)
    return apply_statistics(scores, stats), inputs.truth(ids, new)


def start_based_run(cat, root: str, model_id: str, classifier_id: str, labels: list[str], cfg: TagConfig,
                    mode: str, base_run: int) -> tuple[list[str], DecisionInputs, Any, int, dict[str, Any] | None]:
    """The start of a run made from ``base_run`` (``mode`` incremental or carried): the done shards, the
    decision inputs, the label hierarchy, and the run resumed or started; with the summary of a run an
    interrupted call already loaded (the review decisions applied again), else None."""
    from ..method.hierarchy import Hierarchy
    from ..store import list_done_shards
    shards = list_done_shards(root, model_id)
    inputs = decision_inputs(cat, labels)
    hierarchy = Hierarchy.build(labels, cat.active_hierarchy())
    run_id, status = _resume_or_start(cat, model_id, classifier_id, labels, cfg, _shards_key(shards),
                                      inputs.key(), hierarchy.key, mode=mode, base_run=base_run)
    if status == "running":
        return shards, inputs, hierarchy, run_id, None
    cat.apply_review(run_id)
    run = cat.get_run(run_id)
    return shards, inputs, hierarchy, run_id, {"run_id": run_id, "n_tags": run.n_tags, "n_images": run.n_images,
                                               "tag_s": 0.0, "mode": mode, "base_run": base_run}


def run_increment_tag(workspace: Workspace, model_id: str, cfg: TagConfig, classifier_id: str, base_run: int,
                      *, crash_after: int | None = None) -> dict[str, Any]:
    """Tag into a new incremental run from the extended classifier ``classifier_id`` and the run
    ``base_run`` (module docstring); load it without making it current. A rerun resumes it."""
    from ..catalog import Catalog

    t0, root = time.time(), str(workspace.root)
    base_dir = workspace.run_dir(str(base_run))
    base_stats = read_label_stats(base_dir)
    if base_stats is None or cfg.decision == "standardized":
        raise ConfigError(f"run {base_run} keeps no calibration statistics, or the rule decides per image: "
                          "an incremental run needs both per label")
    with Catalog.for_job(workspace.catalog, "tag") as cat:
        labels = list((cat.get_classifier(classifier_id) or {})["labels"])
        shards, inputs, hierarchy, run_id, done = start_based_run(cat, root, model_id, classifier_id, labels, cfg,
                                                                  "incremental", base_run)
        if done is not None:
            return done
        run_dir = workspace.run_dir(str(run_id))
        run_dir.mkdir(parents=True, exist_ok=True)
        clf_dir = str(workspace.classifier_dir(classifier_id))
        scorer = ShardScorer(root, model_id, clf_dir, cfg)
        scorer.states_from = base_dir
        model: "ExtendedModel" = scorer.model
        new_stats, new_d = _decide_new(cat, run_id, base_run, scorer, shards, labels, inputs, base_stats)
        stats = ([base_stats[n][0] for n in model.kept] + list(new_stats[0]),
                 [base_stats[n][1] for n in model.kept] + list(new_stats[1]))
        write_label_stats(run_dir, labels, stats)
        decisions = decisions_from_rows(cat.run_thresholds(run_id), labels, cfg.decisions)
        pairs = cat.review_pairs() if not hierarchy.empty else []
        lift = plan_lift(model.new_labels, model.kept, cat.active_hierarchy(), pairs)
        reviewed = reviewed_columns(pairs, labels) if pairs else None
        tag_all(ExtendShards, (root, model_id, clf_dir, str(run_dir), cfg, stats, decisions, str(base_dir),
                               new_stats, new_d, None if hierarchy.empty else hierarchy, reviewed, lift),
                cfg, shards, crash_after)
        again = reviewed_again(cat, run_id, base_run)
        if again:
            fresh = [s for s in shards if not Workspace.tag_file(base_dir, s).is_file()]
            retag_images(cat, TagShards(root, model_id, clf_dir, str(run_dir), cfg, stats, decisions,
                                        None if hierarchy.empty else hierarchy, reviewed), run_dir, again, fresh)
        t_tag = time.time() - t0
        n, n_images, previous, flips = load_run(cat, workspace, run_id, run_dir, shards, scorer, model_id, labels,
                                                stats, decisions, t0, t_tag)
    logger.info("incremental run %d from run %d: %d labels scored and decided, %d carried over", run_id, base_run,
                len(model.new_labels), len(model.kept))
    return {"run_id": run_id, "n_tags": n, "n_images": n_images, "tag_s": round(t_tag, 2), "decision": cfg.decision,
            "labels_present": int(decisions.present.sum()), "flips": flips, "flips_against": previous,
            "mode": "incremental", "base_run": base_run, "scored_labels": model.new_labels}
