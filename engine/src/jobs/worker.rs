//! The worker side of a job: everything a transcode worker reports (start, heartbeat,
//! progress, success, failure, retry, release) and reads (its spec and source), through a
//! [`JobReporter`]: a handle that reaches job state and nothing else (no tenant
//! administration, no uploads).

use super::LIVE_COPY_KIND;
use super::queue::TranscodeQueue;
use crate::live::vod::{LiveCopyPlan, RenditionProbe};
use crate::{Config, Engine, Error, Rendition, Result, TranscodeJob, TranscodePreset, store};
use sluice_storage::keys;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What a worker holds: job state and the job's own inputs, nothing else. Made by
/// [`Engine::job_reporter`]; cheap to clone.
#[derive(Clone)]
pub struct JobReporter {
    engine: Engine,
}

impl Engine {
    /// The handle the workers get.
    pub fn job_reporter(&self) -> JobReporter {
        JobReporter {
            engine: self.clone(),
        }
    }
}

impl JobReporter {
    /// The configuration (worker, transcode and live sections matter here).
    pub fn config(&self) -> &Config {
        &self.engine.inner.config
    }

    /// Scratch directory for job work files.
    pub fn work_dir(&self) -> &Path {
        &self.engine.inner.work_dir
    }

    /// The transcode queue the workers consume.
    pub fn transcode_queue(&self) -> TranscodeQueue {
        self.engine.transcode_queue()
    }

    /// Plan a `live_copy` job (see [`crate::live::vod`]).
    pub async fn live_copy_plan(&self, job: &TranscodeJob) -> Result<LiveCopyPlan> {
        self.engine.live_copy_plan(job).await
    }

    /// Publish a planned `live_copy` job by server-side copies.
    pub async fn publish_live_copy(
        &self,
        job: &TranscodeJob,
        plan: &LiveCopyPlan,
        probes: &[RenditionProbe],
    ) -> Result<(Vec<Rendition>, f64)> {
        self.engine.publish_live_copy(job, plan, probes).await
    }

    /// How long until a retried job is due (its `run_after`), if it is not yet. The queue
    /// schedules in whole seconds and may deliver a retry up to a second early; the worker
    /// waits out the rest so the backoff is kept to the millisecond.
    pub async fn job_due_in(&self, job: &TranscodeJob) -> Result<Option<Duration>> {
        let run_after = store::job_run_after(&self.engine.inner.db, &job.job_id).await?;
        let now = self.engine.now_ms();
        Ok(run_after
            .filter(|t| *t > now)
            .map(|t| Duration::from_millis((t - now) as u64)))
    }

    /// A worker took a job: returns the attempt number, or `None` when the delivery must be
    /// dropped (the job already finished — a redelivery after a crash, so the asset is
    /// published exactly once — or it was cancelled while queued, or it is a stale copy).
    pub async fn job_started(&self, job: &TranscodeJob, worker_id: &str) -> Result<Option<i64>> {
        let now = self.engine.now_ms();
        // A job already running is taken over only when its worker has been silent for
        // two heartbeats (it died): never while it is alive (the queue may deliver a task
        // twice).
        let silent_before = now - 2 * 1000 * self.engine.inner.config.workers.heartbeat_s as i64;
        match store::job_started(&self.engine.inner.db, job, worker_id, now, silent_before).await? {
            store::Start::Run(n) => Ok(Some(n)),
            store::Start::Skip => Ok(None),
            store::Start::Cancel => {
                self.job_cancelled(job).await?;
                Ok(None)
            }
            store::Start::Busy => {
                // A second delivery of a job that runs elsewhere: this one is dropped, and
                // a delayed look is queued, which takes the job over if its worker dies
                // and is dropped in turn once the job has ended.
                let wait =
                    Duration::from_secs(2 * self.engine.inner.config.workers.heartbeat_s + 1);
                let priority = store::job_head(&self.engine.inner.db, &job.job_id)
                    .await?
                    .map(|h| h.3)
                    .unwrap_or(0);
                self.engine.push_task(job.clone(), priority, wait).await?;
                Ok(None)
            }
        }
    }

    /// A running job's heartbeat (its worker is alive).
    pub async fn job_heartbeat(&self, job: &TranscodeJob) -> Result<()> {
        store::job_heartbeat(&self.engine.inner.db, &job.job_id, self.engine.now_ms()).await
    }

    /// Progress in 0..=1, shown on the job and the asset.
    pub async fn job_progress(&self, job: &TranscodeJob, progress: f64) -> Result<()> {
        store::job_progress(
            &self.engine.inner.db,
            job,
            progress.clamp(0.0, 1.0),
            self.engine.now_ms(),
        )
        .await
    }

    /// Whether the job was asked to stop (checked by the worker about once a second).
    pub async fn job_cancel_requested(&self, job: &TranscodeJob) -> Result<bool> {
        store::cancel_requested(&self.engine.inner.db, &job.job_id).await
    }

    /// Store the probe result on the asset as soon as it is known.
    pub async fn job_probed(
        &self,
        job: &TranscodeJob,
        duration_s: f64,
        probe: serde_json::Value,
    ) -> Result<()> {
        store::asset_probed(
            &self.engine.inner.db,
            job,
            duration_s,
            &probe,
            self.engine.now_ms(),
        )
        .await
    }

    /// The asset's hot copy row and the tier counters follow what was just published. A
    /// failure is logged, not the job's: the asset is published either way, and the next
    /// publication (or `sluice ops usage --check`) re-measures it.
    async fn record_published(&self, job: &TranscodeJob) {
        if let Err(e) = self
            .engine
            .record_hot_copy(&job.tenant_id, &job.asset_id)
            .await
        {
            tracing::warn!(asset = %job.asset_id, "could not record the asset's hot copy: {e}");
        }
    }

    /// The job's output is published: the asset is ready.
    pub async fn job_succeeded(
        &self,
        job: &TranscodeJob,
        renditions: &[Rendition],
        duration_s: f64,
    ) -> Result<()> {
        store::job_succeeded(
            &self.engine.inner.db,
            job,
            renditions,
            duration_s,
            self.engine.now_ms(),
        )
        .await?;
        self.engine.count_outcome("succeeded");
        self.record_published(job).await;
        self.engine
            .emit_asset(&job.tenant_id, &job.asset_id, "asset.ready")
            .await;
        Ok(())
    }

    /// The input is at fault: the job is `failed`, the asset failed with the message.
    pub async fn job_failed(&self, job: &TranscodeJob, error: &str) -> Result<()> {
        self.engine.job_ended(job, "failed", error).await
    }

    /// Out of attempts: the job is `dead`, the asset failed with the last error.
    pub async fn job_dead(&self, job: &TranscodeJob, error: &str) -> Result<()> {
        self.engine.job_ended(job, "dead", error).await
    }

    /// Stopped at the tenant's request.
    pub async fn job_cancelled(&self, job: &TranscodeJob) -> Result<()> {
        self.engine
            .job_ended(job, "cancelled", "the transcode was cancelled")
            .await
    }

    /// An attempt failed for a reason a retry can fix: back to the queue after an
    /// exponential, jittered delay that is stored with the job (it survives a crash).
    pub async fn job_retry_later(
        &self,
        job: &TranscodeJob,
        attempt: i64,
        error: &str,
    ) -> Result<Duration> {
        let w = &self.engine.inner.config.workers;
        let delay = super::policy::backoff(
            Duration::from_secs(w.retry_base_s),
            Duration::from_secs(w.retry_cap_s),
            attempt.max(1) as u32,
            rand::random::<f64>(),
        );
        self.engine.requeue(job, delay, Some(error), false).await?;
        Ok(delay)
    }

    /// Give a job back to the queue without charging the attempt (graceful shutdown).
    pub async fn job_release(&self, job: &TranscodeJob) -> Result<()> {
        self.engine.requeue(job, Duration::ZERO, None, true).await
    }

    /// What a worker runs for this job: the preset snapshotted at enqueue time (jobs from
    /// before presets existed get the tenant's preset as it is now), and the one rendition
    /// to re-run, if that is all the job does.
    pub async fn job_spec(&self, job: &TranscodeJob) -> Result<JobSpec> {
        let row = store::job_spec(&self.engine.inner.db, &job.job_id)
            .await?
            .ok_or_else(|| Error::not_found("job", &job.job_id))?;
        let preset = match row.preset.and_then(|p| serde_json::from_str(&p).ok()) {
            Some(p) => p,
            None => self.engine.effective_preset(&job.tenant_id).await?,
        };
        Ok(JobSpec {
            preset,
            rendition: row.rendition,
            live_copy: row.kind == LIVE_COPY_KIND,
        })
    }

    /// A re-run rendition is published: the asset lists its new figures.
    pub async fn job_rendition_succeeded(
        &self,
        job: &TranscodeJob,
        rendition: &Rendition,
    ) -> Result<()> {
        store::rendition_succeeded(&self.engine.inner.db, job, rendition, self.engine.now_ms())
            .await?;
        self.engine.count_outcome("succeeded");
        self.record_published(job).await;
        Ok(())
    }

    /// Where the source of an asset can be read as a local file: in place on a local hot
    /// tier, else downloaded into `scratch`.
    pub async fn source_file(&self, job: &TranscodeJob, scratch: &Path) -> Result<PathBuf> {
        let key = keys::source(&job.tenant_id, &job.asset_id);
        if let Some(p) = self.engine.inner.storage.local_path(&key) {
            if tokio::fs::try_exists(&p).await.unwrap_or(false) {
                return Ok(p);
            }
            return Err(Error::not_found("source object", key));
        }
        let dest = scratch.join("source");
        self.engine
            .inner
            .storage
            .get_concat_to_file(&[key], &dest, false)
            .await?;
        Ok(dest)
    }
}

impl Engine {
    pub(crate) fn count_outcome(&self, outcome: &'static str) {
        metrics::counter!("sluice_jobs_finished_total", "kind" => "transcode", "outcome" => outcome)
                .increment(1);
    }

    pub(crate) async fn job_ended(
        &self,
        job: &TranscodeJob,
        status: &'static str,
        error: &str,
    ) -> Result<()> {
        self.job_ended_if(job, status, error, None)
            .await
            .map(|_| ())
    }

    /// End a job (`only_if`: only from that status); false when it was not in it.
    pub(crate) async fn job_ended_if(
        &self,
        job: &TranscodeJob,
        status: &'static str,
        error: &str,
        only_if: Option<&str>,
    ) -> Result<bool> {
        let whole = store::job_spec(&self.inner.db, &job.job_id)
            .await?
            .is_none_or(|s| s.rendition.is_none());
        if !store::job_ended(&self.inner.db, job, status, error, self.now_ms(), only_if).await? {
            return Ok(false);
        }
        self.count_outcome(status);
        // A failed re-run of one rendition leaves the asset ready and as it was.
        if whole {
            self.emit_asset(&job.tenant_id, &job.asset_id, "asset.failed")
                .await;
        }
        if status == "dead"
            && let Ok(Some(j)) = store::get_job(
                &self.inner.db,
                None,
                &job.job_id,
                self.now_ms(),
                self.max_attempts(),
            )
            .await
        {
            let data = serde_json::to_value(j).unwrap_or_default();
            self.emit(&job.tenant_id, "job.dead", data).await;
        }
        Ok(true)
    }

    /// Emit an event carrying the asset JSON as it is now.
    pub(crate) async fn emit_asset(&self, tenant: &str, asset: &str, event: &'static str) {
        match store::get_asset(&self.inner.db, tenant, asset).await {
            Ok(Some(a)) => {
                let data = serde_json::to_value(a).unwrap_or_default();
                self.emit(tenant, event, data).await;
            }
            Ok(None) => {}
            Err(e) => tracing::error!(asset, event, "could not load asset for event: {e}"),
        }
    }

    pub(crate) async fn requeue(
        &self,
        job: &TranscodeJob,
        delay: Duration,
        error: Option<&str>,
        refund: bool,
    ) -> Result<()> {
        let run_after = self.now_ms() + delay.as_millis() as i64;
        store::job_requeued(&self.inner.db, job, run_after, error, refund, self.now_ms()).await?;
        let priority = store::job_head(&self.inner.db, &job.job_id)
            .await?
            .map(|h| h.3)
            .unwrap_or(0);
        self.push_task(job.clone(), priority, delay).await
    }
}

/// What a worker runs for one job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    pub preset: TranscodePreset,
    /// `Some(name)`: re-run only this rendition of a ready asset.
    pub rendition: Option<String>,
    /// Publish a live recording's pushed renditions as they are (no transcode).
    pub live_copy: bool,
}
