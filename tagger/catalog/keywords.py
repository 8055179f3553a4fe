"""Catalog reads of the sidecar export and the keyword import: each image's positive tags with
confidence and provenance, the folder common to a run's local images, the images to read keywords
of, and the vocabulary with synonyms and parents. Functions over an open catalog (no new table)."""
from __future__ import annotations

import os
from collections.abc import Iterator

import pyarrow as pa

from ..uris import to_local_path
from .review import _reader

__all__ = ["image_uris", "run_common_folder", "sidecar_batches", "vocabulary"]

_SIDECAR_SQL = """
SELECT i.uri,
       coalesce(list(struct_pack(label := t.label, confidence := t.confidence,
                                 provenance := coalesce(t.provenance, 'model'),
                                 decided_at := CASE WHEN t.provenance = 'person' AND r.decision = 'accept'
                                                    THEN r.decided_at END)
                     ORDER BY t.label)
                FILTER (WHERE t.positive), []) AS tags
FROM tags AS t JOIN images AS i ON i.image_id = t.image_id
LEFT JOIN review_decisions AS r ON r.image_id = t.image_id AND r.label = t.label
WHERE t.run_id = $run GROUP BY i.uri ORDER BY i.uri
"""


def sidecar_batches(cat, run_id: int, batch_rows: int = 2048) -> Iterator[pa.RecordBatch]:
    """Per image of run ``run_id``, by URI: ``uri`` and ``tags`` (its positive tags as structs of
    label, confidence, provenance and, for a person's accept, when it was made; empty for an image
    with none), in batches."""
    with cat._connected() as con:
        yield from _reader(con, _SIDECAR_SQL, {"run": int(run_id)}, batch_rows)


def run_common_folder(cat, run_id: int) -> str | None:
    """The deepest folder holding every local image of the run (None without local images): the
    common prefix of the smallest and largest URI, cut at a path separator."""
    rows = cat.query("SELECT min(i.uri), max(i.uri) FROM images AS i WHERE i.uri LIKE '/%' AND i.image_id IN "
                     "(SELECT image_id FROM tags WHERE run_id = ?)", [int(run_id)])
    ends = [u for u in (rows[0] if rows else ()) if u is not None]
    ends += _file_uri_paths(cat, "SELECT DISTINCT i.uri FROM images AS i WHERE i.uri LIKE 'file://%' AND i.image_id IN "
                                 "(SELECT image_id FROM tags WHERE run_id = ?)", [int(run_id)])
    return os.path.commonpath([os.path.dirname(u) for u in ends]) if ends else None


def _file_uri_paths(cat, sql: str, params: list) -> list[str]:
    """The local paths of the ``file://`` URIs ``sql`` selects (a name that is not UTF-8 is stored so)."""
    paths = (to_local_path(u) for (u,) in cat.query(sql, params))
    return [p for p in paths if p is not None]


def image_uris(cat, under: str | None = None) -> list[str]:
    """The URIs of the registered local images (those below folder ``under`` when given), sorted."""
    if under is None:
        return [u for (u,) in cat.query("SELECT uri FROM images WHERE uri LIKE '/%' OR uri LIKE 'file://%' "
                                        "ORDER BY uri")]
    prefix = under.rstrip("/") + "/"
    plain = [u for (u,) in cat.query("SELECT uri FROM images WHERE starts_with(uri, ?)", [prefix])]
    odd = [u for (u,) in cat.query("SELECT uri FROM images WHERE uri LIKE 'file://%'")
           if (to_local_path(u) or "").startswith(prefix)]
    return sorted(plain + odd)


def vocabulary(cat) -> tuple[dict[str, list[str]], dict[str, tuple[str, ...]]]:
    """The active labels with their synonyms, and the active hierarchy (child -> parents)."""
    labels = {lab.name: list(lab.synonyms or []) for lab in cat.list_labels(include_retired=False)}
    try:
        parents = dict(cat.active_hierarchy())
    except AttributeError:
        parents = {}
    return labels, parents
