//! `[auth]` configuration: `[auth.jwt]` with the contract's names, plus the key-set
//! policy (leeway, grace, refresh throttle, cache bounds, fetch limits).

use serde::{Deserialize, Serialize};

use crate::Error;

/// `[auth]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// JWTs from an identity provider, accepted beside API keys. Unset: keys only.
    pub jwt: Option<JwtConfig>,
}

/// `[auth.jwt]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// The `iss` every token must carry.
    pub issuer: String,
    /// The `aud` every token must carry (one of, when `aud` is a list).
    pub audience: String,
    /// Where the public keys are: `https://…`, `http://…` or `file:///abs/jwks.json`.
    pub jwks_url: String,
    /// The claim holding the tenant id (tenant-scoped roles). Default `tenant`.
    #[serde(default = "default_tenant_claim")]
    pub tenant_claim: String,
    /// The claim holding the role. Default `role`.
    #[serde(default = "default_role_claim")]
    pub role_claim: String,
    /// Clock skew allowed on `exp` and `nbf`, seconds. Default 30, at most 300.
    #[serde(default = "default_leeway_s")]
    pub leeway_s: u64,
    /// How long a key removed from the key set stays valid, seconds. Default 600.
    #[serde(default = "default_grace_s")]
    pub removed_key_grace_s: u64,
    /// Least time between two fetches of the key set (an unknown `kid`, or a retry after a
    /// failed fetch), seconds. Default 10.
    #[serde(default = "default_refresh_s")]
    pub refresh_min_interval_s: u64,
    /// Bounds on how long a fetched key set is used before it is fetched again: the
    /// response's `Cache-Control: max-age` or `Expires`, else `default_cache_s`, clamped
    /// to these. Defaults 60, 300 and 86,400.
    #[serde(default = "default_min_cache_s")]
    pub min_cache_s: u64,
    #[serde(default = "default_cache_s")]
    pub default_cache_s: u64,
    #[serde(default = "default_max_cache_s")]
    pub max_cache_s: u64,
    /// Deadline of one fetch (connect, headers and body), seconds. Default 5.
    #[serde(default = "default_fetch_timeout_s")]
    pub fetch_timeout_s: u64,
    /// Largest key set accepted, bytes. Default 262,144.
    #[serde(default = "default_max_jwks_bytes")]
    pub max_jwks_bytes: u64,
}

fn default_tenant_claim() -> String {
    "tenant".into()
}
fn default_role_claim() -> String {
    "role".into()
}
fn default_leeway_s() -> u64 {
    30
}
fn default_grace_s() -> u64 {
    600
}
fn default_refresh_s() -> u64 {
    10
}
fn default_min_cache_s() -> u64 {
    60
}
fn default_cache_s() -> u64 {
    300
}
fn default_max_cache_s() -> u64 {
    86_400
}
fn default_fetch_timeout_s() -> u64 {
    5
}
fn default_max_jwks_bytes() -> u64 {
    256 * 1024
}

/// Where the key set comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JwksSource {
    Http(String),
    File(std::path::PathBuf),
}

impl JwtConfig {
    pub(crate) fn check(&self) -> Result<JwksSource, Error> {
        let bad = |m: String| Err(Error::Config(format!("[auth.jwt] {m}")));
        if self.issuer.trim().is_empty() || self.audience.trim().is_empty() {
            return bad("issuer and audience must not be empty".into());
        }
        if self.tenant_claim.is_empty() || self.role_claim.is_empty() {
            return bad("tenant_claim and role_claim must not be empty".into());
        }
        if self.leeway_s > 300 {
            return bad("leeway_s must be at most 300".into());
        }
        if self.fetch_timeout_s == 0 || self.fetch_timeout_s > 60 {
            return bad("fetch_timeout_s must be 1 to 60".into());
        }
        if self.max_jwks_bytes == 0 || self.max_jwks_bytes > 16 * 1024 * 1024 {
            return bad("max_jwks_bytes must be 1 to 16 MiB".into());
        }
        if self.min_cache_s > self.max_cache_s {
            return bad("min_cache_s must not exceed max_cache_s".into());
        }
        if self.max_cache_s > 7 * 86_400 || self.removed_key_grace_s > 7 * 86_400 {
            return bad("max_cache_s and removed_key_grace_s must be at most 7 days".into());
        }
        if self.refresh_min_interval_s > 3600 {
            return bad("refresh_min_interval_s must be at most 3600".into());
        }
        let url = self.jwks_url.trim();
        if let Some(path) = url.strip_prefix("file://") {
            let p = std::path::PathBuf::from(path);
            if !p.is_absolute() {
                return bad(
                    "jwks_url file:// needs an absolute path (file:///abs/jwks.json)".into(),
                );
            }
            return Ok(JwksSource::File(p));
        }
        if url.starts_with("https://") || url.starts_with("http://") {
            return Ok(JwksSource::Http(url.to_string()));
        }
        bad("jwks_url must start with https://, http:// or file:///".into())
    }
}
