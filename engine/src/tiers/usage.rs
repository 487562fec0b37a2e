//! `GET /v1/usage`: a tenant's bytes and objects per tier (from the counters that change
//! with the copy rows) and its quotas.

use serde_json::{Map, Value, json};

use crate::{Engine, Principal, Result};

impl Engine {
    /// The caller's usage: `{"tiers": {"hot": {"objects", "bytes"}, …}, "quotas": {…}}`
    /// (every quota's usage and limit, [`Engine::quota_usage`]).
    pub async fn usage(&self, who: &Principal) -> Result<Value> {
        let tenant = self.tenant_of(who)?;
        let mut tiers = Map::new();
        for (tier, bytes, objects) in self.tier_usage(tenant).await? {
            tiers.insert(
                tier.as_str().to_string(),
                json!({"objects": objects, "bytes": bytes}),
            );
        }
        let quotas = self.quota_usage(who).await?;
        Ok(json!({"tiers": tiers, "quotas": quotas}))
    }
}
