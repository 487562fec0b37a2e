//! `POST /v1/ops/usage/check` (admin): the per-tenant, per-tier counters recomputed from
//! the copy rows, and each copy's figures recomputed from listing its store. Drift is
//! reported; `repair` sets the counters from the rows (store drift is reported only: the
//! rows say what Sluice believes it stored, and a person decides).

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::Row;

use crate::{Engine, Principal, Result};

/// One difference found.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Drift {
    /// `counters` (tier_usage vs the copy rows) or `store` (a copy row vs its store).
    pub kind: &'static str,
    pub tenant: String,
    pub tier: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub asset: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    /// What the reference says: the rows (counters) or the listing (store).
    pub expected_bytes: u64,
    pub expected_objects: u64,
    /// What was recorded: the counters (counters) or the row (store).
    pub recorded_bytes: u64,
    pub recorded_objects: u64,
}

/// The answer of a check.
#[derive(Debug, Clone, Serialize)]
pub struct UsageCheck {
    pub copies_checked: u64,
    pub drift: Vec<Drift>,
    /// Whether the counters were set from the rows.
    pub repaired: bool,
}

fn u(n: i64) -> u64 {
    n.max(0) as u64
}

impl Engine {
    /// Check (and with `repair`, fix) the tier counters. Admin only.
    pub async fn usage_check(&self, who: &Principal, repair: bool) -> Result<UsageCheck> {
        self.require_ops(who)?;
        let db = &self.inner.db;
        let mut drift = Vec::new();
        let rows = sqlx::query(
            "SELECT tenant_id, tier, COALESCE(SUM(bytes), 0), COALESCE(SUM(objects), 0) \
             FROM asset_copies GROUP BY tenant_id, tier",
        )
        .fetch_all(db)
        .await?;
        let mut sums: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
        for r in rows {
            sums.insert(
                (r.try_get(0)?, r.try_get(1)?),
                (u(r.try_get(2)?), u(r.try_get(3)?)),
            );
        }
        let counters = sqlx::query("SELECT tenant_id, tier, bytes, objects FROM tier_usage")
            .fetch_all(db)
            .await?;
        let mut recorded: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
        for r in counters {
            recorded.insert(
                (r.try_get(0)?, r.try_get(1)?),
                (u(r.try_get(2)?), u(r.try_get(3)?)),
            );
        }
        let keys: std::collections::BTreeSet<_> = sums.keys().chain(recorded.keys()).collect();
        for k in keys {
            let want = sums.get(k).copied().unwrap_or((0, 0));
            let have = recorded.get(k).copied().unwrap_or((0, 0));
            if want != have {
                drift.push(Drift {
                    kind: "counters",
                    tenant: k.0.clone(),
                    tier: k.1.clone(),
                    asset: None,
                    store: None,
                    expected_bytes: want.0,
                    expected_objects: want.1,
                    recorded_bytes: have.0,
                    recorded_objects: have.1,
                });
            }
        }
        // Each measured copy against its store's listing.
        let copies = sqlx::query(
            "SELECT tenant_id, asset_id, tier, store, bytes, objects FROM asset_copies \
             WHERE measured = 1 ORDER BY tenant_id, asset_id",
        )
        .fetch_all(db)
        .await?;
        let mut checked = 0u64;
        for r in &copies {
            let (tenant, asset, tier, store): (String, String, String, String) =
                (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?);
            let row = (u(r.try_get(4)?), u(r.try_get(5)?));
            let storage = self.stores().require(&store)?.clone();
            let listed = self.measure_asset(&storage, &tenant, &asset).await?;
            checked += 1;
            if listed != row {
                drift.push(Drift {
                    kind: "store",
                    tenant,
                    tier,
                    asset: Some(asset),
                    store: Some(store),
                    expected_bytes: listed.0,
                    expected_objects: listed.1,
                    recorded_bytes: row.0,
                    recorded_objects: row.1,
                });
            }
        }
        if repair {
            let mut tx = db.begin().await?;
            sqlx::query("DELETE FROM tier_usage")
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO tier_usage (tenant_id, tier, bytes, objects) \
                 SELECT tenant_id, tier, SUM(bytes), SUM(objects) FROM asset_copies \
                 GROUP BY tenant_id, tier",
            )
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            tracing::warn!(
                drift = drift.len(),
                "tier counters repaired from the copy rows"
            );
        }
        Ok(UsageCheck {
            copies_checked: checked,
            drift,
            repaired: repair,
        })
    }
}
