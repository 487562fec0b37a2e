//! Lifecycle rules per tenant, the facts rules read on assets (age, last view, tags), and
//! the record of lifecycle actions. Every query on a tenant's rows carries the tenant.

use sqlx::{AnyPool, Row};

use crate::Result;

/// The tenant's own rules (JSON), if it set any.
pub(crate) async fn lifecycle_rules(db: &AnyPool, tenant: &str) -> Result<Option<String>> {
    Ok(
        sqlx::query("SELECT rules FROM lifecycle_rules WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_optional(db)
            .await?
            .map(|r| r.get(0)),
    )
}

/// Set (replace) the tenant's rules.
pub(crate) async fn put_lifecycle_rules(
    db: &AnyPool,
    tenant: &str,
    rules: &str,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO lifecycle_rules (tenant_id, rules, updated_at) VALUES ($1, $2, $3) \
         ON CONFLICT (tenant_id) DO UPDATE SET rules = excluded.rules, \
         updated_at = excluded.updated_at",
    )
    .bind(tenant)
    .bind(rules)
    .bind(now)
    .execute(db)
    .await?;
    Ok(())
}

/// Every tenant's id (the lifecycle pass walks them).
pub(crate) async fn tenant_ids(db: &AnyPool) -> Result<Vec<String>> {
    Ok(sqlx::query("SELECT id FROM tenants ORDER BY id")
        .fetch_all(db)
        .await?
        .into_iter()
        .map(|r| r.get(0))
        .collect())
}

/// What lifecycle rules read on one asset.
#[derive(Debug, Clone)]
pub(crate) struct AssetFacts {
    pub id: String,
    pub created_at: i64,
    pub last_viewed_at: Option<i64>,
    pub tags: Vec<String>,
}

fn facts(r: &sqlx::any::AnyRow) -> Result<AssetFacts> {
    let tags: String = r.try_get("tags")?;
    Ok(AssetFacts {
        id: r.try_get("id")?,
        created_at: r.try_get("created_at")?,
        last_viewed_at: r.try_get("last_viewed_at")?,
        tags: serde_json::from_str(&tags).unwrap_or_default(),
    })
}

/// The tenant's ready assets uploaded at or before `created_before`, oldest first, after
/// `after_id` (paging): served by the `assets(tenant_id, created_at)` index.
pub(crate) async fn lifecycle_candidates(
    db: &AnyPool,
    tenant: &str,
    created_before: i64,
    after: Option<(i64, &str)>,
    limit: i64,
) -> Result<Vec<AssetFacts>> {
    let (after_t, after_id) = after.unwrap_or((i64::MIN, ""));
    let rows = sqlx::query(
        "SELECT id, created_at, last_viewed_at, tags FROM assets WHERE tenant_id = $1 \
         AND created_at <= $2 AND (created_at > $3 OR (created_at = $4 AND id > $5)) \
         AND status = 'ready' AND hidden = 0 ORDER BY created_at, id LIMIT $6",
    )
    .bind(tenant)
    .bind(created_before)
    .bind(after_t)
    .bind(after_t)
    .bind(after_id)
    .bind(limit)
    .fetch_all(db)
    .await?;
    rows.iter().map(facts).collect()
}

/// One asset's facts (ready or not).
pub(crate) async fn asset_facts(
    db: &AnyPool,
    tenant: &str,
    asset: &str,
) -> Result<Option<AssetFacts>> {
    let row = sqlx::query(
        "SELECT id, created_at, last_viewed_at, tags FROM assets WHERE tenant_id = $1 \
         AND id = $2 AND hidden = 0",
    )
    .bind(tenant)
    .bind(asset)
    .fetch_optional(db)
    .await?;
    row.as_ref().map(facts).transpose()
}

/// The asset was played at `now`.
pub(crate) async fn record_view(db: &AnyPool, tenant: &str, asset: &str, now: i64) -> Result<()> {
    sqlx::query("UPDATE assets SET last_viewed_at = $1 WHERE id = $2 AND tenant_id = $3")
        .bind(now)
        .bind(asset)
        .bind(tenant)
        .execute(db)
        .await?;
    Ok(())
}

/// Replace the asset's tags (JSON array); false when the tenant has no such asset.
pub(crate) async fn set_asset_tags(
    db: &AnyPool,
    tenant: &str,
    asset: &str,
    tags: &str,
    now: i64,
) -> Result<bool> {
    Ok(sqlx::query(
        "UPDATE assets SET tags = $1, updated_at = $2 WHERE id = $3 AND tenant_id = $4 \
         AND hidden = 0",
    )
    .bind(tags)
    .bind(now)
    .bind(asset)
    .bind(tenant)
    .execute(db)
    .await?
    .rows_affected()
        == 1)
}

/// A lifecycle action taken (the audit record of lifecycle).
pub(crate) struct NewAction<'a> {
    pub tenant: &'a str,
    pub asset: &'a str,
    pub rule: i64,
    pub action: &'a str,
    pub from_tier: &'a str,
    pub bytes: u64,
    pub job_id: &'a str,
    pub now: i64,
}

pub(crate) async fn insert_lifecycle_action(db: &AnyPool, a: NewAction<'_>) -> Result<()> {
    sqlx::query(
        "INSERT INTO lifecycle_actions (id, tenant_id, asset_id, rule, action, from_tier, bytes, \
         job_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(ulid::Ulid::new().to_string())
    .bind(a.tenant)
    .bind(a.asset)
    .bind(a.rule)
    .bind(a.action)
    .bind(a.from_tier)
    .bind(i64::try_from(a.bytes).unwrap_or(i64::MAX))
    .bind(a.job_id)
    .bind(a.now)
    .execute(db)
    .await?;
    Ok(())
}
