-- 011_near_duplicates: groups of near-duplicate images (re-encodes, resizes, small crops, flips) found
-- by `tagger dedup` from the global embeddings of one model: images whose cosine similarity reaches the
-- threshold (and whose colour histograms overlap enough, unless that check is off) are linked, and each
-- connected set of linked images is one group.

CREATE TABLE near_duplicates (
    model_id   VARCHAR NOT NULL,
    image_id   BIGINT  NOT NULL,
    group_id   BIGINT  NOT NULL,  -- the smallest image_id of the group
    similarity DOUBLE  NOT NULL,  -- the highest cosine similarity to another image of the group
    PRIMARY KEY (model_id, image_id)
);

-- Which images a scan compared with the rest, and with which thresholds: a later scan compares only the
-- images added since (new thresholds start over).
CREATE TABLE near_duplicate_scans (
    model_id        VARCHAR   NOT NULL,
    image_id        BIGINT    NOT NULL,
    threshold       DOUBLE    NOT NULL,  -- cosine of the global embeddings
    pixel_threshold DOUBLE,              -- colour-histogram overlap; NULL: not checked
    scanned_at      TIMESTAMP NOT NULL,
    PRIMARY KEY (model_id, image_id)
);

-- One row per group, its images' ids and URIs in id order.
CREATE VIEW near_duplicate_groups AS
SELECT d.model_id, d.group_id, count(*) AS images, min(d.similarity) AS min_similarity,
       list(d.image_id ORDER BY d.image_id) AS image_ids, list(i.uri ORDER BY d.image_id) AS uris
FROM near_duplicates AS d
JOIN images AS i ON i.image_id = d.image_id
GROUP BY d.model_id, d.group_id;
