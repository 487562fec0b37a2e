//! The key-set logic, pure: which keys a JWKS document yields, how long a fetched set is
//! used, which keys are valid now (a key removed from the set stays valid for a grace
//! period), and when another fetch is allowed. Times are unix milliseconds from the
//! engine's clock.

use std::collections::BTreeMap;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey};

/// The algorithms Sluice accepts: never `none`, never an HMAC.
pub(crate) const ACCEPTED: [Algorithm; 3] = [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];

/// A usable key from a key set.
#[derive(Clone)]
pub(crate) struct FreshKey {
    pub kid: String,
    pub alg: Algorithm,
    pub key: DecodingKey,
    /// The key's public parameters as text: tells a changed key under the same kid.
    pub fingerprint: String,
}

/// A key in the cache.
#[derive(Clone)]
pub(crate) struct CachedKey {
    pub alg: Algorithm,
    pub key: DecodingKey,
    pub fingerprint: String,
    /// When the key was first fetched.
    pub fetched_at_ms: i64,
    /// When a fetch first found it gone from the set.
    pub removed_at_ms: Option<i64>,
}

/// The keys of a JWKS document that Sluice can use: with a `kid`, of an accepted
/// algorithm, whose declared `alg` (if any) matches the key's type. Keys of other types
/// (`oct` above all: an HMAC secret) are skipped. An error when the document is not a key
/// set or holds no usable key (the cached keys are then kept).
pub(crate) fn parse_jwks(body: &[u8]) -> Result<Vec<FreshKey>, String> {
    let set: JwkSet =
        serde_json::from_slice(body).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut out = Vec::new();
    for jwk in &set.keys {
        let Some(kid) = jwk
            .common
            .key_id
            .clone()
            .filter(|k| !k.is_empty() && k.len() <= 256)
        else {
            continue;
        };
        // The algorithm the key's type implies.
        let implied = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Algorithm::RS256,
            AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
                Algorithm::ES256
            }
            AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
                Algorithm::EdDSA
            }
            _ => continue,
        };
        let declared = match jwk.common.key_algorithm {
            None => implied,
            Some(KeyAlgorithm::RS256) => Algorithm::RS256,
            Some(KeyAlgorithm::ES256) => Algorithm::ES256,
            Some(KeyAlgorithm::EdDSA) => Algorithm::EdDSA,
            Some(_) => continue,
        };
        if declared != implied {
            continue;
        }
        let Ok(key) = DecodingKey::from_jwk(jwk) else {
            continue;
        };
        let fingerprint = serde_json::to_string(&jwk.algorithm).unwrap_or_default();
        out.push(FreshKey {
            kid,
            alg: declared,
            key,
            fingerprint,
        });
    }
    if out.is_empty() {
        return Err("the key set holds no usable key (RS256, ES256 or EdDSA with a kid)".into());
    }
    Ok(out)
}

/// How long a fetched set is used, seconds, from its response's caching headers:
/// `Cache-Control: max-age` first (`no-store`/`no-cache`: as short as allowed), then
/// `Expires`, else `default_s`; clamped to `[min_s, max_s]`.
pub(crate) fn cache_seconds(
    cache_control: Option<&str>,
    expires: Option<&str>,
    now_s: u64,
    default_s: u64,
    min_s: u64,
    max_s: u64,
) -> u64 {
    let mut from_cc = None;
    if let Some(cc) = cache_control {
        for d in cc.split(',').map(str::trim) {
            let lower = d.to_ascii_lowercase();
            if lower == "no-store" || lower == "no-cache" {
                from_cc = Some(0);
                break;
            }
            if let Some(v) = lower.strip_prefix("max-age=")
                && let Ok(n) = v.trim_matches('"').parse::<u64>()
            {
                from_cc = Some(n);
            }
        }
    }
    let chosen = from_cc
        .or_else(|| {
            let t = httpdate::parse_http_date(expires?).ok()?;
            let secs = t.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
            Some(secs.saturating_sub(now_s))
        })
        .unwrap_or(default_s);
    chosen.clamp(min_s, max_s)
}

/// The cached key set.
#[derive(Default)]
pub(crate) struct KeySet {
    keys: BTreeMap<String, CachedKey>,
    /// When the set is to be fetched again (0: never fetched).
    pub expires_at_ms: i64,
    /// The last fetch, successful or not.
    pub last_attempt_ms: Option<i64>,
    /// The last successful fetch.
    pub fetched_at_ms: Option<i64>,
}

impl KeySet {
    /// Take a freshly fetched set: new keys are added, present ones kept (and revived if
    /// they had been removed), missing ones marked removed; keys removed longer than the
    /// grace period ago are dropped.
    pub fn replace(&mut self, fresh: Vec<FreshKey>, now_ms: i64, ttl_ms: i64, grace_ms: i64) {
        let fresh: BTreeMap<String, FreshKey> =
            fresh.into_iter().map(|k| (k.kid.clone(), k)).collect();
        for (kid, cached) in self.keys.iter_mut() {
            if !fresh.contains_key(kid) && cached.removed_at_ms.is_none() {
                cached.removed_at_ms = Some(now_ms);
            }
        }
        for (kid, k) in fresh {
            match self.keys.get_mut(&kid) {
                // The same kid with another key or algorithm is a new key.
                Some(c) if c.alg == k.alg && c.fingerprint == k.fingerprint => {
                    c.removed_at_ms = None
                }
                _ => {
                    self.keys.insert(
                        kid,
                        CachedKey {
                            alg: k.alg,
                            key: k.key,
                            fingerprint: k.fingerprint,
                            fetched_at_ms: now_ms,
                            removed_at_ms: None,
                        },
                    );
                }
            }
        }
        self.keys.retain(|_, c| {
            c.removed_at_ms
                .is_none_or(|r| now_ms.saturating_sub(r) < grace_ms)
        });
        self.expires_at_ms = now_ms.saturating_add(ttl_ms);
        self.last_attempt_ms = Some(now_ms);
        self.fetched_at_ms = Some(now_ms);
    }

    /// A failed fetch: the cached keys stay; the next try waits `retry_ms`.
    pub fn failed(&mut self, now_ms: i64, retry_ms: i64) {
        self.last_attempt_ms = Some(now_ms);
        self.expires_at_ms = now_ms.saturating_add(retry_ms);
    }

    /// The key `kid` if it is valid now.
    pub fn get(&self, kid: &str, now_ms: i64, grace_ms: i64) -> Option<&CachedKey> {
        self.keys.get(kid).filter(|c| {
            c.removed_at_ms
                .is_none_or(|r| now_ms.saturating_sub(r) < grace_ms)
        })
    }

    /// Whether the set is due for a fetch.
    pub fn stale(&self, now_ms: i64) -> bool {
        now_ms >= self.expires_at_ms
    }

    /// Whether a fetch is allowed now (at most one per `min_interval_ms`).
    pub fn may_fetch(&self, now_ms: i64, min_interval_ms: i64) -> bool {
        self.last_attempt_ms
            .is_none_or(|t| now_ms.saturating_sub(t) >= min_interval_ms)
    }

    /// Every cached key, by kid.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &CachedKey)> {
        self.keys.iter()
    }
}

#[cfg(test)]
mod tests;
