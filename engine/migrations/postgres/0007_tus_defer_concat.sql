-- tus creation-defer-length and concatenation.
-- `length_deferred` = 1 while the client has not told the length yet (`length` is 0 then).
-- `concat` is NULL for a plain upload, 'partial' for a part of a later concatenation, or
-- 'final;ID ID…' (the partials, in order) for an upload assembled from partials.
-- A partial's asset row is `hidden`: it is never shown as an asset.
ALTER TABLE uploads ADD COLUMN length_deferred BIGINT NOT NULL DEFAULT 0;
ALTER TABLE uploads ADD COLUMN concat TEXT;
ALTER TABLE assets ADD COLUMN hidden BIGINT NOT NULL DEFAULT 0;
