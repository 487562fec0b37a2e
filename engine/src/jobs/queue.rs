//! The transcode queue: the apalis backend of this deployment, recording a job and pushing
//! its task (with the outbox marker that lets the reconciler re-push a lost push).

use std::time::Duration;

use apalis::prelude::{TaskBuilder, TaskSink};
use apalis_postgres::PostgresStorage;
use apalis_sqlite::SqliteStorage;

use crate::bootstrap::QueuePool;
use crate::store::UploadJob;
use crate::{Engine, Error, JobClass, Result, TranscodeJob, TranscodePreset, store};

/// Name of the transcode queue (named explicitly: apalis defaults to the Rust type path).
pub const TRANSCODE_QUEUE: &str = "sluice.transcode";

/// The transcode queue: apalis on SQLite (embedded default) or on PostgreSQL (scale-out).
/// Workers match on it to build their apalis worker.
#[derive(Clone)]
pub enum TranscodeQueue {
    Sqlite(SqliteStorage<TranscodeJob>),
    Postgres(PostgresStorage<TranscodeJob>),
}

impl TranscodeQueue {
    async fn push(&mut self, task: apalis::prelude::Task<TranscodeJob>) -> Result<()> {
        let res = match self {
            TranscodeQueue::Sqlite(q) => q.push_task(task).await.map_err(|e| e.to_string()),
            TranscodeQueue::Postgres(q) => q.push_task(task).await.map_err(|e| e.to_string()),
        };
        res.map_err(Error::Queue)
    }
}

/// How long a job's queue push may be owed before the reconciler takes it as lost (far
/// longer than a push takes; a push made twice would run the job twice).
const PUSH_GRACE: Duration = Duration::from_secs(60);

impl Engine {
    /// The transcode queue backend, configured for this deployment. Workers consume it.
    pub fn transcode_queue(&self) -> TranscodeQueue {
        let heartbeat = Duration::from_secs(self.inner.config.workers.heartbeat_s);
        match &self.inner.queue_pool {
            QueuePool::Sqlite(pool) => {
                let cfg = apalis_sqlite::Config::default()
                    .queue(TRANSCODE_QUEUE)
                    .batch_size(1)
                    .heartbeat_interval(heartbeat);
                TranscodeQueue::Sqlite(SqliteStorage::new(pool).with_config(cfg))
            }
            QueuePool::Postgres(pool) => {
                let cfg = apalis_postgres::Config::default()
                    .queue(TRANSCODE_QUEUE)
                    .batch_size(1)
                    .heartbeat_interval(heartbeat);
                TranscodeQueue::Postgres(PostgresStorage::new(pool).with_config(cfg))
            }
        }
    }

    /// Put a job's task on the apalis queue, due after `delay`. apalis delivers it once
    /// (`max_attempts(1)`): retries are ours, durable, with backoff.
    pub(crate) async fn push_task(
        &self,
        job: TranscodeJob,
        priority: i64,
        delay: Duration,
    ) -> Result<()> {
        let job_id = job.job_id.clone();
        let mut task = TaskBuilder::new(job)
            .max_attempts(1)
            .priority(priority.max(0) as usize);
        if !delay.is_zero() {
            task = task.run_after(delay);
        }
        self.transcode_queue().push(task.build()).await?;
        store::job_pushed(&self.inner.db, &job_id).await
    }

    /// Push the tasks of queued jobs whose push was lost (the process died, or the queue
    /// failed, between writing the job and pushing its task). A push owed for longer than
    /// `PUSH_GRACE` is taken as lost. Returns how many were pushed.
    pub async fn reconcile_jobs(&self) -> Result<usize> {
        let before = self.now_ms() - PUSH_GRACE.as_millis() as i64;
        let owed = store::jobs_owed_a_push(&self.inner.db, before, 100).await?;
        let mut pushed = 0;
        for (job_id, tenant_id, asset_id, priority, run_after) in owed {
            let delay = run_after
                .map(|t| Duration::from_millis((t - self.now_ms()).max(0) as u64))
                .unwrap_or(Duration::ZERO);
            let job = TranscodeJob {
                job_id: job_id.clone(),
                tenant_id,
                asset_id,
            };
            match self.push_task(job, priority, delay).await {
                Ok(()) => {
                    tracing::warn!(job = %job_id, "a job's lost queue push was made again");
                    metrics::counter!("sluice_jobs_repushed_total").increment(1);
                    pushed += 1;
                }
                Err(e) => tracing::warn!(job = %job_id, "could not push a job's task: {e}"),
            }
        }
        Ok(pushed)
    }

    pub(crate) async fn enqueue(
        &self,
        tenant: &str,
        asset: &str,
        class: JobClass,
        preset: &TranscodePreset,
        rendition: Option<&str>,
        kind: &'static str,
    ) -> Result<String> {
        let (job_id, priority, preset_json) = self.new_job(tenant, class, preset).await?;
        store::insert_job(
            &self.inner.db,
            store::NewJob {
                id: &job_id,
                tenant,
                asset,
                kind,
                priority,
                now: self.now_ms(),
                preset: &preset_json,
                rendition,
            },
        )
        .await?;
        self.push_new(&job_id, tenant, asset, priority, kind)
            .await?;
        Ok(job_id)
    }

    /// Queue the job of a finished upload or live recording: the one an interrupted
    /// earlier finish recorded (never a second), or a new one of `kind` with the tenant's
    /// preset now. The job row, the upload's completion and the asset's `queued` status
    /// are one transaction, written before the task is pushed (a lost push is made again
    /// by the reconciler).
    pub(crate) async fn queue_finished_upload(
        &self,
        tenant: &str,
        asset: &str,
        class: JobClass,
        kind: &'static str,
    ) -> Result<String> {
        let db = &self.inner.db;
        if let Some(job) = store::asset_job(db, tenant, asset).await? {
            store::complete_upload(db, tenant, asset, UploadJob::Recorded(&job), self.now_ms())
                .await?;
            return Ok(job);
        }
        let preset = self.effective_preset(tenant).await?;
        let (job_id, priority, preset_json) = self.new_job(tenant, class, &preset).await?;
        let now = self.now_ms();
        let row = store::NewJob {
            id: &job_id,
            tenant,
            asset,
            kind,
            priority,
            now,
            preset: &preset_json,
            rendition: None,
        };
        store::complete_upload(db, tenant, asset, UploadJob::New(row), now).await?;
        self.push_new(&job_id, tenant, asset, priority, kind)
            .await?;
        Ok(job_id)
    }

    /// A new job's id, its queue priority (class, then the tenant's backlog) and its
    /// preset snapshot.
    async fn new_job(
        &self,
        tenant: &str,
        class: JobClass,
        preset: &TranscodePreset,
    ) -> Result<(String, i64, String)> {
        self.check_transcode_quota_now(tenant).await?;
        let waiting = store::count_waiting(&self.inner.db, tenant).await?;
        let priority = super::policy::priority(class, waiting) as i64;
        let preset_json = serde_json::to_string(preset)
            .map_err(|e| Error::InvalidInput(format!("unserialisable preset: {e}")))?;
        Ok((ulid::Ulid::new().to_string(), priority, preset_json))
    }

    /// Push the task of a job just recorded.
    async fn push_new(
        &self,
        job_id: &str,
        tenant: &str,
        asset: &str,
        priority: i64,
        kind: &'static str,
    ) -> Result<()> {
        let job = TranscodeJob {
            job_id: job_id.to_string(),
            tenant_id: tenant.to_string(),
            asset_id: asset.to_string(),
        };
        self.push_task(job, priority, Duration::ZERO).await?;
        metrics::counter!("sluice_jobs_enqueued_total", "kind" => kind).increment(1);
        Ok(())
    }
}
