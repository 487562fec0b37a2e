//! Jobs: their rows, their lifecycle as workers run them, and what they do to their
//! asset (a job re-running one rendition never changes the asset's status).

use sqlx::{AnyPool, Row};

use super::assets::{Also, ErrorChange, Only, set_asset_status};
use crate::model::{AssetStatus, Job, Rendition, TranscodeJob};
use crate::{Result, rfc3339_ms};

/// The transcode job already queued for an asset, if any (an earlier, interrupted finish).
pub(crate) async fn asset_job(db: &AnyPool, tenant: &str, asset: &str) -> Result<Option<String>> {
    Ok(sqlx::query(
        "SELECT id FROM jobs WHERE tenant_id = $1 AND asset_id = $2 ORDER BY created_at LIMIT 1",
    )
    .bind(tenant)
    .bind(asset)
    .fetch_optional(db)
    .await?
    .map(|r| r.get(0)))
}

/// A new job row.
pub(crate) struct NewJob<'a> {
    pub id: &'a str,
    pub tenant: &'a str,
    pub asset: &'a str,
    pub kind: &'a str,
    pub priority: i64,
    pub now: i64,
    /// The effective preset (JSON) the job runs with.
    pub preset: &'a str,
    /// The one rendition a re-run job remakes.
    pub rendition: Option<&'a str>,
}

pub(crate) async fn insert_job(db: &AnyPool, j: NewJob<'_>) -> Result<()> {
    insert_job_in(&mut *db.acquire().await?, &j).await
}

/// [`insert_job`] inside the caller's transaction.
pub(crate) async fn insert_job_in(conn: &mut sqlx::AnyConnection, j: &NewJob<'_>) -> Result<()> {
    sqlx::query(
        "INSERT INTO jobs (id, tenant_id, asset_id, kind, status, priority, created_at, \
         updated_at, preset, rendition, unpushed_since) \
         VALUES ($1, $2, $3, $4, 'queued', $5, $6, $7, $8, $9, $6)",
    )
    .bind(j.id)
    .bind(j.tenant)
    .bind(j.asset)
    .bind(j.kind)
    .bind(j.priority)
    .bind(j.now)
    .bind(j.now)
    .bind(j.preset)
    .bind(j.rendition)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A job's task is on the queue: no push is owed any more.
pub(crate) async fn job_pushed(db: &AnyPool, job_id: &str) -> Result<()> {
    sqlx::query("UPDATE jobs SET unpushed_since = NULL WHERE id = $1")
        .bind(job_id)
        .execute(db)
        .await?;
    Ok(())
}

/// Queued jobs whose push has been owed since before `before` (it was lost):
/// (job, tenant, asset, priority, run_after).
pub(crate) async fn jobs_owed_a_push(
    db: &AnyPool,
    before: i64,
    limit: i64,
) -> Result<Vec<(String, String, String, i64, Option<i64>)>> {
    let rows = sqlx::query(
        "SELECT id, tenant_id, asset_id, priority, run_after FROM jobs WHERE status = 'queued' \
         AND unpushed_since IS NOT NULL AND unpushed_since < $1 ORDER BY unpushed_since LIMIT $2",
    )
    .bind(before)
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect())
}

/// Jobs of a tenant waiting in the queue (for fair priorities).
pub(crate) async fn count_waiting(db: &AnyPool, tenant: &str) -> Result<usize> {
    let n: i64 =
        sqlx::query("SELECT COUNT(*) FROM jobs WHERE tenant_id = $1 AND status = 'queued'")
            .bind(tenant)
            .fetch_one(db)
            .await?
            .get(0);
    Ok(n as usize)
}

const JOB_COLS: &str = "id, tenant_id, asset_id, kind, status, progress, attempts, priority, \
    worker_id, error, run_after, cancel_requested, created_at, started_at, finished_at, \
    rendition";

fn job_from_row(r: &sqlx::any::AnyRow, now: i64, max_attempts: i64) -> Result<Job> {
    let status: String = r.try_get("status")?;
    let progress: f64 = r.try_get("progress")?;
    let started: Option<i64> = r.try_get("started_at")?;
    let eta_s = match (status.as_str(), started) {
        ("running", Some(st)) if progress > 0.01 => {
            let elapsed = (now - st).max(0) as f64 / 1000.0;
            Some(((elapsed * (1.0 - progress) / progress) * 10.0).round() / 10.0)
        }
        _ => None,
    };
    Ok(Job {
        id: r.try_get("id")?,
        asset_id: r.try_get("asset_id")?,
        kind: r.try_get("kind")?,
        progress,
        attempts: r.try_get("attempts")?,
        max_attempts,
        priority: r.try_get("priority")?,
        worker_id: r.try_get("worker_id")?,
        error: r.try_get("error")?,
        eta_s,
        run_after: r.try_get::<Option<i64>, _>("run_after")?.map(rfc3339_ms),
        cancel_requested: r.try_get::<i64, _>("cancel_requested")? != 0,
        created_at: rfc3339_ms(r.try_get("created_at")?),
        started_at: started.map(rfc3339_ms),
        finished_at: r.try_get::<Option<i64>, _>("finished_at")?.map(rfc3339_ms),
        rendition: r.try_get("rendition")?,
        status,
        result: None,
    })
}

pub(crate) async fn get_job(
    db: &AnyPool,
    tenant: Option<&str>,
    id: &str,
    now: i64,
    max_attempts: i64,
) -> Result<Option<Job>> {
    let sql = format!("SELECT {JOB_COLS} FROM jobs WHERE id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(db)
        .await?;
    let Some(r) = row else { return Ok(None) };
    let owner: String = r.try_get("tenant_id")?;
    if tenant.is_some_and(|t| t != owner) {
        return Ok(None);
    }
    Ok(Some(job_from_row(&r, now, max_attempts)?))
}

/// Jobs of a tenant (all tenants for `None`), newest first.
pub(crate) async fn list_jobs(
    db: &AnyPool,
    tenant: Option<&str>,
    status: Option<&str>,
    limit: i64,
    now: i64,
    max_attempts: i64,
) -> Result<Vec<Job>> {
    let sql = format!(
        "SELECT {JOB_COLS} FROM jobs WHERE ($1 IS NULL OR tenant_id = $1) \
         AND ($2 IS NULL OR status = $2) ORDER BY created_at DESC, id DESC LIMIT $3"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(tenant)
        .bind(status)
        .bind(limit)
        .fetch_all(db)
        .await?;
    rows.iter()
        .map(|r| job_from_row(r, now, max_attempts))
        .collect()
}

/// The job's tenant, asset, status and priority, for lifecycle changes.
pub(crate) async fn job_head(
    db: &AnyPool,
    id: &str,
) -> Result<Option<(String, String, String, i64)>> {
    let row = sqlx::query("SELECT tenant_id, asset_id, status, priority FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_optional(db)
        .await?;
    Ok(row.map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))))
}

/// What a worker should do with a delivered job.
pub(crate) enum Start {
    /// Run it: this is attempt n.
    Run(i64),
    /// Already finished, cancelled, or not due: drop the delivery.
    Skip,
    /// Running, and its worker is alive: look again later (it may yet die).
    Busy,
    /// Queued, but cancelled meanwhile: end it as cancelled.
    Cancel,
}

/// When a retried job is due (`None`: now, or no such job).
pub(crate) async fn job_run_after(db: &AnyPool, job_id: &str) -> Result<Option<i64>> {
    let row = sqlx::query("SELECT run_after FROM jobs WHERE id = $1")
        .bind(job_id)
        .fetch_optional(db)
        .await?;
    Ok(match row {
        Some(r) => r.try_get(0)?,
        None => None,
    })
}

/// Mark a job running. A delivery of a job that is finished, or whose retry is not due yet
/// (a stale duplicate), is skipped; a job cancelled while queued ends here.
pub(crate) async fn job_started(
    db: &AnyPool,
    job: &TranscodeJob,
    worker: &str,
    now: i64,
    silent_before: i64,
) -> Result<Start> {
    let mut tx = db.begin().await?;
    let n = sqlx::query(
        "UPDATE jobs SET status = 'running', attempts = attempts + 1, worker_id = $1, \
         progress = 0, started_at = $2, updated_at = $3, run_after = NULL \
         WHERE id = $4 AND (status = 'queued' OR (status = 'running' AND updated_at < $6)) \
         AND cancel_requested = 0 AND (run_after IS NULL OR run_after <= $5 + 1000)",
    )
    .bind(worker)
    .bind(now)
    .bind(now)
    .bind(&job.job_id)
    .bind(now)
    .bind(silent_before)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if n == 0 {
        let row = sqlx::query("SELECT status, cancel_requested FROM jobs WHERE id = $1")
            .bind(&job.job_id)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        let state = row
            .map(|r| -> Result<(String, i64)> { Ok((r.try_get(0)?, r.try_get(1)?)) })
            .transpose()?;
        return Ok(match state.as_ref().map(|(s, c)| (s.as_str(), *c != 0)) {
            // Running, and its worker was heard from lately: not ours to take (yet).
            Some(("running", false)) => Start::Busy,
            // Queued with a cancel request: a cancel that raced a requeue (the request was
            // made while it ran; the worker then gave it back). It ends here, cancelled.
            Some(("queued", true)) => Start::Cancel,
            _ => Start::Skip,
        });
    }
    set_asset_status(
        &mut tx,
        &job.tenant_id,
        &job.asset_id,
        AssetStatus::Processing,
        Only::whole_job(&job.job_id),
        Also {
            progress: Some(0.0),
            error: ErrorChange::Clear,
            ..Also::default()
        },
        now,
    )
    .await?;
    let attempt: i64 = sqlx::query("SELECT attempts FROM jobs WHERE id = $1")
        .bind(&job.job_id)
        .fetch_one(&mut *tx)
        .await?
        .get(0);
    tx.commit().await?;
    Ok(Start::Run(attempt))
}

/// Whether someone asked to cancel this job.
pub(crate) async fn cancel_requested(db: &AnyPool, job_id: &str) -> Result<bool> {
    let v: Option<i64> = sqlx::query("SELECT cancel_requested FROM jobs WHERE id = $1")
        .bind(job_id)
        .fetch_optional(db)
        .await?
        .map(|r| r.get(0));
    Ok(v.unwrap_or(1) != 0)
}

/// Put a job back in the queue. `refund` gives back the attempt (a release at shutdown is
/// not the job's fault).
pub(crate) async fn job_requeued(
    db: &AnyPool,
    job: &TranscodeJob,
    run_after: i64,
    error: Option<&str>,
    refund: bool,
    now: i64,
) -> Result<()> {
    let mut tx = db.begin().await?;
    sqlx::query(
        "UPDATE jobs SET status = 'queued', run_after = $1, error = COALESCE($2, error), \
         attempts = attempts - $3, worker_id = NULL, progress = 0, updated_at = $4, \
         unpushed_since = $4 WHERE id = $5",
    )
    .bind(run_after)
    .bind(error)
    .bind(if refund { 1i64 } else { 0i64 })
    .bind(now)
    .bind(&job.job_id)
    .execute(&mut *tx)
    .await?;
    set_asset_status(
        &mut tx,
        &job.tenant_id,
        &job.asset_id,
        AssetStatus::Queued,
        Only::whole_job(&job.job_id),
        Also {
            progress: Some(0.0),
            ..Also::default()
        },
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// A job ends without output: `status` is failed, cancelled or dead; the asset is failed
/// with `error` for the user.
/// `only_if`: end it only from this status (false, nothing changed, otherwise).
pub(crate) async fn job_ended(
    db: &AnyPool,
    job: &TranscodeJob,
    status: &str,
    error: &str,
    now: i64,
    only_if: Option<&str>,
) -> Result<bool> {
    let mut tx = db.begin().await?;
    let n = sqlx::query(
        "UPDATE jobs SET status = $1, error = $2, finished_at = $3, updated_at = $4, run_after = NULL \
         WHERE id = $5 AND (CAST($6 AS TEXT) IS NULL OR status = $6)",
    )
    .bind(status)
    .bind(error)
    .bind(now)
    .bind(now)
    .bind(&job.job_id)
    .bind(only_if)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if n == 0 {
        tx.rollback().await?;
        return Ok(false);
    }
    set_asset_status(
        &mut tx,
        &job.tenant_id,
        &job.asset_id,
        AssetStatus::Failed,
        Only::whole_job(&job.job_id),
        Also {
            error: ErrorChange::Set(error),
            ..Also::default()
        },
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// Ask a running job to stop; true when the request was recorded.
pub(crate) async fn request_cancel(db: &AnyPool, job_id: &str, now: i64) -> Result<bool> {
    let n = sqlx::query(
        "UPDATE jobs SET cancel_requested = 1, updated_at = $1 WHERE id = $2 AND status = 'running'",
    )
    .bind(now)
    .bind(job_id)
    .execute(db)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Reset a finished job of `tenant` for a re-run.
pub(crate) async fn job_reset(
    db: &AnyPool,
    tenant: &str,
    job_id: &str,
    asset_id: &str,
    now: i64,
) -> Result<bool> {
    let mut tx = db.begin().await?;
    let n = sqlx::query(
        "UPDATE jobs SET status = 'queued', attempts = 0, progress = 0, error = NULL, \
         cancel_requested = 0, run_after = NULL, worker_id = NULL, started_at = NULL, \
         finished_at = NULL, updated_at = $1, unpushed_since = $1 \
         WHERE id = $2 AND status IN ('failed', 'cancelled', 'dead')",
    )
    .bind(now)
    .bind(job_id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if n == 1 {
        set_asset_status(
            &mut tx,
            tenant,
            asset_id,
            AssetStatus::Queued,
            Only::whole_job(job_id),
            Also {
                progress: Some(0.0),
                error: ErrorChange::Clear,
                ..Also::default()
            },
            now,
        )
        .await?;
    }
    tx.commit().await?;
    Ok(n == 1)
}

/// A running job's heartbeat: its worker is alive (see `job_started`).
pub(crate) async fn job_heartbeat(db: &AnyPool, job_id: &str, now: i64) -> Result<()> {
    sqlx::query("UPDATE jobs SET updated_at = $1 WHERE id = $2 AND status = 'running'")
        .bind(now)
        .bind(job_id)
        .execute(db)
        .await?;
    Ok(())
}

/// A running job's progress, shown on the job and on its asset while it is processing.
pub(crate) async fn job_progress(db: &AnyPool, job: &TranscodeJob, p: f64, now: i64) -> Result<()> {
    let mut tx = db.begin().await?;
    sqlx::query(
        "UPDATE jobs SET progress = $1, updated_at = $2 WHERE id = $3 AND status = 'running'",
    )
    .bind(p)
    .bind(now)
    .bind(&job.job_id)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE assets SET progress = $1, updated_at = $2 WHERE id = $3 AND tenant_id = $4 \
         AND status = 'processing'",
    )
    .bind(p)
    .bind(now)
    .bind(&job.asset_id)
    .bind(&job.tenant_id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The job's output is published: the job succeeded and the asset is ready with its
/// renditions.
pub(crate) async fn job_succeeded(
    db: &AnyPool,
    job: &TranscodeJob,
    renditions: &[Rendition],
    duration_s: f64,
    now: i64,
) -> Result<()> {
    let mut tx = db.begin().await?;
    sqlx::query(
        "UPDATE jobs SET status = 'succeeded', progress = 1, error = NULL, finished_at = $1, \
         updated_at = $2 WHERE id = $3",
    )
    .bind(now)
    .bind(now)
    .bind(&job.job_id)
    .execute(&mut *tx)
    .await?;
    set_asset_status(
        &mut tx,
        &job.tenant_id,
        &job.asset_id,
        AssetStatus::Ready,
        Only::any(),
        Also {
            progress: Some(1.0),
            error: ErrorChange::Clear,
            duration_s: Some(duration_s),
            renditions: Some(renditions),
            ..Also::default()
        },
        now,
    )
    .await?;
    // Transcode minutes are counted from the output's real duration, in the same
    // transaction as the success: once per job, whatever crashes around it.
    let ms = (duration_s.max(0.0) * 1000.0).round() as u64;
    super::add_usage(
        &mut *tx,
        &job.tenant_id,
        &crate::quotas::month_of(now),
        0,
        ms,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// What a job runs, as stored at enqueue time: its kind, the preset snapshot (JSON) and
/// the one rendition a re-run remakes.
pub(crate) struct JobSpecRow {
    pub kind: String,
    pub preset: Option<String>,
    pub rendition: Option<String>,
}

pub(crate) async fn job_spec(db: &AnyPool, job_id: &str) -> Result<Option<JobSpecRow>> {
    let row = sqlx::query("SELECT kind, preset, rendition FROM jobs WHERE id = $1")
        .bind(job_id)
        .fetch_optional(db)
        .await?;
    Ok(row.map(|r| JobSpecRow {
        kind: r.get(0),
        preset: r.get(1),
        rendition: r.get(2),
    }))
}

/// Jobs of an asset that are queued or running.
pub(crate) async fn active_jobs_for_asset(db: &AnyPool, asset: &str) -> Result<i64> {
    Ok(sqlx::query(
        "SELECT COUNT(*) FROM jobs WHERE asset_id = $1 AND status IN ('queued', 'running')",
    )
    .bind(asset)
    .fetch_one(db)
    .await?
    .get(0))
}

/// A re-run of one rendition is published: the job succeeded and the asset lists the
/// rendition's new figures (in place of the old entry; the asset stays ready).
pub(crate) async fn rendition_succeeded(
    db: &AnyPool,
    job: &TranscodeJob,
    rendition: &Rendition,
    now: i64,
) -> Result<()> {
    let mut tx = db.begin().await?;
    sqlx::query(
        "UPDATE jobs SET status = 'succeeded', progress = 1, error = NULL, finished_at = $1, \
         updated_at = $2 WHERE id = $3",
    )
    .bind(now)
    .bind(now)
    .bind(&job.job_id)
    .execute(&mut *tx)
    .await?;
    let current: String =
        sqlx::query("SELECT renditions FROM assets WHERE id = $1 AND tenant_id = $2")
            .bind(&job.asset_id)
            .bind(&job.tenant_id)
            .fetch_one(&mut *tx)
            .await?
            .get(0);
    let mut list: Vec<Rendition> = serde_json::from_str(&current).unwrap_or_default();
    match list.iter_mut().find(|r| r.name == rendition.name) {
        Some(r) => *r = rendition.clone(),
        None => list.push(rendition.clone()),
    }
    sqlx::query(
        "UPDATE assets SET renditions = $1, updated_at = $2 WHERE id = $3 AND tenant_id = $4",
    )
    .bind(serde_json::to_string(&list).unwrap_or_else(|_| "[]".into()))
    .bind(now)
    .bind(&job.asset_id)
    .bind(&job.tenant_id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}
