-- 001_init: the catalog's tables.
-- Applied once by tagger.catalog (inside one transaction) and recorded in schema_migrations.

-- Every image ever listed. image_id is assigned once per URI and never reassigned or reused;
-- rows are never deleted (a vanished or broken file is marked status = 'error').
CREATE TABLE images (
    image_id     BIGINT PRIMARY KEY,
    uri          VARCHAR NOT NULL UNIQUE,
    content_hash VARCHAR,                   -- sha256 hex of the bytes; NULL until first read
    bytes        BIGINT,                    -- file size as listed or read
    width        INTEGER,                   -- as displayed (EXIF orientation applied)
    height       INTEGER,
    status       VARCHAR NOT NULL DEFAULT 'ok' CHECK (status IN ('ok', 'error')),
    error        VARCHAR,
    first_seen   TIMESTAMP NOT NULL DEFAULT current_timestamp,
    updated_at   TIMESTAMP NOT NULL DEFAULT current_timestamp
);

-- What is already encoded: one row per (image, model), for the content that was encoded.
CREATE TABLE encodings (
    image_id     BIGINT NOT NULL,
    model_id     VARCHAR NOT NULL,
    content_hash VARCHAR,
    shard        VARCHAR,
    encoded_at   TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (image_id, model_id)
);

-- The vocabulary. Labels are retired, never deleted, so that old runs stay interpretable.
CREATE TABLE labels (
    label_id   BIGINT PRIMARY KEY,
    name       VARCHAR NOT NULL UNIQUE,
    synonyms   VARCHAR[] NOT NULL DEFAULT [],
    added_at   TIMESTAMP NOT NULL DEFAULT current_timestamp,
    retired_at TIMESTAMP
);

-- Generated text corpora (sentences written for label sets).
CREATE TABLE text_corpora (
    corpus_id   VARCHAR PRIMARY KEY,
    n_sentences BIGINT NOT NULL,
    labels      VARCHAR[],
    path        VARCHAR,
    config      JSON,
    created_at  TIMESTAMP NOT NULL DEFAULT current_timestamp
);

-- Trained text-only classifiers.
CREATE TABLE classifiers (
    classifier_id VARCHAR PRIMARY KEY,
    corpus_id     VARCHAR,
    model_id      VARCHAR NOT NULL,
    labels        VARCHAR[] NOT NULL,
    config        JSON,
    metrics       JSON,
    path          VARCHAR,
    created_at    TIMESTAMP NOT NULL DEFAULT current_timestamp
);

-- Jobs that produce results. Lifecycle of a tagging run:
-- running -> loaded (tags loaded) -> current (set_current) -> superseded; or -> failed.
CREATE TABLE runs (
    run_id        BIGINT PRIMARY KEY,
    kind          VARCHAR NOT NULL,
    status        VARCHAR NOT NULL DEFAULT 'running'
                  CHECK (status IN ('running', 'loaded', 'current', 'failed', 'superseded')),
    started_at    TIMESTAMP NOT NULL DEFAULT current_timestamp,
    finished_at   TIMESTAMP,
    model_id      VARCHAR,
    classifier_id VARCHAR,
    n_images      BIGINT,
    n_tags        BIGINT,
    config        JSON,
    timings       JSON,
    labels        VARCHAR[],
    error         VARCHAR,
    pruned_at     TIMESTAMP                 -- set when retention deleted the run's tags
);

-- Tags, long format. No index on purpose: loads are bulk inserts sorted by
-- (run_id, label, score DESC) so that zone maps prune scans by run and label.
CREATE TABLE tags (
    run_id   BIGINT NOT NULL,
    image_id BIGINT NOT NULL,
    label    VARCHAR NOT NULL,
    score    FLOAT NOT NULL,
    rank     SMALLINT,                      -- 1 = best label of the image; NULL if not ranked
    positive BOOLEAN NOT NULL DEFAULT false -- above the label's decision threshold
);
