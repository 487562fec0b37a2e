//! `Idempotency-Key`s of raw uploads: claims, their lease, and the answers kept for
//! replays.

use sqlx::{AnyPool, Row};

use crate::Result;

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
