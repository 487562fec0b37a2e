//! Quota counters against a real metadata store, on SQLite and on PostgreSQL
//! (`SLUICE_TEST_PG_URL`): egress counted by two engines sharing one database adds up
//! exactly, survives a reopen, and lands in the month it was counted in; limits are
//! validated and changed by the admin only; concurrency permits are given back on drop.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use sluice_engine::limits::RateLimit;
use sluice_engine::quotas::{PermitKind, TenantPatch};
use sluice_engine::{Clock, Config, Engine, Error, Principal, TenantQuotas};

struct FakeClock(AtomicI64);
impl Clock for FakeClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// 2026-11-30T23:59:59Z: one second before December.
const NOV_END_MS: i64 = 1_796_083_199_000;

#[derive(Clone, Copy, Debug)]
enum Backend {
    Sqlite,
    Postgres,
}

async fn fresh_pg_database() -> String {
    use sqlx::Connection;
    let admin = std::env::var("SLUICE_TEST_PG_URL").expect(
        "SLUICE_TEST_PG_URL must name a PostgreSQL server for the PostgreSQL half of these \
         tests: scripts/test.sh starts one with scripts/pg.sh",
    );
    let name = format!("q_{}", ulid::Ulid::new().to_string().to_lowercase());
    let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .unwrap();
    let (base, _) = admin.rsplit_once('/').unwrap();
    format!("{base}/{name}")
}

async fn config(backend: Backend, dir: &std::path::Path) -> Config {
    Config {
        data_dir: dir.to_path_buf(),
        database_url: match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(fresh_pg_database().await),
        },
        ..Config::default()
    }
}

macro_rules! on_both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$name(super::Backend::Sqlite).await
            }
            #[tokio::test]
            async fn postgres() {
                super::$name(super::Backend::Postgres).await
            }
        }
    )*};
}

on_both!(
    egress_adds_up_across_engines_restarts_and_months,
    limits_are_validated_and_patched_by_the_admin_only,
    permits_are_bounded_and_given_back,
);

async fn egress_adds_up_across_engines_restarts_and_months(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(backend, dir.path()).await;
    let clock = Arc::new(FakeClock(AtomicI64::new(NOV_END_MS)));
    let (e1, _) = Engine::open_with_clock(cfg.clone(), None, clock.clone())
        .await
        .unwrap();
    let (e2, _) = Engine::open_with_clock(cfg.clone(), None, clock.clone())
        .await
        .unwrap();
    let t = e1
        .create_tenant_with(
            &Principal::Admin,
            "acme",
            TenantQuotas {
                egress_bytes_per_month: Some(1000),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let who = Principal::Tenant {
        tenant_id: t.id.clone(),
    };
    let used = |q: &std::collections::BTreeMap<&str, sluice_engine::quotas::QuotaUsage>| {
        q["egress_bytes_per_month"].used.as_u64().unwrap()
    };
    // Counted in memory: visible at once in its own process, not yet in the other.
    e1.record_egress(&t.id, 300);
    e2.record_egress(&t.id, 450);
    assert_eq!(used(&e1.quota_usage(&who).await.unwrap()), 300);
    e1.flush_usage().await.unwrap();
    e2.flush_usage().await.unwrap();
    assert_eq!(used(&e1.quota_usage(&who).await.unwrap()), 750);
    assert_eq!(used(&e2.quota_usage(&who).await.unwrap()), 750);
    e1.check_egress(&t.id).await.unwrap();
    // Reaching the limit refuses the next response, naming the quota and both numbers.
    e2.record_egress(&t.id, 250);
    match e2.check_egress(&t.id).await {
        Err(Error::QuotaLimit { quota, used, limit }) => {
            assert_eq!((quota, used, limit), ("egress_bytes_per_month", 1000, 1000));
        }
        other => panic!("{other:?}"),
    }
    e2.flush_usage().await.unwrap();
    // A new month starts from zero; November keeps its total in the database.
    clock.0.store(NOV_END_MS + 1000, Ordering::SeqCst);
    assert_eq!(used(&e1.quota_usage(&who).await.unwrap()), 0);
    e1.check_egress(&t.id).await.unwrap();
    e1.record_egress(&t.id, 7);
    drop(e1);
    drop(e2);
    // A reopened engine finds both months exactly (what e1 had not flushed is lost only
    // without a flush: the gateway flushes at shutdown).
    let (e3, _) = Engine::open_with_clock(cfg, None, clock.clone())
        .await
        .unwrap();
    assert_eq!(used(&e3.quota_usage(&who).await.unwrap()), 0);
    clock.0.store(NOV_END_MS, Ordering::SeqCst);
    assert_eq!(used(&e3.quota_usage(&who).await.unwrap()), 1000);
}

async fn limits_are_validated_and_patched_by_the_admin_only(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (e, _) = Engine::open(config(backend, dir.path()).await, None)
        .await
        .unwrap();
    let rl = RateLimit {
        requests_per_s: 5,
        burst: 10,
    };
    let t = e
        .create_tenant_limited(&Principal::Admin, "acme", TenantQuotas::default(), Some(rl))
        .await
        .unwrap();
    assert_eq!(e.tenant_limits(&t.id).await.unwrap().rate_limit, Some(rl));
    for bad in [
        TenantQuotas {
            concurrent_viewers: Some(u64::MAX),
            ..Default::default()
        },
        TenantQuotas {
            egress_bytes_per_month: Some(u64::MAX),
            ..Default::default()
        },
    ] {
        assert!(matches!(
            e.create_tenant_with(&Principal::Admin, "x", bad).await,
            Err(Error::InvalidInput(_))
        ));
    }
    let patch: TenantPatch = serde_json::from_str(
        r#"{"quotas": {"concurrent_uploads": 2, "storage_bytes": 99}, "rate_limit": null}"#,
    )
    .unwrap();
    let who = Principal::Tenant {
        tenant_id: t.id.clone(),
    };
    assert!(matches!(
        e.patch_tenant(&who, &t.id, patch.clone()).await,
        Err(Error::Forbidden(_))
    ));
    let v = e
        .patch_tenant(&Principal::Admin, &t.id, patch)
        .await
        .unwrap();
    assert_eq!(v.rate_limit, None);
    assert_eq!(v.quotas.concurrent_uploads, Some(2));
    let l = e.tenant_limits(&t.id).await.unwrap();
    assert_eq!(l.rate_limit, None);
    assert_eq!(l.quotas.storage_bytes, Some(99));
    assert_eq!(l.quotas.concurrent_uploads, Some(2));
    // The storage quota is the one the upload path checks.
    assert_eq!(e.storage_usage(&who).await.unwrap().0, Some(99));
    let bad: TenantPatch =
        serde_json::from_str(r#"{"rate_limit": {"requests_per_s": 0, "burst": 1}}"#).unwrap();
    assert!(matches!(
        e.patch_tenant(&Principal::Admin, &t.id, bad).await,
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        e.patch_tenant(&Principal::Admin, "nope", TenantPatch::default())
            .await,
        Err(Error::NotFound { .. })
    ));
}

async fn permits_are_bounded_and_given_back(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (e, _) = Engine::open(config(backend, dir.path()).await, None)
        .await
        .unwrap();
    let t = e
        .create_tenant_with(
            &Principal::Admin,
            "acme",
            TenantQuotas {
                concurrent_viewers: Some(2),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let a = e.acquire_permit(&t.id, PermitKind::Viewer).await.unwrap();
    let b = e.acquire_permit(&t.id, PermitKind::Viewer).await.unwrap();
    assert!(matches!(
        e.acquire_permit(&t.id, PermitKind::Viewer).await,
        Err(Error::QuotaLimit {
            quota: "concurrent_viewers",
            used: 2,
            limit: 2
        })
    ));
    // Uploads are a separate, unlimited quota here.
    let _u = e.acquire_permit(&t.id, PermitKind::Upload).await.unwrap();
    drop(a);
    let c = e.acquire_permit(&t.id, PermitKind::Viewer).await.unwrap();
    drop((b, c));
    let who = Principal::Tenant { tenant_id: t.id };
    let q = e.quota_usage(&who).await.unwrap();
    assert_eq!(q["concurrent_viewers"].used, 0);
    assert_eq!(q["concurrent_uploads"].used, 1);
}
