-- 013_review_undo: what a decision made through `tagger serve` replaced, so that it can be withdrawn.
-- One row per decision made there (latest seq last): the decision it replaced on the pair (NULL
-- columns: there was none) and the pair's tag in the run that was current then (had_row false: the run
-- had no row for it). Undo restores both and deletes the row.

CREATE SEQUENCE review_undo_seq;

CREATE TABLE review_undo (
    seq         BIGINT    PRIMARY KEY DEFAULT nextval('review_undo_seq'),
    image_id    BIGINT    NOT NULL,
    label       VARCHAR   NOT NULL,
    run_id      BIGINT,               -- the current run when the decision was made (NULL: none)
    had_row     BOOLEAN   NOT NULL,
    positive    BOOLEAN,
    provenance  VARCHAR,
    decision    VARCHAR,              -- the decision replaced (NULL: none), with its reviewer, time and source
    who         VARCHAR,
    decided_at  TIMESTAMP,
    source      VARCHAR,
    recorded_at TIMESTAMP NOT NULL
);
