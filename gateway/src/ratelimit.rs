//! Rate limits: a tower layer that decides, before the router, whether a request may go
//! on. Each request counts against buckets of its route class ([`RouteClass`]): with
//! credentials its tenant's and its key's, without its client IP's. Every bucket is a
//! GCRA (a burst refilled at a steady rate); the decision is kept either in this process
//! (the `governor` crate, [`LocalLimiter`]) or in Redis ([`crate::ratelimit_redis`]), where
//! gateways sharing one Redis share every limit.
//!
//! Refused: 429 `rate_limited` with `Retry-After`. Every limited answer carries the
//! `RateLimit-Policy` and `RateLimit` fields of draft-ietf-httpapi-ratelimit-headers-10
//! for the bucket closest to its limit. docs/limits.md has the whole picture.

use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use http::{HeaderValue, Request, Response, StatusCode, header};
use sha2::{Digest, Sha256};
use sluice_engine::limits::{ClassLimits, FailMode, RateLimit, RateLimitBackend, RateLimitConfig};
use sluice_engine::{Engine, Principal};
use tower::{Layer, Service};

use crate::auth::Authenticated;
use crate::body::Body;
use crate::endpoint::{Endpoint, RouteClass};
use crate::error::ApiError;
use crate::ratelimit_redis::RedisLimiter;

/// One bucket a request counts against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    /// The policy name in the headers: `{class}-{kind}`, e.g. `admin-tenant`.
    pub policy: String,
    /// Who the bucket belongs to (a tenant id, a key digest, an IP address).
    pub subject: String,
    pub limit: RateLimit,
}

impl Bucket {
    /// The bucket's storage key (memory or Redis).
    pub fn key(&self) -> String {
        format!("{}:{}", self.policy, self.subject)
    }
}

/// The outcome for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The bucket the headers describe: the refusing one, else the one with the fewest
    /// requests left.
    pub policy: String,
    pub limit: RateLimit,
    /// Requests left in that bucket after this one.
    pub remaining: u64,
    /// Seconds until that bucket is full again (allowed) or until a retry can pass
    /// (refused), rounded up.
    pub reset_s: u64,
}

impl Decision {
    /// `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers-10): the
    /// policy's quota is the burst over the time it takes to refill it.
    pub fn headers(&self) -> [(http::HeaderName, HeaderValue); 2] {
        let window = u64::from(self.limit.burst)
            .div_ceil(u64::from(self.limit.requests_per_s.max(1)))
            .max(1);
        let policy = format!("\"{}\";q={};w={}", self.policy, self.limit.burst, window);
        let state = format!(
            "\"{}\";r={};t={}",
            self.policy, self.remaining, self.reset_s
        );
        [
            (
                http::HeaderName::from_static("ratelimit-policy"),
                HeaderValue::from_str(&policy).unwrap_or(HeaderValue::from_static("")),
            ),
            (
                http::HeaderName::from_static("ratelimit"),
                HeaderValue::from_str(&state).unwrap_or(HeaderValue::from_static("")),
            ),
        ]
    }
}

/// Nanoseconds rounded up to whole seconds.
pub(crate) fn ceil_s(ns: u64) -> u64 {
    ns.div_ceil(1_000_000_000)
}

type Gcra<C> = RateLimiter<NotKeyed, InMemoryState, C, StateInformationMiddleware>;

/// GCRA buckets in this process, from the `governor` crate. At most `max_keys` buckets are
/// kept (least recently used forgotten first; a forgotten bucket starts full again), and a
/// bucket unused for ten minutes is dropped.
pub struct LocalLimiter<C: Clock = DefaultClock> {
    clock: C,
    buckets: moka::sync::Cache<String, Arc<(RateLimit, Gcra<C>)>>,
}

impl<C> LocalLimiter<C>
where
    C: Clock + Clone + Send + Sync + 'static,
    C::Instant: Send + Sync,
{
    pub fn new(clock: C, max_keys: u64) -> Self {
        Self {
            clock,
            buckets: moka::sync::Cache::builder()
                .max_capacity(max_keys)
                .time_to_idle(Duration::from_secs(600))
                .build(),
        }
    }

    fn limiter(&self, b: &Bucket) -> Arc<(RateLimit, Gcra<C>)> {
        let key = b.key();
        if let Some(l) = self.buckets.get(&key)
            && l.0 == b.limit
        {
            return l;
        }
        let quota = Quota::with_period(Duration::from_nanos(b.limit.interval_ns()))
            .expect("a rate limit's interval is positive")
            .allow_burst(NonZeroU32::new(b.limit.burst).unwrap_or(NonZeroU32::MIN));
        let l = Arc::new((
            b.limit,
            RateLimiter::direct_with_clock(quota, self.clock.clone())
                .with_middleware::<StateInformationMiddleware>(),
        ));
        self.buckets.insert(key, l.clone());
        l
    }

    /// Count one request against every bucket. Buckets are checked in order and each
    /// allowed check takes its cell, so a request refused by a later bucket has used one
    /// of an earlier bucket (the Redis backend decides all buckets at once instead).
    pub fn decide(&self, buckets: &[Bucket]) -> Option<Decision> {
        let mut best: Option<Decision> = None;
        for b in buckets {
            let l = self.limiter(b);
            let d = match l.1.check() {
                Ok(snap) => {
                    let remaining = u64::from(snap.remaining_burst_capacity());
                    let used = u64::from(b.limit.burst).saturating_sub(remaining);
                    Decision {
                        allowed: true,
                        policy: b.policy.clone(),
                        limit: b.limit,
                        remaining,
                        reset_s: ceil_s(used.saturating_mul(b.limit.interval_ns())),
                    }
                }
                Err(not_until) => {
                    let wait = not_until.wait_time_from(self.clock.now());
                    return Some(Decision {
                        allowed: false,
                        policy: b.policy.clone(),
                        limit: b.limit,
                        remaining: 0,
                        reset_s: ceil_s(wait.as_nanos() as u64).max(1),
                    });
                }
            };
            if best.as_ref().is_none_or(|x| d.remaining < x.remaining) {
                best = Some(d);
            }
        }
        best
    }
}

/// Where decisions are made.
pub enum Backend {
    Memory(LocalLimiter),
    /// Boxed: the Redis client (with TLS support) is several times the size of the
    /// in-memory limiter.
    Redis(Box<RedisLimiter>),
}

/// Who a request counts as: its route class, principal, and credential digest (with a
/// principal) or client IP (without).
pub struct Caller {
    pub class: RouteClass,
    pub principal: Option<Principal>,
    pub subject: String,
}

/// The rate limiter of a gateway.
pub struct Limiter {
    config: RateLimitConfig,
    backend: Backend,
    trusted_proxies: Vec<sluice_cdn::ClientNet>,
}

impl Limiter {
    pub fn new(engine: &Engine) -> Self {
        let cfg = engine.config();
        let rl = cfg.rate_limit.clone();
        let backend = match rl.backend {
            RateLimitBackend::Memory => {
                Backend::Memory(LocalLimiter::new(DefaultClock::default(), rl.max_keys))
            }
            RateLimitBackend::Redis => Backend::Redis(Box::new(RedisLimiter::new(
                rl.redis_url.as_deref().unwrap_or_default(),
                Duration::from_millis(rl.backend_timeout_ms),
            ))),
        };
        Self {
            config: rl,
            backend,
            trusted_proxies: cfg.gateway.trusted_proxies.clone(),
        }
    }

    fn class_limits(&self, class: RouteClass) -> (&'static str, ClassLimits) {
        match class {
            RouteClass::Ingest => ("ingest", self.config.ingest),
            RouteClass::Playback => ("playback", self.config.playback),
            RouteClass::Admin => ("admin", self.config.admin),
            RouteClass::Ops => ("ops", self.config.ops),
        }
    }

    /// What the limiter needs of a request, read before any wait.
    pub fn caller<B>(&self, req: &Request<B>) -> Caller {
        let class = Endpoint::parse(req.method(), req.uri().path())
            .route()
            .class();
        let principal = req.extensions().get::<Authenticated>().map(|a| a.0.clone());
        // Only what a configured limit needs is computed (the playback path is hot).
        let limits = self.class_limits(class).1;
        let subject = match principal {
            None if limits.ip.is_some() => crate::client_ip::client_ip(req, &self.trusted_proxies)
                .map_or_else(|| "unknown".to_string(), |ip| ip.to_string()),
            Some(_) if limits.key.is_some() => key_digest(req),
            _ => String::new(),
        };
        Caller {
            class,
            principal,
            subject,
        }
    }

    /// The buckets of a request.
    async fn buckets(&self, engine: &Engine, caller: &Caller) -> Vec<Bucket> {
        let (name, limits) = self.class_limits(caller.class);
        let mut out = Vec::with_capacity(2);
        let mut push = |kind: &str, subject: String, limit: Option<RateLimit>| {
            if let Some(limit) = limit {
                out.push(Bucket {
                    policy: format!("{name}-{kind}"),
                    subject,
                    limit,
                });
            }
        };
        match &caller.principal {
            None => push("ip", caller.subject.clone(), limits.ip),
            Some(p) => {
                push("key", caller.subject.clone(), limits.key);
                if let Principal::Tenant { tenant_id } | Principal::Device { tenant_id, .. } = p {
                    // The tenant's own limit (any class) wins over the class default.
                    let own = match engine.tenant_limits(tenant_id).await {
                        Ok(l) => l.rate_limit,
                        Err(e) => {
                            tracing::warn!("could not read a tenant's rate limit: {e}");
                            None
                        }
                    };
                    push("tenant", tenant_id.clone(), own.or(limits.tenant));
                }
            }
        }
        out
    }

    /// The decision for a request: `Ok(None)` when no limit applies or the backend failed
    /// open, `Err` when it failed closed.
    pub async fn check(
        &self,
        engine: &Engine,
        caller: &Caller,
    ) -> Result<Option<Decision>, ApiError> {
        let buckets = self.buckets(engine, caller).await;
        if buckets.is_empty() {
            return Ok(None);
        }
        match &self.backend {
            Backend::Memory(l) => Ok(l.decide(&buckets)),
            Backend::Redis(r) => match r.decide(&buckets).await {
                Ok(d) => Ok(d),
                Err(_down) => match self.config.on_backend_error {
                    FailMode::Open => Ok(None),
                    FailMode::Closed => Err(ApiError {
                        retry_after: Some(1),
                        ..ApiError::new(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "rate_limit_unavailable",
                            "the rate limiter cannot decide right now; retry shortly",
                        )
                    }),
                },
            },
        }
    }
}

/// A stable, non-secret name for the credential of a request: the first 16 bytes of the
/// SHA-256 of its `Authorization` header value.
fn key_digest<B>(req: &Request<B>) -> String {
    let v = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    let d = Sha256::digest(v);
    d[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// The 429 answer.
fn refusal(d: &Decision, class: &'static str) -> Response<Body> {
    metrics::counter!("sluice_rate_limited_total", "class" => class).increment(1);
    let mut res = ApiError {
        retry_after: Some(d.reset_s.clamp(1, u64::from(u32::MAX)) as u32),
        ..ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "rate limit {} exceeded ({} requests at once, {} per second); retry in {} s",
                d.policy, d.limit.burst, d.limit.requests_per_s, d.reset_s
            ),
        )
    }
    .into_response();
    for (k, v) in d.headers() {
        res.headers_mut().insert(k, v);
    }
    res
}

/// The layer: put it after authentication (it reads the principal).
#[derive(Clone)]
pub struct RateLimitLayer {
    limiter: Arc<Limiter>,
    engine: Engine,
}

impl RateLimitLayer {
    pub fn new(engine: Engine) -> Self {
        Self {
            limiter: Arc::new(Limiter::new(&engine)),
            engine,
        }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimited<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RateLimited {
            inner,
            limiter: self.limiter.clone(),
            engine: self.engine.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RateLimited<S> {
    inner: S,
    limiter: Arc<Limiter>,
    engine: Engine,
}

impl<S, B> Service<Request<B>> for RateLimited<S>
where
    S: Service<Request<B>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let limiter = self.limiter.clone();
        let engine = self.engine.clone();
        let caller = limiter.caller(&req);
        Box::pin(async move {
            let decision = match limiter.check(&engine, &caller).await {
                Ok(d) => d,
                Err(e) => return Ok(e.into_response()),
            };
            if let Some(d) = &decision
                && !d.allowed
            {
                return Ok(refusal(d, limiter.class_limits(caller.class).0));
            }
            let mut res = inner.call(req).await?;
            if let Some(d) = decision {
                for (k, v) in d.headers() {
                    res.headers_mut().insert(k, v);
                }
            }
            Ok(res)
        })
    }
}

#[cfg(test)]
mod tests;
