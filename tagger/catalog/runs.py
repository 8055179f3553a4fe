"""Runs, bulk tag loads from Parquet, the atomic current-run switch and retention."""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb

from ..errors import CatalogError
from .base import CatalogBase, first_row, from_json, to_json
from .joblock import holds_job_lock

logger = logging.getLogger(__name__)

#: The error of a run found 'running' by a later job: no process can still be running it.
ABANDONED = "abandoned: the process that ran it ended"
#: Why a run still 'running' while no job holds the lock is shown as interrupted (what happens to it next).
LEFT_RUNNING = "its job ended: the next tag or nightly resumes it, or marks it failed"
RUN_STATUSES = ("running", "loaded", "current", "failed", "superseded")
_RUN_COLUMNS = ("run_id", "kind", "status", "started_at", "finished_at", "model_id", "classifier_id",
                "n_images", "n_tags", "config", "timings", "labels", "error", "pruned_at", "mode", "base_run")
#: How a tag run was made (``runs.mode``): every label scored, only the changed ones (the rest carried over),
#: or no label scored again (the base run's tags and decisions carried over, new images tagged with them).
RUN_MODES = ("full", "incremental", "carried")
_REQUIRED_TAG_COLUMNS = ("image_id", "label", "score")
_TAG_COLUMNS = "run_id, image_id, label, score, rank, positive, confidence"


def head_label(config: Mapping[str, Any] | None) -> str:
    """How runs and reports name a classifier's head: ``text`` (the text-only CoMC classifier),
    ``ovml``, ``mkt``, ``clip-decoder`` or ``comc-fewshot`` (guarded by the text-only head), with
    ``(unguarded)`` for an image-trained head an earlier version saved without the guard."""
    head = (config or {}).get("head")
    if not head or head == "comc":
        return "text"
    return head if (config or {}).get("guard") or head == "comc-fewshot" else f"{head} (unguarded)"


def run_mode(run: "Run") -> str | None:
    """How ``runs list`` / ``runs show`` name a tag run's mode: ``full``, ``incremental from run N`` or
    ``carried from run N`` (a tag run recorded before modes were is full; other kinds have none)."""
    if run.kind != "tag":
        return None
    if run.mode in ("incremental", "carried"):
        return f"{run.mode} from run {run.base_run}" if run.base_run is not None else run.mode
    return "full"


@dataclass(frozen=True)
class Run:
    """One row of ``runs``."""

    run_id: int
    kind: str
    status: str
    started_at: datetime
    finished_at: datetime | None
    model_id: str | None
    classifier_id: str | None
    n_images: int | None
    n_tags: int | None
    config: Any
    timings: Any
    labels: list[str] | None
    error: str | None
    pruned_at: datetime | None
    mode: str | None = None  # RUN_MODES; None: a run made before modes were recorded
    base_run: int | None = None  # an incremental run: the run its other labels were carried over from


def _run(row: tuple) -> Run:
    d = dict(zip(_RUN_COLUMNS, row))
    d["config"], d["timings"] = from_json(d["config"]), from_json(d["timings"])
    d["labels"] = list(d["labels"]) if d["labels"] is not None else None
    return Run(**d)


def _paths(parquet_paths: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    if isinstance(parquet_paths, (str, os.PathLike)):
        return [os.fspath(parquet_paths)]
    return [os.fspath(p) for p in parquet_paths]


class RunsMixin(CatalogBase):
    """Runs and their tags."""

    def start_run(self, kind: str = "tag", *, model_id: str | None = None,
                  classifier_id: str | None = None, labels: Sequence[str] | None = None,
                  config: Mapping[str, Any] | None = None, mode: str | None = None,
                  base_run: int | None = None) -> int:
        """Create a run in status 'running'; return its run_id (increasing integers). ``mode`` (one of
        :data:`RUN_MODES`) and ``base_run`` record how a tag run is made."""
        if mode is not None and mode not in RUN_MODES:
            raise CatalogError(f"run mode must be one of {RUN_MODES}, got {mode!r}")
        with self._transaction("start run") as con:
            run_id = int(first_row(con.execute("SELECT coalesce(max(run_id), 0) + 1 FROM runs"))[0])
            con.execute("INSERT INTO runs (run_id, kind, status, started_at, model_id, classifier_id, "
                        "labels, config, mode, base_run) VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?, ?)",
                        [run_id, kind, self._now(), model_id, classifier_id,
                         list(labels) if labels is not None else None, to_json(config), mode, base_run])
        logger.info("started %s run %d", kind, run_id)
        return run_id

    def classifier_heads(self) -> dict[str, str]:
        """classifier_id -> its :func:`head_label`, for every recorded classifier."""
        rows = self.query("SELECT classifier_id, config FROM classifiers")
        return {cid: head_label(from_json(config)) for cid, config in rows}

    def get_run(self, run_id: int) -> Run:
        """One run; CatalogError if unknown."""
        rows = self.query(f"SELECT {', '.join(_RUN_COLUMNS)} FROM runs WHERE run_id = ?", [int(run_id)])
        if not rows:
            raise CatalogError(f"unknown run {run_id}")
        return _run(rows[0])

    def runs(self, kind: str | None = None) -> list[Run]:
        """Every run (optionally of one kind), oldest first."""
        sql = f"SELECT {', '.join(_RUN_COLUMNS)} FROM runs"
        rows = self.query(sql + " WHERE kind = ? ORDER BY run_id", [kind]) if kind else \
            self.query(sql + " ORDER BY run_id")
        return [_run(r) for r in rows]

    def _tag_select(self, con: duckdb.DuckDBPyConnection, paths: list[str]) -> str:
        cols = {r[0].lower() for r in con.execute(
            "DESCRIBE SELECT * FROM read_parquet(?, union_by_name = true)", [paths]).fetchall()}
        missing = [c for c in _REQUIRED_TAG_COLUMNS if c not in cols]
        if missing:
            raise CatalogError(f"tag files lack column(s) {missing}; need image_id, label, score "
                               "(rank, positive optional)")
        rank = "CAST(rank AS SMALLINT)" if "rank" in cols else "NULL"
        positive = "coalesce(CAST(positive AS BOOLEAN), false)" if "positive" in cols else "false"
        confidence = "CAST(confidence AS FLOAT)" if "confidence" in cols else "NULL"
        return (f"SELECT CAST(? AS BIGINT) AS run_id, CAST(image_id AS BIGINT) AS image_id, "
                f"CAST(label AS VARCHAR) AS label, CAST(score AS FLOAT) AS score, {rank} AS rank, "
                f"{positive} AS positive, {confidence} AS confidence FROM read_parquet(?, union_by_name = true)")

    def load_tags(self, run_id: int, parquet_paths: str | os.PathLike | Sequence[str | os.PathLike],
                  *, validate: bool = True) -> int:
        """Replace the run's tags by the rows of ``parquet_paths``, in one transaction.

        Files (globs allowed) hold ``image_id, label, score`` and optionally ``rank,
        positive, confidence``; a ``run_id`` column in them is ignored. Rows are stored sorted by
        (label, score DESC) so that label lookups prune by zone maps, and the run's per-label
        counts go to ``run_label_counts`` (view ``current_label_counts``). With ``validate``, unknown
        image ids and repeated (image_id, label) pairs abort the load. Rows of images whose file could not
        be read when last listed or read (status 'error': deleted, unreadable) are left out: their stored
        embeddings are not the file's any more. ``n_images`` becomes the
        number of tagged images (``finish_run`` may override it). Reloading is idempotent; a
        failed load leaves the run's previous tags (and so ``current_tags``) untouched.
        Returns the tag count.
        """
        run = self.get_run(run_id)
        paths = _paths(parquet_paths)
        with self._transaction(f"load tags of run {run_id}") as con:
            con.execute("DELETE FROM tags WHERE run_id = ?", [run.run_id])
            if paths:
                con.execute(f"INSERT INTO tags ({_TAG_COLUMNS}) SELECT * FROM ({self._tag_select(con, paths)}) AS t "
                            "WHERE NOT EXISTS (SELECT 1 FROM images AS i WHERE i.image_id = t.image_id "
                            "AND i.status = 'error') ORDER BY label, score DESC, image_id", [run.run_id, paths])
            n_tags, n_images = first_row(con.execute(
                "SELECT count(*), count(DISTINCT image_id) FROM tags WHERE run_id = ?", [run.run_id]))
            con.execute("DELETE FROM run_label_counts WHERE run_id = ?", [run.run_id])
            con.execute("INSERT INTO run_label_counts SELECT run_id, label, count(*), count(*) FILTER "
                        "(WHERE positive) FROM tags WHERE run_id = ? GROUP BY run_id, label", [run.run_id])
            if validate and n_tags:
                self._validate_tags(con, run.run_id)
            status = "loaded" if run.status in ("running", "loaded", "failed") else run.status
            con.execute("UPDATE runs SET n_tags = ?, n_images = ?, status = ?, "
                        "error = NULL, pruned_at = NULL WHERE run_id = ?",
                        [int(n_tags), int(n_images), status, run.run_id])
        logger.info("loaded %d tags of %d images into run %d", n_tags, n_images, run.run_id)
        return int(n_tags)

    @staticmethod
    def _validate_tags(con: duckdb.DuckDBPyConnection, run_id: int) -> None:
        unknown = first_row(con.execute(
            "SELECT count(*), min(t.image_id) FROM tags AS t WHERE t.run_id = ? AND NOT "
            "EXISTS (SELECT 1 FROM images AS i WHERE i.image_id = t.image_id)", [run_id]))
        if unknown[0]:
            raise CatalogError(f"{unknown[0]} tag rows name unknown image ids (e.g. {unknown[1]})")
        dup = con.execute("SELECT image_id, label FROM tags WHERE run_id = ? GROUP BY image_id, label "
                          "HAVING count(*) > 1 LIMIT 1", [run_id]).fetchone()
        if dup:
            raise CatalogError(f"tag files repeat (image_id, label) = ({dup[0]}, {dup[1]!r})")

    def finish_run(self, run_id: int, *, failed: bool = False, error: str | None = None,
                   n_images: int | None = None, timings: Mapping[str, Any] | None = None) -> Run:
        """Close a run: set finished_at, counts and timings. ``failed`` (or an ``error``) marks
        it 'failed'; otherwise a still-running run becomes 'loaded' (its results are complete).
        A current run cannot be failed."""
        run = self.get_run(run_id)
        failed = failed or error is not None
        if failed and run.status == "current":
            raise CatalogError(f"run {run_id} is current; make another run current before failing it")
        status = "failed" if failed else ("loaded" if run.status == "running" else run.status)
        with self._transaction(f"finish run {run_id}") as con:
            con.execute("UPDATE runs SET status = ?, finished_at = ?, error = ?, "
                        "n_images = coalesce(?, n_images), timings = coalesce(?, timings) WHERE run_id = ?",
                        [status, self._now(), error, n_images, to_json(timings), run.run_id])
        return self.get_run(run_id)

    def current_scores(self) -> list[tuple[str, str, float]]:
        """``(uri, label, score)`` of every tag the current run kept and scored (a person's accept the
        run did not keep has no score until the next run)."""
        return [(u, lab, float(s)) for u, lab, s in self.query(
            "SELECT uri, label, score FROM current_tags WHERE score IS NOT NULL")]

    def current_positives(self) -> list[tuple[str, str]]:
        """``(uri, label)`` of every positive tag of the current run."""
        return [(u, lab) for u, lab in self.query("SELECT uri, label FROM current_tags WHERE positive")]

    def run_image_count(self, run_id: int) -> int:
        """Distinct images with at least one tag in run ``run_id``."""
        return int(self.query("SELECT count(DISTINCT image_id) FROM tags WHERE run_id = ?", [run_id])[0][0])

    def current_run(self) -> int | None:
        """The run_id behind ``current_tags``, or None."""
        rows = self.query("SELECT run_id FROM current_run")
        return int(rows[0][0]) if rows and rows[0][0] is not None else None

    def set_current(self, run_id: int) -> int | None:
        """Atomically make ``run_id`` the current run (the previous one becomes 'superseded');
        return the previous current run_id. Only 'loaded' or 'current' runs qualify."""
        run = self.get_run(run_id)
        if run.status not in ("loaded", "current") or run.pruned_at is not None:
            raise CatalogError(f"run {run_id} is {run.status}{' (pruned)' if run.pruned_at else ''}; "
                               "only a loaded run can become current")
        with self._transaction(f"set current run {run_id}") as con:
            prev = first_row(con.execute("SELECT run_id FROM current_run"))[0]
            con.execute("UPDATE runs SET status = 'superseded' WHERE status = 'current' AND run_id <> ?",
                        [run.run_id])
            con.execute("UPDATE runs SET status = 'current' WHERE run_id = ?", [run.run_id])
            con.execute("UPDATE current_run SET run_id = ?, switched_at = ?", [run.run_id, self._now()])
        logger.info("current run is now %d (was %s)", run.run_id, prev)
        return int(prev) if prev is not None else None

    def abandon_runs(self, *, keep: int | None = None) -> list[int]:
        """Mark every 'running' run but ``keep`` failed with error :data:`ABANDONED`; return their ids.

        Only a job that holds the catalog's job lock may call it: one job runs at a time, so a run
        still 'running' then belongs to a process that ended (killed, or crashed) and will never
        finish it. ``keep`` is the run the caller is resuming.
        """
        if not holds_job_lock(self.path):
            raise CatalogError("abandon_runs: only a job holding the catalog's job lock may abandon runs")
        with self._transaction("abandon runs") as con:
            victims = [int(r[0]) for r in con.execute(
                "SELECT run_id FROM runs WHERE status = 'running' AND run_id IS DISTINCT FROM ? ORDER BY run_id",
                [keep]).fetchall()]
            if victims:
                con.execute("UPDATE runs SET status = 'failed', error = ?, finished_at = coalesce(finished_at, ?) "
                            "WHERE run_id IN (SELECT unnest(?))", [ABANDONED, self._now(), victims])
        if victims:
            logger.warning("marked runs %s failed: %s", victims, ABANDONED)
        return victims

    def prune_runs(self, keep: int, *, include_failed: bool = False) -> list[int]:
        """Retention: keep the tags of ``keep`` runs, the current one included (the current run and
        the ``keep - 1`` newest superseded ones), and delete those of older superseded runs (and of
        every failed run with ``include_failed``). Loaded runs never made current are not touched.
        Run rows stay, with ``pruned_at`` set. Returns the pruned run ids; their ``runs/<id>/``
        folders are the workspace's to delete (after this commits)."""
        if keep < 1:
            raise CatalogError("prune_runs: keep must be >= 1 (the current run counts)")
        with self._transaction("prune runs") as con:
            has_current = first_row(con.execute("SELECT run_id FROM current_run"))[0] is not None
            victims = [int(r[0]) for r in con.execute(
                "SELECT run_id FROM runs WHERE status = 'superseded' AND pruned_at IS NULL "
                "ORDER BY run_id DESC OFFSET ?", [int(keep) - int(has_current)]).fetchall()]
            if include_failed:
                victims += [int(r[0]) for r in con.execute(
                    "SELECT run_id FROM runs WHERE status = 'failed' AND pruned_at IS NULL").fetchall()]
            if victims:
                con.execute("DELETE FROM tags WHERE run_id IN (SELECT unnest(?))", [victims])
                con.execute("DELETE FROM run_label_counts WHERE run_id IN (SELECT unnest(?))", [victims])
                con.execute("UPDATE runs SET pruned_at = ? WHERE run_id IN (SELECT unnest(?))",
                            [self._now(), victims])
        if victims:
            logger.info("pruned the tags of runs %s", victims)
        return sorted(victims)
