//! Tier jobs: moving an asset between tiers (`POST /v1/assets/{id}/tier`, to cold =
//! archive), restoring an archived asset for a while (`POST /v1/assets/{id}/restore`), and
//! lifecycle expiry. Each runs as idempotent steps — copy objects → verify → switch the
//! copy rows (one transaction, counters included) → delete the source objects → drop the
//! source row — so a job claimed again after a crash continues where it was.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use super::copy::{TierJobResult, copy_asset, delete_asset_objects};
use super::{CopyChange, CopyKey, CopyRow, CopyState, Tier};
use crate::{AbortOnDrop, AssetStatus, Engine, Error, Job, Principal, Result, store};

pub const TIER_KIND: &str = "tier";
pub const RESTORE_KIND: &str = "restore";
pub const EXPIRE_KIND: &str = "expire";

/// Longest restore, days.
pub const MAX_RESTORE_DAYS: i64 = 365;

/// How long a worker holds a tier job without renewing it before another may take it.
const LEASE: Duration = Duration::from_secs(30);

const DAY_MS: i64 = 86_400_000;

/// Why a job attempt stopped.
enum Fail {
    /// Retrying cannot help.
    Permanent(String),
    /// Retry after a backoff.
    Transient(String),
}

impl From<Error> for Fail {
    /// The job's `error` is shown to the tenant: store and database failures are
    /// summarised (no keys, endpoints or SQL).
    fn from(e: Error) -> Self {
        let msg = match &e {
            Error::Storage(s) => format!("object store: {}", super::copy::reason(s)),
            Error::Db(_) | Error::Migrate(_) => "the metadata database did not answer".into(),
            Error::Io { source, .. } => format!("local i/o error ({})", source.kind()),
            other => other.to_string(),
        };
        if e.is_retryable() {
            Fail::Transient(msg)
        } else {
            Fail::Permanent(msg)
        }
    }
}

impl From<sluice_storage::Error> for Fail {
    fn from(e: sluice_storage::Error) -> Self {
        Fail::from(Error::Storage(e))
    }
}

/// The active (home) copy of an asset: none recorded means the hot store (published
/// before copies were recorded, or not measured yet).
fn home(copies: &[CopyRow]) -> Option<&CopyRow> {
    copies.iter().find(|c| c.state == CopyState::Active)
}

impl Engine {
    /// `POST /v1/assets/{id}/tier`: move a ready asset to `tier` (409 when it is there
    /// already, or when another tier job of it is under way).
    pub async fn request_tier(&self, who: &Principal, id: &str, tier: &str) -> Result<Job> {
        let tenant = self.tenant_of(who)?.to_string();
        let asset = self.get_asset(who, id).await?;
        let target = Tier::parse(tier).ok_or_else(|| {
            Error::InvalidInput(format!("unknown tier {tier:?}; use hot, warm or cold"))
        })?;
        if asset.status != AssetStatus::Ready {
            return Err(Error::Conflict(format!(
                "asset {id} is {}; only ready assets move between tiers",
                asset.status.as_str()
            )));
        }
        if store::active_jobs_for_asset(&self.inner.db, id).await? > 0 {
            return Err(Error::Conflict(format!(
                "asset {id} has a transcode queued or running; move it when that ends"
            )));
        }
        if self.stores().store_name(target).is_none() {
            return Err(Error::Conflict(format!(
                "this deployment has no {tier} tier ([storage.tiers] {tier} is not set)"
            )));
        }
        let copies = self.asset_copies(&tenant, id).await?;
        let current = home(&copies).map_or(Tier::Hot, |c| c.tier);
        if current == target {
            return Err(Error::Conflict(format!(
                "asset {id} is already in the {tier} tier"
            )));
        }
        self.enqueue_tier_job(&tenant, id, TIER_KIND, Some(target.as_str()), None)
            .await
    }

    /// `POST /v1/assets/{id}/restore`: a readable copy of an archived asset in the hot
    /// store for `days` (1 to 365); restoring a restored asset extends it.
    pub async fn request_restore(&self, who: &Principal, id: &str, days: i64) -> Result<Job> {
        let tenant = self.tenant_of(who)?.to_string();
        self.get_asset(who, id).await?;
        if !(1..=MAX_RESTORE_DAYS).contains(&days) {
            return Err(Error::InvalidInput(format!(
                "days must be between 1 and {MAX_RESTORE_DAYS}"
            )));
        }
        let copies = self.asset_copies(&tenant, id).await?;
        if home(&copies).is_none_or(|c| c.tier != Tier::Cold) {
            return Err(Error::Conflict(format!(
                "asset {id} is not archived (not in the cold tier): it plays as it is"
            )));
        }
        self.enqueue_tier_job(&tenant, id, RESTORE_KIND, Some("hot"), Some(days))
            .await
    }

    /// 409 unless the asset's home is the hot tier with no tier job under way (what a
    /// rendition re-run needs: it reads the source from the hot store and publishes there).
    pub(crate) async fn ensure_hot(&self, tenant: &str, asset: &str) -> Result<()> {
        if let Some(job) = store::active_tier_job(&self.inner.db, tenant, asset).await? {
            return Err(Error::Conflict(format!(
                "asset {asset} has a tier job under way ({job}); wait for it to end"
            )));
        }
        let copies = self.asset_copies(tenant, asset).await?;
        match home(&copies) {
            Some(c) if c.tier != Tier::Hot => Err(Error::Conflict(format!(
                "asset {asset} is in the {} tier: move it to hot first \
                 (POST /v1/assets/{asset}/tier)",
                c.tier.as_str()
            ))),
            _ => Ok(()),
        }
    }

    /// Record a tier job (one at a time per asset) and return its JSON.
    pub(crate) async fn enqueue_tier_job(
        &self,
        tenant: &str,
        asset: &str,
        kind: &'static str,
        target: Option<&str>,
        days: Option<i64>,
    ) -> Result<Job> {
        if let Some(other) = store::active_tier_job(&self.inner.db, tenant, asset).await? {
            return Err(Error::Conflict(format!(
                "asset {asset} has a tier job under way ({other}); wait for it to end"
            )));
        }
        let id = ulid::Ulid::new().to_string();
        store::insert_tier_job(
            &self.inner.db,
            store::NewTierJob {
                id: &id,
                tenant,
                asset,
                kind,
                target,
                days,
                now: self.now_ms(),
            },
        )
        .await?;
        metrics::counter!("sluice_jobs_enqueued_total", "kind" => kind).increment(1);
        store::get_tier_job(&self.inner.db, Some(tenant), &id)
            .await?
            .map(|r| r.to_job(self.max_attempts()))
            .ok_or_else(|| Error::not_found("job", &id))
    }

    /// A tier job of the caller (admin: any), for `GET /v1/jobs/{id}`.
    pub(crate) async fn get_tier_job(&self, who: &Principal, id: &str) -> Result<Option<Job>> {
        let scope = self.scope(who)?;
        Ok(store::get_tier_job(&self.inner.db, scope, id)
            .await?
            .map(|r| r.to_job(self.max_attempts())))
    }

    /// Run tier jobs until `shutdown` turns true: one at a time per process, polling the
    /// table every `workers.poll_ms`. A job running at shutdown is cut; its lease runs out
    /// and it continues elsewhere (or here after a restart) from its last done step.
    pub async fn run_tier_jobs(&self, mut shutdown: watch::Receiver<bool>) {
        let worker = format!("tiers-{}-{}", std::process::id(), ulid::Ulid::new());
        let poll = Duration::from_millis(self.inner.config.workers.poll_ms.max(50));
        loop {
            if *shutdown.borrow() {
                return;
            }
            let ran = tokio::select! {
                r = self.run_next_tier_job(&worker) => r,
                _ = shutdown.wait_for(|s| *s) => return,
            };
            match ran {
                Ok(true) => {}
                Ok(false) | Err(_) => {
                    if let Err(e) = ran {
                        tracing::warn!("could not claim a tier job: {e}");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(poll) => {}
                        _ = shutdown.wait_for(|s| *s) => return,
                    }
                }
            }
        }
    }

    /// Claim and run one due tier job as `worker`; false when none is due.
    pub async fn run_next_tier_job(&self, worker: &str) -> Result<bool> {
        let now = self.now_ms();
        let lease = now + LEASE.as_millis() as i64;
        match store::claim_tier_job(&self.inner.db, worker, now, lease).await? {
            Some(job) => {
                self.run_claimed(job, worker).await;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn run_claimed(&self, job: store::TierJobRow, worker: &str) {
        let progress = Arc::new(AtomicU64::new(0f64.to_bits()));
        // The lease is renewed beside the work, so a long object copy keeps it.
        let renew = {
            let (e, id, w, p) = (
                self.clone(),
                job.id.clone(),
                worker.to_string(),
                progress.clone(),
            );
            AbortOnDrop::every(LEASE / 3, "renew a tier job's lease", move || {
                let (e, id, w, p) = (e.clone(), id.clone(), w.clone(), p.clone());
                async move {
                    let now = e.now_ms();
                    let pr = f64::from_bits(p.load(Ordering::Relaxed));
                    let lease = now + LEASE.as_millis() as i64;
                    store::tier_job_progress(&e.inner.db, &id, &w, pr, now, lease).await?;
                    Ok(())
                }
            })
        };
        let mut result = TierJobResult::default();
        let outcome = self.execute(&job, &mut result, &progress).await;
        drop(renew);
        let (status, error, run_after) = match outcome {
            Ok(()) => ("succeeded", None, self.now_ms()),
            Err(Fail::Permanent(m)) => ("failed", Some(m), self.now_ms()),
            Err(Fail::Transient(m)) if job.attempts >= self.max_attempts() => (
                "dead",
                Some(format!("gave up after {} attempts: {m}", job.attempts)),
                self.now_ms(),
            ),
            Err(Fail::Transient(m)) => {
                let w = &self.inner.config.workers;
                let delay = crate::jobs::policy::backoff(
                    Duration::from_secs(w.retry_base_s),
                    Duration::from_secs(w.retry_cap_s),
                    job.attempts.max(1) as u32,
                    rand::random::<f64>(),
                );
                ("queued", Some(m), self.now_ms() + delay.as_millis() as i64)
            }
        };
        let result_json = serde_json::to_string(&result).unwrap_or_else(|_| "{}".into());
        match store::tier_job_end(
            &self.inner.db,
            &job.id,
            worker,
            status,
            error.as_deref(),
            &result_json,
            run_after,
            self.now_ms(),
        )
        .await
        {
            Ok(true) => {
                metrics::counter!("sluice_jobs_finished_total", "kind" => "tier", "status" => status)
                    .increment(1);
                if let Some(e) = &error {
                    tracing::warn!(job = %job.id, status, "tier job: {e}");
                }
            }
            Ok(false) => tracing::warn!(job = %job.id, "tier job was taken over before it ended"),
            Err(e) => tracing::warn!(job = %job.id, "could not record a tier job's end: {e}"),
        }
    }

    async fn execute(
        &self,
        job: &store::TierJobRow,
        result: &mut TierJobResult,
        progress: &AtomicU64,
    ) -> std::result::Result<(), Fail> {
        let report = |p: f64| progress.store((p * 0.9).to_bits(), Ordering::Relaxed);
        let (tenant, asset) = (job.tenant_id.as_str(), job.asset_id.as_str());
        match job.kind.as_str() {
            TIER_KIND => {
                let target = job
                    .target
                    .as_deref()
                    .and_then(Tier::parse)
                    .ok_or_else(|| Fail::Permanent("the job names no valid tier".into()))?;
                self.move_asset(&job.id, tenant, asset, target, result, report)
                    .await?;
            }
            RESTORE_KIND => {
                let days = job.days.unwrap_or(1).clamp(1, MAX_RESTORE_DAYS);
                self.restore_asset(&job.id, tenant, asset, days, result, report)
                    .await?;
            }
            EXPIRE_KIND => self.expire_asset(tenant, asset, result).await?,
            other => return Err(Fail::Permanent(format!("unknown tier job kind {other:?}"))),
        }
        self.drain(tenant, asset, result).await?;
        Ok(())
    }

    fn scratch(&self, job: &str) -> std::path::PathBuf {
        self.inner.work_dir.join(format!("tier-{job}"))
    }

    /// Steps of a tier move. Replayed after a crash, each finds its work done.
    async fn move_asset(
        &self,
        job: &str,
        tenant: &str,
        asset: &str,
        target: Tier,
        result: &mut TierJobResult,
        report: impl FnMut(f64),
    ) -> std::result::Result<(), Fail> {
        let dest_name = self
            .stores()
            .store_name(target)
            .ok_or_else(|| Fail::Permanent(format!("no {} tier is configured", target.as_str())))?
            .to_string();
        let mut copies = self.asset_copies(tenant, asset).await?;
        if copies.is_empty() {
            // Published before copies were recorded: its home is the hot store.
            self.record_hot_copy(tenant, asset).await?;
            copies = self.asset_copies(tenant, asset).await?;
        }
        let Some(src) = home(&copies).cloned() else {
            // No active copy: the switch was made (the source is draining) — drain only.
            return Ok(());
        };
        if src.tier == target {
            return Ok(());
        }
        let dst = self.stores().require(&dest_name)?.clone();
        if src.store != dest_name {
            let from = self.stores().require(&src.store)?.clone();
            let scratch = self.scratch(job);
            let copied = copy_asset(&from, &dst, tenant, asset, &scratch, result, report).await;
            let _ = tokio::fs::remove_dir_all(&scratch).await;
            copied?;
            if !result.failed.is_empty() {
                return Err(Fail::Transient(format!(
                    "{} objects could not be copied",
                    result.failed.len()
                )));
            }
        }
        let (bytes, objects) = self.measure_asset(&dst, tenant, asset).await?;
        let new = CopyKey {
            tenant,
            asset,
            tier: target,
            store: &dest_name,
        };
        let old = CopyKey {
            tenant,
            asset,
            tier: src.tier,
            store: &src.store,
        };
        let restored_there = copies
            .iter()
            .any(|c| c.tier == target && c.store == dest_name && c.state == CopyState::Restored);
        let first = if restored_there {
            CopyChange::Switch {
                key: new,
                from: CopyState::Restored,
                to: CopyState::Active,
                expires_at: None,
            }
        } else {
            CopyChange::Insert {
                key: new,
                state: CopyState::Active,
                bytes,
                objects,
                expires_at: None,
            }
        };
        self.change_copies(&[
            first,
            CopyChange::Switch {
                key: old,
                from: CopyState::Active,
                to: CopyState::Draining,
                expires_at: None,
            },
        ])
        .await?;
        Ok(())
    }

    /// Steps of a restore: copy the cold objects into the hot store, then one restored
    /// row; a restored copy already there is extended instead.
    async fn restore_asset(
        &self,
        job: &str,
        tenant: &str,
        asset: &str,
        days: i64,
        result: &mut TierJobResult,
        report: impl FnMut(f64),
    ) -> std::result::Result<(), Fail> {
        let hot_name = self.stores().hot().name().to_string();
        let expires_at = self.now_ms().saturating_add(days.saturating_mul(DAY_MS));
        let copies = self.asset_copies(tenant, asset).await?;
        let key = CopyKey {
            tenant,
            asset,
            tier: Tier::Hot,
            store: &hot_name,
        };
        if let Some(c) = copies
            .iter()
            .find(|c| c.tier == Tier::Hot && c.store == hot_name)
        {
            return match c.state {
                CopyState::Restored => {
                    self.change_copies(&[CopyChange::Extend { key, expires_at }])
                        .await?;
                    Ok(())
                }
                CopyState::Active => Ok(()),
                CopyState::Draining => Err(Fail::Transient(
                    "the previous restored copy is still being removed".into(),
                )),
            };
        }
        let Some(cold) = home(&copies).filter(|c| c.tier == Tier::Cold).cloned() else {
            return Err(Fail::Permanent("the asset is not archived".into()));
        };
        let hot = self.stores().hot().clone();
        if cold.store != hot_name {
            let from = self.stores().require(&cold.store)?.clone();
            let scratch = self.scratch(job);
            let copied = copy_asset(&from, &hot, tenant, asset, &scratch, result, report).await;
            let _ = tokio::fs::remove_dir_all(&scratch).await;
            copied?;
            if !result.failed.is_empty() {
                return Err(Fail::Transient(format!(
                    "{} objects could not be copied",
                    result.failed.len()
                )));
            }
        }
        let (bytes, objects) = self.measure_asset(&hot, tenant, asset).await?;
        self.change_copies(&[CopyChange::Insert {
            key,
            state: CopyState::Restored,
            bytes,
            objects,
            expires_at: Some(expires_at),
        }])
        .await?;
        Ok(())
    }

    /// Lifecycle expiry: every copy drains (its objects are deleted, then its row), then
    /// the asset is hidden (404 from then on).
    async fn expire_asset(
        &self,
        tenant: &str,
        asset: &str,
        _result: &mut TierJobResult,
    ) -> std::result::Result<(), Fail> {
        let copies = self.asset_copies(tenant, asset).await?;
        if copies.is_empty() {
            self.record_hot_copy(tenant, asset).await?;
        }
        for c in self.asset_copies(tenant, asset).await? {
            if c.state != CopyState::Draining {
                let key = CopyKey {
                    tenant,
                    asset,
                    tier: c.tier,
                    store: &c.store,
                };
                self.change_copies(&[CopyChange::Switch {
                    key,
                    from: c.state,
                    to: CopyState::Draining,
                    expires_at: None,
                }])
                .await?;
            }
        }
        store::hide_asset(&self.inner.db, tenant, asset, self.now_ms()).await?;
        Ok(())
    }

    /// Delete the objects of the asset's draining copies, then their rows (counters in the
    /// same transaction). Objects a live copy shares (same store) are kept. Waits out the
    /// read-resolution cache first, so no gateway still reads a copy being deleted.
    async fn drain(
        &self,
        tenant: &str,
        asset: &str,
        result: &mut TierJobResult,
    ) -> std::result::Result<(), Fail> {
        let copies = self.asset_copies(tenant, asset).await?;
        let draining: Vec<&CopyRow> = copies
            .iter()
            .filter(|c| c.state == CopyState::Draining)
            .collect();
        if draining.is_empty() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(
            self.inner.config.gateway.cache_ttl_ms + 100,
        ))
        .await;
        for d in draining {
            let shared = copies
                .iter()
                .any(|c| c.state != CopyState::Draining && c.store == d.store);
            if !shared {
                let store = self.stores().require(&d.store)?;
                result.objects_deleted += delete_asset_objects(store, tenant, asset).await?;
            }
            let key = CopyKey {
                tenant,
                asset,
                tier: d.tier,
                store: &d.store,
            };
            self.change_copies(&[CopyChange::Delete {
                key,
                state: CopyState::Draining,
            }])
            .await?;
        }
        Ok(())
    }

    /// Remove restored copies past their expiry: switch each to draining (only if still
    /// expired: a restore that extended it meanwhile wins), delete its objects, drop its
    /// row. Returns how many were removed.
    pub async fn sweep_expired_restores(&self) -> Result<usize> {
        let now = self.now_ms();
        let expired = store::expired_restores(&self.inner.db, now, 100).await?;
        let mut n = 0;
        // Copies an interrupted sweep (or expiry) switched to draining but did not finish.
        for c in store::orphaned_draining(&self.inner.db, 100).await? {
            let mut r = TierJobResult::default();
            if let Err(Fail::Permanent(m) | Fail::Transient(m)) =
                self.drain(&c.tenant_id, &c.asset_id, &mut r).await
            {
                tracing::warn!(asset = %c.asset_id, "could not finish draining a copy: {m}");
            }
        }
        for c in expired {
            let key = CopyKey {
                tenant: &c.tenant_id,
                asset: &c.asset_id,
                tier: c.tier,
                store: &c.store,
            };
            if !store::expire_restored(&self.inner.db, key, now).await? {
                continue;
            }
            self.forget_readable(&c.tenant_id, &c.asset_id).await;
            let mut r = TierJobResult::default();
            match self.drain(&c.tenant_id, &c.asset_id, &mut r).await {
                Ok(()) => n += 1,
                Err(Fail::Permanent(m) | Fail::Transient(m)) => {
                    tracing::warn!(asset = %c.asset_id, "could not remove an expired restore: {m}")
                }
            }
        }
        Ok(n)
    }
}
