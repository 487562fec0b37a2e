//! A tenant's transcode preset overrides.

use sqlx::{AnyPool, Row};

use crate::Result;

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
