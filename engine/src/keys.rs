//! Tenant-scoped API keys per role (`POST/GET/DELETE /v1/keys`). A tenant admin creates
//! keys for its own tenant up to its own role; the platform admin for any tenant. Keys are
//! kept as their SHA-256 only; the prefix (the first characters) names a key in logs and
//! listings. Revoking is one UPDATE: every gateway looks keys up in the database on every
//! request, so the next request anywhere is refused.

use serde::Serialize;

use crate::secrets::hash_key;
use crate::{Engine, Error, Principal, Result, Role, random_token, rfc3339_ms, store};

/// Characters of a key kept as its prefix: `sk_` and 8 of the 32 random characters
/// (48 of its 192 bits: enough to tell keys apart, far from enough to guess the rest).
pub const KEY_PREFIX_LEN: usize = 11;

/// Most keys one listing returns.
pub const MAX_KEYS_LISTED: i64 = 1000;

/// The prefix of a key as logs and listings show it.
pub(crate) fn key_prefix(key: &str) -> &str {
    key.get(..KEY_PREFIX_LEN).unwrap_or("")
}

/// A key as created: the secret is shown this once.
#[derive(Debug, Clone, Serialize)]
pub struct NewKey {
    pub id: String,
    /// `None`: a platform key (role `ops`).
    pub tenant: Option<String>,
    pub role: Role,
    pub name: Option<String>,
    pub prefix: String,
    pub key: String,
    pub created_at: String,
}

/// A key as listed: never its secret or hash.
#[derive(Debug, Clone, Serialize)]
pub struct KeyInfo {
    pub id: String,
    pub tenant: Option<String>,
    pub role: String,
    /// `tenant` (the tenant's first key), `device` or `key` (from `POST /v1/keys`).
    pub kind: String,
    pub name: Option<String>,
    /// `None` for a key made before prefixes and not used since.
    pub prefix: Option<String>,
    pub device_id: Option<String>,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub revoked_at: Option<String>,
}

impl Engine {
    /// The tenant a key request is about: the caller's own, or for the platform admin the
    /// one named (which must exist), or none (the platform keys). A tenant admin naming
    /// another tenant gets the same 404 as a tenant that does not exist.
    async fn key_tenant(&self, who: &Principal, named: Option<&str>) -> Result<Option<String>> {
        match who {
            Principal::Admin => match named {
                Some(t) => {
                    if !store::tenant_exists(&self.inner.db, t).await? {
                        return Err(Error::not_found("tenant", t));
                    }
                    Ok(Some(t.to_string()))
                }
                None => Ok(None),
            },
            Principal::Tenant { tenant_id } => match named {
                Some(t) if t != tenant_id => Err(Error::not_found("tenant", t)),
                _ => Ok(Some(tenant_id.clone())),
            },
            _ => Err(Error::Forbidden(
                "managing keys needs the tenant_admin or platform_admin role",
            )),
        }
    }

    /// `POST /v1/keys`: a new key of `role` for a tenant.
    pub async fn create_key(
        &self,
        who: &Principal,
        role: Role,
        name: Option<&str>,
        tenant: Option<&str>,
    ) -> Result<NewKey> {
        let tenant = self.key_tenant(who, tenant).await?;
        if !who.role().may_grant(role) {
            return Err(Error::Forbidden(
                "a key can be created only for a role up to the caller's own",
            ));
        }
        // Tenant roles belong to a tenant; ops keys to none.
        match (role.is_tenant_scoped(), &tenant) {
            (true, None) => {
                return Err(Error::InvalidInput(
                    "a key of a tenant role needs its \"tenant\"".into(),
                ));
            }
            (false, Some(_)) => {
                return Err(Error::InvalidInput(
                    "an ops key belongs to no tenant: leave \"tenant\" out".into(),
                ));
            }
            _ => {}
        }
        let name = name.map(str::trim).filter(|n| !n.is_empty());
        if name.is_some_and(|n| n.chars().count() > 200 || n.chars().any(char::is_control)) {
            return Err(Error::InvalidInput(
                "key name must be at most 200 printable characters".into(),
            ));
        }
        let id = ulid::Ulid::new().to_string();
        let key = format!("sk_{}", random_token(24));
        let prefix = key_prefix(&key).to_string();
        let now = self.now_ms();
        store::insert_key(
            &self.inner.db,
            store::NewKeyRow {
                id: &id,
                tenant_id: tenant.as_deref(),
                role: role.as_str(),
                name,
                prefix: &prefix,
                key_hash: &hex::encode(hash_key(&key)),
                now,
            },
        )
        .await?;
        tracing::info!(
            tenant = tenant.as_deref().unwrap_or("-"),
            key = %prefix,
            role = %role,
            "key created"
        );
        Ok(NewKey {
            id,
            tenant,
            role,
            name: name.map(str::to_string),
            prefix,
            key,
            created_at: rfc3339_ms(now),
        })
    }

    /// `GET /v1/keys`: a tenant's keys (the platform admin naming no tenant: the platform
    /// keys), newest first (no secrets).
    pub async fn list_keys(&self, who: &Principal, tenant: Option<&str>) -> Result<Vec<KeyInfo>> {
        let tenant = self.key_tenant(who, tenant).await?;
        let rows = store::list_keys(&self.inner.db, tenant.as_deref(), MAX_KEYS_LISTED).await?;
        Ok(rows
            .into_iter()
            .map(|k| KeyInfo {
                id: k.id,
                tenant: k.tenant_id,
                role: k.role,
                kind: k.kind,
                name: k.name,
                prefix: k.prefix,
                device_id: k.device_id,
                created_at: rfc3339_ms(k.created_at),
                last_used_at: k.last_used_at.map(rfc3339_ms),
                revoked_at: k.revoked_at.map(rfc3339_ms),
            })
            .collect())
    }

    /// `DELETE /v1/keys/{id}`: revoke one of the tenant's keys. The platform admin may
    /// revoke any tenant's key by naming the tenant, and the platform keys naming none.
    pub async fn revoke_key(&self, who: &Principal, id: &str, tenant: Option<&str>) -> Result<()> {
        let tenant = self.key_tenant(who, tenant).await?;
        if !store::revoke_key(&self.inner.db, tenant.as_deref(), id, self.now_ms()).await? {
            return Err(Error::not_found("key", id));
        }
        tracing::info!(tenant = tenant.as_deref().unwrap_or("-"), key_id = %id, "key revoked");
        Ok(())
    }
}
