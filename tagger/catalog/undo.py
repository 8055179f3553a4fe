"""Decisions that can be withdrawn: :func:`decide` records a person's accept / reject as ``tagger review``
does (:meth:`~tagger.catalog.review.ReviewMixin.record_decisions`, applied to the current run at once)
after keeping what it replaces in ``review_undo``; :func:`undo_last` puts that back.

Undo restores the decision the pair had before (or none) and, when the run that was current then is
still current, the pair's tag in it as it was (a row an accept added is deleted). When a tag run has
become current since, that run's row returns to the model's decision where the run can say it (score
at or over the label's stored threshold), and keeps its value otherwise.
"""
from __future__ import annotations

import logging
from typing import Any

from ..errors import CatalogError

__all__ = ["decide", "undo_count", "undo_last", "undoable_decision"]

logger = logging.getLogger(__name__)

_SNAPSHOT_SQL = """
INSERT INTO review_undo (image_id, label, run_id, had_row, positive, provenance, decision, who, decided_at,
                         source, recorded_at)
SELECT $id, $label, (SELECT run_id FROM current_run), t.image_id IS NOT NULL, t.positive, t.provenance,
       d.decision, d.who, d.decided_at, d.source, $now
FROM (SELECT 1) AS one
LEFT JOIN tags AS t ON t.run_id = (SELECT run_id FROM current_run) AND t.image_id = $id AND t.label = $label
LEFT JOIN review_decisions AS d ON d.image_id = $id AND d.label = $label
"""
# the pair's decision is the app's and no later than its newest undo entry: made by the app, not replaced since
_UNDOABLE = ("d.source = 'app' AND d.decided_at >= (SELECT max(u.recorded_at) FROM review_undo AS u "
             "WHERE u.image_id = d.image_id AND u.label = d.label)")
_UNDO_COLS = ("seq", "run_id", "had_row", "positive", "provenance", "decision", "who", "decided_at", "source",
              "recorded_at")


def decide(catalog, image_id: int, label: str, decision: str, *, who: str, source: str = "app") -> dict[str, Any]:
    """Record ``decision`` (accept or reject) on ``label`` of image ``image_id`` so that
    :func:`undo_last` can withdraw it; returns ``record_decisions``' summary. CatalogError for an
    unknown image (and whatever ``record_decisions`` refuses)."""
    rows = catalog.query("SELECT uri FROM images WHERE image_id = $id", {"id": int(image_id)})
    if not rows:
        raise CatalogError(f"unknown image id {image_id}")
    uri = rows[0][0]
    catalog._check_decisions([(uri, label, decision)])  # refuse before anything is kept
    with catalog._transaction("keep the state a decision replaces") as con:
        con.execute(_SNAPSHOT_SQL, {"id": int(image_id), "label": label, "now": catalog._now()})
    try:
        return catalog.record_decisions([(uri, label, decision)], who=who, source=source)
    except BaseException:
        with catalog._transaction("forget the state of a refused decision") as con:
            con.execute("DELETE FROM review_undo WHERE seq = (SELECT max(seq) FROM review_undo "
                        "WHERE image_id = $id AND label = $label)", {"id": int(image_id), "label": label})
        raise


def undo_count(catalog, image_id: int) -> dict[str, int]:
    """label -> decisions of the image that :func:`undo_last` can withdraw (none where a decision made
    elsewhere replaced the app's latest)."""
    return {str(lab): int(n) for lab, n in catalog.query(
        "SELECT v.label, count(*) FROM review_undo AS v JOIN review_decisions AS d USING (image_id, label) "
        f"WHERE v.image_id = $id AND {_UNDOABLE} GROUP BY v.label", {"id": int(image_id)})}


def undoable_decision(catalog, image_id: int, label: str) -> str | None:
    """The pair's decision when it is one the app made and :func:`undo_last` can withdraw (else None)."""
    rows = catalog.query(f"SELECT d.decision FROM review_decisions AS d WHERE d.image_id = $id AND d.label = $label "
                         f"AND {_UNDOABLE}", {"id": int(image_id), "label": label})
    return str(rows[0][0]) if rows else None


def _restore_decision(con, image_id: int, label: str, prev: dict[str, Any]) -> None:
    con.execute("DELETE FROM review_decisions WHERE image_id = $id AND label = $label",
                {"id": image_id, "label": label})
    if prev["decision"] is not None:
        con.execute("INSERT INTO review_decisions (image_id, label, decision, who, decided_at, source) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    [image_id, label, prev["decision"], prev["who"], prev["decided_at"], prev["source"]])


def _restore_tag(con, run: int, image_id: int, label: str, prev: dict[str, Any]) -> None:
    key = {"run": run, "id": image_id, "label": label}
    where = "WHERE run_id = $run AND image_id = $id AND label = $label"
    if prev["decision"] is not None:  # the decision before holds again
        con.execute(f"UPDATE tags SET positive = $pos, provenance = 'person' {where}",
                    {**key, "pos": prev["decision"] == "accept"})
    elif prev["run_id"] == run and not prev["had_row"]:
        con.execute(f"DELETE FROM tags {where}", key)
    elif prev["run_id"] == run:
        con.execute(f"UPDATE tags SET positive = $pos, provenance = $prov {where}",
                    {**key, "pos": prev["positive"], "prov": prev["provenance"]})
    else:  # a later run: the model's decision where the run stored the label's threshold
        con.execute(f"DELETE FROM tags {where} AND score IS NULL AND provenance = 'person'", key)
        con.execute(
            "UPDATE tags SET provenance = 'model', positive = coalesce(tags.score >= (SELECT threshold FROM "
            "run_thresholds AS h WHERE h.run_id = $run AND h.label = $label), tags.positive) "
            f"{where}", key)
        # a row the run held only for the accept (no rank: not in the image's top-k) that the model does not
        # keep is not one a run made without the decision would hold
        con.execute(f"DELETE FROM tags {where} AND rank IS NULL AND NOT positive", key)


def _replaced_since(con, image_id: int, label: str, prev: dict[str, Any]) -> str | None:
    """Why the pair's decision is no longer the one the app made after ``prev`` was kept (a decision made
    since with ``tagger review`` or an import wins: an undo must not throw it away); None when it is."""
    now = con.execute("SELECT decision, who, source, decided_at FROM review_decisions WHERE image_id = $id "
                      "AND label = $label", {"id": image_id, "label": label}).fetchone()
    if now is not None and now[2] == "app" and now[3] >= prev["recorded_at"]:
        return None
    later = f"{now[0]} by {now[1]} ({now[2]}, {now[3]:%Y-%m-%d %H:%M})" if now is not None else "no decision"
    return f"the decision on {label!r} of image {image_id} was replaced since: it is now {later}; nothing was undone"


def _withdraw(con, image_id: int, label: str, prev: dict[str, Any]) -> int | None:
    """Put back the decision and tag ``prev`` kept; the current run (None: none)."""
    _restore_decision(con, image_id, label, prev)
    run = con.execute("SELECT run_id FROM current_run").fetchone()[0]
    if run is not None:
        _restore_tag(con, int(run), image_id, label, prev)
        con.execute("DELETE FROM run_label_counts WHERE run_id = $run AND label = $label",
                    {"run": run, "label": label})
        con.execute("INSERT INTO run_label_counts SELECT run_id, label, count(*), count(*) FILTER (WHERE positive) "
                    "FROM tags WHERE run_id = $run AND label = $label GROUP BY ALL", {"run": run, "label": label})
        con.execute("UPDATE runs SET n_tags = (SELECT count(*) FROM tags WHERE run_id = $run) WHERE run_id = $run",
                    {"run": run})
    con.execute("DELETE FROM review_undo WHERE seq = $seq", {"seq": prev["seq"]})
    return run


def undo_last(catalog, image_id: int, label: str) -> dict[str, Any]:
    """Withdraw the latest decision :func:`decide` made on the pair (see the module); CatalogError when
    there is none, or when a decision made elsewhere since (``tagger review``, an import) replaced it:
    that one stays, and the pair's undo entries are forgotten. Returns what holds now: ``decision``
    (None: none) and the current run."""
    image_id = int(image_id)
    with catalog._transaction(f"undo the decision on {label!r} of image {image_id}") as con:
        row = con.execute(f"SELECT {', '.join(_UNDO_COLS)} FROM review_undo WHERE image_id = $id AND label = $label "
                          "ORDER BY seq DESC LIMIT 1", {"id": image_id, "label": label}).fetchone()
        if row is None:
            raise CatalogError(f"no decision on {label!r} of image {image_id} to undo")
        prev = dict(zip(_UNDO_COLS, row))
        stale = _replaced_since(con, image_id, label, prev)
        if stale:  # older entries of the pair are stale too: forgotten, so no Undo is offered
            con.execute("DELETE FROM review_undo WHERE image_id = $id AND label = $label",
                        {"id": image_id, "label": label})
        else:
            run = _withdraw(con, image_id, label, prev)
    if stale:
        raise CatalogError(stale)
    logger.info("withdrew a decision on %r of image %d (now %s)", label, image_id, prev["decision"] or "none")
    return {"image_id": image_id, "label": label, "decision": prev["decision"], "current_run": run}
