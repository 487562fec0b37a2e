//! Credentials: the admin key, tenant keys, device keys and role keys, compared by their
//! SHA-256 in constant time and looked up on every request (a revoked key fails at once
//! everywhere); JWTs when `[auth.jwt]` is configured ([`crate::jwt`]).

use crate::secrets::{constant_time_eq, hash_key};
use crate::{Engine, Error, Principal, Result, Role, devices, store};

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

/// `last_used_at` is written at most this often per key.
pub(crate) const LAST_USED_THROTTLE_MS: i64 = 60_000;

/// An authenticated caller: what it may do ([`Principal`]) and how logs and the audit log
/// name it (`actor`: never a secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub principal: Principal,
    /// `admin_key`, `key:PREFIX` (an API key's first characters) or `jwt:SUBJECT`.
    pub actor: String,
}

impl Engine {
    // ---- credentials -------------------------------------------------------------------

    /// Resolve a bearer credential. Keys are compared by their SHA-256, never stored, and
    /// looked up on every request (no cache): a revoked key fails at once on every gateway.
    pub async fn authenticate(&self, bearer: &str) -> Result<Principal> {
        Ok(self.identify(bearer).await?.principal)
    }

    /// Resolve a bearer credential (an API key or, with `[auth.jwt]`, a JWT) into the
    /// caller and the name logs give it.
    pub async fn identify(&self, bearer: &str) -> Result<Identity> {
        let h = hash_key(bearer);
        if constant_time_eq(&h, &self.inner.admin_key_hash) {
            return Ok(Identity {
                principal: Principal::Admin,
                actor: "admin_key".into(),
            });
        }
        if let Some(jwt) = &self.inner.jwt
            && crate::jwt::looks_like_jwt(bearer)
        {
            return self.identify_jwt(jwt, bearer).await;
        }
        // Only a value shaped like a key Sluice issued costs a database query.
        if !key_shaped(bearer) {
            return Err(Error::Unauthenticated);
        }
        let key_hash = hex::encode(h);
        let Some(owner) = store::key_owner(&self.inner.db, &key_hash).await? else {
            return Err(Error::Unauthenticated);
        };
        let now = self.now_ms();
        let prefix = crate::keys::key_prefix(bearer);
        if owner
            .last_used_at
            .is_none_or(|t| now - t >= LAST_USED_THROTTLE_MS)
            || owner.prefix.is_none()
        {
            store::touch_key(
                &self.inner.db,
                &key_hash,
                prefix,
                now,
                LAST_USED_THROTTLE_MS,
            )
            .await?;
        }
        let actor = format!("key:{prefix}");
        let role = Role::parse(&owner.role);
        let Some(tenant_id) = owner.tenant_id else {
            // A platform key: only the ops role exists without a tenant.
            return match role {
                Some(Role::Ops) => Ok(Identity {
                    principal: Principal::Ops,
                    actor,
                }),
                _ => Err(Error::Unauthenticated),
            };
        };
        let principal = match (owner.device_id, role) {
            (Some(device_id), _) => {
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
                Principal::Device {
                    tenant_id,
                    device_id,
                }
            }
            (None, Some(Role::TenantAdmin)) => Principal::Tenant { tenant_id },
            (None, Some(Role::Uploader)) => Principal::Uploader { tenant_id },
            (None, Some(Role::Viewer)) => Principal::Viewer { tenant_id },
            // A tenant's key of any other stored role is refused.
            (None, _) => return Err(Error::Unauthenticated),
        };
        Ok(Identity { principal, actor })
    }

    async fn identify_jwt(&self, jwt: &crate::jwt::JwtVerifier, token: &str) -> Result<Identity> {
        let claims = jwt.verify(token).await?;
        let principal = match (claims.role, claims.tenant) {
            (Role::PlatformAdmin, _) => Principal::Admin,
            (Role::Ops, _) => Principal::Ops,
            (role, Some(tenant_id)) => {
                // The tenant claim must name an existing tenant.
                if !store::tenant_exists(&self.inner.db, &tenant_id).await? {
                    tracing::debug!("JWT refused: its tenant does not exist");
                    return Err(Error::Unauthenticated);
                }
                match role {
                    Role::TenantAdmin => Principal::Tenant { tenant_id },
                    Role::Uploader => Principal::Uploader { tenant_id },
                    _ => Principal::Viewer { tenant_id },
                }
            }
            (_, None) => return Err(Error::Unauthenticated),
        };
        let subject = claims.subject.unwrap_or_else(|| "-".into());
        // A subject is an identity provider's id, not a secret; bounded and printable.
        let subject: String = subject
            .chars()
            .filter(|c| !c.is_control())
            .take(128)
            .collect();
        Ok(Identity {
            principal,
            actor: format!("jwt:{subject}"),
        })
    }

    /// `GET /v1/admin/jwks` (platform admin): the cached keys. Empty without `[auth.jwt]`.
    pub async fn jwks_keys(&self, who: &Principal) -> Result<Vec<crate::jwt::JwksKeyView>> {
        if *who != Principal::Admin {
            return Err(Error::Forbidden(
                "this endpoint needs the platform_admin role",
            ));
        }
        Ok(match &self.inner.jwt {
            Some(j) => j.cached_keys().await,
            None => Vec::new(),
        })
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
