"""The reads behind ``tagger serve``: a label's images page by page (filtered by confidence and
provenance, best score first), one image with every tag of a run and its decision, the images two
runs disagree on page by page, and the review queue from any offset. Every read is bounded by a
``limit``; counts come with each page so a pager knows how far it goes."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .report import IMAGE_COLUMNS

__all__ = ["PROVENANCES", "LabelFilter", "diff_page", "image_info", "image_tags", "label_page", "review_page"]

#: Provenance values a filter may ask for.
PROVENANCES = ("model", "person")
_SELECT = ("SELECT t.image_id, i.uri, i.content_hash, t.label, t.score, t.confidence, t.positive, "
           "coalesce(t.provenance, 'model') AS provenance FROM tags AS t JOIN images AS i ON i.image_id = t.image_id ")


@dataclass(frozen=True)
class LabelFilter:
    """Which of a label's tags a page lists: confidence in ``[min_conf, max_conf]`` (a tag without a
    confidence passes only when neither bound is set), one provenance, positives only."""

    min_conf: float | None = None
    max_conf: float | None = None
    provenance: str | None = None
    positive_only: bool = False

    def where(self) -> tuple[str, dict[str, Any]]:
        parts: list[str] = []
        params: dict[str, Any] = {}
        if self.min_conf is not None:
            parts.append("t.confidence >= $min_conf")
            params["min_conf"] = float(self.min_conf)
        if self.max_conf is not None:
            parts.append("t.confidence <= $max_conf")
            params["max_conf"] = float(self.max_conf)
        if self.provenance is not None:
            parts.append("coalesce(t.provenance, 'model') = $prov")
            params["prov"] = self.provenance
        if self.positive_only:
            parts.append("t.positive")
        return "".join(f" AND {p}" for p in parts), params


def label_page(catalog, run_id: int, label: str, filt: LabelFilter, offset: int,
               limit: int) -> tuple[int, list[dict[str, Any]]]:
    """(matching tags, rows ``offset .. offset + limit``) of ``label`` in the run, best score first
    (unscored tags a person added last), then by URI."""
    where, params = filt.where()
    params.update({"run": int(run_id), "label": label})
    base = f"WHERE t.run_id = $run AND t.label = $label{where} "
    total = int(catalog.query(f"SELECT count(*) FROM tags AS t {base}", params)[0][0])
    rows = catalog.query(_SELECT + base + "ORDER BY t.score DESC NULLS LAST, i.uri LIMIT $n OFFSET $o",
                         {**params, "n": int(limit), "o": int(offset)})
    return total, [dict(zip(IMAGE_COLUMNS, r)) for r in rows]


def image_info(catalog, image_id: int) -> dict[str, Any] | None:
    """The image's catalog row (uri, content_hash, bytes, width, height, status, error), None if unknown."""
    cols = ("image_id", "uri", "content_hash", "bytes", "width", "height", "status", "error")
    rows = catalog.query(f"SELECT {', '.join(cols)} FROM images WHERE image_id = $id", {"id": int(image_id)})
    return dict(zip(cols, rows[0])) if rows else None


def image_tags(catalog, run_id: int | None, image_id: int) -> list[dict[str, Any]]:
    """Every tag of the image in the run (positives first, then by score) with the person's decision on
    it, plus decisions on labels the run has no row for (``score`` None, ``in_run`` false)."""
    cols = ("label", "score", "confidence", "positive", "provenance", "rank", "decision", "who", "in_run")
    rows = catalog.query(
        "WITH t AS (SELECT label, score, confidence, positive, coalesce(provenance, 'model') AS provenance, rank "
        "FROM tags WHERE run_id = $run AND image_id = $id), d AS (SELECT label, decision, who "
        "FROM review_decisions WHERE image_id = $id) "
        "SELECT coalesce(t.label, d.label), t.score, t.confidence, coalesce(t.positive, d.decision = 'accept'), "
        "coalesce(t.provenance, 'person'), t.rank, d.decision, d.who, t.label IS NOT NULL "
        "FROM t FULL OUTER JOIN d ON d.label = t.label "
        "ORDER BY 4 DESC, t.score DESC NULLS LAST, 1", {"run": int(run_id) if run_id is not None else -1,
                                                         "id": int(image_id)})
    return [dict(zip(cols, r)) for r in rows]


def diff_page(catalog, a: int, b: int, label: str | None, offset: int,
              limit: int) -> tuple[int, list[dict[str, Any]]]:
    """(changed pairs, rows): positive (image, label) pairs run ``b`` gained over run ``a`` or lost,
    optionally of one label, by label, change and image; each an image row plus ``change``, with the
    score of the run that has the positive tag."""
    params: dict[str, Any] = {"a": int(a), "b": int(b)}
    only = ""
    if label is not None:
        only, params["label"] = " AND label = $label", label
    ch = (f"WITH pa AS (SELECT image_id, label FROM tags WHERE run_id = $a AND positive{only}), "
          f"pb AS (SELECT image_id, label FROM tags WHERE run_id = $b AND positive{only}), "
          "ch AS (SELECT 'gained' AS change, $b AS run, * FROM (SELECT * FROM pb EXCEPT SELECT * FROM pa) "
          "UNION ALL SELECT 'lost', $a, * FROM (SELECT * FROM pa EXCEPT SELECT * FROM pb)) ")
    total = int(catalog.query(ch + "SELECT count(*) FROM ch", params)[0][0])
    rows = catalog.query(
        ch + "SELECT c.image_id, i.uri, i.content_hash, c.label, t.score, t.confidence, t.positive, "
        "coalesce(t.provenance, 'model'), c.change FROM ch AS c JOIN images AS i ON i.image_id = c.image_id "
        "JOIN tags AS t ON t.run_id = c.run AND t.image_id = c.image_id AND t.label = c.label "
        "ORDER BY c.label, c.change, c.image_id LIMIT $n OFFSET $o", {**params, "n": int(limit), "o": int(offset)})
    return total, [dict(zip((*IMAGE_COLUMNS, "change"), r)) for r in rows]


def review_page(catalog, run_id: int, offset: int, limit: int) -> tuple[int, list[dict[str, Any]]]:
    """(undecided uncertain tags, rows): the run's model tags it is least sure about, as the report's
    queue orders them (confidence nearest 0.5, else score nearest the label's threshold)."""
    base = ("FROM tags AS t JOIN images AS i ON i.image_id = t.image_id "
            "LEFT JOIN run_thresholds AS h ON h.run_id = t.run_id AND h.label = t.label "
            "WHERE t.run_id = $run AND coalesce(t.provenance, 'model') = 'model' "
            "AND (t.confidence IS NOT NULL OR h.threshold IS NOT NULL) ")
    params = {"run": int(run_id)}
    total = int(catalog.query("SELECT count(*) " + base, params)[0][0])
    rows = catalog.query(
        "SELECT t.image_id, i.uri, i.content_hash, t.label, t.score, t.confidence, t.positive, "
        "coalesce(t.provenance, 'model') " + base +
        "ORDER BY abs(t.confidence - 0.5) NULLS LAST, abs(t.score - h.threshold) NULLS LAST, i.uri, t.label "
        "LIMIT $n OFFSET $o", {**params, "n": int(limit), "o": int(offset)})
    return total, [dict(zip(IMAGE_COLUMNS, r)) for r in rows]
