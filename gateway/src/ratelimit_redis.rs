//! The Redis backend of the rate limiter: every bucket of a request is decided by one Lua
//! script, atomically and in one round trip, with Redis's own clock (so gateways on
//! different machines agree on time). A bucket is one key holding its GCRA "theoretical
//! arrival time" in microseconds; it expires when the bucket would be full again, so
//! Redis holds only buckets in use.
//!
//! Every decision has a budget (`rate_limit.backend_timeout_ms`, default 50 ms), connection
//! included. Past it, or on any Redis error, the caller applies `on_backend_error`; the
//! failure is counted in `sluice_rate_limit_backend_errors_total` and logged at most once
//! every ten seconds. The connection manager reconnects by itself, so shared limiting
//! resumes when Redis is back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

use crate::ratelimit::{Bucket, Decision, ceil_s};

/// The GCRA over every bucket at once. KEYS: the buckets; ARGV: per bucket its interval
/// (µs) and its burst. Either every bucket takes one cell or none does. Returns {allowed,
/// index of the bucket described (1-based), remaining, retry wait µs, reset µs}.
const SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tats = {}
local deny_i, deny_wait = 0, -1
local min_i, min_rem = 0, -1
for i = 1, #KEYS do
  local interval = tonumber(ARGV[2 * i - 1])
  local burst = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  local new_tat = tat + interval
  local allow_at = new_tat - interval * burst
  if now < allow_at then
    if allow_at - now > deny_wait then deny_i, deny_wait = i, allow_at - now end
  else
    tats[i] = new_tat
    local rem = math.floor((now - allow_at) / interval)
    if min_rem < 0 or rem < min_rem then min_i, min_rem = i, rem end
  end
end
if deny_i > 0 then return {0, deny_i, 0, deny_wait, 0} end
for i = 1, #KEYS do
  local ttl = math.floor((tats[i] - now) / 1000) + 1
  redis.call('SET', KEYS[i], string.format('%d', tats[i]), 'PX', ttl)
end
return {1, min_i, min_rem, 0, tats[min_i] - now}
"#;

/// Redis did not decide within the budget (counted and logged where it happened).
#[derive(Debug, Clone, Copy)]
pub struct BackendDown;

/// Key prefix in Redis.
const PREFIX: &str = "sluice:rl:";

pub struct RedisLimiter {
    client: Option<redis::Client>,
    conn: OnceCell<ConnectionManager>,
    script: redis::Script,
    budget: Duration,
    last_log_s: AtomicU64,
}

impl RedisLimiter {
    /// A limiter on `url`; nothing connects until the first decision.
    pub fn new(url: &str, budget: Duration) -> Self {
        let client = match redis::Client::open(url) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::error!("rate_limit.redis_url is not usable: {e}");
                None
            }
        };
        Self {
            client,
            conn: OnceCell::new(),
            script: redis::Script::new(SCRIPT),
            budget,
            last_log_s: AtomicU64::new(0),
        }
    }

    async fn connection(&self) -> redis::RedisResult<ConnectionManager> {
        let Some(client) = &self.client else {
            return Err(redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "no usable redis_url",
            )));
        };
        let c = self
            .conn
            .get_or_try_init(|| async {
                let cfg = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.budget))
                    .set_response_timeout(Some(self.budget))
                    .set_number_of_retries(2)
                    .set_max_delay(Duration::from_millis(500));
                client.get_connection_manager_with_config(cfg).await
            })
            .await?;
        Ok(c.clone())
    }

    async fn run(&self, buckets: &[Bucket]) -> redis::RedisResult<Vec<i64>> {
        let mut conn = self.connection().await?;
        let mut inv = self.script.prepare_invoke();
        for b in buckets {
            let interval_us = (b.limit.interval_ns() / 1000).max(1);
            inv.key(format!("{PREFIX}{}", b.key()))
                .arg(interval_us)
                .arg(b.limit.burst);
        }
        inv.invoke_async(&mut conn).await
    }

    /// Decide for every bucket at once, within the budget. `Err` is a backend failure
    /// (already counted and logged).
    pub async fn decide(&self, buckets: &[Bucket]) -> Result<Option<Decision>, BackendDown> {
        if buckets.is_empty() {
            return Ok(None);
        }
        let out = match tokio::time::timeout(self.budget, self.run(buckets)).await {
            Ok(Ok(v)) if v.len() == 5 => v,
            Ok(Ok(_)) => return Err(self.failed("an unexpected script answer")),
            Ok(Err(e)) => return Err(self.failed(&e.to_string())),
            Err(_) => return Err(self.failed("no answer within the budget")),
        };
        let i = usize::try_from(out[1] - 1)
            .unwrap_or(0)
            .min(buckets.len() - 1);
        let b = &buckets[i];
        let allowed = out[0] == 1;
        let us = |v: i64| u64::try_from(v).unwrap_or(0).saturating_mul(1000);
        Ok(Some(Decision {
            allowed,
            policy: b.policy.clone(),
            limit: b.limit,
            remaining: u64::try_from(out[2]).unwrap_or(0),
            reset_s: if allowed {
                ceil_s(us(out[4]))
            } else {
                ceil_s(us(out[3])).max(1)
            },
        }))
    }

    fn failed(&self, what: &str) -> BackendDown {
        metrics::counter!("sluice_rate_limit_backend_errors_total").increment(1);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = self.last_log_s.load(Ordering::Relaxed);
        if now >= last + 10
            && self
                .last_log_s
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!("rate limiter backend (redis) failed: {what}");
        }
        BackendDown
    }
}
