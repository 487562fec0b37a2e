//! Tenants, their first API key, and their storage quota (checked under a lock on the tenant
//! row by every reservation).

use sqlx::{AnyPool, Row};

use crate::Result;

pub(crate) async fn insert_tenant(
    db: &AnyPool,
    id: &str,
    name: &str,
    key_hash: &str,
    limits: &super::usage::LimitsRow,
    now: i64,
) -> Result<()> {
    let mut tx = db.begin().await?;
    let q = &limits.quotas;
    let big = |v: Option<u64>| v.map(|v| v.min(i64::MAX as u64) as i64);
    sqlx::query(
        "INSERT INTO tenants (id, name, created_at, quota_storage_bytes, \
         quota_egress_bytes_per_month, quota_concurrent_viewers, quota_concurrent_uploads, \
         quota_transcode_minutes_per_month, rate_limit_rps, rate_limit_burst) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(id)
    .bind(name)
    .bind(now)
    .bind(big(q.storage_bytes))
    .bind(big(q.egress_bytes_per_month))
    .bind(big(q.concurrent_viewers))
    .bind(big(q.concurrent_uploads))
    .bind(big(q.transcode_minutes_per_month))
    .bind(limits.rate_limit.map(|l| i64::from(l.requests_per_s)))
    .bind(limits.rate_limit.map(|l| i64::from(l.burst)))
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
pub(super) async fn check_quota_locked(
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
        Some(quota) if used.saturating_add(extra) > quota => {
            metrics::counter!("sluice_quota_exceeded_total", "quota" => "storage_bytes")
                .increment(1);
            Err(crate::Error::QuotaExceeded {
                used,
                requested: extra,
                quota,
            })
        }
        _ => Ok(()),
    }
}
