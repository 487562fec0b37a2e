//! Rate-limit and quota settings: the `[rate_limit]` and `[quotas]` config sections, the
//! `rate_limit` of a tenant, and the bounds every value from a request is checked against.
//! The limiting itself happens in the gateway (rate limits) and in [`crate::quotas`].
//! docs/limits.md describes both.

use serde::{Deserialize, Deserializer, Serialize};

/// Highest `requests_per_s` accepted (config or API).
pub const MAX_RATE_PER_S: u32 = 100_000;
/// Highest `burst` accepted (config or API).
pub const MAX_BURST: u32 = 1_000_000;
/// Highest concurrency quota (viewers, uploads).
pub const MAX_CONCURRENCY: u64 = 10_000_000;
/// Highest transcode-minutes quota (about 19,000 years of video a month).
pub const MAX_TRANSCODE_MINUTES: u64 = 10_000_000_000;

/// A GCRA limit: `burst` requests at once, refilled at `requests_per_s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub requests_per_s: u32,
    pub burst: u32,
}

impl RateLimit {
    /// Check the bounds: 1..=100,000 requests per second, a burst of 1..=1,000,000.
    pub fn validate(&self, what: &str) -> Result<(), String> {
        if !(1..=MAX_RATE_PER_S).contains(&self.requests_per_s) {
            return Err(format!(
                "{what}.requests_per_s must be between 1 and {MAX_RATE_PER_S}"
            ));
        }
        if !(1..=MAX_BURST).contains(&self.burst) {
            return Err(format!("{what}.burst must be between 1 and {MAX_BURST}"));
        }
        Ok(())
    }

    /// The time between two requests at the sustained rate, nanoseconds (at least 10 µs).
    pub fn interval_ns(&self) -> u64 {
        1_000_000_000 / u64::from(self.requests_per_s.max(1))
    }
}

/// Where rate-limit state lives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateLimitBackend {
    /// In this process (GCRA from the `governor` crate): each gateway limits alone.
    #[default]
    Memory,
    /// In Redis (one atomic script per decision): gateways sharing a Redis share limits.
    Redis,
}

/// What a request gets when the Redis backend cannot answer within its budget.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailMode {
    /// Let it through (availability first).
    #[default]
    Open,
    /// Refuse it with 503 `rate_limit_unavailable` (protection first).
    Closed,
}

/// The limits of one route class. Each is optional: unset is no limit of that kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClassLimits {
    /// Each tenant's requests in this class, unless the tenant has its own `rate_limit`.
    pub tenant: Option<RateLimit>,
    /// Each credential's requests (a tenant key, a device key, the admin key).
    pub key: Option<RateLimit>,
    /// Requests without credentials, per client IP address.
    pub ip: Option<RateLimit>,
}

/// `[rate_limit]`: per-class defaults and the backend. With nothing set nothing is
/// limited, except tenants given a `rate_limit` through the API. `Debug` hides the Redis
/// URL (it may carry a password).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// `memory` (default) or `redis`.
    pub backend: RateLimitBackend,
    /// `redis://host:port[/db]` for the `redis` backend.
    pub redis_url: Option<String>,
    /// `open` (default) or `closed`: what a request gets while Redis does not answer.
    pub on_backend_error: FailMode,
    /// Budget of one Redis decision, milliseconds (1–1000). Default 50.
    pub backend_timeout_ms: u64,
    /// Keys (per IP, per credential, per tenant) kept in memory at most; the least
    /// recently used beyond are forgotten. Default 100,000.
    pub max_keys: u64,
    /// Uploads and live pushes.
    pub ingest: ClassLimits,
    /// Playlists, segments, watch pages.
    pub playback: ClassLimits,
    /// The tenant and admin API.
    pub admin: ClassLimits,
    /// Health, readiness and metrics.
    pub ops: ClassLimits,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            backend: RateLimitBackend::Memory,
            redis_url: None,
            on_backend_error: FailMode::Open,
            backend_timeout_ms: 50,
            max_keys: 100_000,
            ingest: ClassLimits::default(),
            playback: ClassLimits::default(),
            admin: ClassLimits::default(),
            ops: ClassLimits::default(),
        }
    }
}

impl std::fmt::Debug for RateLimitConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitConfig")
            .field("backend", &self.backend)
            .field("redis_url", &self.redis_url.as_ref().map(|_| "<set>"))
            .field("on_backend_error", &self.on_backend_error)
            .field("backend_timeout_ms", &self.backend_timeout_ms)
            .field("max_keys", &self.max_keys)
            .field("ingest", &self.ingest)
            .field("playback", &self.playback)
            .field("admin", &self.admin)
            .field("ops", &self.ops)
            .finish()
    }
}

impl RateLimitConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=1000).contains(&self.backend_timeout_ms) {
            return Err("rate_limit.backend_timeout_ms must be between 1 and 1000".into());
        }
        if !(1..=100_000_000).contains(&self.max_keys) {
            return Err("rate_limit.max_keys must be between 1 and 100000000".into());
        }
        if self.backend == RateLimitBackend::Redis && self.redis_url.is_none() {
            return Err("rate_limit.backend = \"redis\" needs rate_limit.redis_url".into());
        }
        for (name, c) in [
            ("ingest", &self.ingest),
            ("playback", &self.playback),
            ("admin", &self.admin),
            ("ops", &self.ops),
        ] {
            for (kind, l) in [("tenant", c.tenant), ("key", c.key), ("ip", c.ip)] {
                if let Some(l) = l {
                    l.validate(&format!("rate_limit.{name}.{kind}"))?;
                }
            }
        }
        Ok(())
    }
}

/// `[quotas]`: how usage counters are kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuotaConfig {
    /// Egress bytes counted in memory are added to the database this often, milliseconds
    /// (and at shutdown). Default 1000.
    pub flush_interval_ms: u64,
    /// How long a tenant's limits and monthly totals read from the database are reused,
    /// milliseconds: how late a gateway sees a `PATCH` or another gateway's counts.
    /// Default 1000.
    pub refresh_ms: u64,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        Self {
            flush_interval_ms: 1000,
            refresh_ms: 1000,
        }
    }
}

impl QuotaConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !(10..=60_000).contains(&self.flush_interval_ms) {
            return Err("quotas.flush_interval_ms must be between 10 and 60000".into());
        }
        if self.refresh_ms > 60_000 {
            return Err("quotas.refresh_ms must be at most 60000".into());
        }
        Ok(())
    }
}

/// A field of a PATCH body: absent (`None`), `null` (`Some(None)`) or a value.
pub(crate) fn patch_field<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_bounds() {
        let ok = RateLimit {
            requests_per_s: 10,
            burst: 20,
        };
        assert!(ok.validate("r").is_ok());
        assert_eq!(ok.interval_ns(), 100_000_000);
        for (r, b) in [(0, 1), (1, 0), (MAX_RATE_PER_S + 1, 1), (1, MAX_BURST + 1)] {
            let l = RateLimit {
                requests_per_s: r,
                burst: b,
            };
            assert!(l.validate("r").is_err(), "{r} {b}");
        }
    }

    #[test]
    fn config_sections_parse_and_validate() {
        let c: RateLimitConfig = toml::from_str(
            "backend = \"redis\"\nredis_url = \"redis://127.0.0.1:6379\"\n\
             on_backend_error = \"closed\"\n[admin]\nkey = { requests_per_s = 5, burst = 10 }\n",
        )
        .unwrap();
        assert_eq!(c.on_backend_error, FailMode::Closed);
        assert_eq!(c.admin.key.unwrap().burst, 10);
        assert!(c.validate().is_ok());
        assert!(
            !format!("{c:?}").contains("127.0.0.1:6379"),
            "Debug hides the URL"
        );
        let bad: RateLimitConfig = toml::from_str("backend = \"redis\"").unwrap();
        assert!(bad.validate().is_err());
        assert!(toml::from_str::<RateLimitConfig>("[admin]\nuser = {}").is_err());
    }
}
