-- 003_label_counts: per-run tag counts of every label, written in the same transaction as the
-- run's tags, so that "how many images carry each label" reads a few rows instead of every tag.

CREATE TABLE run_label_counts (
    run_id BIGINT  NOT NULL,
    label  VARCHAR NOT NULL,
    n      BIGINT  NOT NULL,  -- tag rows of the label in the run
    n_pos  BIGINT  NOT NULL,  -- of which positive
    PRIMARY KEY (run_id, label)
);

INSERT INTO run_label_counts
SELECT run_id, label, count(*), count(*) FILTER (WHERE positive) FROM tags GROUP BY run_id, label;

-- Label counts of the current run.
CREATE VIEW current_label_counts AS
SELECT l.label, l.n, l.n_pos
FROM run_label_counts AS l
JOIN current_run AS c ON l.run_id = c.run_id;
