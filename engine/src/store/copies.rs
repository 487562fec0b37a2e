//! Asset copies (`asset_copies`) and the per-tenant, per-tier counters (`tier_usage`).
//!
//! The counters change only in the transaction that inserts, deletes or re-measures a copy
//! row, and every change is conditional on the row being as expected (an insert that finds
//! the row, a delete or switch that finds another state, a re-measure that finds other
//! figures changes nothing), so replaying a step after a crash leaves rows and counters as
//! they are. Every query carries the tenant.

use sqlx::{Any, AnyPool, Row, Transaction};

use crate::Result;
use crate::tiers::{CopyState, Tier};

/// One copy of an asset: where it is and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyRow {
    pub tenant_id: String,
    pub asset_id: String,
    pub tier: Tier,
    pub store: String,
    pub state: CopyState,
    pub bytes: u64,
    pub objects: u64,
    /// False for a backfilled copy whose objects were not listed yet.
    pub measured: bool,
    /// Restored copies: when the sweep removes it, unix ms.
    pub expires_at: Option<i64>,
}

/// Which copy a change applies to.
#[derive(Debug, Clone, Copy)]
pub struct CopyKey<'a> {
    pub tenant: &'a str,
    pub asset: &'a str,
    pub tier: Tier,
    pub store: &'a str,
}

macro_rules! select_copy {
    ($rest:literal) => {
        concat!(
            "SELECT tenant_id, asset_id, tier, store, state, bytes, objects, measured, \
             expires_at FROM asset_copies ",
            $rest
        )
    };
}

fn copy_from_row(r: &sqlx::any::AnyRow) -> Result<CopyRow> {
    let tier: String = r.try_get("tier")?;
    let state: String = r.try_get("state")?;
    Ok(CopyRow {
        tenant_id: r.try_get("tenant_id")?,
        asset_id: r.try_get("asset_id")?,
        tier: Tier::parse(&tier).unwrap_or(Tier::Hot),
        store: r.try_get("store")?,
        state: CopyState::parse(&state).unwrap_or(CopyState::Draining),
        bytes: r.try_get::<i64, _>("bytes")?.max(0) as u64,
        objects: r.try_get::<i64, _>("objects")?.max(0) as u64,
        measured: r.try_get::<i64, _>("measured")? != 0,
        expires_at: r.try_get("expires_at")?,
    })
}

/// Every copy of the tenant's asset.
pub(crate) async fn asset_copies(db: &AnyPool, tenant: &str, asset: &str) -> Result<Vec<CopyRow>> {
    let rows = sqlx::query(select_copy!(
        "WHERE tenant_id = $1 AND asset_id = $2 ORDER BY tier, store"
    ))
    .bind(tenant)
    .bind(asset)
    .fetch_all(db)
    .await?;
    rows.iter().map(copy_from_row).collect()
}

/// Add to (or, negative, take from) a tenant's counters of one tier.
async fn add_usage(
    tx: &mut Transaction<'static, Any>,
    tenant: &str,
    tier: Tier,
    bytes: i64,
    objects: i64,
) -> Result<()> {
    if bytes == 0 && objects == 0 {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO tier_usage (tenant_id, tier, bytes, objects) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (tenant_id, tier) DO UPDATE SET bytes = tier_usage.bytes + excluded.bytes, \
         objects = tier_usage.objects + excluded.objects",
    )
    .bind(tenant)
    .bind(tier.as_str())
    .bind(bytes)
    .bind(objects)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Within a transaction: create a copy unless it exists, adding its figures to the
/// counters. Returns whether it was created (false: a replay, nothing changed).
pub(crate) async fn insert_copy(
    tx: &mut Transaction<'static, Any>,
    key: CopyKey<'_>,
    state: CopyState,
    bytes: u64,
    objects: u64,
    expires_at: Option<i64>,
    now: i64,
) -> Result<bool> {
    let done = sqlx::query(
        "INSERT INTO asset_copies (tenant_id, asset_id, tier, store, state, bytes, objects, \
         measured, expires_at, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8, $9, $10) \
         ON CONFLICT (tenant_id, asset_id, tier, store) DO NOTHING",
    )
    .bind(key.tenant)
    .bind(key.asset)
    .bind(key.tier.as_str())
    .bind(key.store)
    .bind(state.as_str())
    .bind(signed(bytes))
    .bind(signed(objects))
    .bind(expires_at)
    .bind(now)
    .bind(now)
    .execute(&mut **tx)
    .await?
    .rows_affected()
        == 1;
    if done {
        add_usage(tx, key.tenant, key.tier, signed(bytes), signed(objects)).await?;
    }
    Ok(done)
}

/// Within a transaction: switch a copy from state `from` to `to` (and set its expiry).
/// Returns whether it switched (false: it was not in `from`; nothing changed). A state
/// switch moves no bytes between tiers, so the counters stay.
pub(crate) async fn switch_copy(
    tx: &mut Transaction<'static, Any>,
    key: CopyKey<'_>,
    from: CopyState,
    to: CopyState,
    expires_at: Option<i64>,
    now: i64,
) -> Result<bool> {
    Ok(sqlx::query(
        "UPDATE asset_copies SET state = $1, expires_at = $2, updated_at = $3 \
         WHERE tenant_id = $4 AND asset_id = $5 AND tier = $6 AND store = $7 AND state = $8",
    )
    .bind(to.as_str())
    .bind(expires_at)
    .bind(now)
    .bind(key.tenant)
    .bind(key.asset)
    .bind(key.tier.as_str())
    .bind(key.store)
    .bind(from.as_str())
    .execute(&mut **tx)
    .await?
    .rows_affected()
        == 1)
}

/// Within a transaction: move a restored copy's expiry to `expires_at` if that is later
/// (restoring again extends). Returns whether the copy is restored.
pub(crate) async fn extend_restored(
    tx: &mut Transaction<'static, Any>,
    key: CopyKey<'_>,
    expires_at: i64,
    now: i64,
) -> Result<bool> {
    Ok(sqlx::query(
        "UPDATE asset_copies SET expires_at = CASE WHEN expires_at IS NULL OR expires_at < $1 \
         THEN $1 ELSE expires_at END, updated_at = $2 \
         WHERE tenant_id = $3 AND asset_id = $4 AND tier = $5 AND store = $6 \
         AND state = 'restored'",
    )
    .bind(expires_at)
    .bind(now)
    .bind(key.tenant)
    .bind(key.asset)
    .bind(key.tier.as_str())
    .bind(key.store)
    .execute(&mut **tx)
    .await?
    .rows_affected()
        == 1)
}

/// Within a transaction: delete a copy that is in state `state`, taking its figures from
/// the counters. Returns whether it was deleted (false: absent or in another state).
pub(crate) async fn delete_copy(
    tx: &mut Transaction<'static, Any>,
    key: CopyKey<'_>,
    state: CopyState,
) -> Result<bool> {
    let row = sqlx::query(
        "DELETE FROM asset_copies WHERE tenant_id = $1 AND asset_id = $2 AND tier = $3 \
         AND store = $4 AND state = $5 RETURNING bytes, objects",
    )
    .bind(key.tenant)
    .bind(key.asset)
    .bind(key.tier.as_str())
    .bind(key.store)
    .bind(state.as_str())
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = row else {
        return Ok(false);
    };
    let (bytes, objects): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
    add_usage(tx, key.tenant, key.tier, -bytes, -objects).await?;
    Ok(true)
}

/// Record what listing a copy's objects found: creates the copy (`active`) if it does not
/// exist, else sets its figures, the counters moving by the difference in the same
/// transaction. Re-recording the same figures changes nothing. Returns false when the row
/// changed under us (another process measured it at the same time): the caller measures
/// again.
pub(crate) async fn record_measured(
    db: &AnyPool,
    key: CopyKey<'_>,
    bytes: u64,
    objects: u64,
    now: i64,
) -> Result<bool> {
    let mut tx = db.begin().await?;
    let current = sqlx::query(
        "SELECT bytes, objects, measured FROM asset_copies WHERE tenant_id = $1 \
         AND asset_id = $2 AND tier = $3 AND store = $4",
    )
    .bind(key.tenant)
    .bind(key.asset)
    .bind(key.tier.as_str())
    .bind(key.store)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(current) = current else {
        insert_copy(&mut tx, key, CopyState::Active, bytes, objects, None, now).await?;
        tx.commit().await?;
        return Ok(true);
    };
    let (old_bytes, old_objects, measured): (i64, i64, i64) = (
        current.try_get(0)?,
        current.try_get(1)?,
        current.try_get(2)?,
    );
    let changed = sqlx::query(
        "UPDATE asset_copies SET bytes = $1, objects = $2, measured = 1, updated_at = $3 \
         WHERE tenant_id = $4 AND asset_id = $5 AND tier = $6 AND store = $7 \
         AND bytes = $8 AND objects = $9 AND measured = $10",
    )
    .bind(signed(bytes))
    .bind(signed(objects))
    .bind(now)
    .bind(key.tenant)
    .bind(key.asset)
    .bind(key.tier.as_str())
    .bind(key.store)
    .bind(old_bytes)
    .bind(old_objects)
    .bind(measured)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if changed != 1 {
        return Ok(false);
    }
    add_usage(
        &mut tx,
        key.tenant,
        key.tier,
        signed(bytes) - old_bytes,
        signed(objects) - old_objects,
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// Backfilled copies not measured yet (any tenant: the start-up measurer's work list).
pub(crate) async fn unmeasured_copies(db: &AnyPool, limit: i64) -> Result<Vec<CopyRow>> {
    let rows = sqlx::query(select_copy!(
        "WHERE measured = 0 ORDER BY tenant_id, asset_id LIMIT $1"
    ))
    .bind(limit)
    .fetch_all(db)
    .await?;
    rows.iter().map(copy_from_row).collect()
}

/// A tenant's counters: (tier, bytes, objects) per tier that has any.
pub(crate) async fn tier_usage(db: &AnyPool, tenant: &str) -> Result<Vec<(Tier, u64, u64)>> {
    let rows = sqlx::query("SELECT tier, bytes, objects FROM tier_usage WHERE tenant_id = $1")
        .bind(tenant)
        .fetch_all(db)
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let tier: String = r.try_get(0)?;
        if let Some(t) = Tier::parse(&tier) {
            out.push((
                t,
                r.try_get::<i64, _>(1)?.max(0) as u64,
                r.try_get::<i64, _>(2)?.max(0) as u64,
            ));
        }
    }
    Ok(out)
}

/// Restored copies whose expiry has passed (any tenant: the sweep's work list).
pub(crate) async fn expired_restores(db: &AnyPool, now: i64, limit: i64) -> Result<Vec<CopyRow>> {
    let rows = sqlx::query(select_copy!(
        "WHERE state = 'restored' AND expires_at <= $1 ORDER BY expires_at LIMIT $2"
    ))
    .bind(now)
    .bind(limit)
    .fetch_all(db)
    .await?;
    rows.iter().map(copy_from_row).collect()
}

/// Switch a restored copy to draining if it is still expired at `now` (a restore that
/// extended it meanwhile wins). Returns whether it switched.
pub(crate) async fn expire_restored(db: &AnyPool, key: CopyKey<'_>, now: i64) -> Result<bool> {
    Ok(sqlx::query(
        "UPDATE asset_copies SET state = 'draining', updated_at = $1 WHERE tenant_id = $2 \
         AND asset_id = $3 AND tier = $4 AND store = $5 AND state = 'restored' \
         AND expires_at <= $6",
    )
    .bind(now)
    .bind(key.tenant)
    .bind(key.asset)
    .bind(key.tier.as_str())
    .bind(key.store)
    .bind(now)
    .execute(db)
    .await?
    .rows_affected()
        == 1)
}

/// Hide an expired asset of the tenant: it is not found from then on.
pub(crate) async fn hide_asset(db: &AnyPool, tenant: &str, asset: &str, now: i64) -> Result<()> {
    sqlx::query("UPDATE assets SET hidden = 1, updated_at = $1 WHERE id = $2 AND tenant_id = $3")
        .bind(now)
        .bind(asset)
        .bind(tenant)
        .execute(db)
        .await?;
    Ok(())
}

/// Draining copies of assets with no tier job under way (any tenant): what a sweep
/// interrupted between its switch and its deletes left behind. A copy a store migration
/// left draining is not one of them: without `delete_source` the operator asked to keep
/// it, and with it the migration deletes it itself.
pub(crate) async fn orphaned_draining(db: &AnyPool, limit: i64) -> Result<Vec<CopyRow>> {
    let rows = sqlx::query(select_copy!(
        "c WHERE c.state = 'draining' AND NOT EXISTS (SELECT 1 FROM tier_jobs j \
         WHERE j.tenant_id = c.tenant_id AND j.asset_id = c.asset_id \
         AND j.status IN ('queued', 'running')) \
         AND NOT EXISTS (SELECT 1 FROM migration_objects m \
         JOIN migration_jobs mj ON mj.id = m.job_id \
         WHERE m.tenant_id = c.tenant_id AND m.asset_id = c.asset_id \
         AND mj.from_store = c.store) ORDER BY c.updated_at LIMIT $1"
    ))
    .bind(limit)
    .fetch_all(db)
    .await?;
    rows.iter().map(copy_from_row).collect()
}
