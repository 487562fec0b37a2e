-- Sluice metadata. Times are unix milliseconds. The apalis queue lives in its own database
-- file (queue.db) so the two migration histories never meet.
CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE api_keys (
    key_hash    TEXT PRIMARY KEY,          -- sha256 hex of the key; the key itself is never stored
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    kind        TEXT NOT NULL,             -- 'tenant'
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);

CREATE TABLE assets (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    status      TEXT NOT NULL,             -- uploading|queued|processing|ready|failed
    progress    REAL NOT NULL DEFAULT 0,
    duration_s  REAL,
    error       TEXT,
    filename    TEXT,
    size        INTEGER,
    job_id      TEXT,
    renditions  TEXT NOT NULL DEFAULT '[]', -- JSON array
    probe       TEXT,                      -- JSON object
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX assets_tenant ON assets(tenant_id, created_at);

CREATE TABLE uploads (
    asset_id     TEXT PRIMARY KEY REFERENCES assets(id),
    tenant_id    TEXT NOT NULL,
    length       INTEGER NOT NULL,
    "offset"     INTEGER NOT NULL DEFAULT 0,
    metadata     TEXT,                     -- the raw Upload-Metadata header
    created_at   INTEGER NOT NULL,
    completed_at INTEGER
);

CREATE TABLE jobs (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    asset_id    TEXT NOT NULL,
    kind        TEXT NOT NULL,             -- transcode
    status      TEXT NOT NULL,             -- queued|running|succeeded|failed
    progress    REAL NOT NULL DEFAULT 0,
    attempts    INTEGER NOT NULL DEFAULT 0,
    worker_id   TEXT,
    error       TEXT,
    created_at  INTEGER NOT NULL,
    started_at  INTEGER,
    finished_at INTEGER,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX jobs_status ON jobs(status, created_at);
