//! SQL for the metadata store. Every query lives here, so a second backend (PostgreSQL)
//! has one file to mirror.

use sqlx::{Row, SqlitePool};

use crate::model::{Asset, AssetStatus, Job, Rendition, TranscodeJob, UploadState};
use crate::{Result, rfc3339_ms};

pub(crate) async fn tenant_for_key(db: &SqlitePool, key_hash: &str) -> Result<Option<String>> {
    let row = sqlx::query(
        "SELECT tenant_id FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL",
    )
    .bind(key_hash)
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| r.get::<String, _>(0)))
}

pub(crate) async fn insert_tenant(
    db: &SqlitePool,
    id: &str,
    name: &str,
    key_hash: &str,
    now: i64,
) -> Result<()> {
    let mut tx = db.begin().await?;
    sqlx::query("INSERT INTO tenants (id, name, created_at) VALUES (?, ?, ?)")
        .bind(id)
        .bind(name)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO api_keys (key_hash, tenant_id, kind, created_at) VALUES (?, ?, 'tenant', ?)",
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
    WHERE id = ? AND tenant_id = ?";

fn asset_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<Asset> {
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

pub(crate) async fn get_asset(db: &SqlitePool, tenant: &str, id: &str) -> Result<Option<Asset>> {
    let row = sqlx::query(SELECT_ASSET)
    .bind(id)
    .bind(tenant)
    .fetch_optional(db)
    .await?;
    row.as_ref().map(asset_from_row).transpose()
}

/// Create an asset in `uploading` and its upload session, atomically.
pub(crate) async fn insert_upload(
    db: &SqlitePool,
    tenant: &str,
    asset: &str,
    length: u64,
    metadata: Option<&str>,
    filename: Option<&str>,
    now: i64,
) -> Result<()> {
    let mut tx = db.begin().await?;
    sqlx::query(
        "INSERT INTO assets (id, tenant_id, status, filename, size, created_at, updated_at) \
         VALUES (?, ?, 'uploading', ?, ?, ?, ?)",
    )
    .bind(asset)
    .bind(tenant)
    .bind(filename)
    .bind(length as i64)
    .bind(now)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO uploads (asset_id, tenant_id, length, \"offset\", metadata, created_at) \
         VALUES (?, ?, ?, 0, ?, ?)",
    )
    .bind(asset)
    .bind(tenant)
    .bind(length as i64)
    .bind(metadata)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The upload's state, and whether it is complete.
pub(crate) async fn get_upload(
    db: &SqlitePool,
    tenant: &str,
    asset: &str,
) -> Result<Option<(UploadState, bool)>> {
    let row = sqlx::query(
        "SELECT length, \"offset\", metadata, completed_at FROM uploads \
         WHERE asset_id = ? AND tenant_id = ?",
    )
    .bind(asset)
    .bind(tenant)
    .fetch_optional(db)
    .await?;
    let Some(r) = row else { return Ok(None) };
    Ok(Some((
        UploadState {
            length: r.try_get::<i64, _>("length")? as u64,
            offset: r.try_get::<i64, _>("offset")? as u64,
            metadata: r.try_get("metadata")?,
        },
        r.try_get::<Option<i64>, _>("completed_at")?.is_some(),
    )))
}

pub(crate) async fn set_upload_offset(db: &SqlitePool, asset: &str, offset: u64) -> Result<()> {
    sqlx::query("UPDATE uploads SET \"offset\" = ? WHERE asset_id = ?")
        .bind(offset as i64)
        .bind(asset)
        .execute(db)
        .await?;
    Ok(())
}

/// The last byte is stored: close the upload, queue the asset and record its job.
pub(crate) async fn complete_upload(
    db: &SqlitePool,
    asset: &str,
    job_id: &str,
    now: i64,
) -> Result<()> {
    let mut tx = db.begin().await?;
    sqlx::query("UPDATE uploads SET completed_at = ? WHERE asset_id = ?")
        .bind(now)
        .bind(asset)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "UPDATE assets SET status = 'queued', job_id = ?, updated_at = ? WHERE id = ?",
    )
    .bind(job_id)
    .bind(now)
    .bind(asset)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Terminate an unfinished upload: the asset and its session disappear.
pub(crate) async fn delete_upload(db: &SqlitePool, asset: &str) -> Result<()> {
    let mut tx = db.begin().await?;
    sqlx::query("DELETE FROM uploads WHERE asset_id = ?")
        .bind(asset)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM assets WHERE id = ? AND status = 'uploading'")
        .bind(asset)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

pub(crate) async fn insert_job(
    db: &SqlitePool,
    id: &str,
    tenant: &str,
    asset: &str,
    kind: &str,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO jobs (id, tenant_id, asset_id, kind, status, created_at, updated_at) \
         VALUES (?, ?, ?, ?, 'queued', ?, ?)",
    )
    .bind(id)
    .bind(tenant)
    .bind(asset)
    .bind(kind)
    .bind(now)
    .bind(now)
    .execute(db)
    .await?;
    Ok(())
}

pub(crate) async fn get_job(db: &SqlitePool, tenant: Option<&str>, id: &str) -> Result<Option<Job>> {
    let row = sqlx::query(
        "SELECT id, tenant_id, asset_id, kind, status, progress, attempts, worker_id, error, \
         created_at, started_at, finished_at FROM jobs WHERE id = ?",
    )
    .bind(id)
    .fetch_optional(db)
    .await?;
    let Some(r) = row else { return Ok(None) };
    let owner: String = r.try_get("tenant_id")?;
    if tenant.is_some_and(|t| t != owner) {
        return Ok(None);
    }
    Ok(Some(Job {
        id: r.try_get("id")?,
        asset_id: r.try_get("asset_id")?,
        kind: r.try_get("kind")?,
        status: r.try_get("status")?,
        progress: r.try_get("progress")?,
        attempts: r.try_get("attempts")?,
        worker_id: r.try_get("worker_id")?,
        error: r.try_get("error")?,
        created_at: rfc3339_ms(r.try_get("created_at")?),
        started_at: r.try_get::<Option<i64>, _>("started_at")?.map(rfc3339_ms),
        finished_at: r.try_get::<Option<i64>, _>("finished_at")?.map(rfc3339_ms),
    }))
}

/// Mark a job running and return its attempt number; `None` when it already finished
/// (redelivered after a crash).
pub(crate) async fn job_started(
    db: &SqlitePool,
    job: &TranscodeJob,
    worker: &str,
    now: i64,
) -> Result<Option<i64>> {
    let mut tx = db.begin().await?;
    let n = sqlx::query(
        "UPDATE jobs SET status = 'running', attempts = attempts + 1, worker_id = ?, \
         progress = 0, started_at = ?, updated_at = ? \
         WHERE id = ? AND status IN ('queued', 'running')",
    )
    .bind(worker)
    .bind(now)
    .bind(now)
    .bind(&job.job_id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let mut attempt = None;
    if n == 1 {
        sqlx::query(
            "UPDATE assets SET status = 'processing', progress = 0, error = NULL, updated_at = ? \
             WHERE id = ?",
        )
        .bind(now)
        .bind(&job.asset_id)
        .execute(&mut *tx)
        .await?;
        attempt = Some(
            sqlx::query("SELECT attempts FROM jobs WHERE id = ?")
                .bind(&job.job_id)
                .fetch_one(&mut *tx)
                .await?
                .get::<i64, _>(0),
        );
    }
    tx.commit().await?;
    Ok(attempt)
}

pub(crate) async fn job_progress(
    db: &SqlitePool,
    job: &TranscodeJob,
    p: f64,
    now: i64,
) -> Result<()> {
    let mut tx = db.begin().await?;
    sqlx::query("UPDATE jobs SET progress = ?, updated_at = ? WHERE id = ? AND status = 'running'")
        .bind(p)
        .bind(now)
        .bind(&job.job_id)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "UPDATE assets SET progress = ?, updated_at = ? WHERE id = ? AND status = 'processing'",
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
    db: &SqlitePool,
    job: &TranscodeJob,
    duration_s: f64,
    probe: &serde_json::Value,
    now: i64,
) -> Result<()> {
    sqlx::query("UPDATE assets SET duration_s = ?, probe = ?, updated_at = ? WHERE id = ?")
        .bind(duration_s)
        .bind(probe.to_string())
        .bind(now)
        .bind(&job.asset_id)
        .execute(db)
        .await?;
    Ok(())
}

pub(crate) async fn job_succeeded(
    db: &SqlitePool,
    job: &TranscodeJob,
    renditions: &[Rendition],
    duration_s: f64,
    now: i64,
) -> Result<()> {
    let mut tx = db.begin().await?;
    sqlx::query(
        "UPDATE jobs SET status = 'succeeded', progress = 1, error = NULL, finished_at = ?, \
         updated_at = ? WHERE id = ?",
    )
    .bind(now)
    .bind(now)
    .bind(&job.job_id)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE assets SET status = 'ready', progress = 1, error = NULL, duration_s = ?, \
         renditions = ?, updated_at = ? WHERE id = ?",
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

pub(crate) async fn job_failed(
    db: &SqlitePool,
    job: &TranscodeJob,
    error: &str,
    now: i64,
) -> Result<()> {
    let mut tx = db.begin().await?;
    sqlx::query(
        "UPDATE jobs SET status = 'failed', error = ?, finished_at = ?, updated_at = ? WHERE id = ?",
    )
    .bind(error)
    .bind(now)
    .bind(now)
    .bind(&job.job_id)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE assets SET status = 'failed', error = ?, updated_at = ? WHERE id = ?")
        .bind(error)
        .bind(now)
        .bind(&job.asset_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}
