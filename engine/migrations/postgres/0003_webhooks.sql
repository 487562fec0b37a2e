-- Webhooks: a tenant's endpoints, and one row per delivery so that retries survive a
-- crash and any process (gateway or worker) can send them.
CREATE TABLE webhooks (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    url         TEXT NOT NULL,
    secret      TEXT NOT NULL,         -- HMAC key; shown to the tenant once
    events      TEXT NOT NULL,         -- comma-separated event types
    created_at  BIGINT NOT NULL
);
CREATE INDEX webhooks_tenant ON webhooks(tenant_id);

CREATE TABLE webhook_deliveries (
    id              TEXT PRIMARY KEY,
    webhook_id      TEXT NOT NULL,
    tenant_id       TEXT NOT NULL,
    event           TEXT NOT NULL,
    payload         TEXT NOT NULL,     -- the exact body that is signed and sent
    status          TEXT NOT NULL,     -- pending|delivered|failed
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    locked_until    BIGINT,
    last_status     BIGINT,
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    delivered_at    BIGINT
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries(status, next_attempt_at);
