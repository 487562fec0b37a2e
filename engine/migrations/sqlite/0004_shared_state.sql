-- State every gateway and worker must agree on: settings shared through the database
-- (the playback signing secret), and a lease on each upload so that two gateways never
-- write the same upload at once.
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
ALTER TABLE uploads ADD COLUMN lock_owner TEXT;
ALTER TABLE uploads ADD COLUMN lock_until INTEGER;
