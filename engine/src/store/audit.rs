//! The audit log: rows are appended and read, never changed (the schema refuses UPDATE
//! and DELETE on the table).

use sqlx::{AnyPool, Row};

use crate::Result;

/// One audit row.
pub(crate) struct AuditRow {
    pub id: String,
    pub at: i64,
    pub tenant_id: Option<String>,
    pub actor: String,
    pub role: String,
    pub action: String,
    pub target: Option<String>,
    pub outcome: String,
    pub status: Option<i64>,
    pub request_id: Option<String>,
}

pub(crate) async fn insert_audit(db: &AnyPool, r: &AuditRow) -> Result<()> {
    sqlx::query(
        "INSERT INTO audit_log (id, at, tenant_id, actor, role, action, target, outcome, \
         status, request_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&r.id)
    .bind(r.at)
    .bind(&r.tenant_id)
    .bind(&r.actor)
    .bind(&r.role)
    .bind(&r.action)
    .bind(&r.target)
    .bind(&r.outcome)
    .bind(r.status)
    .bind(&r.request_id)
    .execute(db)
    .await?;
    Ok(())
}

/// Rows newest first, older than `before` (an id) if given, of one tenant if given.
pub(crate) async fn list_audit(
    db: &AnyPool,
    tenant: Option<&str>,
    before: Option<&str>,
    limit: i64,
) -> Result<Vec<AuditRow>> {
    let rows = sqlx::query(
        "SELECT id, at, tenant_id, actor, role, action, target, outcome, status, request_id \
         FROM audit_log WHERE ($1 IS NULL OR tenant_id = $1) AND ($2 IS NULL OR id < $2) \
         ORDER BY id DESC LIMIT $3",
    )
    .bind(tenant)
    .bind(before)
    .bind(limit)
    .fetch_all(db)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(AuditRow {
                id: r.try_get(0)?,
                at: r.try_get(1)?,
                tenant_id: r.try_get(2)?,
                actor: r.try_get(3)?,
                role: r.try_get(4)?,
                action: r.try_get(5)?,
                target: r.try_get(6)?,
                outcome: r.try_get(7)?,
                status: r.try_get(8)?,
                request_id: r.try_get(9)?,
            })
        })
        .collect()
}
