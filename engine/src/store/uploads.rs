//! Upload sessions (tus, raw, and their S3 multipart state), their write lease and their
//! expiry.

use sqlx::{AnyPool, Row};

use super::assets::{Also, Only, set_asset_status};
use super::tenants::check_quota_locked;
use crate::Result;
use crate::model::{AssetStatus, UploadConcat, UploadState};

/// A new upload session and its asset.
pub(crate) struct NewUpload<'a> {
    pub tenant: &'a str,
    pub asset: &'a str,
    /// The upload's length; `None`: deferred (tus creation-defer-length). A raw upload of
    /// unknown length passes the size limit until its body ends.
    pub length: Option<u64>,
    /// The asset's size, reserved against the tenant's quota (`None`: not known yet).
    pub size: Option<u64>,
    /// Bytes of `size` the quota already counts elsewhere: a final upload's partials, which
    /// stay until it consumes them, must not be counted twice.
    pub already_counted: u64,
    pub concat: &'a UploadConcat,
    pub metadata: Option<&'a str>,
    pub filename: Option<&'a str>,
    pub device: Option<&'a str>,
    pub now: i64,
    pub expires_at: i64,
}

/// Create an asset in `uploading` and its upload session, atomically, if its size fits
/// the tenant's storage quota. A partial upload's asset is hidden: it exists only to hold
/// the session until a final upload consumes it.
pub(crate) async fn insert_upload(db: &AnyPool, u: NewUpload<'_>) -> Result<()> {
    let NewUpload {
        tenant,
        asset,
        length,
        size,
        already_counted,
        concat,
        metadata,
        filename,
        device,
        now,
        expires_at,
    } = u;
    let hidden = i64::from(*concat == UploadConcat::Partial);
    let mut tx = db.begin().await?;
    check_quota_locked(
        &mut tx,
        tenant,
        size.unwrap_or(0).saturating_sub(already_counted),
    )
    .await?;
    sqlx::query(
        "INSERT INTO assets (id, tenant_id, status, filename, size, device_id, created_at, \
         updated_at, hidden) VALUES ($1, $2, 'uploading', $3, $4, $5, $6, $7, $8)",
    )
    .bind(asset)
    .bind(tenant)
    .bind(filename)
    .bind(size.map(|s| s as i64))
    .bind(device)
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

/// A length becomes known — a raw upload of unknown length ended, or a tus client declared
/// a deferred one (once): record it as the upload's length and the asset's size, if it
/// fits the quota.
pub(crate) async fn set_upload_length(
    db: &AnyPool,
    tenant: &str,
    asset: &str,
    length: u64,
) -> Result<()> {
    let mut tx = db.begin().await?;
    check_quota_locked(&mut tx, tenant, length).await?;
    sqlx::query(
        "UPDATE uploads SET length = $1, length_deferred = 0 WHERE asset_id = $2 \
         AND tenant_id = $3",
    )
    .bind(length as i64)
    .bind(asset)
    .bind(tenant)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE assets SET size = $1 WHERE id = $2 AND tenant_id = $3")
        .bind(length as i64)
        .bind(asset)
        .bind(tenant)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Whether an upload session (finished or not) exists for this asset id.
pub(crate) async fn upload_session_exists(db: &AnyPool, asset: &str) -> Result<bool> {
    Ok(sqlx::query("SELECT 1 FROM uploads WHERE asset_id = $1")
        .bind(asset)
        .fetch_optional(db)
        .await?
        .is_some())
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

/// Commit a local upload's offset, fenced by the write lease: false (nothing changed) when
/// `owner` no longer holds it.
pub(crate) async fn set_upload_offset(
    db: &AnyPool,
    tenant: &str,
    asset: &str,
    owner: &str,
    offset: u64,
    expires_at: i64,
) -> Result<bool> {
    fenced_offset(
        &mut *db.acquire().await?,
        tenant,
        asset,
        owner,
        offset,
        expires_at,
    )
    .await
}

/// The offset commit of a local or raw upload, made only while `owner` holds its lease.
async fn fenced_offset(
    conn: &mut sqlx::AnyConnection,
    tenant: &str,
    asset: &str,
    owner: &str,
    offset: u64,
    expires_at: i64,
) -> Result<bool> {
    let n = sqlx::query(
        "UPDATE uploads SET \"offset\" = $1, expires_at = $2 WHERE asset_id = $3 \
         AND tenant_id = $4 AND lock_owner = $5",
    )
    .bind(i64::try_from(offset).map_err(|_| crate::Error::InvalidInput("upload too large".into()))?)
    .bind(expires_at)
    .bind(asset)
    .bind(tenant)
    .bind(owner)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
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
        // (Parts of a partial's multipart upload, on an S3 hot tier.)
        sqlx::query(
            "DELETE FROM upload_parts WHERE asset_id IN (SELECT asset_id FROM uploads \
             WHERE asset_id = $1 AND tenant_id = $2 AND concat = 'partial')",
        )
        .bind(p)
        .bind(tenant)
        .execute(&mut *tx)
        .await?;
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

/// The job a finished upload is queued with.
pub(crate) enum UploadJob<'a> {
    /// Recorded by an earlier, interrupted finish.
    Recorded(&'a str),
    /// A new job, recorded in the same transaction as the completion.
    New(super::jobs::NewJob<'a>),
}

/// The last byte is stored: close the upload, queue the asset and record its job, all in
/// one transaction, before the job's task is pushed: a worker that takes the task at once
/// finds the asset queued and its job recorded (its `processing` is never overwritten).
pub(crate) async fn complete_upload(
    db: &AnyPool,
    tenant: &str,
    asset: &str,
    job: UploadJob<'_>,
    now: i64,
) -> Result<()> {
    let mut tx = db.begin().await?;
    let job_id = match &job {
        UploadJob::Recorded(id) => id,
        UploadJob::New(j) => {
            super::jobs::insert_job_in(&mut tx, j).await?;
            j.id
        }
    };
    close_upload(&mut tx, tenant, asset, now).await?;
    // Only from `uploading`: a repeated finish whose job already ran (the first finish
    // queued it, then died before recording it) must not send the asset back to `queued`.
    set_asset_status(
        &mut tx,
        tenant,
        asset,
        AssetStatus::Queued,
        Only::from_statuses(&[AssetStatus::Uploading]),
        Also {
            job_id: Some(job_id),
            ..Also::default()
        },
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// A raw upload's whole body is synced: commit its offset and, under an `Idempotency-Key`,
/// stage the key with the body hash and asset, in one transaction (so a retry after a crash
/// finds either nothing, and starts afresh, or this asset, whole).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn commit_raw_upload(
    db: &AnyPool,
    tenant: &str,
    asset: &str,
    owner: &str,
    length: u64,
    expires_at: i64,
    key: Option<(&str, &str)>,
) -> Result<bool> {
    let mut tx = db.begin().await?;
    if !fenced_offset(&mut tx, tenant, asset, owner, length, expires_at).await? {
        tx.rollback().await?;
        return Ok(false);
    }
    if let Some((key, sha)) = key {
        sqlx::query(
            "UPDATE idempotency_keys SET body_sha256 = $1, asset_id = $2 WHERE tenant_id = $3 \
             AND key = $4 AND state = 'in_flight'",
        )
        .bind(sha)
        .bind(asset)
        .bind(tenant)
        .bind(key)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// One committed part of a multipart upload.
#[derive(Debug, Clone)]
pub(crate) struct UploadPart {
    pub index: i64,
    pub etag: String,
    pub size: u64,
}

/// The S3 side of an unfinished upload: its multipart upload, committed tail and parts.
#[derive(Debug, Clone)]
pub(crate) struct MultipartRow {
    pub multipart_id: String,
    pub tail_key: Option<String>,
    /// In part order.
    pub parts: Vec<UploadPart>,
}

/// Record the multipart upload an upload streams into.
pub(crate) async fn set_upload_multipart(db: &AnyPool, asset: &str, id: &str) -> Result<()> {
    sqlx::query("UPDATE uploads SET multipart_id = $1 WHERE asset_id = $2")
        .bind(id)
        .bind(asset)
        .execute(db)
        .await?;
    Ok(())
}

/// The multipart state of an upload (`None`: its bytes are in a local file).
pub(crate) async fn upload_multipart(
    db: &AnyPool,
    tenant: &str,
    asset: &str,
) -> Result<Option<MultipartRow>> {
    let row = sqlx::query(
        "SELECT multipart_id, tail_key FROM uploads WHERE asset_id = $1 AND tenant_id = $2",
    )
    .bind(asset)
    .bind(tenant)
    .fetch_optional(db)
    .await?;
    let Some(r) = row else { return Ok(None) };
    let Some(multipart_id) = r.try_get::<Option<String>, _>("multipart_id")? else {
        return Ok(None);
    };
    let parts = sqlx::query(
        "SELECT part_index, etag, size FROM upload_parts WHERE asset_id = $1 \
         ORDER BY part_index",
    )
    .bind(asset)
    .fetch_all(db)
    .await?
    .iter()
    .map(|p| {
        Ok(UploadPart {
            index: p.try_get("part_index")?,
            etag: p.try_get("etag")?,
            size: p.try_get::<i64, _>("size")? as u64,
        })
    })
    .collect::<Result<Vec<_>>>()?;
    Ok(Some(MultipartRow {
        multipart_id,
        tail_key: r.try_get("tail_key")?,
        parts,
    }))
}

/// Commit progress of a multipart upload in one transaction: new parts, the tail object
/// (or none) and the offset, only while `owner` still holds the upload's lease. Returns
/// false (and commits nothing) when the lease was lost.
pub(crate) async fn commit_upload_parts(
    db: &AnyPool,
    asset: &str,
    owner: &str,
    parts: &[UploadPart],
    tail_key: Option<&str>,
    offset: u64,
    expires_at: i64,
) -> Result<bool> {
    let mut tx = db.begin().await?;
    let n = sqlx::query(
        "UPDATE uploads SET \"offset\" = $1, tail_key = $2, expires_at = $3 \
         WHERE asset_id = $4 AND lock_owner = $5",
    )
    .bind(offset as i64)
    .bind(tail_key)
    .bind(expires_at)
    .bind(asset)
    .bind(owner)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if n != 1 {
        tx.rollback().await?;
        return Ok(false);
    }
    for p in parts {
        sqlx::query(
            "INSERT INTO upload_parts (asset_id, part_index, etag, size) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (asset_id, part_index) DO UPDATE SET etag = excluded.etag, \
             size = excluded.size",
        )
        .bind(asset)
        .bind(p.index)
        .bind(&p.etag)
        .bind(p.size as i64)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// Terminate an unfinished upload: the asset and its session disappear.
pub(crate) async fn delete_upload(db: &AnyPool, tenant: &str, asset: &str) -> Result<()> {
    let mut tx = db.begin().await?;
    let n = sqlx::query("DELETE FROM uploads WHERE asset_id = $1 AND tenant_id = $2")
        .bind(asset)
        .bind(tenant)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if n == 0 {
        // Not this tenant's upload (or already gone): touch nothing.
        return Ok(());
    }
    sqlx::query("DELETE FROM upload_parts WHERE asset_id = $1")
        .bind(asset)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM assets WHERE id = $1 AND tenant_id = $2 AND status = 'uploading'")
        .bind(asset)
        .bind(tenant)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Take (or renew) the write lease of an upload for `owner` until `until`. False when
/// another writer holds an unexpired lease.
pub(crate) async fn lease_upload(
    db: &AnyPool,
    tenant: &str,
    asset: &str,
    owner: &str,
    now: i64,
    until: i64,
) -> Result<bool> {
    let n = sqlx::query(
        "UPDATE uploads SET lock_owner = $1, lock_until = $2 WHERE asset_id = $3 \
         AND tenant_id = $5 AND (lock_owner IS NULL OR lock_owner = $1 OR lock_until < $4)",
    )
    .bind(owner)
    .bind(until)
    .bind(asset)
    .bind(now)
    .bind(tenant)
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

/// A zero-length upload: complete at creation, and the asset failed with `error`.
pub(crate) async fn complete_empty_upload(
    db: &AnyPool,
    tenant: &str,
    asset: &str,
    error: &str,
    now: i64,
) -> Result<()> {
    let mut tx = db.begin().await?;
    close_upload(&mut tx, tenant, asset, now).await?;
    super::assets::fail_asset_in(&mut tx, tenant, asset, error, now).await?;
    tx.commit().await?;
    Ok(())
}

/// An upload's last byte is stored (or it had none): its session is complete and no longer
/// expires.
async fn close_upload(
    conn: &mut sqlx::AnyConnection,
    tenant: &str,
    asset: &str,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE uploads SET completed_at = $1, expires_at = NULL WHERE asset_id = $2 \
         AND tenant_id = $3",
    )
    .bind(now)
    .bind(asset)
    .bind(tenant)
    .execute(conn)
    .await?;
    Ok(())
}
