//! The engine API over asset copies: reading them, the counters, and applying a set of
//! copy changes in one transaction (what a tier move, a restore, a sweep or a migration
//! switches at once).

use super::{CopyKey, CopyRow, CopyState, Tier};
use crate::{Engine, Result, store};

/// One change of a copy row. Each is conditional (see `store::copies`): applied twice, the
/// second time changes nothing and reports `false`.
#[derive(Debug, Clone, Copy)]
pub enum CopyChange<'a> {
    /// Create the copy unless it exists; its figures join the counters.
    Insert {
        key: CopyKey<'a>,
        state: CopyState,
        bytes: u64,
        objects: u64,
        expires_at: Option<i64>,
    },
    /// Switch the copy from `from` to `to` (with this expiry).
    Switch {
        key: CopyKey<'a>,
        from: CopyState,
        to: CopyState,
        expires_at: Option<i64>,
    },
    /// Push a restored copy's expiry to at least `expires_at`.
    Extend { key: CopyKey<'a>, expires_at: i64 },
    /// Delete the copy if it is in `state`; its figures leave the counters.
    Delete { key: CopyKey<'a>, state: CopyState },
}

impl Engine {
    /// Every copy of the tenant's asset.
    pub async fn asset_copies(&self, tenant: &str, asset: &str) -> Result<Vec<CopyRow>> {
        store::asset_copies(&self.inner.db, tenant, asset).await
    }

    /// The tenant's per-tier counters: (tier, bytes, objects) for every tier, zero where
    /// the tenant has nothing.
    pub async fn tier_usage(&self, tenant: &str) -> Result<Vec<(Tier, u64, u64)>> {
        let rows = store::tier_usage(&self.inner.db, tenant).await?;
        Ok(Tier::ALL
            .iter()
            .map(|&t| rows.iter().find(|r| r.0 == t).copied().unwrap_or((t, 0, 0)))
            .collect())
    }

    /// Apply `changes` in one transaction, in order; returns whether each one applied.
    /// All changes must concern one tenant (the caller's), each carrying it.
    pub async fn change_copies(&self, changes: &[CopyChange<'_>]) -> Result<Vec<bool>> {
        let now = self.now_ms();
        let mut tx = self.inner.db.begin().await?;
        let mut out = Vec::with_capacity(changes.len());
        for c in changes {
            let applied = match *c {
                CopyChange::Insert {
                    key,
                    state,
                    bytes,
                    objects,
                    expires_at,
                } => {
                    store::insert_copy(&mut tx, key, state, bytes, objects, expires_at, now).await?
                }
                CopyChange::Switch {
                    key,
                    from,
                    to,
                    expires_at,
                } => store::switch_copy(&mut tx, key, from, to, expires_at, now).await?,
                CopyChange::Extend { key, expires_at } => {
                    store::extend_restored(&mut tx, key, expires_at, now).await?
                }
                CopyChange::Delete { key, state } => {
                    store::delete_copy(&mut tx, key, state).await?
                }
            };
            out.push(applied);
        }
        tx.commit().await?;
        for c in changes {
            let key = match c {
                CopyChange::Insert { key, .. }
                | CopyChange::Switch { key, .. }
                | CopyChange::Extend { key, .. }
                | CopyChange::Delete { key, .. } => key,
            };
            self.forget_readable(key.tenant, key.asset).await;
        }
        Ok(out)
    }
}
