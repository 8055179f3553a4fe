"""People's decisions on tags (accept / reject one image's label), written into every tag run, and
the streaming reads of a run's tags that exports use.

A decision is stored once per (image, label), the latest winning. :meth:`ReviewMixin.apply_review`
writes the decisions into a run's ``tags`` rows: a rejected tag gets ``positive = false``, an
accepted one ``positive = true`` (added with the model's score when the run did not keep it), and
both ``provenance = 'person'``; every other row keeps the default ``'model'``. Recording a decision
applies it to the current run at once: an accepted tag that run did not keep is added without a
score (``score`` NULL) until a tag run scores it. A decision that cannot apply is refused (an image
that could not be decoded, a retired label) or reported with its reason (an image or label the
current run does not cover yet: the next tag run applies it).
"""
from __future__ import annotations

import logging
import shlex
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from ..errors import CatalogError
from ..text.vocab import fold
from .base import CatalogBase, first_row
from .runs import Run

__all__ = ["DECISIONS", "REVIEW_SOURCES", "TAG_EXPORT_COLUMNS", "ReviewMixin"]

logger = logging.getLogger(__name__)

DECISIONS = ("accept", "reject")
REVIEW_SOURCES = ("cli", "csv", "report", "app")
#: Columns of :meth:`ReviewMixin.tag_batches`, in order.
TAG_EXPORT_COLUMNS = ("uri", "run", "label", "score", "confidence", "positive", "provenance")

# Decisions of one run's tags: update the rows the run has that do not show them yet (so the count is
# what changed), then refresh its counts.
_APPLY_SQL = """
UPDATE tags SET positive = (d.decision = 'accept'), provenance = 'person'
FROM review_decisions AS d
WHERE tags.run_id = $run AND tags.image_id = d.image_id AND tags.label = d.label
  AND (tags.positive IS DISTINCT FROM (d.decision = 'accept') OR tags.provenance IS DISTINCT FROM 'person')
"""
_REVIEWED_LABELS_SQL = """
WITH reviewed AS (SELECT DISTINCT image_id FROM review_decisions),
positive AS (
    SELECT image_id, label FROM current_tags WHERE positive
    UNION
    SELECT image_id, label FROM review_decisions WHERE decision = 'accept'
)
SELECT r.image_id, list(p.label ORDER BY p.label) FILTER (WHERE p.label IS NOT NULL)
FROM reviewed AS r LEFT JOIN positive AS p ON p.image_id = r.image_id
GROUP BY r.image_id ORDER BY r.image_id
"""
_ACCEPTED_MISSING_SQL = """
SELECT d.image_id, d.label FROM review_decisions AS d
WHERE d.decision = 'accept'
  AND list_contains((SELECT labels FROM runs WHERE run_id = $run), d.label)
  AND EXISTS (SELECT 1 FROM tags AS t WHERE t.run_id = $run AND t.image_id = d.image_id)
  AND NOT EXISTS (SELECT 1 FROM tags AS t WHERE t.run_id = $run AND t.image_id = d.image_id
                  AND t.label = d.label)
ORDER BY d.image_id, d.label
"""
# Accepted pairs of images and labels the current run covers but has no row for: added unscored.
_INSERT_UNSCORED_SQL = """
INSERT INTO tags (run_id, image_id, label, score, rank, positive, confidence, provenance)
SELECT $run, d.image_id, d.label, NULL, NULL, true, NULL, 'person' FROM review_decisions AS d
WHERE d.decision = 'accept'
  AND list_contains((SELECT labels FROM runs WHERE run_id = $run), d.label)
  AND EXISTS (SELECT 1 FROM tags AS t WHERE t.run_id = $run AND t.image_id = d.image_id)
  AND NOT EXISTS (SELECT 1 FROM tags AS t WHERE t.run_id = $run AND t.image_id = d.image_id
                  AND t.label = d.label)
"""
# Of some decisions, those the current run does not cover: its image has no tag in the run, or the
# run was made without its label.
_UNCOVERED_SQL = """
SELECT d.image_id, d.label,
       NOT EXISTS (SELECT 1 FROM tags AS t WHERE t.run_id = $run AND t.image_id = d.image_id) AS no_image,
       NOT list_contains((SELECT labels FROM runs WHERE run_id = $run), d.label) AS no_label
FROM review_decisions AS d JOIN _review_pairs AS p ON p.image_id = d.image_id AND p.label = d.label
WHERE NOT EXISTS (SELECT 1 FROM tags AS t WHERE t.run_id = $run AND t.image_id = d.image_id AND t.label = d.label)
  AND (d.decision = 'accept' OR NOT EXISTS (SELECT 1 FROM tags AS t WHERE t.run_id = $run
                                            AND t.image_id = d.image_id))
"""
_COUNTS_SQL = """
INSERT INTO run_label_counts
SELECT run_id, label, count(*), count(*) FILTER (WHERE positive) FROM tags WHERE run_id = $run
GROUP BY run_id, label
"""


def _pending_text(run_id: int | None, pending: Sequence[tuple]) -> str:
    """Why decisions did not change the current run, e.g. ``"2 of images the current run (3) did not tag"``
    (``pending``: (image_id, label, no tag of the image, made without the label), or bare pairs without a run)."""
    if run_id is None:
        return f"{len(pending)} with no current run: the first tag run applies them"
    no_image = sum(a for _, _, a, _ in pending)
    no_label = sum(b and not a for _, _, a, b in pending)
    parts = [f"{no_image} of images run {run_id} did not tag (encoded after it, or not yet)"] if no_image else []
    parts += [f"{no_label} of labels run {run_id} was made without"] if no_label else []
    return "; ".join(parts) + ": the next tag run applies them"


def _reader(con, sql: str, params: dict[str, Any], batch_rows: int) -> pa.RecordBatchReader:
    rel = con.sql(sql, params=params)
    to_reader = getattr(rel, "to_arrow_reader", None) or rel.fetch_arrow_reader  # DuckDB 2 / DuckDB 1
    return to_reader(batch_rows)


class ReviewMixin(CatalogBase):
    """Review decisions, their application to runs, and batched reads of a run's tags."""

    if TYPE_CHECKING:  # from RunsMixin, beside this one in Catalog
        def current_run(self) -> int | None: ...

        def get_run(self, run_id: int) -> Run: ...

    # -- decisions ---------------------------------------------------------------------------------
    def record_decisions(self, rows: Sequence[tuple[str, str, str]], *, who: str, source: str) -> dict[str, Any]:
        """Store ``(uri, label, decision)`` rows (decision ``accept`` or ``reject``; a later row for
        the same pair wins) and write them into the current run's tags at once. Unknown URIs or
        labels, retired labels, images that could not be decoded, or a bad decision raise CatalogError
        naming the first offender and store nothing. Returns counts: ``applied`` (tags the current
        run changed or gained), and ``pending`` with ``pending_why`` for decisions the current run
        does not cover (the next tag run applies them)."""
        if source not in REVIEW_SOURCES:
            raise CatalogError(f"review source must be one of {REVIEW_SOURCES}, got {source!r}")
        who = (who or "").strip()
        if not who:
            raise CatalogError("a review decision needs a reviewer name (--who)")
        clean = self._check_decisions(rows)
        with self._transaction("record review decisions") as con:
            ids = self._decided_images(con, clean)
            latest = {(int(ids[u]), lab): d for u, lab, d in clean}
            now = self._now()
            con.executemany(
                "INSERT INTO review_decisions (image_id, label, decision, who, decided_at, source) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (image_id, label) DO UPDATE SET "
                "decision = excluded.decision, who = excluded.who, decided_at = excluded.decided_at, "
                "source = excluded.source",
                [[i, lab, d, who, now, source] for (i, lab), d in latest.items()])
        current = self.current_run()
        applied = self.apply_review(current, unscored=True) if current is not None else 0
        pending = self._uncovered(current, list(latest)) if current is not None else list(latest)
        n_acc = sum(d == "accept" for d in latest.values())
        logger.info("recorded %d review decision(s) by %s", len(latest), who)
        out: dict[str, Any] = {"decisions": len(latest), "accepted": n_acc, "rejected": len(latest) - n_acc,
               "current_run": current, "applied": applied}
        if pending:
            out["pending"] = len(pending)
            out["pending_why"] = _pending_text(current, pending)
        return out

    @staticmethod
    def _decided_images(con, clean: list[tuple[str, str, str]]) -> dict[str, int]:
        """uri -> image_id of the decisions' images; CatalogError for an unknown image or one that
        could not be decoded (it has no tags to decide on)."""
        found = con.execute("SELECT uri, image_id, status, error FROM images WHERE uri IN (SELECT unnest(?))",
                            [sorted({u for u, _, _ in clean})]).fetchall()
        ids = {u: i for u, i, _, _ in found}
        unknown = [u for u, _, _ in clean if u not in ids]
        if unknown:
            more = f" (and {len(set(unknown)) - 1} more)" if len(set(unknown)) > 1 else ""
            raise CatalogError(f"unknown image {unknown[0]!r}{more}: not in the catalog (URIs as "
                               "`tagger sql \"SELECT uri FROM images\"` lists them)")
        broken = sorted((u, e) for u, _, status, e in found if status == "error")
        if broken:
            more = f" (and {len(broken) - 1} more)" if len(broken) > 1 else ""
            raise CatalogError(f"image {broken[0][0]!r}{more} could not be decoded ({broken[0][1] or 'error'}): "
                               "it has no tags to accept or reject")
        return {u: int(i) for u, i in ids.items()}

    def _uncovered(self, run_id: int, pairs: list[tuple[int, str]]) -> list[tuple[int, str, bool, bool]]:
        """Of the decided ``pairs``, those run ``run_id`` does not cover: (image_id, label, the run has
        no tag of the image, the run was made without the label)."""
        table = pa.table({"image_id": pa.array([i for i, _ in pairs], pa.int64()),
                          "label": pa.array([lab for _, lab in pairs], pa.string())})
        with self._connected() as con:
            con.register("_review_pairs", table)
            try:
                rows = con.execute(_UNCOVERED_SQL, {"run": int(run_id)}).fetchall()
            finally:
                con.unregister("_review_pairs")
        return [(int(i), str(lab), bool(a), bool(b)) for i, lab, a, b in rows]

    def _check_decisions(self, rows: Sequence[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
        """Rows stripped and checked: a URI, an active label, ``accept``/``reject`` (CatalogError otherwise)."""
        if not rows:
            raise CatalogError("no review decision given")
        known = dict(self.query("SELECT name, retired_at IS NOT NULL FROM labels"))
        meant = _meant(self.query("SELECT name, synonyms FROM labels WHERE retired_at IS NULL"))
        out = []
        for uri, label, decision in rows:
            uri, label, decision = str(uri or "").strip(), str(label or "").strip(), str(decision or "").strip()
            if not uri:
                raise CatalogError(f"empty image URI in a decision for label {label!r}")
            if decision.lower() not in DECISIONS:
                raise CatalogError(f"decision must be accept or reject, got {decision!r} (for {uri} {label})")
            if label not in known:
                hint = f"did you mean {meant[fold(label)]!r}?" if fold(label) in meant else \
                    "`tagger labels list` shows the vocabulary"
                raise CatalogError(f"unknown label {label!r} ({hint})")
            if known[label]:
                raise CatalogError(f"label {label!r} is retired: the next tag run drops it, so a decision on it "
                                   f"would be lost (`tagger labels add {shlex.quote(label)}` re-activates it)")
            out.append((uri, label, decision.lower()))
        return out

    def review_decisions(self) -> list[dict[str, Any]]:
        """Every stored decision with its image URI, oldest first."""
        cols = ("uri", "label", "decision", "who", "decided_at", "source")
        return [dict(zip(cols, r)) for r in self.query(
            f"SELECT {', '.join(cols)} FROM reviews ORDER BY decided_at, uri, label")]

    def review_key(self) -> str | None:
        """What identifies the stored decisions in a run's config (None: no decision); a changed
        decision makes the next tag run a new one."""
        n, digest = self.query(
            "SELECT count(*), md5(coalesce(string_agg(image_id || chr(31) || label || chr(31) || decision, "
            "chr(30) ORDER BY image_id, label), '')) FROM review_decisions")[0]
        return f"{int(n)}:{digest[:16]}" if n else None

    def reviewed_labels(self) -> dict[int, list[str]]:
        """Labels of every image a person reviewed, as training labels: the current run's positive
        tags of the image (decisions already applied: rejected ones are off) and its accepted
        labels. image_id -> sorted labels (possibly none)."""
        return {int(i): sorted(labs or []) for i, labs in self.query(_REVIEWED_LABELS_SQL)}

    # -- applying them ---------------------------------------------------------------------------
    def accepted_missing(self, run_id: int) -> list[tuple[int, str]]:
        """Accepted (image_id, label) pairs of the run's images and labels that the run has no row for."""
        return [(int(i), str(lab)) for i, lab in self.query(_ACCEPTED_MISSING_SQL, {"run": int(run_id)})]

    def review_pairs(self) -> list[tuple[int, str, bool]]:
        """Every stored decision as ``(image_id, label, accepted)``, by image and label."""
        return [(int(i), str(lab), bool(a)) for i, lab, a in self.query(
            "SELECT image_id, label, decision = 'accept' FROM review_decisions ORDER BY image_id, label")]

    def apply_review(self, run_id: int, scored: pa.Table | None = None, *, unscored: bool = False) -> int:
        """Write the decisions into run ``run_id``'s tags, in one transaction; return the rows changed.

        ``scored`` (columns ``image_id, label, score`` and optionally ``confidence``) holds the model's
        scores of accepted pairs the run did not keep: those are added as positive 'person' rows. With
        ``unscored``, accepted pairs still missing (of the run's images and labels) are added without a
        score; otherwise they stay absent. Per-label counts and ``n_tags`` follow.
        """
        run_id = int(run_id)
        with self._transaction(f"apply review decisions to run {run_id}") as con:
            n = first_row(con.execute(_APPLY_SQL, {"run": run_id}))[0]
            if scored is not None and scored.num_rows:
                n += self._insert_accepted(con, run_id, scored)
            if unscored:
                n += first_row(con.execute(_INSERT_UNSCORED_SQL, {"run": run_id}))[0]
            con.execute("DELETE FROM run_label_counts WHERE run_id = $run", {"run": run_id})
            con.execute(_COUNTS_SQL, {"run": run_id})
            con.execute("UPDATE runs SET n_tags = (SELECT count(*) FROM tags WHERE run_id = $run) "
                        "WHERE run_id = $run", {"run": run_id})
        if n:
            logger.info("run %d: %d tag(s) decided by review", run_id, n)
        return int(n)

    def _insert_accepted(self, con, run_id: int, scored: pa.Table) -> int:
        if "confidence" not in scored.column_names:
            scored = scored.append_column("confidence", pa.nulls(scored.num_rows, pa.float32()))
        con.register("_review_scored", scored.select(["image_id", "label", "score", "confidence"]))
        try:
            return con.execute(
                "INSERT INTO tags (run_id, image_id, label, score, rank, positive, confidence, provenance) "
                "SELECT $run, s.image_id, s.label, s.score, NULL, true, s.confidence, 'person' "
                "FROM _review_scored AS s JOIN review_decisions AS d "
                "ON d.image_id = s.image_id AND d.label = s.label AND d.decision = 'accept' "
                "WHERE NOT EXISTS (SELECT 1 FROM tags AS t WHERE t.run_id = $run "
                "AND t.image_id = s.image_id AND t.label = s.label)", {"run": run_id}).fetchone()[0]
        finally:
            con.unregister("_review_scored")

    # -- reads for exports -----------------------------------------------------------------------
    def tag_run(self, run_id: int | None = None) -> Run:
        """Run ``run_id`` (default: the current one); CatalogError when there is none or it was pruned."""
        if run_id is None:
            run_id = self.current_run()
            if run_id is None:
                raise CatalogError("no current run: tag first, or give --run N")
        run = self.get_run(run_id)
        if run.pruned_at is not None:
            raise CatalogError(f"run {run.run_id} was pruned (its tags are deleted)")
        if run.kind != "tag":
            raise CatalogError(f"run {run.run_id} is a {run.kind} run, not a tag run")
        return run

    def tag_batches(self, run_id: int, *, positive_only: bool = False,
                    batch_rows: int = 8192) -> Iterator[pa.RecordBatch]:
        """The run's tags as Arrow batches of at most ``batch_rows`` rows (:data:`TAG_EXPORT_COLUMNS`),
        in stored order, read incrementally: memory stays flat however many tags the run has."""
        sql = ("SELECT i.uri, t.run_id AS run, t.label, t.score, t.confidence, t.positive, "
               "coalesce(t.provenance, 'model') AS provenance FROM tags AS t "
               "JOIN images AS i ON i.image_id = t.image_id WHERE t.run_id = $run"
               + (" AND t.positive" if positive_only else ""))
        with self._connected() as con:
            yield from _reader(con, sql, {"run": int(run_id)}, batch_rows)

    def keyword_batches(self, run_id: int, batch_rows: int = 2048) -> Iterator[pa.RecordBatch]:
        """Per image of the run: ``uri`` and ``labels`` (its positive labels, best score first; empty
        for an image with none), in batches."""
        sql = ("SELECT i.uri, coalesce(list(t.label ORDER BY t.score DESC, t.label) FILTER (WHERE t.positive), "
               "[]::VARCHAR[]) AS labels FROM tags AS t JOIN images AS i ON i.image_id = t.image_id "
               "WHERE t.run_id = $run GROUP BY i.uri ORDER BY i.uri")
        with self._connected() as con:
            yield from _reader(con, sql, {"run": int(run_id)}, batch_rows)


def _meant(rows: Sequence[tuple[str, Sequence[str] | None]]) -> dict[str, str]:
    """Each active label by its case-folded name and synonyms (a decision names the label, not one
    of its synonyms, and in its own case)."""
    out = {fold(term): name for name, synonyms in rows for term in synonyms or []}
    return out | {fold(name): name for name, _ in rows}  # a name wins over another label's synonym
