//! The rows of store migrations (`migration_jobs`, `migration_objects`, `migration_parts`,
//! migration 0018). Every state change is conditional on the state it leaves, so a step
//! replayed after a crash changes nothing.

use sqlx::{AnyPool, Row};

use crate::Result;

/// A migration job's row.
#[derive(Debug, Clone)]
pub(crate) struct JobRow {
    pub id: String,
    pub tenant_id: Option<String>,
    pub from_store: String,
    pub to_store: String,
    pub delete_source: bool,
    pub verify_full: bool,
    pub status: String,
    pub objects_total: u64,
    pub bytes_total: u64,
    pub planned: bool,
    pub attempts: i64,
    pub error: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

/// One object of a migration.
#[derive(Debug, Clone)]
pub(crate) struct ObjectRow {
    pub tenant_id: String,
    pub asset_id: String,
    pub key: String,
    pub size: u64,
    pub state: String,
    pub upload_id: Option<String>,
    pub md5: Option<String>,
}

/// One completed part of a multipart copy.
#[derive(Debug, Clone)]
pub(crate) struct PartRow {
    pub number: u32,
    pub size: u64,
    pub md5: String,
    pub etag: String,
}

fn u(n: i64) -> u64 {
    n.max(0) as u64
}

pub(crate) fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

const JOB_COLS: &str = "id, tenant_id, from_store, to_store, delete_source, verify_full, \
    status, objects_total, bytes_total, planned, attempts, error, created_at, started_at, \
    finished_at";

fn job_from(r: &sqlx::any::AnyRow) -> Result<JobRow> {
    Ok(JobRow {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        from_store: r.try_get("from_store")?,
        to_store: r.try_get("to_store")?,
        delete_source: r.try_get::<i64, _>("delete_source")? != 0,
        verify_full: r.try_get::<i64, _>("verify_full")? != 0,
        status: r.try_get("status")?,
        objects_total: u(r.try_get("objects_total")?),
        bytes_total: u(r.try_get("bytes_total")?),
        planned: r.try_get::<i64, _>("planned")? != 0,
        attempts: r.try_get("attempts")?,
        error: r.try_get("error")?,
        created_at: r.try_get("created_at")?,
        started_at: r.try_get("started_at")?,
        finished_at: r.try_get("finished_at")?,
    })
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn insert_job(
    db: &AnyPool,
    id: &str,
    tenant: Option<&str>,
    from: &str,
    to: &str,
    delete_source: bool,
    verify_full: bool,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO migration_jobs (id, tenant_id, from_store, to_store, delete_source, \
         verify_full, status, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, 'queued', $7, $7)",
    )
    .bind(id)
    .bind(tenant)
    .bind(from)
    .bind(to)
    .bind(i64::from(delete_source))
    .bind(i64::from(verify_full))
    .bind(now)
    .execute(db)
    .await?;
    Ok(())
}

pub(crate) async fn get_job(db: &AnyPool, id: &str) -> Result<Option<JobRow>> {
    let sql = format!("SELECT {JOB_COLS} FROM migration_jobs WHERE id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(db)
        .await?;
    row.as_ref().map(job_from).transpose()
}

/// Take the oldest job that is queued, or running under a worker silent since
/// `silent_before` (it died): returns its row, now running under `worker`.
pub(crate) async fn claim_job(
    db: &AnyPool,
    worker: &str,
    now: i64,
    silent_before: i64,
) -> Result<Option<JobRow>> {
    let candidates = sqlx::query(
        "SELECT id FROM migration_jobs WHERE status = 'queued' \
         OR (status = 'running' AND (heartbeat_at IS NULL OR heartbeat_at < $1)) \
         ORDER BY created_at, id LIMIT 5",
    )
    .bind(silent_before)
    .fetch_all(db)
    .await?;
    for c in candidates {
        let id: String = c.try_get(0)?;
        let took = sqlx::query(
            "UPDATE migration_jobs SET status = 'running', worker_id = $1, heartbeat_at = $2, \
             attempts = attempts + 1, started_at = COALESCE(started_at, $2), updated_at = $2 \
             WHERE id = $3 AND (status = 'queued' OR (status = 'running' AND \
             (heartbeat_at IS NULL OR heartbeat_at < $4)))",
        )
        .bind(worker)
        .bind(now)
        .bind(&id)
        .bind(silent_before)
        .execute(db)
        .await?
        .rows_affected();
        if took == 1 {
            return get_job(db, &id).await;
        }
    }
    Ok(None)
}

pub(crate) async fn heartbeat(db: &AnyPool, id: &str, worker: &str, now: i64) -> Result<()> {
    sqlx::query(
        "UPDATE migration_jobs SET heartbeat_at = $1 WHERE id = $2 AND worker_id = $3 \
         AND status = 'running'",
    )
    .bind(now)
    .bind(id)
    .bind(worker)
    .execute(db)
    .await?;
    Ok(())
}

pub(crate) async fn finish_job(
    db: &AnyPool,
    id: &str,
    status: &str,
    error: Option<&str>,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE migration_jobs SET status = $1, error = $2, finished_at = $3, updated_at = $3 \
         WHERE id = $4 AND status = 'running'",
    )
    .bind(status)
    .bind(error)
    .bind(now)
    .bind(id)
    .execute(db)
    .await?;
    Ok(())
}

/// The assets that have an active copy in `store` (of `tenant`, if given): (tenant, asset,
/// tier).
pub(crate) async fn copies_in_store(
    db: &AnyPool,
    store: &str,
    tenant: Option<&str>,
) -> Result<Vec<(String, String, String)>> {
    let rows = sqlx::query(
        "SELECT tenant_id, asset_id, tier FROM asset_copies WHERE store = $1 \
         AND state = 'active' AND ($2 IS NULL OR tenant_id = $2) ORDER BY tenant_id, asset_id",
    )
    .bind(store)
    .bind(tenant)
    .fetch_all(db)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .collect()
}

/// Record the plan: one row per object (a replay inserts nothing twice), then the totals.
pub(crate) async fn record_plan(
    db: &AnyPool,
    job: &str,
    objects: &[(String, String, String, u64)],
    now: i64,
) -> Result<()> {
    let mut tx = db.begin().await?;
    let (mut n, mut bytes) = (0u64, 0u64);
    for (tenant, asset, key, size) in objects {
        sqlx::query(
            "INSERT INTO migration_objects (job_id, tenant_id, asset_id, obj_key, size, state, \
             updated_at) VALUES ($1, $2, $3, $4, $5, 'planned', $6) \
             ON CONFLICT (job_id, obj_key) DO NOTHING",
        )
        .bind(job)
        .bind(tenant)
        .bind(asset)
        .bind(key)
        .bind(signed(*size))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        n += 1;
        bytes = bytes.saturating_add(*size);
    }
    sqlx::query(
        "UPDATE migration_jobs SET planned = 1, objects_total = $1, bytes_total = $2, \
         updated_at = $3 WHERE id = $4",
    )
    .bind(signed(n))
    .bind(signed(bytes))
    .bind(now)
    .bind(job)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

pub(crate) async fn objects(db: &AnyPool, job: &str) -> Result<Vec<ObjectRow>> {
    let rows = sqlx::query(
        "SELECT tenant_id, asset_id, obj_key, size, state, upload_id, md5 \
         FROM migration_objects WHERE job_id = $1 ORDER BY tenant_id, asset_id, obj_key",
    )
    .bind(job)
    .fetch_all(db)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(ObjectRow {
                tenant_id: r.try_get(0)?,
                asset_id: r.try_get(1)?,
                key: r.try_get(2)?,
                size: u(r.try_get(3)?),
                state: r.try_get(4)?,
                upload_id: r.try_get(5)?,
                md5: r.try_get(6)?,
            })
        })
        .collect()
}

/// Switch an object's state `from` → `to`; false when it was not in `from`.
pub(crate) async fn set_state(
    db: &AnyPool,
    job: &str,
    key: &str,
    from: &str,
    to: &str,
    now: i64,
) -> Result<bool> {
    Ok(sqlx::query(
        "UPDATE migration_objects SET state = $1, updated_at = $2 \
         WHERE job_id = $3 AND obj_key = $4 AND state = $5",
    )
    .bind(to)
    .bind(now)
    .bind(job)
    .bind(key)
    .bind(from)
    .execute(db)
    .await?
    .rows_affected()
        == 1)
}

/// A single-request copy was stored (or found in place, `skipped`): `planned` → `copied`
/// with the content MD5 (`sent` is counted by [`note_send`] before the send: 0 here).
pub(crate) async fn object_copied(
    db: &AnyPool,
    job: &str,
    key: &str,
    md5: &str,
    sent: u64,
    skipped: bool,
    now: i64,
) -> Result<bool> {
    Ok(sqlx::query(
        "UPDATE migration_objects SET state = 'copied', md5 = $1, skipped = $2, \
         bytes_sent = bytes_sent + $3, updated_at = $4 \
         WHERE job_id = $5 AND obj_key = $6 AND state = 'planned'",
    )
    .bind(md5)
    .bind(i64::from(skipped))
    .bind(signed(sent))
    .bind(now)
    .bind(job)
    .bind(key)
    .execute(db)
    .await?
    .rows_affected()
        == 1)
}

/// A multipart upload was opened for the object: `planned` → `copying` with its id.
pub(crate) async fn upload_opened(
    db: &AnyPool,
    job: &str,
    key: &str,
    upload: &str,
    now: i64,
) -> Result<bool> {
    Ok(sqlx::query(
        "UPDATE migration_objects SET state = 'copying', upload_id = $1, updated_at = $2 \
         WHERE job_id = $3 AND obj_key = $4 AND state = 'planned'",
    )
    .bind(upload)
    .bind(now)
    .bind(job)
    .bind(key)
    .execute(db)
    .await?
    .rows_affected()
        == 1)
}

/// The recorded upload is gone from the target (aborted behind our back): start over.
pub(crate) async fn upload_lost(db: &AnyPool, job: &str, key: &str, now: i64) -> Result<()> {
    let mut tx = db.begin().await?;
    sqlx::query("DELETE FROM migration_parts WHERE job_id = $1 AND obj_key = $2")
        .bind(job)
        .bind(key)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "UPDATE migration_objects SET state = 'planned', upload_id = NULL, updated_at = $1 \
         WHERE job_id = $2 AND obj_key = $3 AND state = 'copying'",
    )
    .bind(now)
    .bind(job)
    .bind(key)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Checkpoint one part: recorded once (a replay of the same part records nothing), the
/// bytes sent counted with it.
pub(crate) async fn record_part(
    db: &AnyPool,
    job: &str,
    key: &str,
    upload: &str,
    part: &PartRow,
) -> Result<()> {
    let mut tx = db.begin().await?;
    let added = sqlx::query(
        "INSERT INTO migration_parts (job_id, obj_key, part_number, size, md5, etag, upload_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (job_id, obj_key, part_number) DO NOTHING",
    )
    .bind(job)
    .bind(key)
    .bind(i64::from(part.number))
    .bind(signed(part.size))
    .bind(&part.md5)
    .bind(&part.etag)
    .bind(upload)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let _ = added;
    tx.commit().await?;
    Ok(())
}

/// Count `bytes` about to be sent for an object, before the send: a send cut by a crash
/// is counted too, so `bytes_sent − bytes_copied` is what resuming cost.
pub(crate) async fn note_send(db: &AnyPool, job: &str, key: &str, bytes: u64) -> Result<()> {
    sqlx::query(
        "UPDATE migration_objects SET bytes_sent = bytes_sent + $1 \
         WHERE job_id = $2 AND obj_key = $3",
    )
    .bind(signed(bytes))
    .bind(job)
    .bind(key)
    .execute(db)
    .await?;
    Ok(())
}

/// The completed parts of an object's multipart copy, in order.
pub(crate) async fn parts(db: &AnyPool, job: &str, key: &str) -> Result<Vec<PartRow>> {
    let rows = sqlx::query(
        "SELECT part_number, size, md5, etag FROM migration_parts \
         WHERE job_id = $1 AND obj_key = $2 ORDER BY part_number",
    )
    .bind(job)
    .bind(key)
    .fetch_all(db)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(PartRow {
                number: u32::try_from(r.try_get::<i64, _>(0)?).unwrap_or(u32::MAX),
                size: u(r.try_get(1)?),
                md5: r.try_get(2)?,
                etag: r.try_get(3)?,
            })
        })
        .collect()
}

/// A multipart copy was completed: `copying` → `copied` with the target's ETag.
pub(crate) async fn upload_completed(
    db: &AnyPool,
    job: &str,
    key: &str,
    etag: &str,
    now: i64,
) -> Result<bool> {
    Ok(sqlx::query(
        "UPDATE migration_objects SET state = 'copied', etag = $1, updated_at = $2 \
         WHERE job_id = $3 AND obj_key = $4 AND state = 'copying'",
    )
    .bind(etag)
    .bind(now)
    .bind(job)
    .bind(key)
    .execute(db)
    .await?
    .rows_affected()
        == 1)
}

pub(crate) async fn object_failed(
    db: &AnyPool,
    job: &str,
    key: &str,
    reason: &str,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE migration_objects SET state = 'failed', error = $1, updated_at = $2 \
         WHERE job_id = $3 AND obj_key = $4",
    )
    .bind(reason)
    .bind(now)
    .bind(job)
    .bind(key)
    .execute(db)
    .await?;
    Ok(())
}

/// The figures of a job, from its object rows.
#[derive(Debug, Clone, Default)]
pub(crate) struct Figures {
    pub objects_done: u64,
    pub bytes_done: u64,
    pub objects_copied: u64,
    pub objects_skipped: u64,
    pub objects_verified: u64,
    pub bytes_copied: u64,
    pub bytes_sent: u64,
    pub failed: Vec<(String, String)>,
}

pub(crate) async fn figures(db: &AnyPool, job: &str) -> Result<Figures> {
    let r = sqlx::query(
        "SELECT \
           COALESCE(SUM(CASE WHEN state IN ('verified','switched','done') THEN 1 ELSE 0 END), 0), \
           COALESCE(SUM(CASE WHEN state IN ('verified','switched','done') THEN size ELSE 0 END), 0), \
           COALESCE(SUM(CASE WHEN state IN ('verified','switched','done') AND skipped = 0 \
                        THEN 1 ELSE 0 END), 0), \
           COALESCE(SUM(CASE WHEN state IN ('verified','switched','done') AND skipped = 1 \
                        THEN 1 ELSE 0 END), 0), \
           COALESCE(SUM(CASE WHEN state IN ('verified','switched','done') AND skipped = 0 \
                        THEN size ELSE 0 END), 0), \
           COALESCE(SUM(bytes_sent), 0) \
         FROM migration_objects WHERE job_id = $1",
    )
    .bind(job)
    .fetch_one(db)
    .await?;
    let in_parts = sqlx::query(
        "SELECT COALESCE(SUM(p.size), 0) FROM migration_parts p JOIN migration_objects o \
         ON o.job_id = p.job_id AND o.obj_key = p.obj_key \
         WHERE p.job_id = $1 AND o.state = 'copying'",
    )
    .bind(job)
    .fetch_one(db)
    .await?;
    let failed = sqlx::query(
        "SELECT obj_key, error FROM migration_objects WHERE job_id = $1 AND state = 'failed' \
         ORDER BY obj_key LIMIT 100",
    )
    .bind(job)
    .fetch_all(db)
    .await?;
    let verified = u(r.try_get(0)?);
    Ok(Figures {
        objects_done: verified + failed.len() as u64,
        bytes_done: u(r.try_get(1)?).saturating_add(u(in_parts.try_get(0)?)),
        objects_copied: u(r.try_get(2)?),
        objects_skipped: u(r.try_get(3)?),
        objects_verified: verified,
        bytes_copied: u(r.try_get(4)?),
        bytes_sent: u(r.try_get(5)?),
        failed: failed
            .iter()
            .map(|f| {
                Ok((
                    f.try_get::<String, _>(0)?,
                    f.try_get::<Option<String>, _>(1)?.unwrap_or_default(),
                ))
            })
            .collect::<Result<_>>()?,
    })
}
