-- 007_review: people's decisions on tags, and where each tag comes from.
-- A decision accepts or rejects one (image, label) pair; the latest decision of a pair wins. Every
-- tag run writes them into its tags after loading (a rejected tag is not positive, an accepted one
-- is, and is added when the model did not keep it), and marks those rows provenance = 'person'.

CREATE TABLE review_decisions (
    image_id   BIGINT    NOT NULL,
    label      VARCHAR   NOT NULL,
    decision   VARCHAR   NOT NULL CHECK (decision IN ('accept', 'reject')),
    who        VARCHAR   NOT NULL,
    decided_at TIMESTAMP NOT NULL,
    source     VARCHAR   NOT NULL,  -- 'cli', 'csv' or 'report' (a file the report's review queue made)
    PRIMARY KEY (image_id, label)
);

-- 'model' (the run's classifier decided) or 'person' (a review decision decided). Rows loaded from
-- a run's tag files take the default.
ALTER TABLE tags ADD COLUMN provenance VARCHAR DEFAULT 'model';

CREATE OR REPLACE VIEW current_tags AS
SELECT t.run_id, t.image_id, i.uri, t.label, t.score, t.confidence, t.rank, t.positive,
       coalesce(t.provenance, 'model') AS provenance
FROM tags AS t
JOIN current_run AS c ON t.run_id = c.run_id
JOIN images AS i ON i.image_id = t.image_id;

-- The decisions with the image URI.
CREATE VIEW reviews AS
SELECT i.uri, d.label, d.decision, d.who, d.decided_at, d.source, d.image_id
FROM review_decisions AS d
JOIN images AS i ON i.image_id = d.image_id;
