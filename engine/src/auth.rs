//! Credentials: the admin key, tenant keys and device keys, compared by their SHA-256 in
//! constant time and looked up on every request (a revoked key fails at once everywhere).

use crate::secrets::{constant_time_eq, hash_key};
use crate::{Engine, Error, Principal, Result, devices, store};

/// Shaped like a tenant (`sk_`) or device (`dk_`) key: the prefix and 32 base64url
/// characters (24 random bytes).
fn key_shaped(bearer: &str) -> bool {
    let body = bearer
        .strip_prefix("sk_")
        .or_else(|| bearer.strip_prefix("dk_"));
    body.is_some_and(|b| {
        b.len() == 32
            && b.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
    })
}

impl Engine {
    // ---- credentials -------------------------------------------------------------------

    /// Resolve a bearer credential. Keys are compared by their SHA-256, never stored, and
    /// looked up on every request (no cache): a revoked key fails at once on every gateway.
    pub async fn authenticate(&self, bearer: &str) -> Result<Principal> {
        let h = hash_key(bearer);
        if constant_time_eq(&h, &self.inner.admin_key_hash) {
            return Ok(Principal::Admin);
        }
        // Only a value shaped like a key Sluice issued costs a database query.
        if !key_shaped(bearer) {
            return Err(Error::Unauthenticated);
        }
        let Some(owner) = store::key_owner(&self.inner.db, &hex::encode(h)).await? else {
            return Err(Error::Unauthenticated);
        };
        match owner.device_id {
            None => Ok(Principal::Tenant {
                tenant_id: owner.tenant_id,
            }),
            Some(device_id) => {
                let now = self.now_ms();
                if owner
                    .last_seen_at
                    .is_none_or(|t| now - t >= devices::LAST_SEEN_THROTTLE_MS)
                {
                    store::touch_device(
                        &self.inner.db,
                        &device_id,
                        now,
                        devices::LAST_SEEN_THROTTLE_MS,
                    )
                    .await?;
                }
                Ok(Principal::Device {
                    tenant_id: owner.tenant_id,
                    device_id,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random_token;

    #[test]
    fn only_key_shaped_bearers_cost_a_database_query() {
        assert!(key_shaped(&format!("sk_{}", random_token(24))));
        assert!(key_shaped(&format!("dk_{}", random_token(24))));
        let long = "a".repeat(5000);
        let admin = format!("sk_admin_{}", random_token(24));
        for bad in ["", "sk_", "x", "sk_short", "Bearer", &long, &admin] {
            assert!(!key_shaped(bad), "{bad}");
        }
        assert!(!key_shaped(&format!("sk_{}!", &random_token(24)[..31])));
    }
}
