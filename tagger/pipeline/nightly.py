"""The nightly loop: encode new images, follow vocabulary changes, retrain, re-tag, switch.

Stages, each resumable on its own so that a run killed anywhere and started again ends with the
same tags as an uninterrupted run:

1. ``encode``  new or changed images only (partition shards with done-markers);
2. ``text``    the corpus of the active labels, reusing every still-valid sentence and asking the
               generator only for label sets that contain a new label (changed label parents make
               a new corpus of the same sentences, so the classifier is retrained);
3. ``train``   the classifier (content-addressed: same corpus and config -> same classifier), or
               the image-trained head in use, kept and relabelled (:mod:`tagger.pipeline.retrain`);
4. ``tag``     every image from stored global embeddings and PQ patch codes into a new run
               (per-shard Parquet files; a rerun resumes the unfinished run);
5. ``switch``  ``current_tags`` to the new run in one transaction;
6. ``prune``   old runs beyond the retention setting (``keep_runs`` counts the current run): their
               tags in the catalog, then their ``runs/<id>/`` folders.
"""
from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..catalog.joblock import job_driver
from ..errors import SimulatedCrash
from .encode import EncodeConfig, run_encode
from .tag import TagConfig, run_tag
from .text import N_SENTENCES, run_generate_text
from .retrain import run_nightly_train

if TYPE_CHECKING:
    from ..workspace import Workspace

logger = logging.getLogger(__name__)
STAGES = ("encode", "text", "train", "tag", "switch", "prune")
# where tests may kill the job: inside the two long stages (after their first partition) and after each stage
CRASH_POINTS = ("encode:mid", "encode", "text", "train", "tag:mid", "tag", "switch", "prune")


@dataclass(frozen=True)
class NightlyConfig:
    n_sentences: int = N_SENTENCES
    seed: int = 0
    keep_runs: int = 5  # tag runs kept (the current one included)
    max_missing: float = 0  # label sets allowed without a sentence (a fraction below 1, else a count)
    tag: TagConfig = TagConfig()


def vocabulary_diff(cat) -> dict[str, list[str]]:
    """Labels added, retired, with changed synonyms and with changed parents since the current run."""
    from ..text import Vocabulary
    from ..text.incremental import parents_changed, synonyms_changed

    current = cat.current_run()
    run = cat.get_run(current) if current is not None else None
    before = set(run.labels or []) if run is not None else set()
    active = cat.list_labels(include_retired=False)
    now = [lab.name for lab in active]
    changed: list[str] = []
    moved: list[str] = []
    clf = cat.get_classifier(run.classifier_id) if run is not None and run.classifier_id else None
    corpus = next((c for c in cat.corpora() if clf and c["corpus_id"] == clf["corpus_id"]), None)
    if corpus is not None and now:
        vocab = Vocabulary.create(now, {lab.name: list(lab.synonyms or []) for lab in active})
        changed = [x for x in synonyms_changed(corpus["config"] or {}, vocab) if x in before]
        moved = [x for x in parents_changed(corpus["config"] or {}, now, cat.active_hierarchy()) if x in before]
    return {"added": [x for x in now if x not in before], "retired": sorted(before - set(now)),
            "synonyms_changed": changed, "parents_changed": moved}


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
    return pruned


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
    timings: dict[str, float] = {}
    t = time.time()
    enc = run_encode(workspace, source, encode_cfg, progress=False,
                     crash_after=1 if crash_at == "encode:mid" else None)
    timings["encode"] = time.time() - t
    _crash("encode", crash_at)
    with Catalog.for_job(workspace.catalog, "nightly") as cat:
        diff = vocabulary_diff(cat)
    t = time.time()
    text = run_generate_text(workspace, cfg.n_sentences, cfg.seed, max_missing=cfg.max_missing)
    timings["text"] = time.time() - t
    _crash("text", crash_at)
    t = time.time()
    trained = run_nightly_train(workspace, encode_cfg.model, encode_cfg.pretrained, text["corpus_id"])
    timings["train"] = time.time() - t
    _crash("train", crash_at)
    t = time.time()
    model_id = model_id_for(encode_cfg.model, encode_cfg.pretrained)
    tag = run_tag(workspace, model_id, cfg.tag, trained["classifier_id"], make_current=False,
                  crash_after=1 if crash_at == "tag:mid" else None, calibrate_with=calibrate_with)
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
    return {"encoded": enc["encoded"], "errors": enc["errors"], "vocabulary": diff,
            "corpus": text["corpus_id"], "text_stats": text["stats"], "classifier": trained["classifier_id"],
            "run_id": tag["run_id"], "previous_run": previous, "pruned": pruned, "flips": tag.get("flips", []),
            "timings": {k: round(v, 2) for k, v in timings.items()},
            **({"calibration": tag["calibration"]} if "calibration" in tag else {})}
