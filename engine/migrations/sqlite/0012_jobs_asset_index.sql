-- The job of an asset is looked up when an interrupted finish is repeated (never a
-- second job for one asset).
CREATE INDEX jobs_asset ON jobs(tenant_id, asset_id);
