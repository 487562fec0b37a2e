-- Roles, tenant-scoped keys and the audit log (docs/auth.md).
--
-- Every key gets an id (what `DELETE /v1/keys/{id}` names), a role, an optional name, the
-- prefix that identifies it in logs (its first characters, never the secret: filled in at
-- creation, or for older keys the first time they are used) and `last_used_at` (written at
-- most once a minute per key). Older keys get an id derived from their hash and the role
-- their kind always had.
ALTER TABLE api_keys ADD COLUMN id TEXT;
ALTER TABLE api_keys ADD COLUMN role TEXT;
ALTER TABLE api_keys ADD COLUMN name TEXT;
ALTER TABLE api_keys ADD COLUMN prefix TEXT;
ALTER TABLE api_keys ADD COLUMN last_used_at BIGINT;
-- A key of the `ops` role belongs to no tenant.
ALTER TABLE api_keys ALTER COLUMN tenant_id DROP NOT NULL;
UPDATE api_keys SET id = substr(key_hash, 1, 26) WHERE id IS NULL;
UPDATE api_keys SET role = 'uploader' WHERE role IS NULL AND kind = 'device';
UPDATE api_keys SET role = 'tenant_admin' WHERE role IS NULL;
CREATE UNIQUE INDEX api_keys_id ON api_keys(id);
CREATE INDEX api_keys_tenant ON api_keys(tenant_id, created_at);

-- Admin and ops actions, appended and never changed: who (`actor`: a key prefix, a JWT
-- subject or the admin key), with which role, what (`action`, `target`), how it ended
-- (`outcome`, `status`), for which request. Ids are ULIDs: newest first is id order.
CREATE TABLE audit_log (
    id          TEXT PRIMARY KEY,
    at          BIGINT NOT NULL,
    tenant_id   TEXT,
    actor       TEXT NOT NULL,
    role        TEXT NOT NULL,
    action      TEXT NOT NULL,
    target      TEXT,
    outcome     TEXT NOT NULL,
    status      BIGINT,
    request_id  TEXT
);
CREATE INDEX audit_log_tenant ON audit_log(tenant_id, id);

CREATE FUNCTION audit_log_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
