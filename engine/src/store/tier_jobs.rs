//! Tier jobs (`tier_jobs`): tier moves, archive, restore and lifecycle expiry. The table is
//! the queue: a worker claims a due job with a conditional UPDATE and holds it by a lease
//! it renews; a job whose lease ran out (its worker died) is claimed again and continues
//! from what its idempotent steps already did.

use sqlx::{AnyPool, Row};

use crate::model::Job;
use crate::{Result, rfc3339_ms};

/// A tier job as stored.
#[derive(Debug, Clone)]
pub(crate) struct TierJobRow {
    pub id: String,
    pub tenant_id: String,
    pub asset_id: String,
    pub kind: String,
    pub target: Option<String>,
    pub days: Option<i64>,
    pub status: String,
    pub progress: f64,
    pub attempts: i64,
    pub worker_id: Option<String>,
    pub error: Option<String>,
    pub result: Option<String>,
    pub run_after: i64,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

const COLS: &str = "id, tenant_id, asset_id, kind, target, days, status, progress, attempts, \
    worker_id, error, result, run_after, created_at, started_at, finished_at";

fn from_row(r: &sqlx::any::AnyRow) -> Result<TierJobRow> {
    Ok(TierJobRow {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        asset_id: r.try_get("asset_id")?,
        kind: r.try_get("kind")?,
        target: r.try_get("target")?,
        days: r.try_get("days")?,
        status: r.try_get("status")?,
        progress: r.try_get("progress")?,
        attempts: r.try_get("attempts")?,
        worker_id: r.try_get("worker_id")?,
        error: r.try_get("error")?,
        result: r.try_get("result")?,
        run_after: r.try_get("run_after")?,
        created_at: r.try_get("created_at")?,
        started_at: r.try_get("started_at")?,
        finished_at: r.try_get("finished_at")?,
    })
}

impl TierJobRow {
    /// The job JSON (`GET /v1/jobs/{id}`).
    pub fn to_job(&self, max_attempts: i64) -> Job {
        Job {
            id: self.id.clone(),
            asset_id: self.asset_id.clone(),
            kind: self.kind.clone(),
            status: self.status.clone(),
            progress: self.progress,
            attempts: self.attempts,
            max_attempts,
            priority: 0,
            worker_id: self.worker_id.clone(),
            error: self.error.clone(),
            eta_s: None,
            run_after: (self.status == "queued").then(|| rfc3339_ms(self.run_after)),
            cancel_requested: false,
            created_at: rfc3339_ms(self.created_at),
            started_at: self.started_at.map(rfc3339_ms),
            finished_at: self.finished_at.map(rfc3339_ms),
            rendition: None,
            result: self
                .result
                .as_deref()
                .and_then(|r| serde_json::from_str(r).ok()),
        }
    }
}

/// A new tier job.
pub(crate) struct NewTierJob<'a> {
    pub id: &'a str,
    pub tenant: &'a str,
    pub asset: &'a str,
    pub kind: &'a str,
    pub target: Option<&'a str>,
    pub days: Option<i64>,
    pub now: i64,
}

pub(crate) async fn insert_tier_job(db: &AnyPool, j: NewTierJob<'_>) -> Result<()> {
    sqlx::query(
        "INSERT INTO tier_jobs (id, tenant_id, asset_id, kind, target, days, status, run_after, \
         created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, 'queued', $7, $8, $9)",
    )
    .bind(j.id)
    .bind(j.tenant)
    .bind(j.asset)
    .bind(j.kind)
    .bind(j.target)
    .bind(j.days)
    .bind(j.now)
    .bind(j.now)
    .bind(j.now)
    .execute(db)
    .await?;
    Ok(())
}

/// The tenant's queued or running tier job of an asset, if any.
pub(crate) async fn active_tier_job(
    db: &AnyPool,
    tenant: &str,
    asset: &str,
) -> Result<Option<String>> {
    Ok(sqlx::query(
        "SELECT id FROM tier_jobs WHERE tenant_id = $1 AND asset_id = $2 \
         AND status IN ('queued', 'running') LIMIT 1",
    )
    .bind(tenant)
    .bind(asset)
    .fetch_optional(db)
    .await?
    .map(|r| r.get(0)))
}

/// A tier job of the tenant (any tenant's for `None`).
pub(crate) async fn get_tier_job(
    db: &AnyPool,
    tenant: Option<&str>,
    id: &str,
) -> Result<Option<TierJobRow>> {
    let sql =
        format!("SELECT {COLS} FROM tier_jobs WHERE id = $1 AND ($2 IS NULL OR tenant_id = $2)");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .bind(tenant)
        .fetch_optional(db)
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// Claim one due job: queued and due, or running with its lease run out (its worker
/// died). Returns it with the attempt counted, or None.
pub(crate) async fn claim_tier_job(
    db: &AnyPool,
    worker: &str,
    now: i64,
    lease_until: i64,
) -> Result<Option<TierJobRow>> {
    for _ in 0..3 {
        let Some(id) = sqlx::query(
            "SELECT id FROM tier_jobs WHERE (status = 'queued' AND run_after <= $1) \
             OR (status = 'running' AND lease_until < $2) ORDER BY run_after LIMIT 1",
        )
        .bind(now)
        .bind(now)
        .fetch_optional(db)
        .await?
        .map(|r| r.get::<String, _>(0)) else {
            return Ok(None);
        };
        let claimed = sqlx::query(
            "UPDATE tier_jobs SET status = 'running', attempts = attempts + 1, worker_id = $1, \
             lease_until = $2, started_at = COALESCE(started_at, $3), updated_at = $4 \
             WHERE id = $5 AND ((status = 'queued' AND run_after <= $6) \
             OR (status = 'running' AND lease_until < $7))",
        )
        .bind(worker)
        .bind(lease_until)
        .bind(now)
        .bind(now)
        .bind(&id)
        .bind(now)
        .bind(now)
        .execute(db)
        .await?
        .rows_affected();
        if claimed == 1 {
            return get_tier_job(db, None, &id).await;
        }
    }
    Ok(None)
}

/// Progress (and the lease renewed) of a job this worker holds. False: it holds it no
/// longer (its lease ran out and another worker took it).
pub(crate) async fn tier_job_progress(
    db: &AnyPool,
    id: &str,
    worker: &str,
    progress: f64,
    now: i64,
    lease_until: i64,
) -> Result<bool> {
    Ok(sqlx::query(
        "UPDATE tier_jobs SET progress = $1, lease_until = $2, updated_at = $3 \
         WHERE id = $4 AND worker_id = $5 AND status = 'running'",
    )
    .bind(progress)
    .bind(lease_until)
    .bind(now)
    .bind(id)
    .bind(worker)
    .execute(db)
    .await?
    .rows_affected()
        == 1)
}

/// End a held job: `succeeded`, `failed` or `dead`, or back to `queued` (a retry due at
/// `run_after`). Only while this worker holds it.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn tier_job_end(
    db: &AnyPool,
    id: &str,
    worker: &str,
    status: &str,
    error: Option<&str>,
    result: &str,
    run_after: i64,
    now: i64,
) -> Result<bool> {
    let finished = (status != "queued").then_some(now);
    Ok(sqlx::query(
        "UPDATE tier_jobs SET status = $1, error = $2, result = $3, run_after = $4, \
         finished_at = $5, lease_until = NULL, updated_at = $6, \
         progress = CASE WHEN $7 = 'succeeded' THEN 1.0 ELSE progress END \
         WHERE id = $8 AND worker_id = $9 AND status = 'running'",
    )
    .bind(status)
    .bind(error)
    .bind(result)
    .bind(run_after)
    .bind(finished)
    .bind(now)
    .bind(status)
    .bind(id)
    .bind(worker)
    .execute(db)
    .await?
    .rows_affected()
        == 1)
}

/// Tier jobs of a tenant (all tenants for `None`), newest first, optionally by status.
pub(crate) async fn list_tier_jobs(
    db: &AnyPool,
    tenant: Option<&str>,
    status: Option<&str>,
    limit: i64,
) -> Result<Vec<TierJobRow>> {
    let sql = format!(
        "SELECT {COLS} FROM tier_jobs WHERE ($1 IS NULL OR tenant_id = $1) \
         AND ($2 IS NULL OR status = $2) ORDER BY created_at DESC, id DESC LIMIT $3"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(tenant)
        .bind(status)
        .bind(limit)
        .fetch_all(db)
        .await?;
    rows.iter().map(from_row).collect()
}
