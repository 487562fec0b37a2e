-- Device credentials, raw-upload idempotency keys and tenant storage quotas.
--
-- A device key is an api_keys row of kind 'device' that names its device; revoking the
-- device revokes the key in the same transaction, so every gateway refuses it at once.
CREATE TABLE devices (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    name         TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    revoked_at   INTEGER,
    last_seen_at INTEGER
);
CREATE INDEX devices_tenant ON devices(tenant_id, created_at);
ALTER TABLE api_keys ADD COLUMN device_id TEXT;
ALTER TABLE assets ADD COLUMN device_id TEXT;
CREATE INDEX assets_device ON assets(device_id, created_at);

-- POST /v1/assets with Idempotency-Key: one row per (tenant, key). While the first request
-- streams its body the row is 'in_flight' under a short, renewed lock; then 'done' with the
-- body's sha256 and the exact response body that replays return.
CREATE TABLE idempotency_keys (
    tenant_id   TEXT NOT NULL,
    key         TEXT NOT NULL,
    state       TEXT NOT NULL,             -- in_flight|done
    lock_until  INTEGER,
    body_sha256 TEXT,
    asset_id    TEXT,
    response    TEXT,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, key)
);
CREATE INDEX idempotency_keys_expiry ON idempotency_keys(expires_at);

-- Storage quota in bytes (NULL: unlimited). Usage is the sum of the tenant's asset sizes,
-- which includes the declared length of uploads in progress (their reservation).
ALTER TABLE tenants ADD COLUMN quota_storage_bytes INTEGER;
