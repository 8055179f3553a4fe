-- 002_current: the current-run pointer, key/value settings and the query views.

-- Exactly one row; run_id is NULL until a run is made current.
CREATE TABLE current_run (
    singleton  BOOLEAN PRIMARY KEY DEFAULT true CHECK (singleton),
    run_id     BIGINT,
    switched_at TIMESTAMP
);
INSERT INTO current_run (singleton, run_id, switched_at) VALUES (true, NULL, NULL);

-- Small key/value store (counters such as the image_id high-water mark).
CREATE TABLE settings (
    key   VARCHAR PRIMARY KEY,
    value VARCHAR
);
INSERT INTO settings (key, value)
SELECT 'next_image_id', CAST(coalesce(max(image_id), 0) + 1 AS VARCHAR) FROM images;

-- Tags of the current run with the image URI. The join on the one-row current_run lets the
-- engine push the run_id filter into the tags scan.
CREATE VIEW current_tags AS
SELECT t.run_id, t.image_id, i.uri, t.label, t.score, t.rank, t.positive
FROM tags AS t
JOIN current_run AS c ON t.run_id = c.run_id
JOIN images AS i ON i.image_id = t.image_id;

-- Images whose content appears under more than one URI.
CREATE VIEW duplicate_images AS
SELECT content_hash, count(*) AS n, list(image_id ORDER BY image_id) AS image_ids,
       list(uri ORDER BY image_id) AS uris
FROM images
WHERE content_hash IS NOT NULL
GROUP BY content_hash
HAVING count(*) > 1;
