-- Storage tiers: which copies of each asset exist where, and per-tenant per-tier counters.
-- A copy row and the counters it adds to change in one transaction; every state switch is
-- a conditional UPDATE (WHERE state = expected), so a replay after a crash changes nothing.
CREATE TABLE asset_copies (
    tenant_id   TEXT NOT NULL,
    asset_id    TEXT NOT NULL REFERENCES assets(id),
    tier        TEXT NOT NULL,              -- hot|warm|cold
    store       TEXT NOT NULL,              -- a [storage.stores] name (or the legacy 'hot')
    state       TEXT NOT NULL,              -- active|restored|draining
    bytes       BIGINT NOT NULL DEFAULT 0,
    objects     BIGINT NOT NULL DEFAULT 0,
    measured    BIGINT  NOT NULL DEFAULT 1, -- 0: bytes/objects not yet listed from the store
    expires_at  BIGINT,                     -- restored copies: unix ms
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, asset_id, tier, store)
);
CREATE INDEX asset_copies_expiry ON asset_copies(state, expires_at);
CREATE INDEX asset_copies_unmeasured ON asset_copies(measured);
CREATE INDEX asset_copies_store ON asset_copies(store, tenant_id);

CREATE TABLE tier_usage (
    tenant_id  TEXT NOT NULL,
    tier       TEXT NOT NULL,
    bytes      BIGINT NOT NULL DEFAULT 0,
    objects    BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, tier)
);

-- Backfill: every asset that published output is a hot, active copy in the store 'hot'.
-- Its size is not known here (outputs were never measured): the engine lists it once at
-- start (measured = 0 → 1) and adds it to the counters in the same transaction.
INSERT INTO asset_copies (tenant_id, asset_id, tier, store, state, bytes, objects, measured,
                          expires_at, created_at, updated_at)
SELECT tenant_id, id, 'hot', 'hot', 'active', 0, 0, 0, NULL, updated_at, updated_at
FROM assets WHERE status = 'ready';
