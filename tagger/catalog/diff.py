"""Compare two tagging runs: vocabulary changes and, per label, images that gained or lost the tag."""
from __future__ import annotations

from typing import Any

from ..errors import CatalogError
from .flips import decision_flips, renamed

# Positive (image_id, label) pairs of run A (a label renamed since under its new name) and run B;
# per label: positives in each run, pairs only in B (gained) and pairs only in A (lost).
_DIFF_SQL = """
WITH renames AS (SELECT unnest($old::VARCHAR[]) AS old, unnest($new::VARCHAR[]) AS new),
     a AS (SELECT DISTINCT t.image_id, coalesce(r.new, t.label) AS label
           FROM tags t LEFT JOIN renames r ON t.label = r.old WHERE t.run_id = $a AND t.positive),
     b AS (SELECT DISTINCT image_id, label FROM tags WHERE run_id = $b AND positive),
     gained AS (SELECT label, count(*) AS n FROM (SELECT * FROM b EXCEPT SELECT * FROM a) GROUP BY label),
     lost AS (SELECT label, count(*) AS n FROM (SELECT * FROM a EXCEPT SELECT * FROM b) GROUP BY label),
     na AS (SELECT label, count(*) AS n FROM a GROUP BY label),
     nb AS (SELECT label, count(*) AS n FROM b GROUP BY label),
     names AS (SELECT label FROM na UNION SELECT label FROM nb)
SELECT names.label, coalesce(na.n, 0), coalesce(nb.n, 0), coalesce(gained.n, 0), coalesce(lost.n, 0)
FROM names
LEFT JOIN na USING (label) LEFT JOIN nb USING (label)
LEFT JOIN gained USING (label) LEFT JOIN lost USING (label)
ORDER BY names.label
"""


def run_diff(catalog, a: int, b: int) -> dict[str, Any]:
    """What changed from run ``a`` to run ``b``.

    Returns ``{"a", "b", "labels_added", "labels_removed", "renamed", "gained", "lost", "labels"}``
    where ``labels_added``/``labels_removed`` compare the runs' label lists, a label renamed between
    them (``renamed``: new name -> old, :func:`.flips.renamed`) compared under its new name,
    ``gained``/``lost`` count
    positive (image_id, label) pairs present only in ``b``/only in ``a``, and ``labels`` holds one
    dict per label positive in either run: ``label, a_positive, b_positive, gained, lost``;
    ``flips`` lists the labels whose decision flipped, with the reason (:mod:`.flips`).
    Works on a writable or a read-only catalog; unknown or pruned runs raise CatalogError.
    """
    run_a, run_b = catalog.get_run(a), catalog.get_run(b)
    for run in (run_a, run_b):
        if run.pruned_at is not None:
            raise CatalogError(f"run {run.run_id} was pruned (its tags are deleted); cannot diff it")
    labels_a, labels_b = list(run_a.labels or []), list(run_b.labels or [])
    moved = renamed(labels_a, labels_b)
    set_a, set_b = set(labels_a) - set(moved.values()), set(labels_b) - set(moved)
    rows = catalog.query(_DIFF_SQL, {"a": run_a.run_id, "b": run_b.run_id, "old": list(moved.values()),
                                     "new": list(moved)})
    per_label = [{"label": label, "a_positive": int(na), "b_positive": int(nb), "gained": int(g), "lost": int(lo)}
                 for label, na, nb, g, lo in rows]
    return {
        "a": run_a.run_id,
        "b": run_b.run_id,
        "labels_added": [x for x in labels_b if x not in set_a and x not in moved],
        "labels_removed": [x for x in labels_a if x not in set_b and x not in moved.values()],
        "renamed": moved,
        "gained": sum(r["gained"] for r in per_label),
        "lost": sum(r["lost"] for r in per_label),
        "labels": per_label,
        "flips": decision_flips(catalog, run_a.run_id, run_b.run_id),
    }
