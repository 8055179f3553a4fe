-- 005_image_pending: an image listed but not yet encoded has status 'pending', not 'ok'.
-- status: 'pending' (new, or its content changed, and not yet read), 'ok' (decoded and encoded),
-- 'error' (could not be read or decoded; width and height are then NULL).
-- DuckDB cannot alter a CHECK constraint, so the table is rebuilt with the same rows and ids; the
-- views that read it (current_tags, duplicate_images) bind by name and keep working.

CREATE TABLE images_005 (
    image_id     BIGINT PRIMARY KEY,
    uri          VARCHAR NOT NULL UNIQUE,
    content_hash VARCHAR,                   -- sha256 hex of the bytes; NULL until first read
    bytes        BIGINT,                    -- file size as listed or read
    width        INTEGER,                   -- as displayed (EXIF orientation applied); NULL if unknown
    height       INTEGER,
    status       VARCHAR NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'ok', 'error')),
    error        VARCHAR,
    first_seen   TIMESTAMP NOT NULL DEFAULT current_timestamp,
    updated_at   TIMESTAMP NOT NULL DEFAULT current_timestamp
);

-- 'ok' stays only where some model encoded the image's current content; error rows lose the
-- header size a failed decode left behind.
INSERT INTO images_005
SELECT i.image_id, i.uri, i.content_hash, i.bytes,
       CASE WHEN i.status = 'error' THEN NULL ELSE i.width END,
       CASE WHEN i.status = 'error' THEN NULL ELSE i.height END,
       CASE WHEN i.status = 'ok' AND NOT EXISTS (
                SELECT 1 FROM encodings AS e
                WHERE e.image_id = i.image_id AND e.content_hash = i.content_hash) THEN 'pending'
            ELSE i.status END,
       i.error, i.first_seen, i.updated_at
FROM images AS i;

DROP TABLE images;
ALTER TABLE images_005 RENAME TO images;
