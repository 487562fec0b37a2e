-- Tier jobs (tier moves, archive, restore, lifecycle expiry), tenants' lifecycle rules, the
-- record of lifecycle actions, and what lifecycle rules look at on assets.
CREATE TABLE tier_jobs (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL,
    asset_id     TEXT NOT NULL,
    kind         TEXT NOT NULL,              -- tier|restore|expire
    target       TEXT,                       -- tier: hot|warm|cold
    days         BIGINT,                    -- restore: how long the copy stays
    status       TEXT NOT NULL,              -- queued|running|succeeded|failed|dead
    progress     DOUBLE PRECISION NOT NULL DEFAULT 0,
    attempts     BIGINT NOT NULL DEFAULT 0,
    worker_id    TEXT,
    error        TEXT,
    result       TEXT,                       -- JSON: objects_copied, objects_skipped, …
    run_after    BIGINT NOT NULL,
    lease_until  BIGINT,
    created_at   BIGINT NOT NULL,
    started_at   BIGINT,
    finished_at  BIGINT,
    updated_at   BIGINT NOT NULL
);
CREATE INDEX tier_jobs_due ON tier_jobs(status, run_after);
CREATE INDEX tier_jobs_asset ON tier_jobs(tenant_id, asset_id, status);

CREATE TABLE lifecycle_rules (
    tenant_id   TEXT PRIMARY KEY,
    rules       TEXT NOT NULL,               -- JSON: {"rules": [...]}
    updated_at  BIGINT NOT NULL
);

CREATE TABLE lifecycle_actions (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    asset_id    TEXT NOT NULL,
    rule        BIGINT NOT NULL,            -- index of the rule in the tenant's (or default) list
    action      TEXT NOT NULL,               -- warm|cold|expire
    from_tier   TEXT NOT NULL,
    bytes       BIGINT NOT NULL,
    job_id      TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX lifecycle_actions_tenant ON lifecycle_actions(tenant_id, created_at);

-- Last playback (written at most once a minute per asset) and tags, for lifecycle rules.
ALTER TABLE assets ADD COLUMN last_viewed_at BIGINT;
ALTER TABLE assets ADD COLUMN tags TEXT NOT NULL DEFAULT '[]';
CREATE INDEX assets_tenant_viewed ON assets(tenant_id, last_viewed_at);
