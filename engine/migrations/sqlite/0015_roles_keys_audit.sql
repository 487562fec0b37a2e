-- Roles, tenant-scoped keys and the audit log (docs/auth.md).
--
-- Every key gets an id (what `DELETE /v1/keys/{id}` names), a role, an optional name, the
-- prefix that identifies it in logs (its first characters, never the secret: filled in at
-- creation, or for older keys the first time they are used) and `last_used_at` (written at
-- most once a minute per key). Older keys get an id derived from their hash and the role
-- their kind always had.
--
-- A key of the `ops` role belongs to no tenant: `tenant_id` becomes nullable (SQLite
-- cannot drop NOT NULL in place, so the table is rebuilt with every row).
CREATE TABLE api_keys_new (
    key_hash     TEXT PRIMARY KEY,          -- sha256 hex of the key; the key itself is never stored
    tenant_id    TEXT REFERENCES tenants(id), -- NULL: a platform key (role ops)
    kind         TEXT NOT NULL,             -- 'tenant', 'device' or 'key'
    created_at   INTEGER NOT NULL,
    revoked_at   INTEGER,
    device_id    TEXT,
    id           TEXT,
    role         TEXT,
    name         TEXT,
    prefix       TEXT,
    last_used_at INTEGER
);
INSERT INTO api_keys_new (key_hash, tenant_id, kind, created_at, revoked_at, device_id, id, role)
    SELECT key_hash, tenant_id, kind, created_at, revoked_at, device_id,
           substr(key_hash, 1, 26),
           CASE WHEN kind = 'device' THEN 'uploader' ELSE 'tenant_admin' END
    FROM api_keys;
DROP TABLE api_keys;
ALTER TABLE api_keys_new RENAME TO api_keys;
CREATE UNIQUE INDEX api_keys_id ON api_keys(id);
CREATE INDEX api_keys_tenant ON api_keys(tenant_id, created_at);

-- Admin and ops actions, appended and never changed: who (`actor`: a key prefix, a JWT
-- subject or the admin key), with which role, what (`action`, `target`), how it ended
-- (`outcome`, `status`), for which request. Ids are ULIDs: newest first is id order.
CREATE TABLE audit_log (
    id          TEXT PRIMARY KEY,
    at          INTEGER NOT NULL,
    tenant_id   TEXT,
    actor       TEXT NOT NULL,
    role        TEXT NOT NULL,
    action      TEXT NOT NULL,
    target      TEXT,
    outcome     TEXT NOT NULL,
    status      INTEGER,
    request_id  TEXT
);
CREATE INDEX audit_log_tenant ON audit_log(tenant_id, id);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
