-- 015_decision_cutoff: the posterior P(positive | score) at which a label's tags became positive in a
-- run (half the best F1 its fit expects, or a fixed 0.5), so a resumed run decides exactly as it
-- started. NULL: a run made before this migration (0.5).

ALTER TABLE run_thresholds ADD COLUMN cutoff DOUBLE;
