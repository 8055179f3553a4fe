"""Tag stage: stored embeddings (global + PQ patch codes) -> CoMC scores -> top-k + positive tags.

No image is decoded: each shard's global embeddings come from its shard file and its patch
embeddings from the PQ patch store. Before tagging, the driver scores a calibration sample (the
first ``calibration_images`` images in shard order, so a rerun sees the same sample), z-scores each
label over it and fits each label's decision there (:mod:`tagger.method.decisions`): a threshold on the
stored score and a confidence in [0, 1], with the user's pinned thresholds and labelled set applied.
The decisions are stored with the run before any tag is written; a resumed run reuses them. The
label hierarchy then makes the ancestors of each positive label positive, their scores and
confidences the max of their descendants' (:mod:`tagger.method.hierarchy`). Each
shard's tags are written as one Parquet file, atomically, so a rerun of a killed run skips what is
done. The driver loads all files into DuckDB in one transaction and only then switches
``current_tags`` to the run.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..atomic import atomic_open
from ..errors import ConfigError, SimulatedCrash
from ..ids import short_sha256
from ..method.decisions import DecisionConfig, Decisions, TextAnchors, fit_anchored, fit_decisions, fit_from_labels
from ..method.hierarchy import Hierarchy
from ..method.reviewed import Reviewed, lifted_images, reviewed_columns, with_review
from ..method.zeroshot import standardize
from ..workspace import Workspace
from .calibration import (LABELLED_MIN_IMAGES, DecisionInputs, decision_inputs, decision_rows, decisions_from_rows,
                          former_positives, hold_former, parents_in, same_sample)
from .raycluster import check_node_resource
from .readouts import save_state
from .scorer import ShardScorer, apply_statistics, label_statistics, load_scoring_model, prompt_vectors

if TYPE_CHECKING:
    from ..method.names import ZeroShotNames

__all__ = ["DECISION_RULES", "ShardScorer", "TagConfig", "TagShards", "apply_statistics", "fit_run_decisions",
           "label_statistics", "load_scoring_model", "positive_mask", "prompt_vectors", "read_label_stats", "run_tag",
           "tag_all", "tag_rows", "write_label_stats", "write_parquet_atomic"]

logger = logging.getLogger(__name__)
DECISION_RULES = ("anchored", "mixture", "standardized")
LABEL_STATS_FILE = "label_stats.json"  # in a run's folder: its calibration, per label


@dataclass(frozen=True)
class TagConfig:
    """What a run keeps: the top-k labels per image plus every positive, and how positives are decided."""

    top_k: int = 5
    # "anchored": per label, components on the classifier's text scale and a prior fitted to the corpus;
    # "mixture": both components fitted to the corpus; "standardized": the per-image z-score rule below
    decision: str = "anchored"
    threshold: float = 1.0  # "standardized" only: on the per-image standardised calibrated score
    decisions: DecisionConfig = DecisionConfig()  # "anchored" and "mixture": how each label's threshold is fitted
    calibrate: bool = True  # z-score each label over a sample of the corpus, so every label can rank
    calibration_images: int = 4096  # the first images in shard order: label statistics and decision fit
    patch_source: str = "pq"  # "pq" (compressed store) | "raw" (fp16 patches in the shards)
    concurrency: int = 1
    num_gpus: float = 0.0
    node_resource: str | None = None  # custom Ray resource the tagging actors need (None: any node)
    # Keep each image's readout state beside its tags when the scoring memory has at least this many
    # rows (None: never), so the next incremental nightly reads only the changed rows
    # (tagger.pipeline.readouts; about 2 KB per image at d = 512). Changes no tag.
    readout_states: int | None = 512

    def __post_init__(self) -> None:
        check_node_resource(self.node_resource)
        if self.decision not in DECISION_RULES:
            raise ConfigError(f"decision must be one of {DECISION_RULES}, got {self.decision!r}")
        if self.calibration_images < 1:
            raise ConfigError(f"calibration_images must be >= 1, got {self.calibration_images}")

    def to_dict(self) -> dict:
        return asdict(self)


def positive_mask(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Positive tags by the "standardized" rule: the per-image standardised score reaches ``threshold``."""
    return standardize(scores) >= threshold


def tag_rows(image_ids: np.ndarray, scores: np.ndarray, labels: list[str], cfg: TagConfig,
             decisions: Decisions | None = None, hierarchy: Hierarchy | None = None,
             reviewed: Reviewed | None = None) -> pa.Table:
    """Long-format tags of a score matrix: top-k per image plus every positive. With ``decisions``
    each label's own threshold decides and every row carries its confidence; without, the
    per-image standardised rule decides and confidence is null. A ``hierarchy`` then raises each
    label's ancestors (positive, score and confidence), before ranking, from the labels as a person
    decided them where ``reviewed`` says so (an accepted circle makes its image a shape; a rejected one
    no longer does)."""
    if decisions is not None:
        positive, conf = decisions.positive(scores), decisions.confidence(scores)
    else:
        positive, conf = positive_mask(scores, cfg.threshold), None
    if hierarchy is not None and reviewed is not None:
        positive = with_review(image_ids, positive, reviewed)
    if hierarchy is not None:
        scores, positive, conf = hierarchy.propagate(scores, positive, conf)
    k = min(cfg.top_k, scores.shape[1])
    order = np.argsort(-scores, axis=1, kind="stable")
    rank = np.empty_like(order)
    rows_idx = np.arange(scores.shape[0])[:, None]
    rank[rows_idx, order] = np.arange(scores.shape[1])[None, :]
    keep = (rank < k) | positive
    r, c = np.nonzero(keep)
    return pa.table({
        "image_id": pa.array(np.asarray(image_ids, np.int64)[r]),
        "label": pa.array(np.asarray(labels, object)[c].tolist(), pa.string()),
        "score": pa.array(scores[r, c].astype(np.float32)),
        "rank": pa.array((rank[r, c] + 1).astype(np.int16)),
        "positive": pa.array(positive[r, c]),
        "confidence": pa.array(conf[r, c], pa.float32()) if conf is not None else pa.nulls(len(r), pa.float32()),
    })


def fit_run_decisions(sample: np.ndarray, labels: list[str], cfg: TagConfig, inputs: DecisionInputs,
                      labelled: tuple[np.ndarray, np.ndarray] | None = None,
                      anchors: TextAnchors | None = None,
                      zeroshot_top1: "np.ndarray | ZeroShotNames | None" = None,
                      placement: float | None = None) -> tuple[Decisions, set[str]]:
    """Each label's decision on the (calibrated) corpus sample, pins applied, labels with enough
    labelled images re-fitted from them (``labelled``: their scores and multi-hot truth). The
    anchored rule needs the classifier's ``anchors`` in the sample's units; a classifier saved
    without them is decided by the mixture rule; ``zeroshot_top1`` (each sample image's best
    matching label name) lets it corroborate weakly learnt labels by their names; ``placement`` is
    the anchored rule's placement where too few labels fit their own (an incremental run's base). Returns the
    decisions in their stored precision and the labels the labelled set re-fitted."""
    if cfg.decision == "anchored" and anchors is None:
        logger.warning("the model carries no text anchors (an image-trained head, or a classifier trained "
                       "by an earlier version): deciding by the mixture rule")
    if cfg.decision == "anchored" and anchors is not None:
        d = fit_anchored(sample, labels, anchors, cfg.decisions, overrides=inputs.pinned, zeroshot_top1=zeroshot_top1,
                         placement=placement)
    else:
        d = fit_decisions(sample, labels, cfg.decisions, overrides=inputs.pinned)
    refit: set[str] = set()
    if labelled is not None and len(labelled[0]):
        s, y = labelled
        d = fit_from_labels(d, s, y, corpus_scores=sample, min_images=LABELLED_MIN_IMAGES)
        enough = (y.sum(0) >= LABELLED_MIN_IMAGES) & ((~y).sum(0) >= LABELLED_MIN_IMAGES)
        refit = {labels[j] for j in np.flatnonzero(enough)}
    return Decisions.from_dict(d.to_dict()), refit


def write_parquet_atomic(table: pa.Table, path: Path) -> None:
    """Write ``table`` to ``path`` as Parquet, atomically (a reader never sees half a file)."""
    with atomic_open(path) as fh:
        pq.write_table(table, fh)


class TagShards(ShardScorer):
    """Actor stage: rows are shard names; writes ``tags-<shard>.parquet`` for each into the run dir."""

    def __init__(self, root: str, model_id: str, classifier_dir: str, run_dir: str, cfg: TagConfig,
                 stats: tuple[list[float], list[float]] | None = None, decisions: Decisions | None = None,
                 hierarchy: Hierarchy | None = None, reviewed: Reviewed | None = None) -> None:
        super().__init__(root, model_id, classifier_dir, cfg)
        self.run_dir = Path(run_dir)
        self.stats, self.decisions, self.hierarchy, self.reviewed = stats, decisions, hierarchy, reviewed

    def calibrated(self, shard, state=None) -> np.ndarray:
        raw = self.scores(shard) if state is None else self.scores(shard, state)
        return apply_statistics(raw, self.stats)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n_tags = []
        for name in batch["shard"]:
            out = Workspace.tag_file(self.run_dir, name)
            if out.exists():
                n_tags.append(pq.ParquetFile(out).metadata.num_rows)
                continue
            shard = self.load(name)
            state = self.full_state(shard.global_vecs)
            table = tag_rows(shard.ids, self.calibrated(shard, None if state is None else state[0]),
                             self.model.labels, self.cfg, self.decisions, self.hierarchy, self.reviewed)
            if state is not None:  # the readout the scores read, kept for the next incremental nightly
                save_state(self.run_dir, name, shard.ids, *state)
            write_parquet_atomic(table, out)
            n_tags.append(table.num_rows)
        return {"shard": batch["shard"], "n_tags": np.asarray(n_tags, np.int64)}


def write_label_stats(run_dir: Path, labels: list[str], stats: tuple[list[float], list[float]]) -> None:
    """Keep a run's calibration (each label's mean and sd over the sample) beside its tag files: an
    incremental run carries the kept labels' over from it."""
    from ..atomic import atomic_write_text
    atomic_write_text(Path(run_dir) / LABEL_STATS_FILE, json.dumps({"labels": list(labels), "mean": stats[0],
                                                                    "std": stats[1]}))


def read_label_stats(run_dir: Path) -> dict[str, tuple[float, float]] | None:
    """Label -> (mean, sd) of a run's calibration (None: the run kept none)."""
    try:
        d = json.loads((Path(run_dir) / LABEL_STATS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return {n: (float(m), float(s)) for n, m, s in zip(d["labels"], d["mean"], d["std"])}


def _shards_key(shards: list[str]) -> str:
    return f"{len(shards)}:" + short_sha256("\n".join(sorted(shards)))


def _tag_settings(cfg: TagConfig) -> dict[str, Any]:
    """The tag settings a run records (where actors run, and whether readout states are kept, change no tag)."""
    return {k: v for k, v in cfg.to_dict().items() if k not in ("node_resource", "readout_states")}


def _resume_or_start(cat, model_id: str, classifier_id: str, labels: list[str], cfg: TagConfig,
                     shards_key: str, inputs_key: dict[str, Any] | None, hierarchy_key: str | None = None,
                     *, mode: str = "full", base_run: int | None = None) -> tuple[int, str]:
    """Resume the newest run with the same inputs (unfinished, or loaded but not yet superseded);
    otherwise start a new one. Pins and the labelled set are inputs too. Every other run still
    'running' was left by a process that ended (this job holds the job lock), so it is marked
    failed. The label hierarchy is an input too, and so are the run's mode and the run an incremental
    run carries labels over from. Returns (run_id, status)."""
    config: dict[str, Any] = {"tag": _tag_settings(cfg), "shards": shards_key, "decision_inputs": inputs_key,
                              "hierarchy": hierarchy_key}
    config["review"] = cat.review_key()  # people's accept / reject decisions are inputs too
    if hierarchy_key is not None:  # the images whose ancestors those decisions raise (a carried run re-tags them)
        config["lifted"] = lifted_images(cat.review_pairs(), cat.active_hierarchy()) or None
    for run in reversed(cat.runs(kind="tag")):
        same = run.model_id == model_id and run.classifier_id == classifier_id and (run.mode or "full") == mode \
            and run.base_run == base_run and all((run.config or {}).get(k) == v for k, v in config.items())
        if same and run.status in ("running", "loaded", "current"):
            cat.abandon_runs(keep=run.run_id)
            return run.run_id, run.status
        if same:
            break
    cat.abandon_runs()
    return cat.start_run("tag", model_id=model_id, classifier_id=classifier_id, labels=labels, config=config,
                         mode=mode, base_run=base_run), "running"


def _labelled_scores(cat, scorer: ShardScorer, model_id: str, inputs: DecisionInputs, labels: list[str],
                     stats) -> tuple[np.ndarray, np.ndarray] | None:
    """Calibrated scores and truth of the labelled images encoded with ``model_id`` (None if none)."""
    if not inputs.labelled:
        return None
    by_shard: dict[str, list[int]] = {}
    for image_id, shard in cat.shards_of(model_id, sorted(inputs.labelled)):
        by_shard.setdefault(shard, []).append(image_id)
    ids, scores = scorer.scores_of(by_shard)
    logger.info("calibrating from %d labelled images", len(ids))
    return apply_statistics(scores, stats), inputs.truth(ids, labels)


def _apply_review(cat, run_id: int, scorer: ShardScorer | None, model_id: str, labels: list[str], stats,
                  decisions: Decisions | None) -> int:
    """Write the review decisions into the loaded run; accepted tags it did not keep are scored as the
    run scores (calibrated, with their confidence) and added. Returns the tags added."""
    missing = cat.accepted_missing(run_id) if scorer is not None else []
    by_shard: dict[str, list[int]] = {}
    for image_id, shard in cat.shards_of(model_id, sorted({i for i, _ in missing})) if missing else []:
        by_shard.setdefault(shard, []).append(image_id)
    no_scores: tuple[list[int], np.ndarray] = ([], np.zeros((0, len(labels)), np.float32))
    ids, raw = scorer.scores_of(by_shard) if by_shard and scorer is not None else no_scores
    s = apply_statistics(raw, stats)
    conf = decisions.confidence(s) if decisions is not None else np.full(s.shape, np.nan, np.float32)
    row, col = {i: k for k, i in enumerate(ids)}, {n: j for j, n in enumerate(labels)}
    at = [(i, lab, row[i], col[lab]) for i, lab in missing if i in row and lab in col]
    scored = pa.table({"image_id": pa.array([a[0] for a in at], pa.int64()),
                       "label": pa.array([a[1] for a in at], pa.string()),
                       "score": pa.array([s[r, c] for _, _, r, c in at], pa.float32()),
                       "confidence": pa.array([conf[r, c] for _, _, r, c in at], pa.float32(), from_pandas=True)})
    cat.apply_review(run_id, scored)
    return scored.num_rows


def _decide(cat, run_id: int, scorer: ShardScorer | None, model_id: str, shards: list[str], labels: list[str],
            inputs: DecisionInputs | None) -> tuple[Any, Decisions | None]:
    """The run's label statistics and decisions (None: the standardized rule). Decisions stored
    with the run are reused, so a resumed run decides exactly as it started."""
    if scorer is None or (inputs is None and not scorer.cfg.calibrate):
        return None, None
    cfg = scorer.cfg
    sample, named = scorer.sample(shards, cat.active_hierarchy())
    stats = label_statistics(sample) if cfg.calibrate else None
    if inputs is None:
        return stats, None
    stored = cat.run_thresholds(run_id)
    if stored and {r["label"] for r in stored} == set(labels):
        return stats, decisions_from_rows(stored, labels, cfg.decisions)
    calibrated, anchors = apply_statistics(sample, stats), scorer.anchors(stats)
    d, refit = fit_run_decisions(calibrated, labels, cfg, inputs,
                                 _labelled_scores(cat, scorer, model_id, inputs, labels, stats), anchors, named)
    d = _hold_unchanged(cat, model_id, d, calibrated, anchors, cfg, named, refit,
                        lambda base: same_sample(scorer.root, base, scorer.sample_shard_names(shards)))
    cat.save_run_thresholds(run_id, decision_rows(d, refit))
    return stats, d


def _hold_unchanged(cat, model_id: str, d: Decisions, calibrated: np.ndarray, anchors: TextAnchors | None,
                    cfg: "TagConfig", named: "np.ndarray | ZeroShotNames | None", refit: set[str],
                    same: Callable[[int], bool]) -> Decisions:
    """``d`` with the labels the current run had present, and that no edit changed since (same name,
    synonyms only added to, or renamed), held near their positives there (within ``KEEP`` of them:
    :mod:`tagger.method.keep`): a retrain's small shift of a label's classifier row must not take its images, nor judge it absent.
    Not across models: a run of another model says nothing of this one's scale."""
    current = cat.current_run()
    if current is None or anchors is None or cfg.decision != "anchored" or cat.get_run(current).model_id != model_id:
        return d
    labels = list(d.labels)
    former = former_positives(cat, current, labels, labels, len(calibrated))
    skip = refit | parents_in(cat, current)  # a parent's count there holds its children's images too
    held = hold_former(d, calibrated, anchors, cfg.decisions, named, former, skip, f"unchanged since run {current}",
                       grow=same(current))
    return d if held is d else Decisions.from_dict(held.to_dict())


def tag_all(actor: type, args: tuple, cfg: TagConfig, shards: list[str], crash_after: int | None) -> None:
    """Write every shard's tag file with Ray actors of class ``actor`` built from ``args`` (files
    already written are kept)."""
    from .progress import Progress
    from .capacity import check_fits, tag_ask
    from .raycluster import placement, ray_session
    with ray_session() as ray:
        check_fits([tag_ask(cfg)])
        ds = ray.data.from_items([{"shard": s} for s in shards], override_num_blocks=max(1, len(shards)))
        ds = ds.map_batches(actor, fn_constructor_args=args, batch_size=1, concurrency=cfg.concurrency,
                            num_gpus=cfg.num_gpus, **placement(cfg.node_resource))
        with Progress(len(shards), "tag", "shard") as bar:
            for k, _ in enumerate(ds.iter_rows()):
                bar.update()
                if crash_after is not None and k + 1 >= crash_after:
                    raise SimulatedCrash(f"tag: crash after {k + 1} shards")


def load_run(cat, workspace: "Workspace", run_id: int, run_dir: Path, shards: list[str], scorer: ShardScorer | None,
             model_id: str, labels: list[str], stats, decisions: Decisions | None, t0: float, t_tag: float
             ) -> tuple[int, int, int | None, list[dict[str, Any]]]:
    """Load a run's tag files, apply the review decisions, finish it, and list the labels whose
    decision flipped against the current run: ``(tags, images, current run, flips)``."""
    import time

    from ..catalog.flips import decision_flips
    paths = [workspace.tag_file(run_dir, s) for s in shards]
    n = cat.load_tags(run_id, paths) if paths else 0
    n += _apply_review(cat, run_id, scorer, model_id, labels, stats, decisions)
    n_images = cat.run_image_count(run_id)
    cat.finish_run(run_id, n_images=n_images, timings={"tag_s": round(t_tag, 2),
                                                      "total_s": round(time.time() - t0, 2)})
    previous = cat.current_run()
    flips = decision_flips(cat, previous, run_id) if previous not in (None, run_id) else []
    return n, n_images, previous, flips


def vocabulary_behind(trained: list[str], active: list[str]) -> str | None:
    """What the classifier's labels miss of the active vocabulary, in words (None: in step): tagging
    with it leaves labels added since untagged and keeps tagging labels retired since."""
    new, gone = [n for n in active if n not in set(trained)], [n for n in trained if n not in set(active)]
    if not new and not gone:
        return None
    parts = ([f"not trained for {len(new)} label(s) added since ({', '.join(new[:5])}{', ...' if len(new) > 5 else ''})"]
             if new else []) + ([f"still tags {len(gone)} retired label(s) ({', '.join(gone[:5])}"
                                 f"{', ...' if len(gone) > 5 else ''})"] if gone else [])
    return ("the classifier is behind the label edits: " + "; ".join(parts)
            + ": `tagger nightly` follows them (or generate-text, train, then tag)")


def run_tag(workspace: "Workspace", model_id: str, cfg: TagConfig | None = None, classifier_id: str | None = None,
            *, make_current: bool = True, crash_after: int | None = None,
            calibrate_with: str | os.PathLike | None = None) -> dict[str, Any]:
    """Tag every encoded image of ``model_id`` into a new run, load it, and make it current.

    ``calibrate_with`` (a CSV or Parquet file of image URI -> labels) first replaces the catalog's
    labelled set, which this and every later run calibrates from."""
    import time

    from .calibration import record_labelled_set
    from .classifiers import head_decision_inputs
    from ..catalog import Catalog
    from ..store import list_done_shards

    cfg = cfg or TagConfig()
    t0 = time.time()
    root = str(workspace.root)
    with Catalog.for_job(workspace.catalog, "tag") as cat:
        clf = cat.get_classifier(classifier_id) if classifier_id else cat.latest_classifier(model_id)
        if clf is None:
            known = [c["classifier_id"] for c in cat.classifiers()]
            hint = f"known: {', '.join(known[-5:])}" if known else "none trained yet: run `tagger train` first"
            raise ConfigError(f"unknown classifier {classifier_id!r} ({hint})")
        labels = list(clf["labels"])
        report = record_labelled_set(cat, calibrate_with, model_id, labels) if calibrate_with else None
        shards = list_done_shards(root, model_id)
        inputs = decision_inputs(cat, labels) if cfg.decision != "standardized" else None
        inputs = head_decision_inputs(workspace, clf, inputs)  # a guarded head's labels: from its held-out images
        hierarchy = Hierarchy.build(labels, cat.active_hierarchy())
        run_id, status = _resume_or_start(cat, model_id, clf["classifier_id"], labels, cfg, _shards_key(shards),
                                          inputs.key() if inputs else None, hierarchy.key)
        extra: dict[str, Any] = {"calibration": report} if report else {}
        behind = vocabulary_behind(labels, cat.active_labels())
        if behind:  # in the summary: the CLI prints it after the run's table, the jobs in their JSON
            logger.info("%s", behind)
            extra["vocabulary_behind"] = behind
        if status != "running":  # already tagged and loaded by an earlier (interrupted) call
            cat.apply_review(run_id)  # idempotent: a run killed right after its load gets them here
            if make_current and status == "loaded":
                cat.set_current(run_id)
            run = cat.get_run(run_id)
            return {"run_id": run_id, "n_tags": run.n_tags, "n_images": run.n_images, "tag_s": 0.0, **extra}
        run_dir = workspace.run_dir(str(run_id))
        run_dir.mkdir(parents=True, exist_ok=True)
        clf_dir = str(workspace.classifier_dir(clf["classifier_id"]))  # not the stored path: it may have moved
        scorer = ShardScorer(root, model_id, clf_dir, cfg) if shards else None
        stats, decisions = _decide(cat, run_id, scorer, model_id, shards, labels, inputs)
        if stats is not None:
            write_label_stats(run_dir, labels, stats)
        tag_all(TagShards, (root, model_id, clf_dir, str(run_dir), cfg, stats, decisions,
                            None if hierarchy.empty else hierarchy,
                            None if hierarchy.empty else reviewed_columns(cat.review_pairs(), labels)),
                cfg, shards, crash_after)
        t_tag = time.time() - t0
        n, n_images, previous, flips = load_run(cat, workspace, run_id, run_dir, shards, scorer, model_id, labels,
                                                stats, decisions, t0, t_tag)
        if make_current:
            cat.set_current(run_id)
    n_pos = int(decisions.present.sum()) if decisions is not None else None
    return {"run_id": run_id, "n_tags": n, "n_images": n_images, "tag_s": round(t_tag, 2),
            "decision": cfg.decision, "labels_present": n_pos, "flips": flips, "flips_against": previous, **extra}
