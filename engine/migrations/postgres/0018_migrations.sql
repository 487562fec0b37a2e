-- Store migrations (POST /v1/ops/migrations): the job, and a checkpoint per object and per
-- multipart part, so a migration killed at any point resumes where it was: a completed part
-- is never sent again, a verified object is never copied again.
CREATE TABLE migration_jobs (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT,                     -- NULL: every tenant
    from_store      TEXT NOT NULL,
    to_store        TEXT NOT NULL,
    delete_source   BIGINT NOT NULL DEFAULT 0,
    verify_full     BIGINT NOT NULL DEFAULT 0,
    status          TEXT NOT NULL,            -- queued|running|succeeded|failed
    objects_total   BIGINT NOT NULL DEFAULT 0,
    bytes_total     BIGINT NOT NULL DEFAULT 0,
    planned         BIGINT NOT NULL DEFAULT 0, -- 1 once migration_objects holds the plan
    attempts        BIGINT NOT NULL DEFAULT 0,
    error           TEXT,
    worker_id       TEXT,
    heartbeat_at    BIGINT,
    created_at      BIGINT NOT NULL,
    started_at      BIGINT,
    finished_at     BIGINT,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX migration_jobs_status ON migration_jobs(status, created_at);

CREATE TABLE migration_objects (
    job_id      TEXT NOT NULL REFERENCES migration_jobs(id),
    tenant_id   TEXT NOT NULL,
    asset_id    TEXT NOT NULL,
    obj_key     TEXT NOT NULL,
    size        BIGINT NOT NULL,
    -- planned → copying (upload_id set) → copied → verified → switched → done | failed
    state       TEXT NOT NULL,
    upload_id   TEXT,
    md5         TEXT,                          -- hex MD5 of the whole object (single puts)
    etag        TEXT,                          -- what the target reported at completion
    skipped     BIGINT NOT NULL DEFAULT 0,    -- 1: already in the target, not copied
    bytes_sent  BIGINT NOT NULL DEFAULT 0,    -- bytes sent to the target, re-sends included
    error       TEXT,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (job_id, obj_key)
);
CREATE INDEX migration_objects_asset ON migration_objects(job_id, tenant_id, asset_id);

CREATE TABLE migration_parts (
    job_id      TEXT NOT NULL,
    obj_key     TEXT NOT NULL,
    part_number BIGINT NOT NULL,              -- 1-based, as S3 numbers parts
    size        BIGINT NOT NULL,
    md5         TEXT NOT NULL,                 -- hex MD5 of the part's bytes
    etag        TEXT NOT NULL,                 -- the part ETag the target answered
    upload_id   TEXT NOT NULL,
    PRIMARY KEY (job_id, obj_key, part_number)
);
