//! Ops jobs: moving every object of one store to another (`POST /v1/ops/migrations`).
//!
//! A migration is a job with a checkpoint per object and per multipart part in the
//! database (migration 0018), run by [`run_migrations`] in every serving process: a job
//! whose process died (silent heartbeat) is taken over where it was. See
//! docs/migration.md for the machine, the verification and what a crash costs.

mod migrate;
mod pace;
mod store;
mod usage;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::{Engine, Error, Principal, Result};

pub use migrate::crash_point;
pub use usage::{Drift, UsageCheck};

/// `[ops]`: how migrations run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpsConfig {
    /// Objects (or parts of large objects) copied at the same time, across a migration.
    /// Memory is bounded by `migrate_concurrency × part_size`. Default 8.
    pub migrate_concurrency: usize,
    /// Objects larger than this are copied to an S3 target with multipart, in parts of
    /// this size, each checkpointed. 5 MiB to 512 MiB. Default 16 MiB.
    pub part_size: u64,
    /// Bytes per second sent to the target, across the migration. Default: unlimited.
    pub bandwidth_bytes_per_s: Option<u64>,
    /// How long an object keeps being retried (with backoff) while a store fails, before
    /// it is reported failed. Default 1800.
    pub retry_for_s: u64,
}

impl Default for OpsConfig {
    fn default() -> Self {
        Self {
            migrate_concurrency: 8,
            part_size: 16 << 20,
            bandwidth_bytes_per_s: None,
            retry_for_s: 1800,
        }
    }
}

impl OpsConfig {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::Config(m.to_string()));
        if !(1..=64).contains(&self.migrate_concurrency) {
            return bad("ops.migrate_concurrency must be between 1 and 64");
        }
        if !((5 << 20)..=(512 << 20)).contains(&self.part_size) {
            return bad("ops.part_size must be between 5 MiB and 512 MiB");
        }
        if self.bandwidth_bytes_per_s == Some(0) {
            return bad("ops.bandwidth_bytes_per_s must be positive (or unset: unlimited)");
        }
        Ok(())
    }
}

/// How a copied object is verified.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verify {
    /// From what the copy computed: part MD5s against the target's part ETags and the
    /// composite ETag at completion (S3), size and content MD5 (local). The default.
    #[default]
    Checksums,
    /// Also read every copied object back from the target and compare its MD5s.
    Full,
}

/// `POST /v1/ops/migrations`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrationRequest {
    pub from: String,
    pub to: String,
    #[serde(default)]
    pub tenant: Option<String>,
    #[serde(default)]
    pub delete_source: bool,
    #[serde(default)]
    pub dry_run: bool,
    #[serde(default)]
    pub verify: Verify,
}

/// What a dry run answers.
#[derive(Debug, Clone, Serialize)]
pub struct MigrationPlan {
    pub dry_run: bool,
    pub from: String,
    pub to: String,
    pub tenant: Option<String>,
    pub assets: u64,
    pub objects: u64,
    pub bytes: u64,
}

/// One object that could not be migrated.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FailedObject {
    pub key: String,
    pub reason: String,
}

/// A finished migration's `result`.
#[derive(Debug, Clone, Serialize)]
pub struct MigrationResult {
    pub objects_copied: u64,
    pub objects_skipped: u64,
    pub objects_verified: u64,
    pub bytes_copied: u64,
    /// Bytes sent to the target, re-sends after a crash or a failed send included.
    pub bytes_sent: u64,
    pub failed: Vec<FailedObject>,
}

/// A migration job as `GET /v1/jobs/{id}` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct MigrationJob {
    pub id: String,
    pub kind: &'static str,
    pub status: String,
    pub progress: f64,
    pub from: String,
    pub to: String,
    pub tenant: Option<String>,
    pub delete_source: bool,
    pub verify: Verify,
    pub objects_total: u64,
    pub bytes_total: u64,
    pub objects_done: u64,
    pub bytes_done: u64,
    pub attempts: i64,
    pub error: Option<String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// Set once the job ended.
    pub result: Option<MigrationResult>,
}

/// What `POST /v1/ops/migrations` answers.
#[derive(Debug, Clone)]
pub enum Submitted {
    Job(Box<MigrationJob>),
    Plan(MigrationPlan),
}

/// The job kind of migrations.
pub const MIGRATION_KIND: &str = "migration";

/// Wakes this process's runner when a job is submitted here (others find it within a
/// second).
static SUBMITTED: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// A running job's heartbeat period; a job silent for three of them is taken over.
const HEARTBEAT: Duration = Duration::from_secs(1);

fn rfc3339(ms: i64) -> String {
    crate::rfc3339_ms(ms)
}

impl Engine {
    /// Ops routes: the `ops` role or the platform admin (the rule of [`crate::Role`], as the
    /// endpoint table declares for these routes).
    pub(crate) fn require_ops(&self, who: &Principal) -> Result<()> {
        if !who.role().satisfies(crate::Role::Ops) {
            return Err(Error::Forbidden(
                "ops routes need the ops role or the admin key",
            ));
        }
        Ok(())
    }

    /// `POST /v1/ops/migrations` (admin).
    pub async fn submit_migration(
        &self,
        who: &Principal,
        req: MigrationRequest,
    ) -> Result<Submitted> {
        self.require_ops(who)?;
        for name in [&req.from, &req.to] {
            if self.stores().get(name).is_none() {
                return Err(Error::InvalidInput(format!(
                    "no store named {:?}; configured: {}",
                    name.chars().take(64).collect::<String>(),
                    self.stores().names().collect::<Vec<_>>().join(", ")
                )));
            }
        }
        if req.from == req.to {
            return Err(Error::InvalidInput(
                "from and to name the same store".into(),
            ));
        }
        if let Some(t) = &req.tenant
            && sluice_storage::keys::validate_id(t).is_err()
        {
            return Err(Error::InvalidInput("tenant is not a tenant id".into()));
        }
        if req.dry_run {
            let objects = self
                .migration_plan(&req.from, req.tenant.as_deref())
                .await?;
            let assets = objects
                .iter()
                .map(|o| (&o.0, &o.1))
                .collect::<std::collections::BTreeSet<_>>()
                .len() as u64;
            let bytes = objects
                .iter()
                .try_fold(0u64, |a, o| a.checked_add(o.3))
                .ok_or_else(|| Error::InvalidInput("the plan's size overflows".into()))?;
            return Ok(Submitted::Plan(MigrationPlan {
                dry_run: true,
                from: req.from,
                to: req.to,
                tenant: req.tenant,
                assets,
                objects: objects.len() as u64,
                bytes,
            }));
        }
        let id = ulid::Ulid::new().to_string();
        store::insert_job(
            &self.inner.db,
            &id,
            req.tenant.as_deref(),
            &req.from,
            &req.to,
            req.delete_source,
            req.verify == Verify::Full,
            self.now_ms(),
        )
        .await?;
        tracing::info!(job = %id, from = %req.from, to = %req.to, "migration queued");
        SUBMITTED.notify_one();
        Ok(Submitted::Job(Box::new(self.migration_job(&id).await?)))
    }

    /// A migration job (admin), or `None` when no migration has this id.
    pub async fn get_migration_job(
        &self,
        who: &Principal,
        id: &str,
    ) -> Result<Option<MigrationJob>> {
        if self.require_ops(who).is_err() {
            return Ok(None);
        }
        match store::get_job(&self.inner.db, id).await? {
            Some(_) => Ok(Some(self.migration_job(id).await?)),
            None => Ok(None),
        }
    }

    async fn migration_job(&self, id: &str) -> Result<MigrationJob> {
        let j = store::get_job(&self.inner.db, id)
            .await?
            .ok_or_else(|| Error::not_found("job", id))?;
        let f = store::figures(&self.inner.db, id).await?;
        let ended = matches!(j.status.as_str(), "succeeded" | "failed");
        let progress = if ended && j.status == "succeeded" {
            1.0
        } else if j.bytes_total > 0 {
            (f.bytes_done as f64 / j.bytes_total as f64).clamp(0.0, 1.0)
        } else if j.objects_total > 0 {
            (f.objects_done as f64 / j.objects_total as f64).clamp(0.0, 1.0)
        } else {
            0.0
        };
        Ok(MigrationJob {
            id: j.id,
            kind: MIGRATION_KIND,
            status: j.status,
            progress,
            from: j.from_store,
            to: j.to_store,
            tenant: j.tenant_id,
            delete_source: j.delete_source,
            verify: if j.verify_full {
                Verify::Full
            } else {
                Verify::Checksums
            },
            objects_total: j.objects_total,
            bytes_total: j.bytes_total,
            objects_done: f.objects_done,
            bytes_done: f.bytes_done,
            attempts: j.attempts,
            error: j.error,
            created_at: rfc3339(j.created_at),
            started_at: j.started_at.map(rfc3339),
            finished_at: j.finished_at.map(rfc3339),
            result: ended.then(|| MigrationResult {
                objects_copied: f.objects_copied,
                objects_skipped: f.objects_skipped,
                objects_verified: f.objects_verified,
                bytes_copied: f.bytes_copied,
                bytes_sent: f.bytes_sent,
                failed: f
                    .failed
                    .into_iter()
                    .map(|(key, reason)| FailedObject { key, reason })
                    .collect(),
            }),
        })
    }

    /// Every object of every asset with an active copy in `from` (of `tenant`): (tenant,
    /// asset, key, size). Keys are listed under the asset's derived prefix only.
    async fn migration_plan(
        &self,
        from: &str,
        tenant: Option<&str>,
    ) -> Result<Vec<(String, String, String, u64)>> {
        let src = self.stores().require(from)?.clone();
        let mut out = Vec::new();
        for (t, a, _tier) in store::copies_in_store(&self.inner.db, from, tenant).await? {
            let prefix = sluice_storage::keys::asset_prefix(&t, &a);
            for o in src.list(&prefix).await? {
                if !o.key.starts_with(&prefix) {
                    continue;
                }
                out.push((t.clone(), a.clone(), o.key, o.size));
            }
        }
        Ok(out)
    }
}

/// Run migration jobs until `shutdown`: every second, take a queued job (or one whose
/// process died) and run it to its end. One job at a time per process; each job copies
/// `ops.migrate_concurrency` objects at once.
pub async fn run_migrations(engine: Engine, mut shutdown: watch::Receiver<bool>) {
    let worker = format!("migrate-{}", ulid::Ulid::new());
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = SUBMITTED.notified() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let now = engine.now_ms();
        let silent_before = now - 3 * HEARTBEAT.as_millis() as i64;
        let job = match store::claim_job(&engine.inner.db, &worker, now, silent_before).await {
            Ok(Some(j)) => j,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!("could not look for migration jobs: {e}");
                continue;
            }
        };
        tracing::info!(job = %job.id, attempt = job.attempts, "migration started");
        let beat = {
            let (e, id, w) = (engine.clone(), job.id.clone(), worker.clone());
            crate::AbortOnDrop::every(HEARTBEAT, "beat a migration's heartbeat", move || {
                let (e, id, w) = (e.clone(), id.clone(), w.clone());
                async move { store::heartbeat(&e.inner.db, &id, &w, e.now_ms()).await }
            })
        };
        let run = migrate::run(&engine, &job, shutdown.clone());
        let outcome = run.await;
        drop(beat);
        let db = &engine.inner.db;
        let done = match outcome {
            Ok(migrate::Outcome::Finished { failed: 0 }) => {
                store::finish_job(db, &job.id, "succeeded", None, engine.now_ms()).await
            }
            Ok(migrate::Outcome::Finished { failed }) => {
                let msg = format!("{failed} object(s) could not be migrated: see result.failed");
                store::finish_job(db, &job.id, "failed", Some(&msg), engine.now_ms()).await
            }
            // Stopping: the job stays running; its silent heartbeat hands it to the next
            // process (or this one after a restart).
            Ok(migrate::Outcome::Stopped) => Ok(()),
            Err(e) => {
                tracing::warn!(job = %job.id, "migration failed: {e}");
                let msg = format!("{e}");
                store::finish_job(db, &job.id, "failed", Some(&msg), engine.now_ms()).await
            }
        };
        if let Err(e) = done {
            tracing::warn!(job = %job.id, "could not record the migration's end: {e}");
        }
    }
}
