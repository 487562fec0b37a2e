//! SQL for the metadata store. Every query lives here, so a second backend (PostgreSQL)
//! has one file to mirror.

use sqlx::{AnyPool, Row};

use crate::model::{Asset, AssetStatus, Job, Rendition, TranscodeJob, UploadConcat, UploadState};
use crate::{Result, rfc3339_ms};

/// What a live (unrevoked) key stands for.
pub(crate) struct KeyOwner {
    pub tenant_id: String,
    pub device_id: Option<String>,
    pub last_seen_at: Option<i64>,
}

/// Resolve a key hash. A device key resolves only while its device is not revoked.
pub(crate) async fn key_owner(db: &AnyPool, key_hash: &str) -> Result<Option<KeyOwner>> {
    let row = sqlx::query(
        "SELECT k.tenant_id, k.device_id, d.last_seen_at FROM api_keys k \
         LEFT JOIN devices d ON d.id = k.device_id \
         WHERE k.key_hash = $1 AND k.revoked_at IS NULL \
         AND (k.device_id IS NULL OR (d.id IS NOT NULL AND d.revoked_at IS NULL))",
    )
    .bind(key_hash)
    .fetch_optional(db)
    .await?;
    row.map(|r| {
        Ok(KeyOwner {
            tenant_id: r.try_get(0)?,
            device_id: r.try_get(1)?,
            last_seen_at: r.try_get(2)?,
        })
    })
    .transpose()
}

/// Record that a device authenticated, at most once per `throttle_ms` (the condition is in
/// the UPDATE, so concurrent gateways write once between them).
pub(crate) async fn touch_device(
    db: &AnyPool,
    device: &str,
    now: i64,
    throttle_ms: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE devices SET last_seen_at = $1 WHERE id = $2 \
         AND (last_seen_at IS NULL OR last_seen_at <= $3)",
    )
    .bind(now)
    .bind(device)
    .bind(now - throttle_ms)
    .execute(db)
    .await?;
    Ok(())
}

pub(crate) async fn insert_tenant(
    db: &AnyPool,
    id: &str,
    name: &str,
    key_hash: &str,
    quota_storage_bytes: Option<u64>,
    now: i64,
) -> Result<()> {
    let mut tx = db.begin().await?;
    sqlx::query(
        "INSERT INTO tenants (id, name, created_at, quota_storage_bytes) VALUES ($1, $2, $3, $4)",
    )
    .bind(id)
    .bind(name)
    .bind(now)
    .bind(quota_storage_bytes.map(|q| q.min(i64::MAX as u64) as i64))
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

// ---- devices ------------------------------------------------------------------------------

/// A device and its key, atomically.
pub(crate) async fn insert_device(
    db: &AnyPool,
    id: &str,
    tenant: &str,
    name: &str,
    key_hash: &str,
    now: i64,
) -> Result<()> {
    let mut tx = db.begin().await?;
    sqlx::query("INSERT INTO devices (id, tenant_id, name, created_at) VALUES ($1, $2, $3, $4)")
        .bind(id)
        .bind(tenant)
        .bind(name)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO api_keys (key_hash, tenant_id, kind, device_id, created_at) \
         VALUES ($1, $2, 'device', $3, $4)",
    )
    .bind(key_hash)
    .bind(tenant)
    .bind(id)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// A device row: (id, name, created_at, revoked_at, last_seen_at).
pub(crate) type DeviceRow = (String, String, i64, Option<i64>, Option<i64>);

/// The tenant's devices (one when `id` is given), oldest first.
pub(crate) async fn devices(
    db: &AnyPool,
    tenant: &str,
    id: Option<&str>,
) -> Result<Vec<DeviceRow>> {
    let rows = sqlx::query(
        "SELECT id, name, created_at, revoked_at, last_seen_at FROM devices \
         WHERE tenant_id = $1 AND ($2 IS NULL OR id = $2) ORDER BY created_at, id",
    )
    .bind(tenant)
    .bind(id)
    .fetch_all(db)
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get(0)?,
                r.try_get(1)?,
                r.try_get(2)?,
                r.try_get(3)?,
                r.try_get(4)?,
            ))
        })
        .collect()
}

/// The latest `per_device` uploads of each of the tenant's devices (one device when `id` is
/// given): (device, asset, status, created_at), newest first per device.
pub(crate) async fn device_uploads(
    db: &AnyPool,
    tenant: &str,
    id: Option<&str>,
    per_device: i64,
) -> Result<Vec<(String, String, String, i64)>> {
    let rows = sqlx::query(
        "SELECT device_id, id, status, created_at FROM (\
           SELECT device_id, id, status, created_at, ROW_NUMBER() OVER \
             (PARTITION BY device_id ORDER BY created_at DESC, id DESC) AS rn \
           FROM assets WHERE tenant_id = $1 AND device_id IS NOT NULL \
           AND ($2 IS NULL OR device_id = $2)) latest \
         WHERE rn <= $3 ORDER BY device_id, created_at DESC, id DESC",
    )
    .bind(tenant)
    .bind(id)
    .bind(per_device)
    .fetch_all(db)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?)))
        .collect()
}

/// Revoke a device and its key together. False when the tenant has no such device.
pub(crate) async fn revoke_device(db: &AnyPool, tenant: &str, id: &str, now: i64) -> Result<bool> {
    let mut tx = db.begin().await?;
    let n = sqlx::query(
        "UPDATE devices SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2 AND tenant_id = $3",
    )
    .bind(now)
    .bind(id)
    .bind(tenant)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    sqlx::query(
        "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1) \
         WHERE device_id = $2 AND tenant_id = $3",
    )
    .bind(now)
    .bind(id)
    .bind(tenant)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(n == 1)
}

/// The device that uploaded an asset.
pub(crate) async fn asset_device(db: &AnyPool, asset: &str) -> Result<Option<String>> {
    Ok(sqlx::query("SELECT device_id FROM assets WHERE id = $1")
        .bind(asset)
        .fetch_optional(db)
        .await?
        .and_then(|r| r.get::<Option<String>, _>(0)))
}

// ---- quotas -------------------------------------------------------------------------------

/// The tenant's storage quota and what it uses: the sizes of its assets, which for an
/// upload in progress is its declared length (the reservation).
pub(crate) async fn storage_usage(db: &AnyPool, tenant: &str) -> Result<(Option<u64>, u64)> {
    storage_usage_in(&mut *db.acquire().await?, tenant).await
}

async fn storage_usage_in(
    conn: &mut sqlx::AnyConnection,
    tenant: &str,
) -> Result<(Option<u64>, u64)> {
    let quota: Option<i64> = sqlx::query("SELECT quota_storage_bytes FROM tenants WHERE id = $1")
        .bind(tenant)
        .fetch_optional(&mut *conn)
        .await?
        .and_then(|r| r.get(0));
    // SUM is a NUMERIC on PostgreSQL: cast back to an integer for the Any driver.
    let used: i64 = sqlx::query(
        "SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM assets WHERE tenant_id = $1",
    )
    .bind(tenant)
    .fetch_one(&mut *conn)
    .await?
    .get(0);
    Ok((quota.map(|q| q.max(0) as u64), used.max(0) as u64))
}

/// Within a transaction: lock the tenant row (so quota checks of one tenant run one at a
/// time in every process), then check that `extra` more bytes fit.
async fn check_quota_locked(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    tenant: &str,
    extra: u64,
) -> Result<()> {
    sqlx::query("UPDATE tenants SET name = name WHERE id = $1")
        .bind(tenant)
        .execute(&mut **tx)
        .await?;
    let (quota, used) = storage_usage_in(tx, tenant).await?;
    match quota {
        Some(quota) if used.saturating_add(extra) > quota => Err(crate::Error::QuotaExceeded {
            used,
            requested: extra,
            quota,
        }),
        _ => Ok(()),
    }
}

const SELECT_ASSET: &str = "SELECT id, tenant_id, status, progress, duration_s, error, \
    filename, size, job_id, device_id, renditions, probe, created_at, updated_at FROM assets \
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
        device_id: r.try_get("device_id")?,
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

/// Live segment bytes arrive: add them to the stream asset's size if they fit the
/// tenant's storage quota (checked under the tenant's lock, like every reservation).
pub(crate) async fn charge_live_bytes(
    db: &AnyPool,
    tenant: &str,
    asset: &str,
    bytes: i64,
) -> Result<()> {
    let mut tx = db.begin().await?;
    check_quota_locked(&mut tx, tenant, bytes.max(0) as u64).await?;
    sqlx::query("UPDATE assets SET size = COALESCE(size, 0) + $1 WHERE id = $2 AND tenant_id = $3")
        .bind(bytes)
        .bind(asset)
        .bind(tenant)
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

// ---- idempotency keys -----------------------------------------------------------------------

/// What a raw upload finds under its `Idempotency-Key`.
pub(crate) enum KeyClaim {
    /// The key is ours now: run the request.
    Claimed,
    /// Another request holds it and is still running.
    InFlight,
    /// A request finished under it: (body sha256, asset, response body).
    Done(String, String, String),
    /// A request under it received its whole body and created its asset (body sha256,
    /// asset), then died before recording its answer: the key is ours now, to finish that
    /// asset and answer for it rather than create a second one.
    Recover(String, String),
}

/// Claim `(tenant, key)` for a request, or report who has it. An expired row, or an
/// in-flight one whose lock lapsed (its gateway died), is taken over.
pub(crate) async fn claim_idempotency_key(
    db: &AnyPool,
    tenant: &str,
    key: &str,
    now: i64,
    lock_until: i64,
    expires_at: i64,
) -> Result<KeyClaim> {
    // A lapsed claim whose request had staged its asset (the body was whole): take it over.
    let staged = sqlx::query(
        "UPDATE idempotency_keys SET lock_until = $1 WHERE tenant_id = $2 AND key = $3 \
         AND state = 'in_flight' AND lock_until < $4 AND expires_at > $4 \
         AND asset_id IS NOT NULL AND body_sha256 IS NOT NULL \
         RETURNING body_sha256, asset_id",
    )
    .bind(lock_until)
    .bind(tenant)
    .bind(key)
    .bind(now)
    .fetch_optional(db)
    .await?;
    if let Some(r) = staged {
        return Ok(KeyClaim::Recover(r.try_get(0)?, r.try_get(1)?));
    }
    sqlx::query(
        "DELETE FROM idempotency_keys WHERE tenant_id = $1 AND key = $2 AND (expires_at <= $3 \
         OR (state = 'in_flight' AND lock_until < $3))",
    )
    .bind(tenant)
    .bind(key)
    .bind(now)
    .execute(db)
    .await?;
    let n = sqlx::query(
        "INSERT INTO idempotency_keys (tenant_id, key, state, lock_until, created_at, \
         expires_at) VALUES ($1, $2, 'in_flight', $3, $4, $5) \
         ON CONFLICT (tenant_id, key) DO NOTHING",
    )
    .bind(tenant)
    .bind(key)
    .bind(lock_until)
    .bind(now)
    .bind(expires_at)
    .execute(db)
    .await?
    .rows_affected();
    if n == 1 {
        return Ok(KeyClaim::Claimed);
    }
    let row = sqlx::query(
        "SELECT state, body_sha256, asset_id, response FROM idempotency_keys \
         WHERE tenant_id = $1 AND key = $2",
    )
    .bind(tenant)
    .bind(key)
    .fetch_optional(db)
    .await?;
    Ok(match row {
        Some(r) if r.try_get::<String, _>(0)? == "done" => KeyClaim::Done(
            r.try_get::<Option<String>, _>(1)?.unwrap_or_default(),
            r.try_get::<Option<String>, _>(2)?.unwrap_or_default(),
            r.try_get::<Option<String>, _>(3)?.unwrap_or_default(),
        ),
        // In flight, or it just finished and was deleted by a failing request: either way
        // the client retries.
        _ => KeyClaim::InFlight,
    })
}

/// Keep an in-flight claim alive while its body streams.
pub(crate) async fn renew_idempotency_key(
    db: &AnyPool,
    tenant: &str,
    key: &str,
    lock_until: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE idempotency_keys SET lock_until = $1 WHERE tenant_id = $2 AND key = $3 \
         AND state = 'in_flight'",
    )
    .bind(lock_until)
    .bind(tenant)
    .bind(key)
    .execute(db)
    .await?;
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

/// Give a recovered claim back (its lock lapses at once), for a later retry to recover.
pub(crate) async fn lapse_idempotency_key(db: &AnyPool, tenant: &str, key: &str) -> Result<()> {
    sqlx::query(
        "UPDATE idempotency_keys SET lock_until = 0 WHERE tenant_id = $1 AND key = $2 \
         AND state = 'in_flight'",
    )
    .bind(tenant)
    .bind(key)
    .execute(db)
    .await?;
    Ok(())
}

/// The request under the key succeeded: keep its body hash and response for replays.
pub(crate) async fn finish_idempotency_key(
    db: &AnyPool,
    tenant: &str,
    key: &str,
    body_sha256: &str,
    asset: &str,
    response: &str,
) -> Result<()> {
    sqlx::query(
        "UPDATE idempotency_keys SET state = 'done', lock_until = NULL, body_sha256 = $1, \
         asset_id = $2, response = $3 WHERE tenant_id = $4 AND key = $5",
    )
    .bind(body_sha256)
    .bind(asset)
    .bind(response)
    .bind(tenant)
    .bind(key)
    .execute(db)
    .await?;
    Ok(())
}

/// The request under the key failed: free the key, so a retry runs afresh; or, when it
/// failed after staging its asset, let the claim lapse, so a retry recovers that asset.
pub(crate) async fn release_idempotency_key(db: &AnyPool, tenant: &str, key: &str) -> Result<()> {
    sqlx::query(
        "DELETE FROM idempotency_keys WHERE tenant_id = $1 AND key = $2 AND state = 'in_flight' \
         AND asset_id IS NULL",
    )
    .bind(tenant)
    .bind(key)
    .execute(db)
    .await?;
    lapse_idempotency_key(db, tenant, key).await
}

/// Drop keys past their expiry (and in-flight claims whose gateway died long ago).
pub(crate) async fn sweep_idempotency_keys(db: &AnyPool, now: i64) -> Result<u64> {
    Ok(
        sqlx::query("DELETE FROM idempotency_keys WHERE expires_at <= $1")
            .bind(now)
            .execute(db)
            .await?
            .rows_affected(),
    )
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
    // Only from `uploading`: a repeated finish whose job already ran (the first finish
    // queued it, then died before recording it) must not send the asset back to `queued`.
    sqlx::query(
        "UPDATE assets SET status = 'queued', job_id = $1, updated_at = $2 WHERE id = $3 \
         AND status = 'uploading'",
    )
    .bind(job_id)
    .bind(now)
    .bind(asset)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
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
    .execute(db)
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

/// SQL condition, with the job id bound as `$n`: the job transcodes the whole ladder. A
/// job re-running one rendition of a ready asset never changes the asset's status: the
/// asset stays playable, and a failed re-run leaves the published rendition as it was.
fn whole_job(n: u8) -> String {
    format!("NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = ${n} AND j.rendition IS NOT NULL)")
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

/// Mark a job running. A delivery of a job that is finished, or whose retry is not due yet
/// (a stale duplicate), is skipped; a job cancelled while queued ends here.
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
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE assets SET status = 'processing', progress = 0, error = NULL, updated_at = $1 \
         WHERE id = $2 AND {}",
        whole_job(3)
    )))
    .bind(now)
    .bind(&job.asset_id)
    .bind(&job.job_id)
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
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE assets SET status = 'queued', progress = 0, updated_at = $1 WHERE id = $2 \
         AND {}",
        whole_job(3)
    )))
    .bind(now)
    .bind(&job.asset_id)
    .bind(&job.job_id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// A job ends without output: `status` is failed, cancelled or dead; the asset is failed
/// with `error` for the user.
/// `only_if`: end it only from this status (false, nothing changed, otherwise).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn job_ended(
    db: &AnyPool,
    job_id: &str,
    asset_id: &str,
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
    .bind(job_id)
    .bind(only_if)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if n == 0 {
        tx.rollback().await?;
        return Ok(false);
    }
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE assets SET status = 'failed', error = $1, updated_at = $2 WHERE id = $3 \
         AND {}",
        whole_job(4)
    )))
    .bind(error)
    .bind(now)
    .bind(asset_id)
    .bind(job_id)
    .execute(&mut *tx)
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
         finished_at = NULL, updated_at = $1, unpushed_since = $1 \
         WHERE id = $2 AND status IN ('failed', 'cancelled', 'dead')",
    )
    .bind(now)
    .bind(job_id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if n == 1 {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE assets SET status = 'queued', progress = 0, error = NULL, updated_at = $1 \
             WHERE id = $2 AND {}",
            whole_job(3)
        )))
        .bind(now)
        .bind(asset_id)
        .bind(job_id)
        .execute(&mut *tx)
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

// ---- live streams ---------------------------------------------------------------------

/// A live stream row as stored.
pub(crate) struct LiveRow {
    pub id: String,
    pub tenant_id: String,
    pub asset_id: String,
    pub name: Option<String>,
    pub ingest_hash: String,
    pub state: String,
    pub end_reason: Option<String>,
    pub dvr_window_s: i64,
    pub master: Option<String>,
    pub primary_playlist: Option<String>,
    pub segments_received: i64,
    pub bytes_received: i64,
    pub rejected_requests: i64,
    pub last_error: Option<String>,
    pub last_error_at: Option<i64>,
    pub last_ok_at: Option<i64>,
    pub created_at: i64,
    pub ended_at: Option<i64>,
    pub vod_mode: sluice_media::VodMode,
}

const LIVE_COLS: &str = "id, tenant_id, asset_id, name, ingest_hash, state, end_reason, \
    dvr_window_s, master, primary_playlist, segments_received, bytes_received, \
    rejected_requests, last_error, last_error_at, last_ok_at, created_at, ended_at, vod_mode";

fn live_from_row(r: &sqlx::any::AnyRow) -> Result<LiveRow> {
    Ok(LiveRow {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        asset_id: r.try_get("asset_id")?,
        name: r.try_get("name")?,
        ingest_hash: r.try_get("ingest_hash")?,
        state: r.try_get("state")?,
        end_reason: r.try_get("end_reason")?,
        dvr_window_s: r.try_get("dvr_window_s")?,
        master: r.try_get("master")?,
        primary_playlist: r.try_get("primary_playlist")?,
        segments_received: r.try_get("segments_received")?,
        bytes_received: r.try_get("bytes_received")?,
        rejected_requests: r.try_get("rejected_requests")?,
        last_error: r.try_get("last_error")?,
        last_error_at: r.try_get("last_error_at")?,
        last_ok_at: r.try_get("last_ok_at")?,
        created_at: r.try_get("created_at")?,
        ended_at: r.try_get("ended_at")?,
        vod_mode: sluice_media::VodMode::parse(r.try_get("vod_mode")?).unwrap_or_default(),
    })
}

pub(crate) struct NewLive<'a> {
    pub id: &'a str,
    pub tenant: &'a str,
    pub asset: &'a str,
    pub name: Option<&'a str>,
    pub ingest_hash: &'a str,
    pub dvr_window_s: i64,
    pub vod_mode: &'a str,
    pub now: i64,
}

/// A live stream and the asset it records into (`uploading` while live), atomically.
pub(crate) async fn insert_live(db: &AnyPool, l: NewLive<'_>) -> Result<()> {
    let mut tx = db.begin().await?;
    sqlx::query(
        "INSERT INTO assets (id, tenant_id, status, filename, created_at, updated_at) \
         VALUES ($1, $2, 'uploading', $3, $4, $5)",
    )
    .bind(l.asset)
    .bind(l.tenant)
    .bind(l.name)
    .bind(l.now)
    .bind(l.now)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO live_streams (id, tenant_id, asset_id, name, ingest_hash, state, \
         dvr_window_s, vod, vod_mode, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, 'idle', $6, 1, $7, $8, $9)",
    )
    .bind(l.id)
    .bind(l.tenant)
    .bind(l.asset)
    .bind(l.name)
    .bind(l.ingest_hash)
    .bind(l.dvr_window_s)
    .bind(l.vod_mode)
    .bind(l.now)
    .bind(l.now)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// One stream; `tenant` None for the ingest path (which authenticates by token).
pub(crate) async fn get_live(
    db: &AnyPool,
    tenant: Option<&str>,
    id: &str,
) -> Result<Option<LiveRow>> {
    // Two statements rather than `$2 IS NULL OR …`: PostgreSQL cannot type a NULL parameter.
    let row = match tenant {
        Some(t) => {
            let sql =
                format!("SELECT {LIVE_COLS} FROM live_streams WHERE id = $1 AND tenant_id = $2");
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .bind(t)
                .fetch_optional(db)
                .await?
        }
        None => {
            let sql = format!("SELECT {LIVE_COLS} FROM live_streams WHERE id = $1");
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .fetch_optional(db)
                .await?
        }
    };
    row.as_ref().map(live_from_row).transpose()
}

/// The stream recording into `asset`.
pub(crate) async fn live_by_asset(db: &AnyPool, asset: &str) -> Result<Option<LiveRow>> {
    let sql = format!("SELECT {LIVE_COLS} FROM live_streams WHERE asset_id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(asset)
        .fetch_optional(db)
        .await?;
    row.as_ref().map(live_from_row).transpose()
}

pub(crate) async fn list_live(db: &AnyPool, tenant: &str, limit: i64) -> Result<Vec<LiveRow>> {
    let sql = format!(
        "SELECT {LIVE_COLS} FROM live_streams WHERE tenant_id = $1 \
         ORDER BY created_at DESC LIMIT $2"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(tenant)
        .bind(limit)
        .fetch_all(db)
        .await?;
    rows.iter().map(live_from_row).collect()
}

/// Streams to end for inactivity (also those never pushed to, counted from their
/// creation), and `ending` streams whose finaliser went silent.
pub(crate) async fn live_to_finalize(
    db: &AnyPool,
    idle_before: i64,
    stale_before: i64,
) -> Result<Vec<String>> {
    let rows = sqlx::query(
        "SELECT id FROM live_streams WHERE (state = 'live' AND last_ok_at < $1) \
         OR (state = 'idle' AND created_at < $1) OR (state = 'ending' AND updated_at < $2)",
    )
    .bind(idle_before)
    .bind(stale_before)
    .fetch_all(db)
    .await?;
    Ok(rows.iter().map(|r| r.get::<String, _>(0)).collect())
}

pub(crate) async fn count_live_by_state(db: &AnyPool) -> Result<Vec<(String, i64)>> {
    let rows = sqlx::query("SELECT state, COUNT(*) FROM live_streams GROUP BY state")
        .fetch_all(db)
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1)))
        .collect())
}

/// A request was accepted: count it and mark the stream live.
pub(crate) async fn live_ok(
    db: &AnyPool,
    id: &str,
    bytes: i64,
    segments: i64,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE live_streams SET segments_received = segments_received + $1, \
         bytes_received = bytes_received + $2, last_ok_at = $3, updated_at = $3, \
         state = CASE WHEN state = 'idle' THEN 'live' ELSE state END WHERE id = $4",
    )
    .bind(segments)
    .bind(bytes)
    .bind(now)
    .bind(id)
    .execute(db)
    .await?;
    Ok(())
}

/// A request was refused: remember why (the pusher may never look at the status).
pub(crate) async fn live_rejected(
    db: &AnyPool,
    id: &str,
    error_json: &str,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE live_streams SET rejected_requests = rejected_requests + 1, last_error = $1, \
         last_error_at = $2 WHERE id = $3",
    )
    .bind(error_json)
    .bind(now)
    .bind(id)
    .execute(db)
    .await?;
    Ok(())
}

pub(crate) async fn live_set_master(
    db: &AnyPool,
    id: &str,
    master: &str,
    primary: Option<&str>,
) -> Result<()> {
    sqlx::query(
        "UPDATE live_streams SET master = $1, primary_playlist = COALESCE($2, primary_playlist) \
         WHERE id = $3",
    )
    .bind(master)
    .bind(primary)
    .bind(id)
    .execute(db)
    .await?;
    Ok(())
}

pub(crate) async fn live_default_primary(db: &AnyPool, id: &str, playlist: &str) -> Result<()> {
    sqlx::query(
        "UPDATE live_streams SET primary_playlist = $1 WHERE id = $2 AND primary_playlist IS NULL",
    )
    .bind(playlist)
    .bind(id)
    .execute(db)
    .await?;
    Ok(())
}

/// Claim the end of a stream: true for exactly one caller (or a stale `ending` retry).
pub(crate) async fn live_begin_end(
    db: &AnyPool,
    id: &str,
    reason: &str,
    now: i64,
    stale_before: i64,
) -> Result<bool> {
    let r = sqlx::query(
        "UPDATE live_streams SET state = 'ending', end_reason = COALESCE(end_reason, $1), \
         updated_at = $2 WHERE id = $3 AND (state IN ('idle', 'live') \
         OR (state = 'ending' AND updated_at < $4))",
    )
    .bind(reason)
    .bind(now)
    .bind(id)
    .bind(stale_before)
    .execute(db)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// The heartbeat of a process ending a stream.
pub(crate) async fn live_touch_ending(db: &AnyPool, id: &str, now: i64) -> Result<()> {
    sqlx::query("UPDATE live_streams SET updated_at = $1 WHERE id = $2 AND state = 'ending'")
        .bind(now)
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

pub(crate) async fn live_ended(db: &AnyPool, id: &str, now: i64) -> Result<()> {
    sqlx::query(
        "UPDATE live_streams SET state = 'ended', ended_at = $1, updated_at = $1 WHERE id = $2",
    )
    .bind(now)
    .bind(id)
    .execute(db)
    .await?;
    Ok(())
}

/// A media playlist's recording state.
pub(crate) struct LivePlaylistRow {
    pub name: String,
    pub target_duration: i64,
    pub epoch: i64,
    pub first_msn: i64,
    pub last_msn: i64,
    pub next_pos: i64,
    pub ended: bool,
}

pub(crate) async fn live_playlists(db: &AnyPool, stream: &str) -> Result<Vec<LivePlaylistRow>> {
    let rows = sqlx::query(
        "SELECT name, target_duration, epoch, first_msn, last_msn, next_pos, ended \
         FROM live_playlists WHERE stream_id = $1 ORDER BY name",
    )
    .bind(stream)
    .fetch_all(db)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(LivePlaylistRow {
                name: r.try_get("name")?,
                target_duration: r.try_get("target_duration")?,
                epoch: r.try_get("epoch")?,
                first_msn: r.try_get("first_msn")?,
                last_msn: r.try_get("last_msn")?,
                next_pos: r.try_get("next_pos")?,
                ended: r.try_get::<i64, _>("ended")? != 0,
            })
        })
        .collect()
}

pub(crate) async fn live_save_playlist(
    db: &AnyPool,
    stream: &str,
    p: &LivePlaylistRow,
) -> Result<()> {
    let r = sqlx::query(
        "UPDATE live_playlists SET target_duration = $1, epoch = $2, first_msn = $3, \
         last_msn = $4, next_pos = $5, ended = $6 WHERE stream_id = $7 AND name = $8",
    )
    .bind(p.target_duration)
    .bind(p.epoch)
    .bind(p.first_msn)
    .bind(p.last_msn)
    .bind(p.next_pos)
    .bind(i64::from(p.ended))
    .bind(stream)
    .bind(&p.name)
    .execute(db)
    .await?;
    if r.rows_affected() == 0 {
        sqlx::query(
            "INSERT INTO live_playlists (stream_id, name, target_duration, epoch, first_msn, \
             last_msn, next_pos, ended) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(stream)
        .bind(&p.name)
        .bind(p.target_duration)
        .bind(p.epoch)
        .bind(p.first_msn)
        .bind(p.last_msn)
        .bind(p.next_pos)
        .bind(i64::from(p.ended))
        .execute(db)
        .await?;
    }
    Ok(())
}

/// A segment row (recorded bytes, or a listed name whose bytes have not come yet).
#[derive(Debug, Clone)]
pub(crate) struct LiveSegmentRow {
    pub seq: i64,
    /// The encoder's name for it.
    pub name: String,
    pub ext: String,
    pub is_init: bool,
    pub playlist: Option<String>,
    pub pos: Option<i64>,
    pub duration: Option<f64>,
    pub discontinuity: bool,
    pub map_seq: Option<i64>,
    pub received: bool,
    /// Bytes stored (None until received).
    pub size: Option<i64>,
}

const SEG_COLS: &str =
    "seq, name, ext, is_init, playlist, pos, duration, discontinuity, map_seq, received_at, size";

fn seg_from_row(r: &sqlx::any::AnyRow) -> Result<LiveSegmentRow> {
    Ok(LiveSegmentRow {
        seq: r.try_get("seq")?,
        name: r.try_get("name")?,
        ext: r.try_get("ext")?,
        is_init: r.try_get::<i64, _>("is_init")? != 0,
        playlist: r.try_get("playlist")?,
        pos: r.try_get("pos")?,
        duration: r.try_get("duration")?,
        discontinuity: r.try_get::<i64, _>("discontinuity")? != 0,
        map_seq: r.try_get("map_seq")?,
        received: r.try_get::<Option<i64>, _>("received_at")?.is_some(),
        size: r.try_get("size")?,
    })
}

/// The newest row carrying an encoder name.
pub(crate) async fn live_latest_by_name(
    db: &AnyPool,
    stream: &str,
    name: &str,
) -> Result<Option<LiveSegmentRow>> {
    let sql = format!(
        "SELECT {SEG_COLS} FROM live_segments WHERE stream_id = $1 AND name = $2 \
         ORDER BY seq DESC LIMIT 1"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(stream)
        .bind(name)
        .fetch_optional(db)
        .await?;
    row.as_ref().map(seg_from_row).transpose()
}

/// The next sequence number of a stream's stored objects, allocated in one statement
/// (atomic across gateways sharing the database).
pub(crate) async fn live_next_seq(db: &AnyPool, stream: &str) -> Result<i64> {
    let row = sqlx::query(
        "UPDATE live_streams SET next_seq = next_seq + 1 WHERE id = $1 RETURNING next_seq - 1",
    )
    .bind(stream)
    .fetch_optional(db)
    .await?;
    match row {
        Some(r) => Ok(r.try_get(0)?),
        None => Err(crate::Error::not_found("live stream", stream)),
    }
}

/// A new row: received bytes (`received_at` set) or a listed-but-missing name.
pub(crate) async fn live_insert_segment(
    db: &AnyPool,
    stream: &str,
    seq: i64,
    name: &str,
    ext: &str,
    received: Option<(i64, i64)>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO live_segments (stream_id, seq, name, ext, size, received_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(stream)
    .bind(seq)
    .bind(name)
    .bind(ext)
    .bind(received.map(|r| r.0))
    .bind(received.map(|r| r.1))
    .execute(db)
    .await?;
    Ok(())
}

pub(crate) async fn live_segment_received(
    db: &AnyPool,
    stream: &str,
    seq: i64,
    size: i64,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE live_segments SET size = $1, received_at = $2 WHERE stream_id = $3 AND seq = $4",
    )
    .bind(size)
    .bind(now)
    .bind(stream)
    .bind(seq)
    .execute(db)
    .await?;
    Ok(())
}

/// Put a row in a playlist at `pos`.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn live_list_segment(
    db: &AnyPool,
    stream: &str,
    seq: i64,
    playlist: &str,
    pos: i64,
    duration: f64,
    discontinuity: bool,
    map_seq: Option<i64>,
) -> Result<()> {
    sqlx::query(
        "UPDATE live_segments SET playlist = $1, pos = $2, duration = $3, discontinuity = $4, \
         map_seq = $5 WHERE stream_id = $6 AND seq = $7",
    )
    .bind(playlist)
    .bind(pos)
    .bind(duration)
    .bind(i64::from(discontinuity))
    .bind(map_seq)
    .bind(stream)
    .bind(seq)
    .execute(db)
    .await?;
    Ok(())
}

pub(crate) async fn live_mark_init(db: &AnyPool, stream: &str, seq: i64) -> Result<()> {
    sqlx::query("UPDATE live_segments SET is_init = 1 WHERE stream_id = $1 AND seq = $2")
        .bind(stream)
        .bind(seq)
        .execute(db)
        .await?;
    Ok(())
}

/// A playlist's segments in order.
pub(crate) async fn live_playlist_segments(
    db: &AnyPool,
    stream: &str,
    playlist: &str,
) -> Result<Vec<LiveSegmentRow>> {
    let sql = format!(
        "SELECT {SEG_COLS} FROM live_segments WHERE stream_id = $1 AND playlist = $2 \
         AND is_init = 0 ORDER BY pos"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(stream)
        .bind(playlist)
        .fetch_all(db)
        .await?;
    rows.iter().map(seg_from_row).collect()
}

/// The segment a playlist lists at position `pos`, if any.
pub(crate) async fn live_segment_at(
    db: &AnyPool,
    stream: &str,
    playlist: &str,
    pos: i64,
) -> Result<Option<LiveSegmentRow>> {
    let sql = format!(
        "SELECT {SEG_COLS} FROM live_segments WHERE stream_id = $1 AND playlist = $2 \
         AND pos = $3 AND is_init = 0"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(stream)
        .bind(playlist)
        .bind(pos)
        .fetch_optional(db)
        .await?
        .as_ref()
        .map(seg_from_row)
        .transpose()
}

/// Segments (and init segments) a playlist names whose bytes have not arrived.
pub(crate) async fn live_missing_segments(db: &AnyPool, stream: &str) -> Result<i64> {
    let n: i64 = sqlx::query(
        "SELECT COUNT(*) FROM live_segments WHERE stream_id = $1 AND received_at IS NULL \
         AND (playlist IS NOT NULL OR is_init = 1)",
    )
    .bind(stream)
    .fetch_one(db)
    .await?
    .get(0);
    Ok(n)
}

/// The init segments of a stream that have their bytes.
pub(crate) async fn live_received_inits(db: &AnyPool, stream: &str) -> Result<Vec<(i64, String)>> {
    let rows = sqlx::query(
        "SELECT seq, ext FROM live_segments WHERE stream_id = $1 AND is_init = 1 \
         AND received_at IS NOT NULL",
    )
    .bind(stream)
    .fetch_all(db)
    .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get::<i64, _>(0), r.get::<String, _>(1)))
        .collect())
}

/// The recording is the asset's source now: queue it like a finished upload.
pub(crate) async fn live_asset_recorded(
    db: &AnyPool,
    asset: &str,
    size: i64,
    now: i64,
) -> Result<()> {
    sqlx::query("UPDATE assets SET size = $1, updated_at = $2 WHERE id = $3")
        .bind(size)
        .bind(now)
        .bind(asset)
        .execute(db)
        .await?;
    Ok(())
}

pub(crate) async fn fail_asset(db: &AnyPool, asset: &str, error: &str, now: i64) -> Result<()> {
    sqlx::query("UPDATE assets SET status = 'failed', error = $1, updated_at = $2 WHERE id = $3")
        .bind(error)
        .bind(now)
        .bind(asset)
        .execute(db)
        .await?;
    Ok(())
}

/// A tenant's preset overrides (JSON), if it set any.
pub(crate) async fn tenant_preset(db: &AnyPool, tenant: &str) -> Result<Option<(String, i64)>> {
    let row = sqlx::query("SELECT overrides, updated_at FROM tenant_presets WHERE tenant_id = $1")
        .bind(tenant)
        .fetch_optional(db)
        .await?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}

pub(crate) async fn put_tenant_preset(
    db: &AnyPool,
    tenant: &str,
    overrides: &str,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO tenant_presets (tenant_id, overrides, updated_at) VALUES ($1, $2, $3) \
         ON CONFLICT (tenant_id) DO UPDATE SET overrides = excluded.overrides, \
         updated_at = excluded.updated_at",
    )
    .bind(tenant)
    .bind(overrides)
    .bind(now)
    .execute(db)
    .await?;
    Ok(())
}

pub(crate) async fn delete_tenant_preset(db: &AnyPool, tenant: &str) -> Result<bool> {
    let n = sqlx::query("DELETE FROM tenant_presets WHERE tenant_id = $1")
        .bind(tenant)
        .execute(db)
        .await?
        .rows_affected();
    Ok(n > 0)
}

/// The preset snapshot (JSON) and the rendition of a job.
/// What a job runs, as stored at enqueue time.
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

/// A zero-length upload: complete at creation, and the asset failed with `error`.
pub(crate) async fn complete_empty_upload(
    db: &AnyPool,
    asset: &str,
    error: &str,
    now: i64,
) -> Result<()> {
    let mut tx = db.begin().await?;
    sqlx::query("UPDATE uploads SET completed_at = $1, expires_at = NULL WHERE asset_id = $2")
        .bind(now)
        .bind(asset)
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE assets SET status = 'failed', error = $1, updated_at = $2 WHERE id = $3")
        .bind(error)
        .bind(now)
        .bind(asset)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
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
    let current: String = sqlx::query("SELECT renditions FROM assets WHERE id = $1")
        .bind(&job.asset_id)
        .fetch_one(&mut *tx)
        .await?
        .get(0);
    let mut list: Vec<Rendition> = serde_json::from_str(&current).unwrap_or_default();
    match list.iter_mut().find(|r| r.name == rendition.name) {
        Some(r) => *r = rendition.clone(),
        None => list.push(rendition.clone()),
    }
    sqlx::query("UPDATE assets SET renditions = $1, updated_at = $2 WHERE id = $3")
        .bind(serde_json::to_string(&list).unwrap_or_else(|_| "[]".into()))
        .bind(now)
        .bind(&job.asset_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}
