//! Jobs as their tenant sees them: listing, cancelling, retrying and re-running one
//! rendition. The queue is in [`queue`], the worker's side in [`worker`], the pure queue
//! policy (priorities, backoff) in [`policy`].

pub mod policy;
pub(crate) mod queue;
pub(crate) mod worker;

use std::time::Duration;

use crate::{
    AssetStatus, Engine, Error, JOB_STATUSES, Job, JobClass, Principal, Result, TranscodeJob,
    TranscodePreset, store,
};

pub use queue::{TRANSCODE_QUEUE, TranscodeQueue};
pub use worker::{JobReporter, JobSpec};

/// The job kind that publishes a live recording as pushed.
pub(crate) const LIVE_COPY_KIND: &str = "live_copy";

impl Engine {
    // ---- jobs ---------------------------------------------------------------------------

    pub(crate) fn max_attempts(&self) -> i64 {
        i64::from(self.inner.config.workers.max_attempts)
    }

    pub async fn get_job(&self, who: &Principal, id: &str) -> Result<Job> {
        if let Some(job) = store::get_job(
            &self.inner.db,
            self.scope(who)?,
            id,
            self.now_ms(),
            self.max_attempts(),
        )
        .await?
        {
            return Ok(job);
        }
        // Tier jobs (tier moves, archive, restore, expiry) live in their own table.
        self.get_tier_job(who, id)
            .await?
            .ok_or_else(|| Error::not_found("job", id))
    }

    /// The caller's jobs (every tenant's for admin), newest first, optionally by status.
    pub async fn list_jobs(
        &self,
        who: &Principal,
        status: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Vec<Job>> {
        if let Some(s) = status
            && !JOB_STATUSES.contains(&s)
        {
            return Err(Error::InvalidInput(format!(
                "unknown job status {s:?}; use one of {}",
                JOB_STATUSES.join(", ")
            )));
        }
        let limit = i64::from(limit.unwrap_or(100).clamp(1, 1000));
        let scope = self.scope(who)?;
        let mut jobs = store::list_jobs(
            &self.inner.db,
            scope,
            status,
            limit,
            self.now_ms(),
            self.max_attempts(),
        )
        .await?;
        // Tier jobs (their own table) merged in, newest first, within the same limit.
        let tier = store::list_tier_jobs(&self.inner.db, scope, status, limit).await?;
        jobs.extend(tier.iter().map(|r| r.to_job(self.max_attempts())));
        // Job ids are ULIDs: their order is their creation order.
        jobs.sort_by(|a, b| b.id.cmp(&a.id));
        jobs.truncate(limit as usize);
        Ok(jobs)
    }

    /// `POST /v1/jobs/{id}/cancel`: a queued job ends at once; a running one is flagged and
    /// its worker stops the pipeline within about a second.
    pub async fn cancel_job(&self, who: &Principal, id: &str) -> Result<Job> {
        let job = self.get_job(who, id).await?;
        let (tenant_id, asset_id, _, _) = store::job_head(&self.inner.db, id)
            .await?
            .ok_or_else(|| Error::not_found("job", id))?;
        let tj = TranscodeJob {
            job_id: job.id.clone(),
            tenant_id,
            asset_id,
        };
        match job.status.as_str() {
            "queued" => {
                // Only if still queued: a worker may have started it meanwhile, and then
                // it is asked to stop like any running job.
                if !self
                    .job_ended_if(
                        &tj,
                        "cancelled",
                        "the transcode was cancelled",
                        Some("queued"),
                    )
                    .await?
                {
                    store::request_cancel(&self.inner.db, id, self.now_ms()).await?;
                }
            }
            "running" => {
                store::request_cancel(&self.inner.db, id, self.now_ms()).await?;
            }
            s => {
                return Err(Error::Conflict(format!(
                    "job {id} is {s}; only queued or running jobs can be cancelled"
                )));
            }
        }
        self.get_job(who, id).await
    }

    /// `POST /v1/jobs/{id}/retry`: run a failed, dead or cancelled job again from scratch.
    pub async fn rerun_job(&self, who: &Principal, id: &str) -> Result<Job> {
        let job = self.get_job(who, id).await?;
        let (tenant, asset, _, priority) = store::job_head(&self.inner.db, id)
            .await?
            .ok_or_else(|| Error::not_found("job", id))?;
        self.check_transcode_quota_now(&tenant).await?;
        if !store::job_reset(&self.inner.db, &tenant, id, &asset, self.now_ms()).await? {
            return Err(Error::Conflict(format!(
                "job {id} is {}; only failed, dead or cancelled jobs can be re-run",
                job.status
            )));
        }
        let tj = TranscodeJob {
            job_id: id.to_string(),
            tenant_id: tenant,
            asset_id: asset,
        };
        self.push_task(tj, priority, Duration::ZERO).await?;
        self.get_job(who, id).await
    }

    /// `POST /v1/assets/{id}/renditions/{name}/rerun`: transcode that one rendition of a
    /// ready asset again, with the preset of the asset's own job (same segment duration,
    /// so its keyframes line up with the rest of the ladder), and republish it. The asset
    /// stays ready and playable throughout.
    pub async fn rerun_rendition(
        &self,
        who: &Principal,
        asset_id: &str,
        name: &str,
    ) -> Result<Job> {
        let tenant = self.tenant_of(who)?;
        let asset = self.get_asset(who, asset_id).await?;
        if asset.status != AssetStatus::Ready {
            return Err(Error::Conflict(format!(
                "asset {asset_id} is {}; only the renditions of a ready asset can be re-run",
                asset.status.as_str()
            )));
        }
        if !asset.renditions.iter().any(|r| r.name == name) {
            return Err(Error::not_found("rendition", name));
        }
        if name == sluice_media::AUDIO_ONLY_NAME {
            return Err(Error::InvalidInput(
                "the audio-only rendition shares its audio encode with the ladder: re-run a \
                 video rendition or the whole job"
                    .into(),
            ));
        }
        if store::active_jobs_for_asset(&self.inner.db, asset_id).await? > 0 {
            return Err(Error::Conflict(format!(
                "asset {asset_id} already has a job queued or running"
            )));
        }
        // A re-run reads the source from, and publishes into, the hot store.
        self.ensure_hot(tenant, asset_id).await?;
        let spec = match &asset.job_id {
            Some(j) => store::job_spec(&self.inner.db, j).await?,
            None => None,
        };
        if spec.as_ref().is_some_and(|s| s.kind == LIVE_COPY_KIND) {
            return Err(Error::Conflict(format!(
                "asset {asset_id} keeps the renditions its live encoder pushed; they were \
                 not transcoded here and cannot be re-run"
            )));
        }
        let snapshot = spec
            .and_then(|s| s.preset)
            .and_then(|p| serde_json::from_str::<TranscodePreset>(&p).ok());
        let preset = match snapshot {
            Some(p) => p,
            None => self.effective_preset(tenant).await?,
        };
        let job_id = self
            .enqueue(
                tenant,
                asset_id,
                JobClass::Upload,
                &preset,
                Some(name),
                "transcode",
            )
            .await?;
        tracing::info!(asset = asset_id, job = %job_id, rendition = name, "rendition re-run queued");
        self.get_job(who, &job_id).await
    }

    /// `POST /v1/jobs/{id}/retry` with `{"rendition": name}`: re-run one rendition of the
    /// job's asset.
    pub async fn rerun_job_rendition(
        &self,
        who: &Principal,
        job_id: &str,
        name: &str,
    ) -> Result<Job> {
        let job = self.get_job(who, job_id).await?;
        self.rerun_rendition(who, &job.asset_id, name).await
    }
}
