-- Per-tenant transcode presets, the preset snapshotted into each job at enqueue time,
-- and the rendition a job re-runs (NULL: the whole ladder).
CREATE TABLE tenant_presets (
    tenant_id   TEXT PRIMARY KEY REFERENCES tenants(id),
    overrides   TEXT NOT NULL,             -- JSON object: the fields the tenant set
    updated_at  INTEGER NOT NULL
);
ALTER TABLE jobs ADD COLUMN preset TEXT;   -- JSON: the effective preset of this job
ALTER TABLE jobs ADD COLUMN rendition TEXT;
