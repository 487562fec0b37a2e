-- The queue lives in its own database (apalis): a job row is written first, then its
-- task is pushed. `unpushed_since` is set while a push is owed and cleared once it is
-- done; a reconciler pushes the tasks of queued jobs whose push was lost (a crash or a
-- queue error between the two writes). Existing rows were pushed.
ALTER TABLE jobs ADD COLUMN unpushed_since INTEGER;
