//! API keys as rows: resolving a key hash, tenant-scoped keys per role, listing, revoking,
//! and `last_used_at`. Keys inserted by code that predates roles (tenant creation, devices)
//! carry no id or role: both are derived the same way the migration derived them, and
//! stored the first time the key is used.

use sqlx::{AnyPool, Row};

use crate::Result;

/// The id of a key row `k`, derived where the row has none (SQL shared by every query).
macro_rules! key_id {
    () => {
        "COALESCE(k.id, substr(k.key_hash, 1, 26))"
    };
}
/// The role of a key row `k`, derived from its kind where the row has none.
macro_rules! key_role {
    () => {
        "COALESCE(k.role, CASE WHEN k.kind = 'device' THEN 'uploader' ELSE 'tenant_admin' END)"
    };
}

/// What a live (unrevoked) key stands for.
pub(crate) struct KeyOwner {
    /// `None`: a platform key (role `ops`).
    pub tenant_id: Option<String>,
    pub role: String,
    pub prefix: Option<String>,
    pub device_id: Option<String>,
    pub last_seen_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

/// Resolve a key hash. A device key resolves only while its device is not revoked.
pub(crate) async fn key_owner(db: &AnyPool, key_hash: &str) -> Result<Option<KeyOwner>> {
    let row = sqlx::query(concat!(
        "SELECT k.tenant_id, k.device_id, d.last_seen_at, ",
        key_role!(),
        ", k.prefix, k.last_used_at FROM api_keys k \
         LEFT JOIN devices d ON d.id = k.device_id \
         WHERE k.key_hash = $1 AND k.revoked_at IS NULL \
         AND (k.device_id IS NULL OR (d.id IS NOT NULL AND d.revoked_at IS NULL))"
    ))
    .bind(key_hash)
    .fetch_optional(db)
    .await?;
    row.map(|r| {
        Ok(KeyOwner {
            tenant_id: r.try_get(0)?,
            device_id: r.try_get(1)?,
            last_seen_at: r.try_get(2)?,
            role: r.try_get(3)?,
            prefix: r.try_get(4)?,
            last_used_at: r.try_get(5)?,
        })
    })
    .transpose()
}

/// Record a key's use: at most one write per `throttle_ms` per key, whichever gateway
/// serves it (the condition is in the UPDATE). Fills in the id, role and prefix of rows
/// that predate them.
pub(crate) async fn touch_key(
    db: &AnyPool,
    key_hash: &str,
    prefix: &str,
    now: i64,
    throttle_ms: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE api_keys SET last_used_at = $1, prefix = COALESCE(prefix, $2), \
         id = COALESCE(id, substr(key_hash, 1, 26)), \
         role = COALESCE(role, CASE WHEN kind = 'device' THEN 'uploader' ELSE 'tenant_admin' END) \
         WHERE key_hash = $3 AND (last_used_at IS NULL OR last_used_at <= $4)",
    )
    .bind(now)
    .bind(prefix)
    .bind(key_hash)
    .bind(now.saturating_sub(throttle_ms))
    .execute(db)
    .await?;
    Ok(())
}

/// A new tenant-scoped key.
pub(crate) struct NewKeyRow<'a> {
    pub id: &'a str,
    pub tenant_id: Option<&'a str>,
    pub role: &'a str,
    pub name: Option<&'a str>,
    pub prefix: &'a str,
    pub key_hash: &'a str,
    pub now: i64,
}

pub(crate) async fn insert_key(db: &AnyPool, k: NewKeyRow<'_>) -> Result<()> {
    sqlx::query(
        "INSERT INTO api_keys (key_hash, tenant_id, kind, created_at, id, role, name, prefix) \
         VALUES ($1, $2, 'key', $3, $4, $5, $6, $7)",
    )
    .bind(k.key_hash)
    .bind(k.tenant_id)
    .bind(k.now)
    .bind(k.id)
    .bind(k.role)
    .bind(k.name)
    .bind(k.prefix)
    .execute(db)
    .await?;
    Ok(())
}

/// A key as listed (no secret, no hash).
pub(crate) struct KeyRow {
    pub id: String,
    pub tenant_id: Option<String>,
    pub role: String,
    pub kind: String,
    pub name: Option<String>,
    pub prefix: Option<String>,
    pub device_id: Option<String>,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// A tenant's keys (`None`: the platform keys), newest first, at most `limit`.
pub(crate) async fn list_keys(
    db: &AnyPool,
    tenant: Option<&str>,
    limit: i64,
) -> Result<Vec<KeyRow>> {
    let q = match tenant {
        Some(t) => sqlx::query(concat!(
            "SELECT ",
            key_id!(),
            ", k.tenant_id, ",
            key_role!(),
            ", k.kind, k.name, k.prefix, k.device_id, \
             k.created_at, k.last_used_at, k.revoked_at FROM api_keys k \
             WHERE k.tenant_id = $1 ORDER BY k.created_at DESC LIMIT $2"
        ))
        .bind(t),
        None => sqlx::query(concat!(
            "SELECT ",
            key_id!(),
            ", k.tenant_id, ",
            key_role!(),
            ", k.kind, k.name, k.prefix, k.device_id, \
             k.created_at, k.last_used_at, k.revoked_at FROM api_keys k \
             WHERE k.tenant_id IS NULL ORDER BY k.created_at DESC LIMIT $1"
        )),
    };
    let rows = q.bind(limit).fetch_all(db).await?;
    rows.into_iter()
        .map(|r| {
            Ok(KeyRow {
                id: r.try_get(0)?,
                tenant_id: r.try_get(1)?,
                role: r.try_get(2)?,
                kind: r.try_get(3)?,
                name: r.try_get(4)?,
                prefix: r.try_get(5)?,
                device_id: r.try_get(6)?,
                created_at: r.try_get(7)?,
                last_used_at: r.try_get(8)?,
                revoked_at: r.try_get(9)?,
            })
        })
        .collect()
}

/// Revoke one of the tenant's keys (`None`: a platform key). `Ok(false)`: no such key
/// there (revoking is idempotent: a revoked key is still found).
pub(crate) async fn revoke_key(
    db: &AnyPool,
    tenant: Option<&str>,
    id: &str,
    now: i64,
) -> Result<bool> {
    let n = match tenant {
        Some(t) => {
            sqlx::query(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1) \
                 WHERE tenant_id = $2 AND COALESCE(id, substr(key_hash, 1, 26)) = $3",
            )
            .bind(now)
            .bind(t)
            .bind(id)
            .execute(db)
            .await?
        }
        None => {
            sqlx::query(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1) \
                 WHERE tenant_id IS NULL AND id = $2",
            )
            .bind(now)
            .bind(id)
            .execute(db)
            .await?
        }
    };
    Ok(n.rows_affected() > 0)
}

/// Whether a tenant exists (a JWT's tenant claim must name one).
pub(crate) async fn tenant_exists(db: &AnyPool, tenant: &str) -> Result<bool> {
    Ok(sqlx::query("SELECT 1 FROM tenants WHERE id = $1")
        .bind(tenant)
        .fetch_optional(db)
        .await?
        .is_some())
}
