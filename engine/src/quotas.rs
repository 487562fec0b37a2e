//! Tenant quotas: what each one counts, where the count lives, and `GET /v1/usage`.
//!
//! | quota | counted | kept |
//! | --- | --- | --- |
//! | `storage_bytes` | sources plus declared lengths of uploads in progress | the assets table |
//! | `egress_bytes_per_month` | response body bytes as they are sent | memory, added to `tenant_usage` every `quotas.flush_interval_ms` and at shutdown |
//! | `concurrent_viewers` | playback response bodies being sent | this process |
//! | `concurrent_uploads` | upload requests running | this process |
//! | `transcode_minutes_per_month` | the output duration of each successful transcode | `tenant_usage`, in the job's success transaction |
//!
//! Months are calendar months in UTC. docs/limits.md explains the choices.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::limits::{MAX_CONCURRENCY, MAX_TRANSCODE_MINUTES, RateLimit, patch_field};
use crate::{Engine, Error, Principal, Result, TenantQuotas, store};

/// The calendar month (UTC) of a unix-millisecond time: `YYYY-MM`.
pub fn month_of(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!("{:04}-{:02}", t.year(), u8::from(t.month()))
}

/// A tenant's limits, as the gateway and the engine check them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantLimits {
    pub quotas: TenantQuotas,
    pub rate_limit: Option<RateLimit>,
}

/// `PATCH /v1/tenants/{id}`: each field present replaces the current value; `null`
/// removes a quota (unlimited) or the tenant's own rate limit (the configured defaults).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantPatch {
    #[serde(default)]
    pub quotas: Option<QuotasPatch>,
    #[serde(default, deserialize_with = "patch_field")]
    pub rate_limit: Option<Option<RateLimit>>,
}

/// The quota fields of a PATCH body.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotasPatch {
    #[serde(default, deserialize_with = "patch_field")]
    pub storage_bytes: Option<Option<u64>>,
    #[serde(default, deserialize_with = "patch_field")]
    pub egress_bytes_per_month: Option<Option<u64>>,
    #[serde(default, deserialize_with = "patch_field")]
    pub concurrent_viewers: Option<Option<u64>>,
    #[serde(default, deserialize_with = "patch_field")]
    pub concurrent_uploads: Option<Option<u64>>,
    #[serde(default, deserialize_with = "patch_field")]
    pub transcode_minutes_per_month: Option<Option<u64>>,
}

/// A tenant after a PATCH.
#[derive(Debug, Clone, Serialize)]
pub struct TenantLimitsView {
    pub id: String,
    pub quotas: TenantQuotas,
    pub rate_limit: Option<RateLimit>,
}

/// One quota in `GET /v1/usage`: `used` is an integer, except transcode minutes, which
/// are exact to the millisecond (a fraction).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QuotaUsage {
    pub used: serde_json::Value,
    pub limit: Option<u64>,
}

/// Check the bounds of every quota and of the rate limit.
pub fn validate_limits(q: &TenantQuotas, rate_limit: Option<&RateLimit>) -> Result<()> {
    let bad = |m: String| Err(Error::InvalidInput(m));
    for (name, v, max) in [
        ("storage_bytes", q.storage_bytes, i64::MAX as u64),
        (
            "egress_bytes_per_month",
            q.egress_bytes_per_month,
            i64::MAX as u64,
        ),
        ("concurrent_viewers", q.concurrent_viewers, MAX_CONCURRENCY),
        ("concurrent_uploads", q.concurrent_uploads, MAX_CONCURRENCY),
        (
            "transcode_minutes_per_month",
            q.transcode_minutes_per_month,
            MAX_TRANSCODE_MINUTES,
        ),
    ] {
        if v.is_some_and(|v| v > max) {
            return bad(format!("quotas.{name} must be at most {max}"));
        }
    }
    if let Some(l) = rate_limit {
        l.validate("rate_limit").map_err(Error::InvalidInput)?;
    }
    Ok(())
}

/// What a process counts in memory.
pub(crate) struct UsageState {
    /// Egress bytes sent and not yet added to the database, by (tenant, month).
    pending: Mutex<HashMap<(String, String), u64>>,
    /// Permits held now, by (tenant, kind).
    held: Arc<Mutex<HashMap<(String, PermitKind), u64>>>,
    /// Limits and this month's database counters, reused for `refresh_ms`.
    limits: moka::sync::Cache<String, Arc<TenantLimits>>,
    month: moka::sync::Cache<(String, String), (u64, u64)>,
}

impl UsageState {
    pub(crate) fn new(cfg: &crate::limits::QuotaConfig) -> Self {
        let ttl = Duration::from_millis(cfg.refresh_ms.max(1));
        Self {
            pending: Mutex::default(),
            held: Arc::default(),
            limits: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ttl)
                .build(),
            month: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ttl)
                .build(),
        }
    }
}

/// The concurrency quotas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PermitKind {
    Viewer,
    Upload,
}

impl PermitKind {
    pub fn quota_name(self) -> &'static str {
        match self {
            PermitKind::Viewer => "concurrent_viewers",
            PermitKind::Upload => "concurrent_uploads",
        }
    }
}

/// One unit of a concurrency quota, given back when dropped (a response body finished or
/// abandoned by its client, an upload request ended).
pub struct QuotaPermit {
    held: Arc<Mutex<HashMap<(String, PermitKind), u64>>>,
    key: (String, PermitKind),
}

impl Drop for QuotaPermit {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = held.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                held.remove(&self.key);
            }
        }
    }
}

impl Engine {
    /// A tenant's limits (cached for `quotas.refresh_ms`).
    pub async fn tenant_limits(&self, tenant: &str) -> Result<Arc<TenantLimits>> {
        if let Some(l) = self.inner.usage.limits.get(tenant) {
            return Ok(l);
        }
        let row = store::tenant_limits(&self.inner.db, tenant)
            .await?
            .ok_or_else(|| Error::not_found("tenant", tenant))?;
        let l = Arc::new(TenantLimits {
            quotas: row.quotas,
            rate_limit: row.rate_limit,
        });
        self.inner
            .usage
            .limits
            .insert(tenant.to_string(), l.clone());
        Ok(l)
    }

    /// Change a tenant's quotas and rate limit (admin only).
    pub async fn patch_tenant(
        &self,
        who: &Principal,
        tenant: &str,
        patch: TenantPatch,
    ) -> Result<TenantLimitsView> {
        if *who != Principal::Admin {
            return Err(Error::Forbidden("changing tenants needs the admin key"));
        }
        let row = store::tenant_limits(&self.inner.db, tenant)
            .await?
            .ok_or_else(|| Error::not_found("tenant", tenant))?;
        let mut q = row.quotas;
        if let Some(p) = patch.quotas {
            let set = |slot: &mut Option<u64>, v: Option<Option<u64>>| {
                if let Some(v) = v {
                    *slot = v;
                }
            };
            set(&mut q.storage_bytes, p.storage_bytes);
            set(&mut q.egress_bytes_per_month, p.egress_bytes_per_month);
            set(&mut q.concurrent_viewers, p.concurrent_viewers);
            set(&mut q.concurrent_uploads, p.concurrent_uploads);
            set(
                &mut q.transcode_minutes_per_month,
                p.transcode_minutes_per_month,
            );
        }
        let rate_limit = patch.rate_limit.unwrap_or(row.rate_limit);
        validate_limits(&q, rate_limit.as_ref())?;
        let limits = store::LimitsRow {
            quotas: q.clone(),
            rate_limit,
        };
        if !store::set_tenant_limits(&self.inner.db, tenant, &limits).await? {
            return Err(Error::not_found("tenant", tenant));
        }
        self.inner.usage.limits.invalidate(tenant);
        tracing::info!(tenant = %tenant, "tenant limits changed");
        Ok(TenantLimitsView {
            id: tenant.to_string(),
            quotas: q,
            rate_limit,
        })
    }

    /// This month's database counters of a tenant (cached for `quotas.refresh_ms`).
    async fn month_totals(&self, tenant: &str, fresh: bool) -> Result<(u64, u64)> {
        let key = (tenant.to_string(), month_of(self.now_ms()));
        if !fresh && let Some(v) = self.inner.usage.month.get(&key) {
            return Ok(v);
        }
        let v = store::month_usage(&self.inner.db, &key.0, &key.1).await?;
        self.inner.usage.month.insert(key, v);
        Ok(v)
    }

    /// Egress bytes this month not yet in the database (this process's).
    fn pending_egress(&self, tenant: &str, month: &str) -> u64 {
        let pending = self
            .inner
            .usage
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        pending
            .get(&(tenant.to_string(), month.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// Refuse a new response when the tenant's monthly egress is used up.
    pub async fn check_egress(&self, tenant: &str) -> Result<()> {
        let limits = self.tenant_limits(tenant).await?;
        let Some(limit) = limits.quotas.egress_bytes_per_month else {
            return Ok(());
        };
        let month = month_of(self.now_ms());
        let (db, _) = self.month_totals(tenant, false).await?;
        let used = db.saturating_add(self.pending_egress(tenant, &month));
        if used >= limit {
            return Err(quota_error("egress_bytes_per_month", used, limit));
        }
        Ok(())
    }

    /// Count bytes sent to a client of `tenant` (called as body frames go out).
    pub fn record_egress(&self, tenant: &str, bytes: u64) {
        if bytes == 0 {
            return;
        }
        let month = month_of(self.now_ms());
        let mut pending = self
            .inner
            .usage
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let n = pending.entry((tenant.to_string(), month)).or_insert(0);
        *n = n.saturating_add(bytes);
    }

    /// Add the egress counted in memory to the database. What could not be written stays
    /// pending for the next flush. Runs every `quotas.flush_interval_ms` and at shutdown.
    pub async fn flush_usage(&self) -> Result<()> {
        let batch = std::mem::take(
            &mut *self
                .inner
                .usage
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        let mut failed = None;
        let mut left = Vec::new();
        for ((tenant, month), bytes) in batch {
            if failed.is_some() {
                left.push(((tenant, month), bytes));
                continue;
            }
            match store::add_usage(&self.inner.db, &tenant, &month, bytes, 0).await {
                Ok(()) => {
                    self.inner.usage.month.invalidate(&(tenant, month));
                }
                Err(e) => {
                    failed = Some(e);
                    left.push(((tenant, month), bytes));
                }
            }
        }
        if !left.is_empty() {
            let mut pending = self
                .inner
                .usage
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for (k, v) in left {
                let n = pending.entry(k).or_insert(0);
                *n = n.saturating_add(v);
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// Flush usage counters every `quotas.flush_interval_ms` until the task is aborted.
    pub fn spawn_usage_flusher(&self) -> tokio::task::JoinHandle<()> {
        let engine = self.clone();
        let period = Duration::from_millis(self.inner.config.quotas.flush_interval_ms);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                if let Err(e) = engine.flush_usage().await {
                    tracing::warn!("could not write usage counters: {e}");
                }
            }
        })
    }

    /// Take one unit of a concurrency quota, or fail with `quota_exceeded`.
    pub async fn acquire_permit(&self, tenant: &str, kind: PermitKind) -> Result<QuotaPermit> {
        let limits = self.tenant_limits(tenant).await?;
        let limit = match kind {
            PermitKind::Viewer => limits.quotas.concurrent_viewers,
            PermitKind::Upload => limits.quotas.concurrent_uploads,
        };
        let key = (tenant.to_string(), kind);
        let held = &self.inner.usage.held;
        let mut map = held.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(key.clone()).or_insert(0);
        if let Some(limit) = limit
            && *n >= limit
        {
            let used = *n;
            if used == 0 {
                map.remove(&key);
            }
            return Err(quota_error(kind.quota_name(), used, limit));
        }
        *n += 1;
        Ok(QuotaPermit {
            held: held.clone(),
            key,
        })
    }

    fn permits_held(&self, tenant: &str, kind: PermitKind) -> u64 {
        let map = self
            .inner
            .usage
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        map.get(&(tenant.to_string(), kind)).copied().unwrap_or(0)
    }

    /// Refuse an upload when the tenant's monthly transcode minutes are used up (its
    /// transcode would be refused): totals reused for `quotas.refresh_ms`, as an upload
    /// sends many requests.
    pub async fn check_transcode_quota(&self, tenant: &str) -> Result<()> {
        self.transcode_quota(tenant, false).await
    }

    /// Refuse a new transcode when the tenant's monthly minutes are used up, from the
    /// database's current total (checked at enqueue; the minutes are counted when the
    /// transcode succeeds).
    pub(crate) async fn check_transcode_quota_now(&self, tenant: &str) -> Result<()> {
        self.transcode_quota(tenant, true).await
    }

    async fn transcode_quota(&self, tenant: &str, fresh: bool) -> Result<()> {
        let limits = self.tenant_limits(tenant).await?;
        let Some(limit) = limits.quotas.transcode_minutes_per_month else {
            return Ok(());
        };
        let (_, ms) = self.month_totals(tenant, fresh).await?;
        let used = ms.div_ceil(60_000);
        if ms >= limit.saturating_mul(60_000) {
            return Err(quota_error("transcode_minutes_per_month", used, limit));
        }
        Ok(())
    }

    /// Every quota of the caller's tenant: what is used and the limit (`None`: unlimited).
    /// Monthly ones are this calendar month's (UTC); concurrency ones are this process's.
    pub async fn quota_usage(&self, who: &Principal) -> Result<BTreeMap<&'static str, QuotaUsage>> {
        let tenant = self.tenant_of(who)?;
        let limits = self.tenant_limits(tenant).await?;
        let q = &limits.quotas;
        let (_, storage) = store::storage_usage(&self.inner.db, tenant).await?;
        let month = month_of(self.now_ms());
        let (egress_db, transcode_ms) = self.month_totals(tenant, true).await?;
        let egress = egress_db.saturating_add(self.pending_egress(tenant, &month));
        let mut out = BTreeMap::new();
        let mut put = |name, used: serde_json::Value, limit| {
            out.insert(name, QuotaUsage { used, limit });
        };
        put("storage_bytes", storage.into(), q.storage_bytes);
        put(
            "egress_bytes_per_month",
            egress.into(),
            q.egress_bytes_per_month,
        );
        put(
            "concurrent_viewers",
            self.permits_held(tenant, PermitKind::Viewer).into(),
            q.concurrent_viewers,
        );
        put(
            "concurrent_uploads",
            self.permits_held(tenant, PermitKind::Upload).into(),
            q.concurrent_uploads,
        );
        put(
            "transcode_minutes_per_month",
            (transcode_ms as f64 / 60_000.0).into(),
            q.transcode_minutes_per_month,
        );
        Ok(out)
    }
}

fn quota_error(quota: &'static str, used: u64, limit: u64) -> Error {
    metrics::counter!("sluice_quota_exceeded_total", "quota" => quota).increment(1);
    Error::QuotaLimit { quota, used, limit }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_are_utc_calendar_months() {
        // 2026-11-30T23:59:59.999Z and one millisecond later.
        assert_eq!(month_of(1_796_083_199_999), "2026-11");
        assert_eq!(month_of(1_796_083_200_000), "2026-12");
        assert_eq!(month_of(0), "1970-01");
    }

    #[test]
    fn patch_tells_absent_from_null() {
        let p: TenantPatch = serde_json::from_str(
            r#"{"quotas": {"concurrent_viewers": null, "egress_bytes_per_month": 5}}"#,
        )
        .unwrap();
        let q = p.quotas.unwrap();
        assert_eq!(q.concurrent_viewers, Some(None));
        assert_eq!(q.egress_bytes_per_month, Some(Some(5)));
        assert_eq!(q.storage_bytes, None);
        assert_eq!(p.rate_limit, None);
        let p: TenantPatch = serde_json::from_str(r#"{"rate_limit": null}"#).unwrap();
        assert_eq!(p.rate_limit, Some(None));
        assert!(serde_json::from_str::<TenantPatch>(r#"{"quota": {}}"#).is_err());
    }
}
