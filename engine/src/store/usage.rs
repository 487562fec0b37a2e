//! Tenants' limits (rate limit and quotas) and their monthly usage counters. A counter only
//! ever grows by an addition in one statement, so processes sharing the database never
//! lose each other's counts.

use sqlx::{AnyPool, Row};

use crate::limits::RateLimit;
use crate::{Result, TenantQuotas};

/// A tenant's limits as stored.
pub(crate) struct LimitsRow {
    pub quotas: TenantQuotas,
    pub rate_limit: Option<RateLimit>,
}

fn to_u64(v: Option<i64>) -> Option<u64> {
    v.map(|v| v.max(0) as u64)
}

fn to_i64(v: Option<u64>) -> Option<i64> {
    v.map(|v| v.min(i64::MAX as u64) as i64)
}

/// The tenant's limits; `None` for an unknown tenant.
pub(crate) async fn tenant_limits(db: &AnyPool, tenant: &str) -> Result<Option<LimitsRow>> {
    let row = sqlx::query(
        "SELECT quota_storage_bytes, quota_egress_bytes_per_month, quota_concurrent_viewers, \
         quota_concurrent_uploads, quota_transcode_minutes_per_month, rate_limit_rps, \
         rate_limit_burst FROM tenants WHERE id = $1",
    )
    .bind(tenant)
    .fetch_optional(db)
    .await?;
    let Some(r) = row else { return Ok(None) };
    let rps: Option<i64> = r.try_get(5)?;
    let burst: Option<i64> = r.try_get(6)?;
    Ok(Some(LimitsRow {
        quotas: TenantQuotas {
            storage_bytes: to_u64(r.try_get(0)?),
            egress_bytes_per_month: to_u64(r.try_get(1)?),
            concurrent_viewers: to_u64(r.try_get(2)?),
            concurrent_uploads: to_u64(r.try_get(3)?),
            transcode_minutes_per_month: to_u64(r.try_get(4)?),
        },
        rate_limit: match (rps, burst) {
            (Some(r), Some(b)) => Some(RateLimit {
                requests_per_s: r.clamp(0, u32::MAX as i64) as u32,
                burst: b.clamp(0, u32::MAX as i64) as u32,
            }),
            _ => None,
        },
    }))
}

/// Write every limit of a tenant (its storage quota included). False: no such tenant.
pub(crate) async fn set_tenant_limits(
    db: &AnyPool,
    tenant: &str,
    limits: &LimitsRow,
) -> Result<bool> {
    let q = &limits.quotas;
    let done = sqlx::query(
        "UPDATE tenants SET quota_storage_bytes = $1, quota_egress_bytes_per_month = $2, \
         quota_concurrent_viewers = $3, quota_concurrent_uploads = $4, \
         quota_transcode_minutes_per_month = $5, rate_limit_rps = $6, rate_limit_burst = $7 \
         WHERE id = $8",
    )
    .bind(to_i64(q.storage_bytes))
    .bind(to_i64(q.egress_bytes_per_month))
    .bind(to_i64(q.concurrent_viewers))
    .bind(to_i64(q.concurrent_uploads))
    .bind(to_i64(q.transcode_minutes_per_month))
    .bind(limits.rate_limit.map(|l| i64::from(l.requests_per_s)))
    .bind(limits.rate_limit.map(|l| i64::from(l.burst)))
    .bind(tenant)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A tenant's counters for one month: (egress bytes, transcoded milliseconds).
pub(crate) async fn month_usage(db: &AnyPool, tenant: &str, month: &str) -> Result<(u64, u64)> {
    let row = sqlx::query(
        "SELECT egress_bytes, transcode_ms FROM tenant_usage WHERE tenant_id = $1 AND month = $2",
    )
    .bind(tenant)
    .bind(month)
    .fetch_optional(db)
    .await?;
    Ok(match row {
        Some(r) => {
            let e: i64 = r.try_get(0)?;
            let t: i64 = r.try_get(1)?;
            (e.max(0) as u64, t.max(0) as u64)
        }
        None => (0, 0),
    })
}

/// Add to a tenant's counters of a month (creating the row).
pub(crate) async fn add_usage<'e, E>(
    ex: E,
    tenant: &str,
    month: &str,
    egress_bytes: u64,
    transcode_ms: u64,
) -> Result<()>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    sqlx::query(
        "INSERT INTO tenant_usage (tenant_id, month, egress_bytes, transcode_ms) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id, month) DO UPDATE SET \
         egress_bytes = tenant_usage.egress_bytes + excluded.egress_bytes, \
         transcode_ms = tenant_usage.transcode_ms + excluded.transcode_ms",
    )
    .bind(tenant)
    .bind(month)
    .bind(egress_bytes.min(i64::MAX as u64) as i64)
    .bind(transcode_ms.min(i64::MAX as u64) as i64)
    .execute(ex)
    .await?;
    Ok(())
}
