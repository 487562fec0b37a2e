-- Job lifecycle: queued|running|succeeded|failed|cancelled|dead, durable retry times,
-- cancellation requests that a worker on any host picks up, and the queue priority.
ALTER TABLE jobs ADD COLUMN priority BIGINT NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN run_after BIGINT;
ALTER TABLE jobs ADD COLUMN cancel_requested BIGINT NOT NULL DEFAULT 0;
CREATE INDEX jobs_tenant_status ON jobs(tenant_id, status, created_at);
