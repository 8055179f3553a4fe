"""The reads behind ``tagger status``: images by status, the vocabulary, the current run and its head,
and the newest tag run (what the last tag or nightly made)."""
from __future__ import annotations

from typing import Any

from .runs import head_label

__all__ = ["catalog_status"]


def catalog_status(catalog) -> dict[str, Any]:
    """Counts and the runs that matter: ``images``, ``encoded``, ``pending``, ``errors``, ``labels``,
    ``retired_labels``, ``decisions``, ``current_run`` (with ``current_head``, ``current_tags``,
    ``current_since``) and ``last_tag_run`` (with its status and end)."""
    n, ok, pending, errors = catalog.query(
        "SELECT count(*), count(*) FILTER (WHERE status = 'ok'), count(*) FILTER (WHERE status = 'pending'), "
        "count(*) FILTER (WHERE status = 'error') FROM images")[0]
    active, retired = catalog.query("SELECT count(*) FILTER (WHERE retired_at IS NULL), "
                                    "count(*) FILTER (WHERE retired_at IS NOT NULL) FROM labels")[0]
    decisions = catalog.query("SELECT count(*) FROM review_decisions")[0][0]
    out: dict[str, Any] = {"images": int(n), "encoded": int(ok), "pending": int(pending), "errors": int(errors),
                           "labels": int(active), "retired_labels": int(retired), "decisions": int(decisions)}
    cur = catalog.query("SELECT r.run_id, r.classifier_id, r.n_tags, c.switched_at FROM current_run AS c "
                        "JOIN runs AS r ON r.run_id = c.run_id")
    if cur:
        run_id, clf_id, n_tags, since = cur[0]
        clf = catalog.get_classifier(clf_id) if clf_id else None
        out.update(current_run=int(run_id), current_head=head_label(clf["config"]) if clf else None,
                   current_tags=int(n_tags or 0), current_since=str(since)[:19] if since else None)
    else:
        out["current_run"] = None
    last = catalog.query("SELECT run_id, status, finished_at FROM runs WHERE kind = 'tag' ORDER BY run_id DESC LIMIT 1")
    if last:
        out.update(last_tag_run=int(last[0][0]), last_tag_status=last[0][1],
                   last_tag_finished=str(last[0][2])[:19] if last[0][2] else None)
    return out
