-- 014_run_mode: how a tag run was made. 'full': every label scored and decided; 'incremental': a
-- nightly after a small vocabulary change, which scored and decided only the added labels (and
-- those with changed synonyms) and carried the other labels' tags and decisions over from
-- base_run. NULL: a run made before this migration (full).

ALTER TABLE runs ADD COLUMN mode VARCHAR;
ALTER TABLE runs ADD COLUMN base_run BIGINT;
