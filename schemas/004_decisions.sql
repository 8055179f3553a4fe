-- 004_decisions: per-label tag decisions. Each tag carries a confidence (the fitted posterior
-- P(positive | score), in [0, 1]) beside its raw score; each tag run stores the threshold it used
-- for every label; users may pin a label's threshold; a small labelled set may calibrate labels.

-- NULL for tags of runs made before decisions (or with the per-image standardised rule).
ALTER TABLE tags ADD COLUMN confidence FLOAT;

-- A threshold pinned by the user on the score column's scale (NULL: fitted per run).
ALTER TABLE labels ADD COLUMN threshold DOUBLE;

-- The decision of every label in a tag run. threshold is on the run's score column (NULL: the label
-- is never positive, e.g. judged absent from the corpus); source says where it came from.
CREATE TABLE run_thresholds (
    run_id    BIGINT  NOT NULL,
    label     VARCHAR NOT NULL,
    threshold DOUBLE,
    present   BOOLEAN NOT NULL,           -- the fit found the label in the corpus sample
    source    VARCHAR NOT NULL CHECK (source IN ('fit', 'labelled', 'pinned')),
    mu0 DOUBLE, sd0 DOUBLE, mu1 DOUBLE, sd1 DOUBLE, prior DOUBLE,  -- the label's two components
    PRIMARY KEY (run_id, label)
);

-- Images a user labelled (tagger tag --calibrate-with FILE): every later run calibrates from them.
-- labels lists the image's labels; every other label counts as absent from the image.
CREATE TABLE calibration_images (
    image_id BIGINT PRIMARY KEY,
    labels   VARCHAR[] NOT NULL,
    added_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);

CREATE OR REPLACE VIEW current_tags AS
SELECT t.run_id, t.image_id, i.uri, t.label, t.score, t.confidence, t.rank, t.positive
FROM tags AS t
JOIN current_run AS c ON t.run_id = c.run_id
JOIN images AS i ON i.image_id = t.image_id;

-- Thresholds of the current run.
CREATE VIEW current_thresholds AS
SELECT r.label, r.threshold, r.present, r.source
FROM run_thresholds AS r
JOIN current_run AS c ON r.run_id = c.run_id;
