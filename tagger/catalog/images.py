"""Image identity, change detection and the record of what is already encoded."""
from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import CatalogError
from .base import CatalogBase, first_row

logger = logging.getLogger(__name__)

IMAGE_COLUMNS: dict[str, pa.DataType] = {
    "uri": pa.string(), "bytes": pa.int64(), "content_hash": pa.string(),
    "width": pa.int32(), "height": pa.int32(), "modified_ns": pa.int64(),
}
_ALIASES = {"size": "bytes", "path": "uri", "sha256": "content_hash"}

_UPSERT_NEW = """
INSERT INTO images (image_id, uri, content_hash, bytes, width, height, status, error,
                    first_seen, updated_at, modified_ns)
SELECT ? + row_number() OVER (ORDER BY r.uri) - 1, r.uri, r.content_hash, r.bytes, r.width,
       r.height, 'pending', NULL, ?, ?, r.modified_ns
FROM _reg AS r
WHERE NOT EXISTS (SELECT 1 FROM images AS i WHERE i.uri = r.uri)
"""

# Content changed: a different hash, or (without a hash) a different size or modification time
# (an edit in place that keeps the size). Changed content loses its hash when none is given
# (unknown until read) and becomes 'pending' again (an error status is cleared).
_CHANGED = """((r.content_hash IS NOT NULL AND r.content_hash IS DISTINCT FROM i.content_hash)
  OR (r.content_hash IS NULL AND r.bytes IS NOT NULL AND i.bytes IS NOT NULL AND r.bytes <> i.bytes)
  OR (r.content_hash IS NULL AND r.modified_ns IS NOT NULL AND i.modified_ns IS NOT NULL
      AND r.modified_ns <> i.modified_ns))"""

# an image whose file could not be read (missing, unreadable, a remote that did not answer) is read
# again when its source lists it again: the file may be there now; one that could not be decoded waits
# for a change of its file
_RETRY = ("(i.status = 'error' AND starts_with(coalesce(i.error, ''), 'read failed:') "
          "AND NOT contains(i.error, 'over the per-image limit'))")  # a file too large waits for a change

_UPDATE_EXISTING = f"""
UPDATE images AS i SET
    content_hash = CASE WHEN r.content_hash IS NOT NULL THEN r.content_hash
                        WHEN {_CHANGED} OR {_RETRY} THEN NULL ELSE i.content_hash END,
    bytes = coalesce(r.bytes, i.bytes),
    modified_ns = coalesce(r.modified_ns, i.modified_ns),
    width = CASE WHEN {_CHANGED} THEN r.width ELSE coalesce(r.width, i.width) END,
    height = CASE WHEN {_CHANGED} THEN r.height ELSE coalesce(r.height, i.height) END,
    status = CASE WHEN {_CHANGED} OR {_RETRY} THEN 'pending' ELSE i.status END,
    error = CASE WHEN {_CHANGED} OR {_RETRY} THEN NULL ELSE i.error END,
    updated_at = ?
FROM _reg AS r
WHERE i.uri = r.uri AND ({_CHANGED} OR {_RETRY}
    OR (r.bytes IS NOT NULL AND i.bytes IS NULL)
    OR (r.modified_ns IS NOT NULL AND i.modified_ns IS NULL)
    OR (r.width IS NOT NULL AND r.width IS DISTINCT FROM i.width)
    OR (r.height IS NOT NULL AND r.height IS DISTINCT FROM i.height))
"""

_PENDING = """
SELECT i.image_id, i.uri FROM images AS i
WHERE i.status IN ('pending', 'ok') AND NOT EXISTS (
    SELECT 1 FROM encodings AS e
    WHERE e.image_id = i.image_id AND e.model_id = ? AND e.content_hash = i.content_hash)
ORDER BY i.image_id
"""


def records_table(records: pa.Table | Iterable[Any]) -> pa.Table:
    """Normalise image records to a Table with the columns of IMAGE_COLUMNS.

    Accepts a pyarrow Table (``uri``/``path`` plus optional ``bytes``/``size``, ``content_hash``,
    ``width``, ``height``, ``modified_ns``), mappings with those keys, ``(uri, size)`` or ``(uri,
    size, modified_ns)`` tuples, or plain URIs.
    """
    if isinstance(records, pa.Table):
        table = records.rename_columns([_ALIASES.get(c, c) for c in records.column_names])
        cols = {}
        for name, typ in IMAGE_COLUMNS.items():
            cols[name] = (table.column(name).cast(typ) if name in table.column_names
                          else pa.nulls(table.num_rows, typ))
        return pa.table(cols)
    rows: dict[str, list[Any]] = {name: [] for name in IMAGE_COLUMNS}
    for rec in records:
        if isinstance(rec, str):
            rec = {"uri": rec}
        elif isinstance(rec, Mapping):
            rec = {_ALIASES.get(k, k): v for k, v in rec.items()}
        else:
            rec = dict(zip(("uri", "bytes", "modified_ns"), rec))
        for name in IMAGE_COLUMNS:
            rows[name].append(rec.get(name))
    return pa.table({name: pa.array(rows[name], type=typ) for name, typ in IMAGE_COLUMNS.items()})


def _as_list(values: Any, n: int, what: str) -> list[Any]:
    if values is None or isinstance(values, (str, bytes)):
        return [values] * n
    out = list(values)
    if len(out) != n:
        raise CatalogError(f"{what}: expected {n} values, got {len(out)}")
    return out


class ImagesMixin(CatalogBase):
    """Images, their stable ids and their encodings."""

    def register_images(self, records: pa.Table | Iterable[Any]) -> np.ndarray:
        """Register images; return their ``image_id`` (int64) aligned with ``records``.

        New URIs get new ids (never reused) and status 'pending' (not yet encoded); known URIs keep
        theirs. A known URI whose content changed (other hash, or other size or modification time
        when no hash is given) is reset to status 'pending', and so is one whose file could not be read last time (its error
        starts ``read failed:``; it may be readable now). The same content under two URIs gets two ids.
        """
        table = records_table(records)
        if table.num_rows == 0:
            return np.zeros(0, np.int64)
        if table.column("uri").null_count:
            raise CatalogError("register images: every record needs a uri")
        table = table.append_column("_row", pa.array(np.arange(table.num_rows, dtype=np.int64)))
        now = self._now()
        with self._transaction("register images") as con:
            self._register("_incoming", table)
            try:
                con.execute("CREATE OR REPLACE TEMP TABLE _reg AS SELECT * FROM _incoming "
                            "QUALIFY row_number() OVER (PARTITION BY uri ORDER BY _row DESC) = 1")
                con.execute(_UPDATE_EXISTING, [now])
                next_id = int(first_row(con.execute(
                    "SELECT CAST(value AS BIGINT) FROM settings WHERE key = 'next_image_id'"))[0])
                con.execute(_UPSERT_NEW, [next_id, now, now])
                con.execute("UPDATE settings SET value = CAST(greatest(?, (SELECT coalesce(max(image_id), 0) + 1 "
                            "FROM images)) AS VARCHAR) WHERE key = 'next_image_id'", [next_id])
                ids = con.execute("SELECT i.image_id FROM _incoming AS r JOIN images AS i USING (uri) "
                                  "ORDER BY r._row").fetchnumpy()["image_id"]
                con.execute("DROP TABLE _reg")
            finally:
                self._unregister("_incoming")
        return np.asarray(ids, dtype=np.int64)

    def update_images(self, rows: pa.Table | Mapping[str, Sequence[Any]]) -> int:
        """Record decode results keyed by ``image_id``: content_hash, width, height, bytes,
        status ('pending'/'ok'/'error') and error. Missing columns keep their stored values, except
        that an error row has no size (NULL width and height: the image could not be decoded)."""
        table = rows if isinstance(rows, pa.Table) else pa.table(dict(rows))
        if table.num_rows == 0:
            return 0
        cols = {"image_id": pa.int64(), "content_hash": pa.string(), "bytes": pa.int64(),
                "width": pa.int32(), "height": pa.int32(), "status": pa.string(), "error": pa.string()}
        upd = pa.table({c: (table.column(c).cast(t) if c in table.column_names else pa.nulls(table.num_rows, t))
                        for c, t in cols.items()})
        with self._transaction("update images") as con:
            self._register("_upd", upd)
            try:
                con.execute("""
                    UPDATE images AS i SET
                        content_hash = coalesce(u.content_hash, i.content_hash),
                        bytes = coalesce(u.bytes, i.bytes),
                        width = CASE WHEN coalesce(nullif(u.status, ''), i.status) = 'error' THEN NULL
                                     ELSE coalesce(u.width, i.width) END,
                        height = CASE WHEN coalesce(nullif(u.status, ''), i.status) = 'error' THEN NULL
                                      ELSE coalesce(u.height, i.height) END,
                        status = coalesce(nullif(u.status, ''), i.status),
                        error = CASE WHEN coalesce(nullif(u.status, ''), i.status) = 'ok' THEN NULL
                                     ELSE coalesce(nullif(u.error, ''), i.error) END,
                        updated_at = ?
                    FROM (SELECT * FROM _upd QUALIFY row_number() OVER (PARTITION BY image_id) = 1) AS u
                    WHERE i.image_id = u.image_id""", [self._now()])
                n = first_row(con.execute(
                    "SELECT count(*) FROM images WHERE image_id IN (SELECT image_id FROM _upd)"))[0]
            finally:
                self._unregister("_upd")
        return int(n)

    def mark_errors(self, image_ids: Sequence[int], errors: str | Sequence[str],
                    content_hashes: Sequence[str | None] | None = None) -> int:
        """Set status 'error' with a message (one for all, or one per image); an error image is
        not pending until its content changes, or, when it could not be read (``read failed: ...``),
        until it is registered again."""
        ids = [int(i) for i in image_ids]
        rows = {"image_id": ids, "status": ["error"] * len(ids),
                "error": [str(e) for e in _as_list(errors, len(ids), "mark_errors errors")]}
        if content_hashes is not None:
            rows["content_hash"] = _as_list(content_hashes, len(ids), "mark_errors hashes")
        return self.update_images(pa.table(rows))

    def record_encodings(self, image_ids: Sequence[int], model_id: str,
                         hashes: Sequence[str | None] | str | None, shard: str | None) -> int:
        """Record that these images were encoded with ``model_id`` (content ``hashes``) into
        ``shard``. Images without a stored hash take the encoded one; an image whose stored content
        was encoded gets status 'ok'."""
        ids = [int(i) for i in image_ids]
        if not ids:
            return 0
        enc = pa.table({"image_id": pa.array(ids, pa.int64()),
                        "content_hash": pa.array(_as_list(hashes, len(ids), "record_encodings hashes"),
                                                 pa.string())})
        now = self._now()
        with self._transaction("record encodings") as con:
            self._register("_enc", enc)
            try:
                con.execute("""
                    INSERT INTO encodings (image_id, model_id, content_hash, shard, encoded_at)
                    SELECT image_id, ?, content_hash, ?, ? FROM _enc
                    QUALIFY row_number() OVER (PARTITION BY image_id) = 1
                    ON CONFLICT (image_id, model_id) DO UPDATE SET content_hash = excluded.content_hash,
                        shard = excluded.shard, encoded_at = excluded.encoded_at""",
                            [model_id, shard, now])
                con.execute("""
                    UPDATE images AS i SET content_hash = e.content_hash, status = 'ok', error = NULL,
                        updated_at = ?
                    FROM _enc AS e WHERE i.image_id = e.image_id AND e.content_hash IS NOT NULL
                        AND (i.content_hash IS NULL OR i.content_hash = e.content_hash)
                        AND (i.status <> 'ok' OR i.content_hash IS NULL)""", [now])
            finally:
                self._unregister("_enc")
        return len(set(ids))

    def unlisted_images(self, prefix: str, listed: pa.Table) -> list[tuple[int, str]]:
        """``(image_id, uri)`` of the images whose URI starts with ``prefix`` (a folder's, ending in
        ``/``) that the listing ``listed`` (a table with column ``uri``) lacks, errors aside, by URI."""
        with self._connected():
            self._register("_listed", listed.select(["uri"]))
            try:
                rows = self.query("SELECT image_id, uri FROM images AS i WHERE starts_with(i.uri, ?) "
                                  "AND i.status <> 'error' AND NOT EXISTS (SELECT 1 FROM _listed AS l "
                                  "WHERE l.uri = i.uri) ORDER BY i.uri", [prefix])
            finally:
                self._unregister("_listed")
        return [(int(i), u) for i, u in rows]

    def pending_images(self, model_id: str, limit: int | None = None) -> list[tuple[int, str]]:
        """``(image_id, uri)`` of the images (status 'pending' or 'ok', not 'error') with no
        encoding by ``model_id`` of their current content (new, changed, or never read), by image_id."""
        sql = _PENDING + (f" LIMIT {int(limit)}" if limit is not None else "")
        return [(int(i), u) for i, u in self.query(sql, [model_id])]

    def pending_table(self, model_id: str) -> pa.Table:
        """``pending_images`` as a pyarrow Table (image_id, uri), e.g. a Ray Data manifest."""
        return self.query_arrow(_PENDING, [model_id])

    def duplicates(self) -> list[tuple[str, list[int], list[str]]]:
        """``(content_hash, image_ids, uris)`` for content stored under more than one URI."""
        rows = self.query("SELECT content_hash, image_ids, uris FROM duplicate_images ORDER BY content_hash")
        return [(h, [int(i) for i in ids], list(uris)) for h, ids, uris in rows]

    def image_ids(self, uris: Sequence[str]) -> dict[str, int]:
        """uri -> image_id for the known ones among ``uris``."""
        if not uris:
            return {}
        rows = self.query("SELECT uri, image_id FROM images WHERE uri IN (SELECT unnest(?))", [list(uris)])
        return {u: int(i) for u, i in rows}

    def unreadable_ids(self) -> list[int]:
        """Ids of the images whose file could not be read when last listed or read (status 'error': gone,
        unreadable, corrupt): embeddings an earlier read left in the stores are not theirs any more, so
        search leaves them out and a tag run does not tag them (they come back once read again)."""
        return [int(i) for (i,) in self.query("SELECT image_id FROM images WHERE status = 'error' ORDER BY image_id")]

    def uris_of(self, image_ids: Sequence[int]) -> dict[int, str]:
        """image_id -> uri for the known ones among ``image_ids``."""
        if not len(image_ids):
            return {}
        rows = self.query("SELECT image_id, uri FROM images WHERE image_id IN (SELECT unnest(?::BIGINT[]))",
                          [[int(i) for i in image_ids]])
        return {int(i): u for i, u in rows}

    def content_hashes(self, image_ids: Sequence[int]) -> dict[int, str | None]:
        """image_id -> content hash for the known ones among ``image_ids``."""
        rows = self.query("SELECT image_id, content_hash FROM images WHERE image_id IN "
                          "(SELECT unnest(?::BIGINT[]))", [[int(i) for i in image_ids]])
        return {int(i): h for i, h in rows}

    def encoded_shards(self, model_id: str) -> set[str]:
        """Names of the shards the catalog has recorded encodings from, for ``model_id``."""
        return {s for (s,) in self.query("SELECT DISTINCT shard FROM encodings WHERE model_id = ?", [model_id])}

    def images_in_shards(self, model_id: str, shards: Sequence[str]) -> int:
        """How many images the catalog records as encoded with ``model_id`` into ``shards``."""
        if not shards:
            return 0
        return int(self.query("SELECT count(*) FROM encodings WHERE model_id = ? AND shard IN (SELECT unnest(?))",
                              [model_id, [str(s) for s in shards]])[0][0])

    def shards_of(self, model_id: str, image_ids: Sequence[int]) -> list[tuple[int, str]]:
        """``(image_id, shard)`` of those of ``image_ids`` encoded with ``model_id``, by image id."""
        rows = self.query("SELECT image_id, shard FROM encodings WHERE model_id = ? AND "
                          "image_id IN (SELECT unnest(?::BIGINT[])) ORDER BY image_id",
                          [model_id, [int(i) for i in image_ids]])
        return [(int(i), str(s)) for i, s in rows]
