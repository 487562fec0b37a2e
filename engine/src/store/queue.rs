//! Operator-wide queue figures (metrics, not answers to a tenant: no tenant filter, and no
//! id leaves this module, only counts per kind and status).

use sqlx::{AnyPool, Row};

use crate::Result;

/// Jobs waiting or running, per (kind, status).
pub(crate) async fn queue_depth(db: &AnyPool) -> Result<Vec<(String, String, i64)>> {
    let rows = sqlx::query(
        "SELECT kind, status, COUNT(*) AS n FROM jobs WHERE status IN ('queued', 'running') \
         GROUP BY kind, status",
    )
    .fetch_all(db)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("kind")?, r.try_get("status")?, r.try_get("n")?)))
        .collect()
}
