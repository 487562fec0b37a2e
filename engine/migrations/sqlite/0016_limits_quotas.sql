-- Per-tenant rate limit and the quotas beyond storage (NULL: the configured default for
-- the rate limit, unlimited for a quota), and the monthly usage counters they are checked
-- against. Months are calendar months in UTC, written 'YYYY-MM'.
ALTER TABLE tenants ADD COLUMN rate_limit_rps INTEGER;
ALTER TABLE tenants ADD COLUMN rate_limit_burst INTEGER;
ALTER TABLE tenants ADD COLUMN quota_egress_bytes_per_month INTEGER;
ALTER TABLE tenants ADD COLUMN quota_concurrent_viewers INTEGER;
ALTER TABLE tenants ADD COLUMN quota_concurrent_uploads INTEGER;
ALTER TABLE tenants ADD COLUMN quota_transcode_minutes_per_month INTEGER;

-- Counters only ever grow by an addition (`x = x + delta`), so gateways and workers
-- sharing the database add to one row without losing each other's counts.
CREATE TABLE tenant_usage (
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    month        TEXT NOT NULL,
    egress_bytes INTEGER NOT NULL DEFAULT 0,
    transcode_ms INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, month)
);
