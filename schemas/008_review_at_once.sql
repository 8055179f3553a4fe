-- 008_review_at_once: a person's accept enters the current run at once, also for a tag the run did
-- not keep. Such a row has no score until a tag run scores it (score NULL, provenance 'person').

ALTER TABLE tags ALTER COLUMN score DROP NOT NULL;
