//! SQL for the metadata store. Every query lives here, so a second backend (PostgreSQL)
//! has one file to mirror.

use sqlx::{AnyPool, Row};

use crate::model::{Asset, AssetStatus, Job, Rendition, TranscodeJob, UploadConcat, UploadState};
use crate::{Result, rfc3339_ms};

pub(crate) async fn tenant_for_key(db: &AnyPool, key_hash: &str) -> Result<Option<String>> {
    let row =
        sqlx::query("SELECT tenant_id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL")
            .bind(key_hash)
            .fetch_optional(db)
            .await?;
    Ok(row.map(|r| r.get::<String, _>(0)))
}

pub(crate) async fn insert_tenant(
    db: &AnyPool,
    id: &str,
    name: &str,
    key_hash: &str,
    now: i64,
) -> Result<()> {
    let mut tx = db.begin().await?;
    sqlx::query("INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(name)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO api_keys (key_hash, tenant_id, kind, created_at) VALUES ($1, $2, 'tenant', $3)",
    )
    .bind(key_hash)
    .bind(id)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

const SELECT_ASSET: &str = "SELECT id, tenant_id, status, progress, duration_s, error, \
    filename, size, job_id, renditions, probe, created_at, updated_at FROM assets \
    WHERE id = $1 AND tenant_id = $2 AND hidden = 0";

fn asset_from_row(r: &sqlx::any::AnyRow) -> Result<Asset> {
    let status: String = r.try_get("status")?;
    let renditions: String = r.try_get("renditions")?;
    let probe: Option<String> = r.try_get("probe")?;
    Ok(Asset {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        status: AssetStatus::parse(&status).unwrap_or(AssetStatus::Failed),
        progress: r.try_get("progress")?,
        duration_s: r.try_get("duration_s")?,
        error: r.try_get("error")?,
        filename: r.try_get("filename")?,
        size: r.try_get::<Option<i64>, _>("size")?.map(|s| s as u64),
        job_id: r.try_get("job_id")?,
        renditions: serde_json::from_str::<Vec<Rendition>>(&renditions).unwrap_or_default(),
        probe: probe.and_then(|p| serde_json::from_str(&p).ok()),
        created_at: rfc3339_ms(r.try_get("created_at")?),
        updated_at: rfc3339_ms(r.try_get("updated_at")?),
    })
}

pub(crate) async fn get_asset(db: &AnyPool, tenant: &str, id: &str) -> Result<Option<Asset>> {
    let row = sqlx::query(SELECT_ASSET)
        .bind(id)
        .bind(tenant)
        .fetch_optional(db)
        .await?;
    row.as_ref().map(asset_from_row).transpose()
}

/// A new upload session and its asset.
pub(crate) struct NewUpload<'a> {
    pub tenant: &'a str,
    pub asset: &'a str,
    /// `None`: deferred (tus creation-defer-length).
    pub length: Option<u64>,
    pub concat: &'a UploadConcat,
    pub metadata: Option<&'a str>,
    pub filename: Option<&'a str>,
    pub now: i64,
    pub expires_at: i64,
}

/// Create an asset in `uploading` and its upload session, atomically. A partial upload's
/// asset is hidden: it exists only to hold the session until a final upload consumes it.
pub(crate) async fn insert_upload(db: &AnyPool, u: NewUpload<'_>) -> Result<()> {
    let NewUpload {
        tenant,
        asset,
        length,
        concat,
        metadata,
        filename,
        now,
        expires_at,
    } = u;
    let hidden = i64::from(*concat == UploadConcat::Partial);
    let mut tx = db.begin().await?;
    sqlx::query(
        "INSERT INTO assets (id, tenant_id, status, filename, size, created_at, updated_at, \
         hidden) VALUES ($1, $2, 'uploading', $3, $4, $5, $6, $7)",
    )
    .bind(asset)
    .bind(tenant)
    .bind(filename)
    .bind(length.map(|l| l as i64))
    .bind(now)
    .bind(now)
    .bind(hidden)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO uploads (asset_id, tenant_id, length, \"offset\", metadata, created_at, \
         expires_at, length_deferred, concat) VALUES ($1, $2, $3, 0, $4, $5, $6, $7, $8)",
    )
    .bind(asset)
    .bind(tenant)
    .bind(length.unwrap_or(0) as i64)
    .bind(metadata)
    .bind(now)
    .bind(expires_at)
    .bind(i64::from(length.is_none()))
    .bind(concat.to_db())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The upload's state, and whether it is complete.
pub(crate) async fn get_upload(
    db: &AnyPool,
    tenant: &str,
    asset: &str,
) -> Result<Option<(UploadState, bool)>> {
    let row = sqlx::query(
        "SELECT length, \"offset\", metadata, completed_at, expires_at, length_deferred, \
         concat FROM uploads WHERE asset_id = $1 AND tenant_id = $2",
    )
    .bind(asset)
    .bind(tenant)
    .fetch_optional(db)
    .await?;
    let Some(r) = row else { return Ok(None) };
    Ok(Some((
        UploadState {
            length: (r.try_get::<i64, _>("length_deferred")? == 0)
                .then_some(r.try_get::<i64, _>("length")? as u64),
            offset: r.try_get::<i64, _>("offset")? as u64,
            metadata: r.try_get("metadata")?,
            expires_at: r.try_get("expires_at")?,
            concat: UploadConcat::from_db(r.try_get::<Option<String>, _>("concat")?.as_deref()),
        },
        r.try_get::<Option<i64>, _>("completed_at")?.is_some(),
    )))
}

pub(crate) async fn set_upload_offset(
    db: &AnyPool,
    asset: &str,
    offset: u64,
    expires_at: i64,
) -> Result<()> {
    sqlx::query("UPDATE uploads SET \"offset\" = $1, expires_at = $2 WHERE asset_id = $3")
        .bind(offset as i64)
        .bind(expires_at)
        .bind(asset)
        .execute(db)
        .await?;
    Ok(())
}

/// A deferred length becomes known (once): on the session and as the asset's size.
pub(crate) async fn set_upload_length(db: &AnyPool, asset: &str, length: u64) -> Result<()> {
    let mut tx = db.begin().await?;
    sqlx::query("UPDATE uploads SET length = $1, length_deferred = 0 WHERE asset_id = $2")
        .bind(length as i64)
        .bind(asset)
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE assets SET size = $1 WHERE id = $2")
        .bind(length as i64)
        .bind(asset)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// A final upload's bytes are assembled: record its full offset and delete the partial
/// uploads it consumed (their sessions and hidden assets), atomically.
pub(crate) async fn consume_partials(
    db: &AnyPool,
    tenant: &str,
    final_asset: &str,
    length: u64,
    partials: &[String],
) -> Result<()> {
    let mut tx = db.begin().await?;
    sqlx::query("UPDATE uploads SET \"offset\" = $1 WHERE asset_id = $2")
        .bind(length as i64)
        .bind(final_asset)
        .execute(&mut *tx)
        .await?;
    for p in partials {
        sqlx::query(
            "DELETE FROM uploads WHERE asset_id = $1 AND tenant_id = $2 AND concat = 'partial'",
        )
        .bind(p)
        .bind(tenant)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM assets WHERE id = $1 AND tenant_id = $2 AND hidden = 1")
            .bind(p)
            .bind(tenant)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The last byte is stored: close the upload, queue the asset and record its job.
pub(crate) async fn complete_upload(
    db: &AnyPool,
    asset: &str,
    job_id: &str,
    now: i64,
) -> Result<()> {
    let mut tx = db.begin().await?;
    sqlx::query("UPDATE uploads SET completed_at = $1, expires_at = NULL WHERE asset_id = $2")
        .bind(now)
        .bind(asset)
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE assets SET status = 'queued', job_id = $1, updated_at = $2 WHERE id = $3")
        .bind(job_id)
        .bind(now)
        .bind(asset)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Terminate an unfinished upload: the asset and its session disappear.
pub(crate) async fn delete_upload(db: &AnyPool, asset: &str) -> Result<()> {
    let mut tx = db.begin().await?;
    sqlx::query("DELETE FROM uploads WHERE asset_id = $1")
        .bind(asset)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM assets WHERE id = $1 AND status = 'uploading'")
        .bind(asset)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

pub(crate) async fn insert_job(
    db: &AnyPool,
    id: &str,
    tenant: &str,
    asset: &str,
    kind: &str,
    priority: i64,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO jobs (id, tenant_id, asset_id, kind, status, priority, created_at, \
         updated_at) VALUES ($1, $2, $3, $4, 'queued', $5, $6, $7)",
    )
    .bind(id)
    .bind(tenant)
    .bind(asset)
    .bind(kind)
    .bind(priority)
    .bind(now)
    .bind(now)
    .execute(db)
    .await?;
    Ok(())
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
    worker_id, error, run_after, cancel_requested, created_at, started_at, finished_at";

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
        status,
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
}

/// Mark a job running. A delivery of a job that is finished, or whose retry is not due yet
/// (a stale duplicate), is skipped; a job cancelled while queued ends here.
pub(crate) async fn job_started(
    db: &AnyPool,
    job: &TranscodeJob,
    worker: &str,
    now: i64,
) -> Result<Start> {
    let mut tx = db.begin().await?;
    let n = sqlx::query(
        "UPDATE jobs SET status = 'running', attempts = attempts + 1, worker_id = $1, \
         progress = 0, started_at = $2, updated_at = $3, run_after = NULL \
         WHERE id = $4 AND status IN ('queued', 'running') AND cancel_requested = 0 \
         AND (run_after IS NULL OR run_after <= $5 + 1000)",
    )
    .bind(worker)
    .bind(now)
    .bind(now)
    .bind(&job.job_id)
    .bind(now)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if n == 0 {
        tx.commit().await?;
        return Ok(Start::Skip);
    }
    sqlx::query(
        "UPDATE assets SET status = 'processing', progress = 0, error = NULL, updated_at = $1 \
         WHERE id = $2",
    )
    .bind(now)
    .bind(&job.asset_id)
    .execute(&mut *tx)
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
         attempts = attempts - $3, worker_id = NULL, progress = 0, updated_at = $4 WHERE id = $5",
    )
    .bind(run_after)
    .bind(error)
    .bind(if refund { 1i64 } else { 0i64 })
    .bind(now)
    .bind(&job.job_id)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE assets SET status = 'queued', progress = 0, updated_at = $1 WHERE id = $2")
        .bind(now)
        .bind(&job.asset_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// A job ends without output: `status` is failed, cancelled or dead; the asset is failed
/// with `error` for the user.
pub(crate) async fn job_ended(
    db: &AnyPool,
    job_id: &str,
    asset_id: &str,
    status: &str,
    error: &str,
    now: i64,
) -> Result<()> {
    let mut tx = db.begin().await?;
    sqlx::query(
        "UPDATE jobs SET status = $1, error = $2, finished_at = $3, updated_at = $4, run_after = NULL \
         WHERE id = $5",
    )
    .bind(status)
    .bind(error)
    .bind(now)
    .bind(now)
    .bind(job_id)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE assets SET status = 'failed', error = $1, updated_at = $2 WHERE id = $3")
        .bind(error)
        .bind(now)
        .bind(asset_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
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

/// Reset a finished job for a re-run.
pub(crate) async fn job_reset(
    db: &AnyPool,
    job_id: &str,
    asset_id: &str,
    now: i64,
) -> Result<bool> {
    let mut tx = db.begin().await?;
    let n = sqlx::query(
        "UPDATE jobs SET status = 'queued', attempts = 0, progress = 0, error = NULL, \
         cancel_requested = 0, run_after = NULL, worker_id = NULL, started_at = NULL, \
         finished_at = NULL, updated_at = $1 \
         WHERE id = $2 AND status IN ('failed', 'cancelled', 'dead')",
    )
    .bind(now)
    .bind(job_id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if n == 1 {
        sqlx::query(
            "UPDATE assets SET status = 'queued', progress = 0, error = NULL, updated_at = $1 \
             WHERE id = $2",
        )
        .bind(now)
        .bind(asset_id)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(n == 1)
}

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
        "UPDATE assets SET progress = $1, updated_at = $2 WHERE id = $3 AND status = 'processing'",
    )
    .bind(p)
    .bind(now)
    .bind(&job.asset_id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

pub(crate) async fn asset_probed(
    db: &AnyPool,
    job: &TranscodeJob,
    duration_s: f64,
    probe: &serde_json::Value,
    now: i64,
) -> Result<()> {
    sqlx::query("UPDATE assets SET duration_s = $1, probe = $2, updated_at = $3 WHERE id = $4")
        .bind(duration_s)
        .bind(probe.to_string())
        .bind(now)
        .bind(&job.asset_id)
        .execute(db)
        .await?;
    Ok(())
}

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
    sqlx::query(
        "UPDATE assets SET status = 'ready', progress = 1, error = NULL, duration_s = $1, \
         renditions = $2, updated_at = $3 WHERE id = $4",
    )
    .bind(duration_s)
    .bind(serde_json::to_string(renditions).unwrap_or_else(|_| "[]".into()))
    .bind(now)
    .bind(&job.asset_id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// A shared setting, created with `value` by whichever process asks first.
pub(crate) async fn setting_or_insert(db: &AnyPool, key: &str, value: &str) -> Result<String> {
    sqlx::query("INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
        .bind(key)
        .bind(value)
        .execute(db)
        .await?;
    Ok(sqlx::query("SELECT value FROM settings WHERE key = $1")
        .bind(key)
        .fetch_one(db)
        .await?
        .get(0))
}

/// Take (or renew) the write lease of an upload for `owner` until `until`. False when
/// another writer holds an unexpired lease.
pub(crate) async fn lease_upload(
    db: &AnyPool,
    asset: &str,
    owner: &str,
    now: i64,
    until: i64,
) -> Result<bool> {
    let n = sqlx::query(
        "UPDATE uploads SET lock_owner = $1, lock_until = $2 WHERE asset_id = $3 \
         AND (lock_owner IS NULL OR lock_owner = $1 OR lock_until < $4)",
    )
    .bind(owner)
    .bind(until)
    .bind(asset)
    .bind(now)
    .execute(db)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Give the lease back (only if still ours).
pub(crate) async fn release_upload(db: &AnyPool, asset: &str, owner: &str) -> Result<()> {
    sqlx::query(
        "UPDATE uploads SET lock_owner = NULL, lock_until = NULL WHERE asset_id = $1 AND lock_owner = $2",
    )
    .bind(asset)
    .bind(owner)
    .execute(db)
    .await?;
    Ok(())
}

/// Unfinished uploads past their expiry: (asset, tenant).
pub(crate) async fn expired_uploads(
    db: &AnyPool,
    now: i64,
    limit: i64,
) -> Result<Vec<(String, String)>> {
    let rows = sqlx::query(
        "SELECT asset_id, tenant_id FROM uploads WHERE completed_at IS NULL \
         AND expires_at IS NOT NULL AND expires_at < $1 ORDER BY expires_at LIMIT $2",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}
