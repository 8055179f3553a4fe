"""Per-label decisions in the catalog: pinned thresholds, each run's thresholds, a labelled set."""
from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from ..errors import CatalogError
from .base import CatalogBase
from .vocab import clean_label

logger = logging.getLogger(__name__)

THRESHOLD_COLUMNS = ("label", "threshold", "present", "source", "mu0", "sd0", "mu1", "sd1", "prior", "reason",
                     "text_separation", "cutoff")
THRESHOLD_SOURCES = ("fit", "labelled", "pinned")


def check_threshold(value: Any) -> float | None:
    """A pinnable threshold: a finite number, or None to unpin; CatalogError otherwise."""
    if value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError) as e:
        raise CatalogError(f"threshold must be a number (or none), got {value!r}") from e
    if not math.isfinite(out):
        raise CatalogError(f"threshold must be a finite number, got {value!r}")
    return out


def present_state(present: bool | None, positives: int, by_person: int = 0) -> tuple[str, str | None]:
    """How a label's decision reads beside its positives: ``(present, source)`` in words. A label
    judged absent whose positives come from its children says ``via children`` (source
    ``children``), never "no" beside positives; ``-`` without a stored decision."""
    if present is None:
        return "-", None
    if present:
        return "yes", None
    if positives > by_person:
        return "via children", "children"
    return ("no, accepted by a person" if positives else "no"), None


class DecisionsMixin(CatalogBase):
    """Thresholds pinned on labels, the thresholds each run used, and the labelled calibration set."""

    def set_threshold(self, name: str, threshold: float | None) -> float | None:
        """Pin ``name``'s threshold (on the score column's scale) or unpin it with None; every later
        tag run uses it. Returns the previous pin. Unknown labels and non-finite values are refused."""
        label, value = clean_label(name), check_threshold(threshold)
        with self._transaction("set threshold") as con:
            row = con.execute("SELECT threshold FROM labels WHERE name = ?", [label]).fetchone()
            if row is None:
                raise CatalogError(f"unknown label {label!r} (add it with `tagger labels add`)")
            con.execute("UPDATE labels SET threshold = ? WHERE name = ?", [value, label])
        logger.info("label %r threshold %s", label, "unpinned" if value is None else f"pinned at {value:g}")
        return row[0]

    def pinned_thresholds(self) -> dict[str, float]:
        """Active labels with a pinned threshold: name -> threshold."""
        return {n: float(t) for n, t in self.query(
            "SELECT name, threshold FROM labels WHERE retired_at IS NULL AND threshold IS NOT NULL ORDER BY label_id")}

    def save_run_thresholds(self, run_id: int, rows: Sequence[Mapping[str, Any]]) -> None:
        """Replace the stored decisions of a run (one mapping per label, keys ``THRESHOLD_COLUMNS``)."""
        values = [[int(run_id), *(r.get(k) for k in THRESHOLD_COLUMNS)] for r in rows]
        bad = {v[4] for v in values} - set(THRESHOLD_SOURCES)
        if bad:
            raise CatalogError(f"threshold source(s) {sorted(bad, key=str)} not among {THRESHOLD_SOURCES}")
        table = pa.table({c: pa.array([v[k + 1] for v in values]) for k, c in enumerate(THRESHOLD_COLUMNS)})
        cols = ", ".join(THRESHOLD_COLUMNS)
        with self._transaction(f"save thresholds of run {run_id}") as con:
            con.execute("DELETE FROM run_thresholds WHERE run_id = ?", [int(run_id)])
            if values:  # one insert from an arrow table: 10,000 labels' rows in milliseconds, not seconds
                con.register("_thresholds", table)
                try:
                    con.execute(f"INSERT INTO run_thresholds (run_id, {cols}) SELECT ?, {cols} FROM _thresholds",
                                [int(run_id)])
                finally:
                    con.unregister("_thresholds")

    def run_thresholds(self, run_id: int) -> list[dict[str, Any]]:
        """A run's stored decisions in the run's label order, each with ``positives`` (its positive tags)
        and ``by_person`` (those a person's review decided)."""
        rows = self.query(
            f"WITH people AS (SELECT label, count(*) AS n FROM tags WHERE run_id = $run AND positive "
            f"AND provenance = 'person' GROUP BY label) "
            f", listed AS (SELECT unnest(labels) AS label, generate_subscripts(labels, 1) AS i FROM runs "
            f"WHERE run_id = $run), ordered AS (SELECT label, min(i) AS i FROM listed GROUP BY label) "  # the run's label order, joined (a list search per row is quadratic)
            f"SELECT {', '.join('t.' + c for c in THRESHOLD_COLUMNS)}, coalesce(c.n_pos, 0), coalesce(p.n, 0) "
            "FROM run_thresholds AS t "
            "LEFT JOIN run_label_counts AS c ON c.run_id = t.run_id AND c.label = t.label "
            "LEFT JOIN people AS p ON p.label = t.label "
            "LEFT JOIN ordered AS o ON o.label = t.label "
            "WHERE t.run_id = $run ORDER BY coalesce(o.i, 1 << 30), t.label",
            {"run": int(run_id)})
        return [dict(zip((*THRESHOLD_COLUMNS, "positives", "by_person"), r)) for r in rows]

    def set_calibration_images(self, labelled: Mapping[int, Sequence[str]]) -> int:
        """Replace the labelled calibration set (image_id -> its labels; others count as absent)."""
        with self._transaction("set calibration images") as con:
            con.execute("DELETE FROM calibration_images")
            if labelled:
                con.executemany("INSERT INTO calibration_images (image_id, labels, added_at) VALUES (?, ?, ?)",
                                [[int(i), sorted(set(v)), self._now()] for i, v in sorted(labelled.items())])
        return len(labelled)

    def calibration_images(self) -> dict[int, list[str]]:
        """The labelled calibration set: image_id -> labels, by image_id."""
        return {int(i): list(v) for i, v in self.query(
            "SELECT image_id, labels FROM calibration_images ORDER BY image_id")}
