//! JWTs from an identity provider (`[auth.jwt]`), accepted wherever an API key of the same
//! role is. The cryptography is the `jsonwebtoken` crate's (aws-lc-rs backend); what is
//! Sluice's own is the key-set logic ([`keyset`]) and the policy here:
//!
//! - only RS256, ES256 and EdDSA: `alg: none` does not even parse, an HMAC algorithm is
//!   refused before any key is looked at (so a public key can never serve as an HMAC
//!   secret), and a token whose `alg` differs from its key's is refused;
//! - every token names its key (`kid`); several keys are valid at once;
//! - an unknown `kid` triggers one fetch of the key set, single-flight (concurrent requests
//!   wait for that fetch instead of starting their own) and throttled (at most one per
//!   `refresh_min_interval_s`);
//! - the set is fetched again when its caching headers say so (within bounds); a key gone
//!   from the set stays valid for `removed_key_grace_s`; a failed fetch keeps the cached
//!   keys (`sluice_jwks_refresh_total{outcome="error"}` and a warning);
//! - `iss`, `aud` and `exp` are required; `exp` and `nbf` are checked with `leeway_s`.

mod config;
mod fetch;
mod keyset;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use jsonwebtoken::{Algorithm, Validation};
use serde::Serialize;

use crate::{Clock, Error, Result, Role, rfc3339_ms};
use config::JwksSource;
pub use config::{AuthConfig, JwtConfig};
use keyset::{ACCEPTED, KeySet};

/// Longest token looked at, bytes.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Whether a bearer credential is shaped like a JWT (three base64url parts).
pub fn looks_like_jwt(bearer: &str) -> bool {
    bearer.len() <= MAX_TOKEN_BYTES
        && bearer.split('.').count() == 3
        && bearer
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtClaims {
    /// `sub`, if the token has one.
    pub subject: Option<String>,
    pub role: Role,
    /// The tenant claim (required for tenant-scoped roles; the engine checks it exists).
    pub tenant: Option<String>,
}

/// A cached key as `GET /v1/admin/jwks` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct JwksKeyView {
    pub kid: String,
    pub alg: String,
    pub fetched_at: String,
    /// When the key stops being used unless a fetch confirms it: the set's next refresh,
    /// or for a key gone from the set the end of its grace period.
    pub expires: String,
    /// When a fetch found the key gone from the set (it is in its grace period).
    pub removed_at: Option<String>,
}

/// The cached key set and its fetching.
pub struct JwtVerifier {
    cfg: JwtConfig,
    source: JwksSource,
    client: reqwest::Client,
    clock: Arc<dyn Clock>,
    state: RwLock<KeySet>,
    /// Held by the one fetch in flight.
    refreshing: tokio::sync::Mutex<()>,
}

fn refused() -> Error {
    Error::Unauthenticated
}

impl JwtVerifier {
    pub fn new(cfg: JwtConfig, clock: Arc<dyn Clock>) -> Result<Self> {
        let source = cfg.check()?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(cfg.fetch_timeout_s))
            .connect_timeout(Duration::from_secs(cfg.fetch_timeout_s))
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .map_err(|e| Error::Config(format!("[auth.jwt] HTTP client: {e}")))?;
        Ok(Self {
            cfg,
            source,
            client,
            clock,
            state: RwLock::new(KeySet::default()),
            refreshing: tokio::sync::Mutex::new(()),
        })
    }

    pub fn config(&self) -> &JwtConfig {
        &self.cfg
    }

    fn grace_ms(&self) -> i64 {
        secs_ms(self.cfg.removed_key_grace_s)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, KeySet> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, KeySet> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Verify a token: signature, algorithm, key, issuer, audience, times, role and tenant
    /// claims. Any refusal is `Error::Unauthenticated` (why is logged at debug level, never
    /// the token).
    pub async fn verify(&self, token: &str) -> Result<JwtClaims> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(refused());
        }
        // `alg: none` and unknown algorithms fail here.
        let header = jsonwebtoken::decode_header(token).map_err(|_| refused())?;
        if !ACCEPTED.contains(&header.alg) {
            tracing::debug!(alg = ?header.alg, "JWT refused: algorithm not accepted");
            return Err(refused());
        }
        let kid = header.kid.as_deref().ok_or_else(refused)?;
        if self.read().stale(self.clock.now_ms()) {
            self.refresh(None).await;
        }
        let mut key = self.lookup(kid);
        if key.is_none() {
            self.refresh(Some(kid)).await;
            key = self.lookup(kid);
        }
        let Some((alg, key)) = key else {
            tracing::debug!("JWT refused: unknown kid");
            return Err(refused());
        };
        if alg != header.alg {
            tracing::debug!("JWT refused: its alg is not its key's");
            return Err(refused());
        }
        let mut v = Validation::new(alg);
        v.algorithms = vec![alg];
        v.set_issuer(&[&self.cfg.issuer]);
        v.set_audience(&[&self.cfg.audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        v.leeway = self.cfg.leeway_s;
        v.validate_nbf = true;
        let data =
            jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(token, &key, &v)
                .map_err(|e| {
                    tracing::debug!(kind = ?e.kind(), "JWT refused");
                    refused()
                })?;
        let claims = data.claims;
        let text = |name: &str| {
            claims
                .get(name)
                .and_then(|v| v.as_str())
                .filter(|s| !s.is_empty() && s.len() <= 256)
                .map(str::to_string)
        };
        let role = text(&self.cfg.role_claim)
            .and_then(|r| Role::parse(&r))
            .ok_or_else(refused)?;
        let tenant = text(&self.cfg.tenant_claim);
        if role.is_tenant_scoped() && tenant.is_none() {
            return Err(refused());
        }
        Ok(JwtClaims {
            subject: text("sub"),
            role,
            tenant,
        })
    }

    fn lookup(&self, kid: &str) -> Option<(Algorithm, jsonwebtoken::DecodingKey)> {
        let now = self.clock.now_ms();
        self.read()
            .get(kid, now, self.grace_ms())
            .map(|k| (k.alg, k.key.clone()))
    }

    /// Fetch the key set, single-flight: callers queue on one lock, and whoever gets it
    /// after a fetch finds what it needed (or the throttle) and fetches nothing. `kid`:
    /// fetch for that unknown key; `None`: the set is stale.
    async fn refresh(&self, kid: Option<&str>) {
        let _one = self.refreshing.lock().await;
        let now = self.clock.now_ms();
        {
            let s = self.read();
            let needed = match kid {
                Some(kid) => s.get(kid, now, self.grace_ms()).is_none(),
                None => s.stale(now),
            };
            if !needed {
                return;
            }
            // A stale set that has never been fetched may always be fetched.
            if s.fetched_at_ms.is_some()
                && !s.may_fetch(now, secs_ms(self.cfg.refresh_min_interval_s))
            {
                metrics::counter!("sluice_jwks_refresh_total", "outcome" => "throttled")
                    .increment(1);
                return;
            }
        }
        let fetched = fetch::fetch(
            &self.client,
            &self.source,
            Duration::from_secs(self.cfg.fetch_timeout_s),
            self.cfg.max_jwks_bytes,
        )
        .await;
        let now = self.clock.now_ms();
        let parsed = fetched.and_then(|f| Ok((keyset::parse_jwks(&f.body)?, f)));
        match parsed {
            Ok((keys, f)) => {
                let ttl_s = keyset::cache_seconds(
                    f.cache_control.as_deref(),
                    f.expires.as_deref(),
                    u64::try_from(now / 1000).unwrap_or(0),
                    self.cfg.default_cache_s,
                    self.cfg.min_cache_s,
                    self.cfg.max_cache_s,
                );
                let n = keys.len();
                self.write()
                    .replace(keys, now, secs_ms(ttl_s), self.grace_ms());
                metrics::counter!("sluice_jwks_refresh_total", "outcome" => "ok").increment(1);
                tracing::debug!(keys = n, cache_s = ttl_s, "JWKS fetched");
            }
            Err(e) => {
                let retry = secs_ms(self.cfg.refresh_min_interval_s.max(1));
                self.write().failed(now, retry);
                metrics::counter!("sluice_jwks_refresh_total", "outcome" => "error").increment(1);
                tracing::warn!("JWKS refresh failed, keeping the cached keys: {e}");
            }
        }
    }

    /// The cached keys (fetched first if the set was never fetched).
    pub async fn cached_keys(&self) -> Vec<JwksKeyView> {
        if self.read().fetched_at_ms.is_none() {
            self.refresh(None).await;
        }
        let s = self.read();
        let grace = self.grace_ms();
        s.iter()
            .map(|(kid, k)| JwksKeyView {
                kid: kid.clone(),
                alg: format!("{:?}", k.alg),
                fetched_at: rfc3339_ms(k.fetched_at_ms),
                expires: rfc3339_ms(match k.removed_at_ms {
                    Some(r) => r.saturating_add(grace),
                    None => s.expires_at_ms,
                }),
                removed_at: k.removed_at_ms.map(rfc3339_ms),
            })
            .collect()
    }
}

fn secs_ms(s: u64) -> i64 {
    i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX)
}
