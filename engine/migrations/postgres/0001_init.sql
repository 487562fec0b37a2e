-- Sluice metadata (PostgreSQL). Times are unix milliseconds. These tables live in the
-- `sluice` schema, with their own migration history; apalis keeps its own in `public`.
CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE api_keys (
    key_hash    TEXT PRIMARY KEY,          -- sha256 hex of the key; the key itself is never stored
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    kind        TEXT NOT NULL,             -- 'tenant'
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);

CREATE TABLE assets (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    status      TEXT NOT NULL,             -- uploading|queued|processing|ready|failed
    progress    DOUBLE PRECISION NOT NULL DEFAULT 0,
    duration_s  DOUBLE PRECISION,
    error       TEXT,
    filename    TEXT,
    size        BIGINT,
    job_id      TEXT,
    renditions  TEXT NOT NULL DEFAULT '[]', -- JSON array
    probe       TEXT,                      -- JSON object
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX assets_tenant ON assets(tenant_id, created_at);

CREATE TABLE uploads (
    asset_id     TEXT PRIMARY KEY REFERENCES assets(id),
    tenant_id    TEXT NOT NULL,
    length       BIGINT NOT NULL,
    "offset"     BIGINT NOT NULL DEFAULT 0,
    metadata     TEXT,                     -- the raw Upload-Metadata header
    created_at   BIGINT NOT NULL,
    completed_at BIGINT
);

CREATE TABLE jobs (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    asset_id    TEXT NOT NULL,
    kind        TEXT NOT NULL,             -- transcode
    status      TEXT NOT NULL,             -- queued|running|succeeded|failed
    progress    DOUBLE PRECISION NOT NULL DEFAULT 0,
    attempts    BIGINT NOT NULL DEFAULT 0,
    worker_id   TEXT,
    error       TEXT,
    created_at  BIGINT NOT NULL,
    started_at  BIGINT,
    finished_at BIGINT,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX jobs_status ON jobs(status, created_at);
