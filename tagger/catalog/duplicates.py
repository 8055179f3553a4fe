"""Near-duplicate groups in the catalog (tables of ``011_near_duplicates.sql``): read the groups and the
scanned images of a model, and replace the groups a scan changed, in one transaction."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

if TYPE_CHECKING:
    from . import Catalog

__all__ = ["dedup_state", "duplicate_groups", "group_counts", "group_rows", "write_groups"]

logger = logging.getLogger(__name__)


def dedup_state(cat: "Catalog", model_id: str) -> tuple[tuple[float, float | None] | None, np.ndarray]:
    """((threshold, pixel threshold or None) of the last scan, or None; ids of the images scanned with
    those thresholds) for ``model_id``."""
    last = cat.query("SELECT threshold, pixel_threshold FROM near_duplicate_scans WHERE model_id = ? "
                     "ORDER BY scanned_at DESC LIMIT 1", [model_id])
    if not last:
        return None, np.empty(0, np.int64)
    threshold, pixel = last[0]
    rows = cat.query("SELECT image_id FROM near_duplicate_scans WHERE model_id = ? AND threshold = ? AND "
                     "pixel_threshold IS NOT DISTINCT FROM ? ORDER BY image_id", [model_id, threshold, pixel])
    return (float(threshold), None if pixel is None else float(pixel)), np.fromiter((r[0] for r in rows), np.int64,
                                                                                   len(rows))


def group_rows(cat: "Catalog", model_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image_id, group_id, similarity) of every grouped image of ``model_id``."""
    t = cat.query_arrow("SELECT image_id, group_id, similarity FROM near_duplicates WHERE model_id = ?",
                        [model_id])
    return (t.column("image_id").to_numpy().astype(np.int64), t.column("group_id").to_numpy().astype(np.int64),
            t.column("similarity").to_numpy().astype(np.float64))


def write_groups(cat: "Catalog", model_id: str, thresholds: tuple[float, float | None], image_ids: np.ndarray,
                 group_ids: np.ndarray, similarity: np.ndarray, scanned: np.ndarray, *, reset: bool = False) -> None:
    """Replace the rows of ``image_ids`` (every member of each changed group) with the new groups and
    record ``scanned`` as compared at ``thresholds`` (cosine, pixel overlap or None); ``reset`` first
    drops the model's groups and scans (new thresholds). One transaction: a failure leaves the previous
    groups."""
    table = pa.table({"image_id": pa.array(np.asarray(image_ids, np.int64)),
                      "group_id": pa.array(np.asarray(group_ids, np.int64)),
                      "similarity": pa.array(np.asarray(similarity, np.float64))})
    scans = pa.table({"image_id": pa.array(np.asarray(scanned, np.int64))})
    now = cat._now()
    with cat._transaction("record near-duplicate groups") as con:
        if reset:
            con.execute("DELETE FROM near_duplicates WHERE model_id = ?", [model_id])
            con.execute("DELETE FROM near_duplicate_scans WHERE model_id = ?", [model_id])
        con.register("_groups", table)
        con.register("_scans", scans)
        try:
            con.execute("DELETE FROM near_duplicates WHERE model_id = ? AND image_id IN "
                        "(SELECT image_id FROM _groups)", [model_id])
            con.execute("INSERT INTO near_duplicates SELECT ?, image_id, group_id, similarity FROM _groups",
                        [model_id])
            con.execute("INSERT INTO near_duplicate_scans SELECT ?, image_id, ?, ?, ? FROM _scans "
                        "ON CONFLICT (model_id, image_id) DO UPDATE SET threshold = excluded.threshold, "
                        "pixel_threshold = excluded.pixel_threshold, scanned_at = excluded.scanned_at",
                        [model_id, float(thresholds[0]), thresholds[1], now])
        finally:
            con.unregister("_groups")
            con.unregister("_scans")
    logger.info("near-duplicates of %s: %d images in changed groups, %d scanned", model_id, table.num_rows,
                scans.num_rows)


def duplicate_groups(cat: "Catalog", model_id: str, limit: int | None = None) -> list[dict[str, Any]]:
    """The groups of ``model_id``, largest first: group_id, images, min_similarity, uris."""
    sql = ("SELECT group_id, images, min_similarity, uris FROM near_duplicate_groups WHERE model_id = ? "
           "ORDER BY images DESC, group_id")
    rows = cat.query(sql + (f" LIMIT {int(limit)}" if limit else ""), [model_id])
    return [{"group_id": int(g), "images": int(n), "min_similarity": float(s), "uris": list(u)}
            for g, n, s, u in rows]


def group_counts(cat: "Catalog", model_id: str) -> tuple[int, int]:
    """(groups, images in them) of ``model_id``."""
    groups, images = cat.query("SELECT count(*), coalesce(sum(images), 0) FROM near_duplicate_groups "
                               "WHERE model_id = ?", [model_id])[0]
    return int(groups), int(images)
