-- 012_decision_reasons: why each label of a tag run is decided as it is, in words ("text separation
-- 1.81 < 2 and the images show no second group"), and the classifier's text separation of the label
-- (how far apart its own sentences and the others score), so that a label whose decision flips
-- between runs can be reported with its reason.
ALTER TABLE run_thresholds ADD COLUMN reason VARCHAR;
ALTER TABLE run_thresholds ADD COLUMN text_separation DOUBLE;
