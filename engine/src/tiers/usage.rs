//! `GET /v1/usage`: a tenant's bytes and objects per tier (from the counters that change
//! with the copy rows) and its quotas.

use serde_json::{Map, Value, json};

use crate::{Engine, Principal, Result};

impl Engine {
    /// The caller's usage: `{"tiers": {"hot": {"objects", "bytes"}, …}, "quotas": {…}}`.
    pub async fn usage(&self, who: &Principal) -> Result<Value> {
        let tenant = self.tenant_of(who)?;
        let mut tiers = Map::new();
        for (tier, bytes, objects) in self.tier_usage(tenant).await? {
            tiers.insert(
                tier.as_str().to_string(),
                json!({"objects": objects, "bytes": bytes}),
            );
        }
        Ok(json!({"tiers": tiers, "quotas": self.quotas(who).await?}))
    }

    /// The `quotas` object of `GET /v1/usage`: one entry per quota, `{"used", "limit"}`
    /// (`limit` null when unlimited). `storage_bytes` counts what its quota enforces:
    /// the sources of the tenant's assets plus the lengths reserved by unfinished uploads.
    pub async fn quotas(&self, who: &Principal) -> Result<Value> {
        let (limit, used) = self.storage_usage(who).await?;
        Ok(json!({"storage_bytes": {"used": used, "limit": limit}}))
    }
}
