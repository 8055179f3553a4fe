-- 016_image_modified: a local file's modification time as its listing saw it (ns since the epoch), so
-- an image edited in place to the same byte size is read again (the size alone missed it). NULL where
-- the source does not say (manifests, remote stores) or for rows listed before this migration (filled
-- in by the next listing, which then compares).

ALTER TABLE images ADD COLUMN modified_ns BIGINT;
