//! Webhooks and their deliveries (a row per event and receiver, written when the event
//! happens, claimed by a dispatcher with a short lock before it is sent).

use sqlx::{AnyPool, Row};

use crate::Result;

/// A webhook as listed: (id, url, events joined by commas, created_at).
pub(crate) type WebhookRow = (String, String, String, i64);

/// A delivery claimed for sending: (id, url, secret, payload, attempts so far).
pub(crate) type ClaimedDelivery = (String, String, String, String, i64);

/// Register a webhook of `tenant` for `events` (joined by commas).
pub(crate) async fn insert_webhook(
    db: &AnyPool,
    id: &str,
    tenant: &str,
    url: &str,
    secret: &str,
    events: &str,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO webhooks (id, tenant_id, url, secret, events, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(tenant)
    .bind(url)
    .bind(secret)
    .bind(events)
    .bind(now)
    .execute(db)
    .await?;
    Ok(())
}

/// The tenant's webhooks, in id (creation) order; the secrets stay in the database.
pub(crate) async fn list_webhooks(db: &AnyPool, tenant: &str) -> Result<Vec<WebhookRow>> {
    let rows = sqlx::query(
        "SELECT id, url, events, created_at FROM webhooks WHERE tenant_id = $1 ORDER BY id",
    )
    .bind(tenant)
    .fetch_all(db)
    .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect())
}

/// Delete a webhook of the tenant; false when the tenant has no such webhook.
pub(crate) async fn delete_webhook(db: &AnyPool, tenant: &str, id: &str) -> Result<bool> {
    let n = sqlx::query("DELETE FROM webhooks WHERE id = $1 AND tenant_id = $2")
        .bind(id)
        .bind(tenant)
        .execute(db)
        .await?
        .rows_affected();
    Ok(n > 0)
}

/// The tenant's webhooks with the events each subscribes to: (id, events joined by commas).
pub(crate) async fn webhook_subscriptions(
    db: &AnyPool,
    tenant: &str,
) -> Result<Vec<(String, String)>> {
    let rows = sqlx::query("SELECT id, events FROM webhooks WHERE tenant_id = $1")
        .bind(tenant)
        .fetch_all(db)
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// A delivery of `payload` to one webhook of the tenant, due at once.
pub(crate) async fn insert_delivery(
    db: &AnyPool,
    id: &str,
    webhook: &str,
    tenant: &str,
    event: &str,
    payload: &str,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO webhook_deliveries (id, webhook_id, tenant_id, event, payload, \
         status, next_attempt_at, created_at) VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7)",
    )
    .bind(id)
    .bind(webhook)
    .bind(tenant)
    .bind(event)
    .bind(payload)
    .bind(now)
    .bind(now)
    .execute(db)
    .await?;
    Ok(())
}

/// Claim up to `limit` due deliveries (of every tenant: the dispatcher serves them all)
/// until `locked_until`. Each is claimed by a conditional update, so of two dispatchers
/// that read the same row only one sends it.
pub(crate) async fn claim_deliveries(
    db: &AnyPool,
    now: i64,
    locked_until: i64,
    limit: i64,
) -> Result<Vec<ClaimedDelivery>> {
    let mut tx = db.begin().await?;
    let rows = sqlx::query(
        "SELECT d.id, w.url, w.secret, d.payload, d.attempts FROM webhook_deliveries d \
         JOIN webhooks w ON w.id = d.webhook_id \
         WHERE d.status = 'pending' AND d.next_attempt_at <= $1 \
         AND (d.locked_until IS NULL OR d.locked_until < $2) \
         ORDER BY d.next_attempt_at LIMIT $3",
    )
    .bind(now)
    .bind(now)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let id: String = r.get(0);
        let n = sqlx::query(
            "UPDATE webhook_deliveries SET locked_until = $1 WHERE id = $2 \
             AND (locked_until IS NULL OR locked_until < $3)",
        )
        .bind(locked_until)
        .bind(&id)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 1 {
            out.push((id, r.get(1), r.get(2), r.get(3), r.get(4)));
        }
    }
    tx.commit().await?;
    Ok(out)
}

/// The outcome of one attempt at a delivery: its new status (`delivered`, `pending` for a
/// retry at `next_attempt_at`, or `failed`), the receiver's HTTP status if it answered and
/// the error if it failed. The claim's lock is released.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn delivery_attempted(
    db: &AnyPool,
    id: &str,
    status: &str,
    attempts: i64,
    http_status: Option<i64>,
    error: Option<&str>,
    next_attempt_at: i64,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE webhook_deliveries SET status = $1, attempts = $2, last_status = $3, \
         last_error = $4, next_attempt_at = $5, locked_until = NULL, \
         delivered_at = CASE WHEN $6 = 'delivered' THEN $7 ELSE NULL END WHERE id = $8",
    )
    .bind(status)
    .bind(attempts)
    .bind(http_status)
    .bind(error)
    .bind(next_attempt_at)
    .bind(status)
    .bind(now)
    .bind(id)
    .execute(db)
    .await?;
    Ok(())
}
