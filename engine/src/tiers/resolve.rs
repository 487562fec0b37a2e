//! Where an asset is read from, and keeping copy rows in step with what was written.

use std::sync::Arc;
use std::time::Duration;

use sluice_storage::{Storage, keys};

use super::{CopyKey, CopyRow, CopyState, Tier};
use crate::{Engine, Error, Result, store};

/// The copy playback reads an asset from.
#[derive(Debug, Clone)]
pub struct Readable {
    pub tier: Tier,
    pub storage: Storage,
}

/// What the copies of an asset allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Pick {
    /// Read from this copy.
    Copy(usize),
    /// Only cold copies (not restored): archived.
    Archived,
    /// No copy recorded (not yet published, or written before tiers existed and not yet
    /// backfilled): the hot store.
    Hot,
}

/// Pure: the readable copy among `copies` at `now_ms`: restored (unexpired) first, then
/// active, then draining; cold copies are never read (a restored copy lives in a readable
/// tier).
pub(crate) fn pick(copies: &[CopyRow], now_ms: i64) -> Pick {
    if copies.is_empty() {
        return Pick::Hot;
    }
    let rank = |c: &CopyRow| -> Option<(u8, Tier)> {
        if c.tier == Tier::Cold {
            return None;
        }
        let r = match c.state {
            CopyState::Restored if c.expires_at.is_none_or(|e| e > now_ms) => 0,
            CopyState::Restored => return None,
            CopyState::Active => 1,
            CopyState::Draining => 2,
        };
        Some((r, c.tier))
    };
    copies
        .iter()
        .enumerate()
        .filter_map(|(i, c)| rank(c).map(|r| (r, i)))
        .min()
        .map_or(Pick::Archived, |(_, i)| Pick::Copy(i))
}

/// How long a resolved copy is believed before the rows are read again: as long as the
/// playback cache keeps an object (`gateway.cache_ttl_ms`), so a tier move shows as fast.
pub(crate) type ReadableCache = moka::future::Cache<(Arc<str>, Arc<str>), Arc<Readable>>;

pub(crate) fn readable_cache(ttl: Duration) -> ReadableCache {
    moka::future::Cache::builder()
        .max_capacity(100_000)
        .time_to_live(ttl)
        .build()
}

impl Engine {
    /// The named stores and tiers.
    pub fn stores(&self) -> &super::Stores {
        &self.inner.stores
    }

    /// The store playback reads the tenant's asset from (restored → active → draining).
    /// An archived asset answers [`Error::Archived`]. Cached for `gateway.cache_ttl_ms`.
    pub async fn readable(&self, tenant: &str, asset: &str) -> Result<Arc<Readable>> {
        let key = (Arc::from(tenant), Arc::from(asset));
        if let Some(r) = self.inner.readable.get(&key).await {
            return Ok(r);
        }
        let copies = store::asset_copies(&self.inner.db, tenant, asset).await?;
        let r = match pick(&copies, self.now_ms()) {
            Pick::Archived => return Err(Error::Archived(asset.to_string())),
            Pick::Hot => Readable {
                tier: Tier::Hot,
                storage: self.stores().hot().clone(),
            },
            Pick::Copy(i) => Readable {
                tier: copies[i].tier,
                storage: self.stores().require(&copies[i].store)?.clone(),
            },
        };
        let r = Arc::new(r);
        self.inner.readable.insert(key, r.clone()).await;
        Ok(r)
    }

    /// Forget this process's resolution of an asset (after its copies changed here).
    pub async fn forget_readable(&self, tenant: &str, asset: &str) {
        self.inner
            .readable
            .invalidate(&(Arc::from(tenant), Arc::from(asset)))
            .await;
    }

    /// The objects of an asset in `storage` and their total size (one listing).
    pub async fn measure_asset(
        &self,
        storage: &Storage,
        tenant: &str,
        asset: &str,
    ) -> Result<(u64, u64)> {
        let prefix = keys::asset_prefix(tenant, asset);
        let objects = storage.list(&prefix).await?;
        let bytes = objects
            .iter()
            .try_fold(0u64, |acc, o| acc.checked_add(o.size));
        let bytes = bytes.ok_or_else(|| Error::InvalidInput("asset size overflows".into()))?;
        Ok((bytes, objects.len() as u64))
    }

    /// An asset was (re)published to the hot store: its hot copy row holds what the store
    /// now lists, and the counters move by the difference in the same transaction.
    pub async fn record_hot_copy(&self, tenant: &str, asset: &str) -> Result<()> {
        let hot = self.stores().hot().clone();
        for _ in 0..5 {
            let (bytes, objects) = self.measure_asset(&hot, tenant, asset).await?;
            let key = CopyKey {
                tenant,
                asset,
                tier: Tier::Hot,
                store: hot.name(),
            };
            if store::record_measured(&self.inner.db, key, bytes, objects, self.now_ms()).await? {
                self.forget_readable(tenant, asset).await;
                return Ok(());
            }
        }
        Err(Error::Conflict(format!(
            "the hot copy of asset {asset} kept changing while it was measured"
        )))
    }

    /// The periodic tier pass: measure backfilled copies (once each), remove expired
    /// restored copies.
    pub async fn sweep_tiers(&self) -> Result<()> {
        let n = self.measure_backfilled().await?;
        if n > 0 {
            tracing::info!(
                copies = n,
                "measured the objects of backfilled asset copies"
            );
        }
        let n = self.sweep_expired_restores().await?;
        if n > 0 {
            tracing::info!(copies = n, "removed expired restored copies");
        }
        Ok(())
    }

    /// The periodic lifecycle pass (every `lifecycle.interval_s`).
    pub async fn sweep_lifecycle(&self) -> Result<()> {
        let plan = self.lifecycle_pass(false).await?;
        let n = plan.iter().filter(|p| p.job.is_some()).count();
        if n > 0 {
            tracing::info!(jobs = n, "lifecycle rules started jobs");
        }
        Ok(())
    }

    /// Measure copies backfilled by the migration (bytes and objects unknown until listed
    /// once). Returns how many were measured; run at start, in the background.
    pub async fn measure_backfilled(&self) -> Result<usize> {
        let mut done = 0;
        loop {
            let batch = store::unmeasured_copies(&self.inner.db, 100).await?;
            if batch.is_empty() {
                return Ok(done);
            }
            let mut progressed = false;
            for c in &batch {
                let Some(storage) = self.stores().get(&c.store) else {
                    tracing::warn!(store = %c.store, "a backfilled copy names an unconfigured store");
                    continue;
                };
                let (bytes, objects) = self
                    .measure_asset(storage, &c.tenant_id, &c.asset_id)
                    .await?;
                let key = CopyKey {
                    tenant: &c.tenant_id,
                    asset: &c.asset_id,
                    tier: c.tier,
                    store: &c.store,
                };
                if store::record_measured(&self.inner.db, key, bytes, objects, self.now_ms())
                    .await?
                {
                    done += 1;
                    progressed = true;
                }
            }
            if !progressed {
                return Ok(done);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(tier: Tier, state: CopyState, expires_at: Option<i64>) -> CopyRow {
        CopyRow {
            tenant_id: "t".into(),
            asset_id: "a".into(),
            tier,
            store: tier.as_str().into(),
            state,
            bytes: 1,
            objects: 1,
            measured: true,
            expires_at,
        }
    }

    #[test]
    fn reads_resolve_restored_then_active_then_draining_and_cold_is_archived() {
        use CopyState::*;
        assert_eq!(pick(&[], 0), Pick::Hot);
        assert_eq!(pick(&[copy(Tier::Cold, Active, None)], 0), Pick::Archived);
        let restored = [
            copy(Tier::Cold, Active, None),
            copy(Tier::Hot, Restored, Some(100)),
        ];
        assert_eq!(pick(&restored, 99), Pick::Copy(1));
        assert_eq!(pick(&restored, 100), Pick::Archived, "expired");
        let moving = [
            copy(Tier::Hot, Draining, None),
            copy(Tier::Warm, Active, None),
        ];
        assert_eq!(pick(&moving, 0), Pick::Copy(1));
        assert_eq!(pick(&moving[..1], 0), Pick::Copy(0));
        let both = [
            copy(Tier::Warm, Active, None),
            copy(Tier::Hot, Restored, None),
        ];
        assert_eq!(pick(&both, 0), Pick::Copy(1));
        // Two active copies (a migration in flight): the hotter tier.
        let two = [
            copy(Tier::Warm, Active, None),
            copy(Tier::Hot, Active, None),
        ];
        assert_eq!(pick(&two, 0), Pick::Copy(1));
    }
}
