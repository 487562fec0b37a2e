//! Devices: upload-only keys of a tenant, and what they uploaded.

use sqlx::{AnyPool, Row};

use crate::Result;

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
