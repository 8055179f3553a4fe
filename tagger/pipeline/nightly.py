"""The nightly loop: encode new images, follow vocabulary changes, retrain, re-tag, switch.

Stages, each resumable on its own so that a run killed anywhere and started again ends with the
same tags as an uninterrupted run:

1. ``encode``  new or changed images only (partition shards with done-markers);
2. ``text``    the corpus of the active labels, reusing every still-valid sentence and asking the
               generator only for label sets that contain a new label (changed label parents make
               a new corpus of the same sentences, read under the new hierarchy);
3. ``train``   the classifier (content-addressed: same corpus and config -> same classifier), or
               the image-trained head in use, kept and relabelled (:mod:`tagger.pipeline.retrain`);
4. ``tag``     every image from stored global embeddings and PQ patch codes into a new run
               (per-shard Parquet files; a rerun resumes the unfinished run);
5. ``switch``  ``current_tags`` to the new run in one transaction;
6. ``prune``   old runs beyond the retention setting (``keep_runs`` counts the current run): their
               tags in the catalog, then their ``runs/<id>/`` folders; and the states of
               interrupted trainings not touched since the oldest kept run started (a training
               whose settings changed is never resumed: its state would stay for good).

Mode. A small vocabulary change makes an *incremental* nightly (:mod:`tagger.pipeline.increment`):
``train`` trains only the rows of the added labels (and of those whose synonyms changed, or whose
descendants in the label hierarchy changed, and the ancestors of all these) against the frozen
current classifier, and ``tag`` scores and decides only those labels, carrying every other
label's tags and decisions over from the current run. When no label changed (and nothing below forces a
full one), the *unchanged* nightly trains nothing: when images were added or review decisions made
since, a *carried* run (:mod:`tagger.pipeline.carry`) keeps the current run's tags and decisions and
tags only the new images (every image again when they pass ``max_changed`` of the run's), and under a
label hierarchy the images with review decisions (:mod:`tagger.pipeline.retag`); otherwise the current
run stays. Everything else makes a *full*
one, as above: ``full=True`` (``tagger nightly --full``), no current run, more than
``max_changed`` (10 %) of the current run's labels added, retired or decided again (or more than
``max_drift``, 20 %, of the last full training's labels since it, over the incremental nightlies between:
each nightly's small change adds up), a changed
text model, another head in use
than the current run's text-only classifier, changed tag settings, pins or labelled set, the
per-image decision rule, or a current run that kept no calibration statistics. The run records its
mode (``runs.mode``, ``base_run``); the choice is kept until the job ends, so a killed nightly
resumes in the mode it started in.
"""
from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from ..catalog.joblock import job_driver
from ..errors import SimulatedCrash
from ..ids import short_sha256
from .capacity import check_stages
from .encode import EncodeConfig, run_encode
from .tag import TagConfig, run_tag
from .text import N_SENTENCES, run_generate_text
from .carry import run_carried_tag
from .increment import run_increment_tag, train_increment
from .retrain import run_nightly_train

if TYPE_CHECKING:
    from ..workspace import Workspace

logger = logging.getLogger(__name__)
STAGES = ("encode", "text", "train", "tag", "switch", "prune")
# where tests may kill the job: inside the two long stages (after their first partition) and after each stage
PLAN_DIR, PLAN_FILE = "nightly", "plan.json"  # under runs/: the mode a started nightly chose
CRASH_POINTS = ("encode:mid", "encode", "text", "train", "tag:mid", "tag", "switch", "prune")


@dataclass(frozen=True)
class NightlyConfig:
    n_sentences: int = N_SENTENCES
    seed: int = 0
    keep_runs: int = 5  # tag runs kept (the current one included)
    max_missing: float = 0  # label sets allowed without a sentence (a fraction below 1, else a count)
    tag: TagConfig = TagConfig()
    full: bool = False  # always retrain and re-tag every label
    max_changed: float = 0.1  # an incremental nightly needs at most this share of the labels changed
    max_drift: float = 0.2  # ... and incremental nightlies since the last full training at most this share


def vocabulary_diff(cat) -> dict[str, list[str]]:
    """Labels added, retired, with changed synonyms and with changed parents since the current run."""
    from ..method.hierarchy import hierarchy_refits, regrouped
    from ..text import Vocabulary
    from ..text.corpus import corpus_parents
    from ..text.incremental import parents_changed, synonyms_changed

    current = cat.current_run()
    run = cat.get_run(current) if current is not None else None
    before = set(run.labels or []) if run is not None else set()
    active = cat.list_labels(include_retired=False)
    now = [lab.name for lab in active]
    changed: list[str] = []
    moved: list[str] = []
    refit: list[str] = []
    regroup: list[str] = []
    added = [x for x in now if x not in before]
    corpus = cat.classifier_corpus(run.classifier_id) if run is not None else None
    if corpus is not None and now:
        vocab = Vocabulary.create(now, {lab.name: list(lab.synonyms or []) for lab in active})
        changed = [x for x in synonyms_changed(corpus["config"] or {}, vocab) if x in before]
        old_tree, tree = corpus_parents(corpus["config"]), cat.active_hierarchy()
        moved = [x for x in parents_changed(corpus["config"] or {}, now, tree) if x in before]
        refit = hierarchy_refits(old_tree, tree, before, now, set(added) | set(changed))
        regroup = regrouped(old_tree, tree, before, now)
    return {"added": added, "retired": sorted(before - set(now)), "synonyms_changed": changed,
            "parents_changed": moved, "hierarchy_refit": refit, "regrouped": regroup}


def edited(diff: dict[str, list[str]]) -> list[str]:
    """The labels a vocabulary diff adds, retires or re-words, and the parents whose children it changed
    (its size: the ancestors trained again with them are not counted)."""
    return diff["added"] + diff["retired"] + diff["synonyms_changed"] + diff.get("regrouped", [])


def retrained(diff: dict[str, list[str]]) -> list[str]:
    """The labels of both the current run and this one whose rows an incremental nightly trains again."""
    return sorted(set(diff["synonyms_changed"]) | set(diff.get("hierarchy_refit", [])))


def _since_full(cat, run, diff: dict[str, list[str]]) -> tuple[int, set[str]]:
    """The labels of the last classifier trained in full that ``run``'s classifier extends (through the
    incremental nightlies since), and the labels added, retired or re-worded since it, this nightly's
    edits included: small changes add up to a full retrain as one large change would."""
    changed = set(edited(diff))
    seen: set[str] = set()
    clf = cat.get_classifier(run.classifier_id) if run.classifier_id else None
    while clf is not None and (clf.get("config") or {}).get("extends") and clf["classifier_id"] not in seen:
        seen.add(clf["classifier_id"])
        changed |= set((clf.get("config") or {}).get("trained") or [])
        clf = cat.get_classifier(clf["config"]["extends"])
    if clf is None or not seen:
        return len(run.labels or []), changed
    root = set(clf.get("labels") or [])
    return len(root), changed | (root - set(run.labels or []))


def _full_reason(cat, diff: dict[str, list[str]], cfg: NightlyConfig, model_id: str, run, head) -> str | None:
    """Why this nightly must retrain and re-tag every label (None: the change is small enough)."""
    from .tag import _tag_settings
    before = set(run.labels or [])
    changed = edited(diff)
    untouched = before - set(diff["added"]) - set(retrained(diff))
    pins = {k: v for k, v in cat.pinned_thresholds().items() if k in untouched}
    old_pins = {k: v for k, v in (((run.config or {}).get("decision_inputs") or {}).get("pinned") or {}).items()
                if k in untouched}
    labelled = ((run.config or {}).get("decision_inputs") or {}).get("labelled")
    n_full, since = _since_full(cat, run, diff)
    from .calibration import decision_inputs
    checks = [
        (cfg.full, "a full retrain was asked for"),
        (run.model_id != model_id, "the text model changed"),
        (len(changed) > cfg.max_changed * len(before),
         f"{len(changed)} labels added, retired, re-worded or given other children: more than "
         f"{cfg.max_changed:.0%} of the current run's {len(before)}"),
        (len(since) > cfg.max_drift * n_full,
         f"{len(since)} labels added, retired, trained again or regrouped since the last full training, this "
         f"nightly's included: more than {cfg.max_drift:.0%} of its {n_full}"),
        (head is None or head["classifier_id"] != run.classifier_id and
         (head.get("config") or {}).get("extends") != run.classifier_id, "another classifier is in use"),
        (head is not None and (((head.get("config") or {}).get("head") or "comc") != "comc"
                               or (head.get("config") or {}).get("guard")), "the head in use is not text-only"),
        (cfg.tag.decision == "standardized", "the standardized rule decides per image over every label"),
        (((run.config or {}).get("tag") or {}) != _tag_settings(cfg.tag), "the tag settings changed"),
        (pins != old_pins or decision_inputs(cat, []).key()["labelled"] != labelled, "pins or the labelled set changed"),
    ]
    return next((why for bad, why in checks if bad), None)


def _unchanged(workspace: "Workspace", cat, cfg: NightlyConfig, model_id: str, run, head) -> dict[str, Any]:
    """No label changed: the classifier in use tags again, untrained; the current run itself stays
    when it already holds every encoded image and every review decision (``retag`` false). The new
    run carries the current run's tags and decisions over and tags only the new images (``carry``),
    unless the new images pass ``max_changed`` of the run's (the calibration sample should see them)
    or review decisions were made under a label hierarchy and the run did not record the images they
    raised (a run made before it did: ``lifted``)."""
    from ..store import list_done_shards
    from .tag import _shards_key
    config = run.config or {}
    shards = list_done_shards(str(workspace.root), model_id)
    added = config.get("shards") != _shards_key(shards)
    reviewed = config.get("review") != cat.review_key()  # accepted pairs the run has not scored
    why = "the images added since" if added else "the images with review decisions made since" if reviewed else None
    mode = {"mode": "unchanged", "base_run": run.run_id, "retag": why is not None, "carry": False,
            "classifier": (head or {}).get("classifier_id") or run.classifier_id}
    if why is None:
        return {**mode, "reason": f"no label changed, no image added, no review decision since: run {run.run_id} "
                                  "stays current"}
    base_dir = workspace.run_dir(str(run.run_id))
    new = cat.images_in_shards(model_id, [s for s in shards if not workspace.tag_file(base_dir, s).is_file()])
    if new > cfg.max_changed * (run.n_images or 0):
        return {**mode, "reason": f"no label changed: the classifier in use tags every image again, {new} images "
                                  f"added since being more than {cfg.max_changed:.0%} of run {run.run_id}'s "
                                  f"{run.n_images or 0}"}
    if mode["classifier"] != run.classifier_id:
        return {**mode, "reason": f"no label changed: the classifier in use tags every image again, for {why}"}
    if reviewed and cat.active_hierarchy() and "lifted" not in config:
        return {**mode, "reason": "no label changed: the classifier in use tags every image again, for the review "
                                  "decisions made since (under a label hierarchy they reach the ancestors, and "
                                  f"run {run.run_id} did not record the images they raised)"}
    again = " (under the label hierarchy their images tagged again)" if reviewed and cat.active_hierarchy() else ""
    return {**mode, "carry": True, "reason": f"no label changed: the classifier in use tags the {new} images added "
                                             f"since, run {run.run_id}'s tags and decisions carried over"
            if new else f"no label changed: run {run.run_id}'s tags and decisions carried over, the review decisions "
                        f"made since applied{again}"}


def choose_mode(workspace: "Workspace", cat, diff: dict[str, list[str]], cfg: NightlyConfig,
                model_id: str) -> dict[str, Any]:
    """``{"mode", "reason", "base_run"}`` of this nightly (module docstring)."""
    from .classifiers import head_in_use
    from .tag import read_label_stats
    current = cat.current_run()
    if current is None:
        return {"mode": "full", "reason": "no current run", "base_run": None}
    run = cat.get_run(current)
    why = _full_reason(cat, diff, cfg, model_id, run, head_in_use(cat, model_id))
    if why is None and read_label_stats(workspace.run_dir(str(current))) is None:
        why = "the current run kept no calibration statistics"
    if why is not None:
        return {"mode": "full", "reason": why, "base_run": None}
    moved = diff.get("hierarchy_refit", [])
    if not (edited(diff) or moved):
        return _unchanged(workspace, cat, cfg, model_id, run, head_in_use(cat, model_id))
    n = len(set(diff["added"]) | set(diff["retired"]) | set(retrained(diff)))
    also = f" ({len(moved)} for the label hierarchy, their rows kept: {', '.join(moved[:5])}" \
        f"{' ...' if len(moved) > 5 else ''})" if moved else ""
    return {"mode": "incremental", "reason": f"{n} label(s) added, retired or decided again{also}, of the current "
                                             f"run's {len(run.labels or [])}",
            "base_run": current, "classifier": run.classifier_id}


def _plan(workspace: "Workspace", cat, cfg: NightlyConfig, model_id: str) -> dict[str, Any]:
    """This nightly's vocabulary diff and mode: those a killed nightly chose, when the vocabulary and
    settings are still the same, else chosen now and kept (:func:`end_plan` forgets them)."""
    from ..atomic import atomic_write_text
    key = short_sha256(json.dumps([[(x.name, sorted(x.synonyms or [])) for x in cat.list_labels(include_retired=False)],
                                   cat.active_hierarchy(), model_id, asdict(cfg)], sort_keys=True, default=str))
    path = workspace.run_dir(PLAN_DIR) / PLAN_FILE
    try:
        plan = json.loads(path.read_text())
        if plan.get("key") == key:
            logger.info("nightly: resuming the %s nightly a killed job started", plan["mode"]["mode"])
            return plan
    except (OSError, ValueError):
        pass
    diff = vocabulary_diff(cat)
    plan = {"key": key, "diff": diff, "mode": choose_mode(workspace, cat, diff, cfg, model_id)}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(plan))
    return plan


def _rebuilt(workspace: "Workspace", plan: dict[str, Any]) -> dict[str, Any]:
    """The mode of a nightly whose corpus was built anew (many labels retired, a small vocabulary):
    full, its classifier trained on the new corpus; kept in the plan so that a rerun does the same."""
    from ..atomic import atomic_write_text
    mode = {"mode": "full", "reason": "the corpus was built anew (an extension would have kept too little of it)",
            "base_run": None}
    logger.info("nightly: %s (%s)", mode["mode"], mode["reason"])
    plan["mode"] = mode
    atomic_write_text(workspace.run_dir(PLAN_DIR) / PLAN_FILE, json.dumps(plan))
    return mode


def end_plan(workspace: "Workspace") -> None:
    """Forget the kept plan: the nightly ended."""
    (workspace.run_dir(PLAN_DIR) / PLAN_FILE).unlink(missing_ok=True)


def prune_runs(workspace: "Workspace", cat, keep: int) -> list[int]:
    """Prune the catalog's runs beyond ``keep`` (the current one included), then, once that has
    committed, delete the ``runs/<id>/`` folder of every pruned run (those of earlier prunes too, so
    a job killed in between leaves no folder behind for good). Returns the runs pruned now."""
    pruned = cat.prune_runs(keep)
    for run in cat.runs(kind="tag"):
        folder = workspace.run_dir(str(run.run_id))
        if run.pruned_at is not None and folder.exists():
            shutil.rmtree(folder)
            logger.info("deleted the tag files of pruned run %d (%s)", run.run_id, folder)
    prune_training_states(workspace, cat)
    return pruned


def _utc(t: datetime) -> datetime:
    """A catalog timestamp (naive UTC, the catalog's convention) as an aware one."""
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t


def prune_training_states(workspace: "Workspace", cat) -> list[str]:
    """Delete the states of interrupted trainings last written before the oldest kept tag run
    started: ``keep_runs`` nightlies have passed without resuming them (the job lock keeps any
    training from running meanwhile). Returns the file names deleted."""
    kept = [_utc(r.started_at).timestamp() for r in cat.runs(kind="tag")
            if r.pruned_at is None and r.status in ("current", "superseded")]  # what keep_runs counts
    if not kept:
        return []
    gone = []
    for path in workspace.training_states():
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_mtime < min(kept):
                path.unlink()
                gone.append(path.name)
                logger.info("deleted the state of an interrupted training not resumed since (%s)", path.name)
    return gone


def _crash(stage: str, crash_at: str | None) -> None:
    if crash_at == stage:
        logger.warning("simulated crash after stage %s", stage)
        raise SimulatedCrash(f"nightly: crash after stage {stage}")


@job_driver("nightly")
def run_nightly(workspace: "Workspace", source: str | None, encode_cfg: EncodeConfig, cfg: NightlyConfig | None = None,
                *, crash_at: str | None = None, calibrate_with: str | None = None) -> dict[str, Any]:
    """Run every stage in order; ``crash_at`` (one of CRASH_POINTS) kills the process there (tests).
    ``calibrate_with`` replaces the catalog's labelled set before tagging (see ``run_tag``)."""
    from ..catalog import Catalog
    from ..models.registry import model_id_for

    cfg = cfg or NightlyConfig()
    if calibrate_with is not None and not cfg.full:  # a new labelled set changes every label's decisions
        cfg = replace(cfg, full=True)
    check_stages(encode_cfg, cfg.tag)  # before hours of work, not at the stage that cannot start
    timings: dict[str, float] = {}
    t = time.time()
    enc = run_encode(workspace, source, encode_cfg,
                     crash_after=1 if crash_at == "encode:mid" else None)
    timings["encode"] = time.time() - t
    _crash("encode", crash_at)
    model_id = model_id_for(encode_cfg.model, encode_cfg.pretrained)
    with Catalog.for_job(workspace.catalog, "nightly") as cat:
        plan = _plan(workspace, cat, cfg, model_id)
    diff, mode = plan["diff"], plan["mode"]
    logger.info("nightly: %s (%s)", mode["mode"], mode["reason"])
    t = time.time()
    text = run_generate_text(workspace, cfg.n_sentences, cfg.seed, max_missing=cfg.max_missing)
    timings["text"] = time.time() - t
    if mode["mode"] == "incremental" and text["corpus"] == "built":
        mode = _rebuilt(workspace, plan)
    _crash("text", crash_at)
    t = time.time()
    if mode["mode"] == "unchanged":
        trained = {"classifier_id": mode["classifier"]}
    elif mode["mode"] == "incremental":
        trained = train_increment(workspace, encode_cfg.model, encode_cfg.pretrained, text["corpus_id"],
                                  mode["classifier"], retrained(diff))
    else:
        trained = run_nightly_train(workspace, encode_cfg.model, encode_cfg.pretrained, text["corpus_id"])
    timings["train"] = time.time() - t
    _crash("train", crash_at)
    t = time.time()
    tag_crash = 1 if crash_at == "tag:mid" else None
    if mode["mode"] == "unchanged" and not mode["retag"]:
        tag = {"run_id": mode["base_run"], "flips": []}
    elif mode.get("carry"):
        tag = run_carried_tag(workspace, model_id, cfg.tag, trained["classifier_id"], mode["base_run"],
                              crash_after=tag_crash)
    elif mode["mode"] == "incremental":
        tag = run_increment_tag(workspace, model_id, cfg.tag, trained["classifier_id"], mode["base_run"],
                                crash_after=tag_crash)
    else:
        tag = run_tag(workspace, model_id, cfg.tag, trained["classifier_id"], make_current=False,
                      crash_after=tag_crash, calibrate_with=calibrate_with)
    timings["tag"] = time.time() - t
    _crash("tag", crash_at)
    with Catalog.for_job(workspace.catalog, "nightly") as cat:
        previous = cat.current_run()
        if previous != tag["run_id"]:
            cat.set_current(tag["run_id"])
        cat.apply_review(tag["run_id"], unscored=True)  # decisions recorded while the run was made
        _crash("switch", crash_at)
        pruned = prune_runs(workspace, cat, cfg.keep_runs)
        _crash("prune", crash_at)
    end_plan(workspace)
    return {"encoded": enc["encoded"], "errors": enc["errors"], "vocabulary": diff, "mode": mode["mode"],
            "mode_reason": mode["reason"], "corpus": text["corpus_id"], "text": text["corpus"],
            "text_stats": text["stats"],
            "classifier": trained["classifier_id"], "run_id": tag["run_id"], "previous_run": previous,
            "pruned": pruned, "flips": tag.get("flips", []), "timings": {k: round(v, 2) for k, v in timings.items()},
            **({"calibration": tag["calibration"]} if "calibration" in tag else {}),
            **{k: trained[k] for k in ("unread_synonyms", "unread_sentences", "sentences_left_out", "alike_labels") if k in trained}}
