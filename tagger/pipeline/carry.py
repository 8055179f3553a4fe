"""The carried tag run: no label changed, so the current run's decisions stay and only what is new is scored.

An unchanged nightly (no label added, retired or re-worded; same classifier, settings, pins and
labelled set) that finds images added or review decisions made since makes a new run with
mode ``carried`` and ``base_run`` the current run. Its label statistics and stored decisions are the
base run's. Each shard the base run tagged keeps its tag file and readout states (hard-linked, or
copied where links are not possible: a shard's tags are a function of its embeddings, the classifier,
the statistics and the decisions, all unchanged). The new shards are tagged with the base run's
statistics and decisions, as an incremental run tags them. Review decisions are written when the run
is loaded, as in every run, and the accepted pairs it did not keep are scored then. Under a label
hierarchy a decision also reaches the image's ancestors when its shard is tagged, so the images with
a decision on a label that has parents (now, or when the base run was tagged) are tagged again in the
carried shards (:mod:`tagger.pipeline.retag`). The scoring work follows the new and the reviewed
images, not the corpus; loading the tags into the catalog stays a full load.
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from ..atomic import atomic_open
from ..errors import ConfigError
from ..method.reviewed import reviewed_columns
from ..workspace import Workspace
from .calibration import decisions_from_rows
from .increment import start_based_run
from .retag import retag_images, reviewed_again
from .scorer import ShardScorer
from .tag import TagShards, load_run, read_label_stats, tag_all, write_label_stats

__all__ = ["run_carried_tag"]

logger = logging.getLogger(__name__)


def _link(src: Path, dst: Path) -> None:
    """``dst`` the same file as ``src``: a hard link (made whole or not at all), or where the file system
    takes none an atomic copy."""
    try:
        os.link(src, dst)
    except FileExistsError:
        return
    except OSError:
        with open(src, "rb") as fin, atomic_open(dst) as fout:
            shutil.copyfileobj(fin, fout)


def carry_shards(base_dir: Path, run_dir: Path, shards: list[str]) -> list[str]:
    """Link the base run's tag file (and readout states) of each shard into ``run_dir``; return the
    shards left to tag (those the base run did not tag)."""
    todo = []
    for shard in shards:
        src, dst = Workspace.tag_file(base_dir, shard), Workspace.tag_file(run_dir, shard)
        if dst.exists():
            continue
        if not src.is_file():
            todo.append(shard)
            continue
        state = Workspace.readout_file(base_dir, shard)
        if state.is_file():
            _link(state, Workspace.readout_file(run_dir, shard))
        _link(src, dst)  # last: a tag file in place means the shard is done
    return todo


def run_carried_tag(workspace: Workspace, model_id: str, cfg, classifier_id: str, base_run: int,
                    *, crash_after: int | None = None) -> dict[str, Any]:
    """Tag into a new carried run from ``base_run`` with its classifier ``classifier_id`` (module
    docstring); load it without making it current. A rerun resumes it."""
    from ..catalog import Catalog

    t0, root = time.time(), str(workspace.root)
    base_dir = workspace.run_dir(str(base_run))
    base_stats = read_label_stats(base_dir)
    with Catalog.for_job(workspace.catalog, "tag") as cat:
        labels = list((cat.get_classifier(classifier_id) or {}).get("labels") or [])
        if base_stats is None or set(base_stats) != set(labels) or cfg.decision == "standardized":
            raise ConfigError(f"run {base_run} keeps no calibration statistics of classifier {classifier_id}'s "
                              "labels, or the rule decides per image: a carried run needs both per label")
        shards, _, hierarchy, run_id, done = start_based_run(cat, root, model_id, classifier_id, labels, cfg,
                                                             "carried", base_run)
        if done is not None:
            return done
        run_dir = workspace.run_dir(str(run_id))
        run_dir.mkdir(parents=True, exist_ok=True)
        stats = ([base_stats[n][0] for n in labels], [base_stats[n][1] for n in labels])
        write_label_stats(run_dir, labels, stats)
        if not cat.run_thresholds(run_id):
            cat.save_run_thresholds(run_id, cat.run_thresholds(base_run))
        decisions = decisions_from_rows(cat.run_thresholds(run_id), labels, cfg.decisions)
        todo = carry_shards(base_dir, run_dir, shards)
        clf_dir = str(workspace.classifier_dir(classifier_id))
        args = (root, model_id, clf_dir, str(run_dir), cfg, stats, decisions, None if hierarchy.empty else hierarchy,
                None if hierarchy.empty else reviewed_columns(cat.review_pairs(), labels))
        if todo:
            tag_all(TagShards, args, cfg, todo, crash_after)
        again = reviewed_again(cat, run_id, base_run)
        if again:
            retag_images(cat, TagShards(*args), run_dir, again, todo)
        t_tag = time.time() - t0
        scorer = ShardScorer(root, model_id, clf_dir, cfg) if shards else None  # scores accepted pairs not kept
        n, n_images, previous, flips = load_run(cat, workspace, run_id, run_dir, shards, scorer, model_id, labels,
                                                stats, decisions, t0, t_tag)
    logger.info("carried run %d from run %d: %d of %d shards tagged, the rest carried over", run_id, base_run,
                len(todo), len(shards))
    return {"run_id": run_id, "n_tags": n, "n_images": n_images, "tag_s": round(t_tag, 2), "decision": cfg.decision,
            "labels_present": int(decisions.present.sum()), "flips": flips, "flips_against": previous,
            "mode": "carried", "base_run": base_run, "tagged_shards": len(todo), "carried_shards": len(shards) - len(todo)}
