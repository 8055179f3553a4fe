"""The reads behind the run report: a run's counts, per-label images and score histograms, the tags it
is least sure about, error rows, and the images two runs disagree on. Each read is bounded (a
``limit`` or a fixed number of bins), so a report of a million-image run reads a few rows per page."""
from __future__ import annotations

from typing import Any

from .thresholds import present_state

__all__ = ["IMAGE_COLUMNS", "diff_images", "error_images", "label_histogram", "label_images",
           "label_summary", "review_queue", "run_shape", "run_stamp"]

#: Columns of every image row these reads return.
IMAGE_COLUMNS = ("image_id", "uri", "content_hash", "label", "score", "confidence", "positive", "provenance")
_SELECT = ("SELECT t.image_id, i.uri, i.content_hash, t.label, t.score, t.confidence, t.positive, "
           "coalesce(t.provenance, 'model') AS provenance FROM tags AS t JOIN images AS i ON i.image_id = t.image_id ")


def _rows(catalog, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    return [dict(zip(IMAGE_COLUMNS, r)) for r in catalog.query(sql, params)]


def run_shape(catalog, run_id: int) -> tuple[dict[str, int], list[tuple[int, int]]]:
    """The run's totals (tags, positive tags, tagged images, images with a positive tag) and its
    ``(positives, images)`` histogram (how many tagged images carry 0, 1, 2, ... positive tags),
    from one pass over the run's tags."""
    hist = [(int(k), int(n), int(t)) for k, n, t in catalog.query(
        "SELECT k, count(*), sum(n) FROM (SELECT count(*) FILTER (WHERE positive) AS k, count(*) AS n FROM tags "
        "WHERE run_id = $run GROUP BY image_id) GROUP BY k ORDER BY k", {"run": int(run_id)})]
    totals = {"tags": sum(t for _, _, t in hist), "positives": sum(k * n for k, n, _ in hist),
              "images": sum(n for _, n, _ in hist), "images_with_positives": sum(n for k, n, _ in hist if k)}
    return totals, [(k, n) for k, n, _ in hist]


def run_stamp(catalog, run_id: int) -> tuple:
    """A cheap value that changes whenever the run's tags can have changed since it was loaded (its
    label counts, the stored review decisions and their undo log): a key for caching
    :func:`run_shape` of a run, which is otherwise immutable."""
    return (int(run_id), *catalog.query(
        "SELECT (SELECT count(*) || '/' || coalesce(sum(n), 0) || '/' || coalesce(sum(n_pos), 0) FROM run_label_counts "
        "WHERE run_id = $run), (SELECT count(*) || '/' || coalesce(max(decided_at)::VARCHAR, '') "
        "FROM review_decisions), (SELECT count(*) || '/' || coalesce(max(seq), 0) FROM review_undo)",
        {"run": int(run_id)})[0])


def label_summary(catalog, run_id: int) -> list[dict[str, Any]]:
    """One row per label of the run, in its label order: ``label, tags, positives, threshold,
    present, source, reviewed, reason, state`` (threshold, present, source and reason None without
    stored decisions; ``state`` is the decision in words, e.g. "via children")."""
    rows = catalog.query(
        "WITH names AS (SELECT unnest(labels) AS label, generate_subscripts(labels, 1) AS pos FROM runs "
        "WHERE run_id = $run), reviewed AS (SELECT label, count(*) AS n FROM tags WHERE run_id = $run "
        "AND provenance = 'person' GROUP BY label) "
        "SELECT n.label, coalesce(c.n, 0), coalesce(c.n_pos, 0), h.threshold, h.present, h.source, "
        "coalesce(r.n, 0), h.reason FROM names AS n "
        "LEFT JOIN run_label_counts AS c ON c.run_id = $run AND c.label = n.label "
        "LEFT JOIN run_thresholds AS h ON h.run_id = $run AND h.label = n.label "
        "LEFT JOIN reviewed AS r ON r.label = n.label ORDER BY n.pos", {"run": int(run_id)})
    cols = ("label", "tags", "positives", "threshold", "present", "source", "reviewed", "reason")
    out = [dict(zip(cols, r)) for r in rows]
    for r in out:
        r["state"], raised = present_state(r["present"], r["positives"], r["reviewed"])
        r["source"] = raised or r["source"]
    return out


def error_images(catalog, limit: int) -> tuple[int, list[tuple[str, str | None]]]:
    """The number of images that could not be read, and the first ``limit`` of them (uri, error)."""
    n = int(catalog.query("SELECT count(*) FROM images WHERE status = 'error'")[0][0])
    rows = catalog.query("SELECT uri, error FROM images WHERE status = 'error' ORDER BY uri LIMIT $n",
                         {"n": int(limit)})
    return n, [(str(u), e) for u, e in rows]


def label_images(catalog, run_id: int, label: str, which: str, limit: int,
                 threshold: float | None = None) -> list[dict[str, Any]]:
    """A label's images in the run: ``top`` (best scores), ``above`` (lowest scores at or over
    ``threshold``) or ``below`` (highest scores under it), at most ``limit``."""
    where, order = {"top": ("", "t.score DESC"), "above": ("AND t.score >= $thr", "t.score ASC"),
                    "below": ("AND t.score < $thr", "t.score DESC")}[which]
    params: dict[str, Any] = {"run": int(run_id), "label": label, "n": int(limit)}
    if which != "top":
        if threshold is None:
            return []
        params["thr"] = float(threshold)
    return _rows(catalog, _SELECT + f"WHERE t.run_id = $run AND t.label = $label {where} "
                 f"ORDER BY {order}, i.uri LIMIT $n", params)


def label_histogram(catalog, run_id: int, label: str, bins: int) -> dict[str, Any] | None:
    """The label's scores in ``bins`` equal bins over their range: ``lo, hi, positive, other``
    (counts per bin of positive and other tags); None when the run has no tag of the label."""
    params = {"run": int(run_id), "label": label}
    lo, hi = catalog.query("SELECT min(score), max(score) FROM tags WHERE run_id = $run AND label = $label",
                           params)[0]
    if lo is None:
        return None
    lo, hi = float(lo), float(hi)
    width = (hi - lo) / bins if hi > lo else 1.0
    pos, other = [0] * bins, [0] * bins
    for b, positive, n in catalog.query(
            "SELECT least(CAST(floor((score - $lo) / $w) AS INTEGER), $last), positive, count(*) FROM tags "
            "WHERE run_id = $run AND label = $label AND score IS NOT NULL GROUP BY ALL", {**params, "lo": lo, "w": width, "last": bins - 1}):
        (pos if positive else other)[int(b)] += int(n)
    return {"lo": lo, "hi": hi if hi > lo else lo + 1.0, "positive": pos, "other": other}


def review_queue(catalog, run_id: int, limit: int) -> list[dict[str, Any]]:
    """The run's tags it is least sure about, most uncertain first: confidence nearest 0.5 (where
    the run has confidences), else score nearest the label's threshold; reviewed tags left out."""
    return _rows(catalog, _SELECT + "LEFT JOIN run_thresholds AS h ON h.run_id = t.run_id AND h.label = t.label "
                 "WHERE t.run_id = $run AND coalesce(t.provenance, 'model') = 'model' "
                 "AND (t.confidence IS NOT NULL OR h.threshold IS NOT NULL) "
                 "ORDER BY abs(t.confidence - 0.5) NULLS LAST, abs(t.score - h.threshold) NULLS LAST, i.uri, t.label "
                 "LIMIT $n", {"run": int(run_id), "n": int(limit)})


def diff_images(catalog, a: int, b: int, limit: int) -> list[dict[str, Any]]:
    """Per label, up to ``limit`` images whose positive tag run ``b`` gained over run ``a`` and up
    to ``limit`` it lost; each row an image row plus ``change`` ('gained' or 'lost'), scores of ``b``
    (gained) or ``a`` (lost)."""
    rows = catalog.query(
        "WITH pa AS (SELECT image_id, label FROM tags WHERE run_id = $a AND positive), "
        "pb AS (SELECT image_id, label FROM tags WHERE run_id = $b AND positive), "
        "ch AS (SELECT 'gained' AS change, $b AS run, * FROM (SELECT * FROM pb EXCEPT SELECT * FROM pa) "
        "UNION ALL SELECT 'lost', $a, * FROM (SELECT * FROM pa EXCEPT SELECT * FROM pb)), "
        "ranked AS (SELECT *, row_number() OVER (PARTITION BY change, label ORDER BY image_id) AS k FROM ch) "
        "SELECT r.image_id, i.uri, i.content_hash, r.label, t.score, t.confidence, t.positive, "
        "coalesce(t.provenance, 'model'), r.change FROM ranked AS r JOIN images AS i ON i.image_id = r.image_id "
        "JOIN tags AS t ON t.run_id = r.run AND t.image_id = r.image_id AND t.label = r.label "
        "WHERE r.k <= $n ORDER BY r.label, r.change, r.image_id", {"a": int(a), "b": int(b), "n": int(limit)})
    return [dict(zip((*IMAGE_COLUMNS, "change"), r)) for r in rows]
