//! Asset copies and the per-tier counters, on SQLite and on PostgreSQL: every change is
//! conditional, so replaying it (a crash between the change and what follows) changes
//! nothing; reads resolve restored → active → draining; cold alone is archived.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use bytes::Bytes;
use sluice_engine::tiers::{CopyChange, CopyKey, CopyState, Tier};
use sluice_engine::{Clock, Config, Engine, Error, Principal};

struct FakeClock(AtomicI64);
impl Clock for FakeClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// A fresh database on the test PostgreSQL server (`scripts/pg.sh`, `SLUICE_TEST_PG_URL`);
/// without it this fails rather than skips.
async fn fresh_pg_database() -> String {
    use sqlx::Connection;
    let admin = std::env::var("SLUICE_TEST_PG_URL")
        .expect("SLUICE_TEST_PG_URL must name a PostgreSQL server (scripts/pg.sh starts one)");
    let name = format!("t_{}", ulid::Ulid::new().to_string().to_lowercase());
    let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .unwrap();
    let (base, _) = admin.rsplit_once('/').unwrap();
    format!("{base}/{name}")
}

async fn engine(pg: bool, dir: &std::path::Path) -> (Engine, Arc<FakeClock>) {
    let clock = Arc::new(FakeClock(AtomicI64::new(1_700_000_000_000)));
    let warm = dir.join("warm-store");
    let cold = dir.join("cold-store");
    let mut config = Config::from_toml(&format!(
        "[gateway]\ncache_ttl_ms = 1\n\
         [storage.stores.warm]\nurl = \"file://{}\"\n\
         [storage.stores.glacier]\nurl = \"file://{}\"\n\
         [storage.tiers]\nwarm = \"warm\"\ncold = \"glacier\"\n",
        warm.display(),
        cold.display()
    ))
    .unwrap();
    config.data_dir = dir.to_path_buf();
    if pg {
        config.database_url = Some(fresh_pg_database().await);
    }
    let (e, _) = Engine::open_with_clock(config, None, clock.clone())
        .await
        .unwrap();
    (e, clock)
}

fn mp4_like(n: usize) -> Vec<u8> {
    let mut v = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2".to_vec();
    v.extend((0..n.saturating_sub(v.len())).map(|i| (i as u8).wrapping_mul(31)));
    v.truncate(n);
    v
}

async fn upload(e: &Engine, who: &Principal, n: usize) -> String {
    let data = mp4_like(n);
    let body = futures::stream::iter(vec![Ok::<_, String>(Bytes::from(data))]);
    e.raw_upload(
        who,
        sluice_engine::RawUpload {
            content_length: Some(n as u64),
            filename: Some("cam.mp4"),
            idempotency_key: None,
        },
        body,
    )
    .await
    .unwrap()
    .asset_id
}

fn usage(u: &[(Tier, u64, u64)], tier: Tier) -> (u64, u64) {
    u.iter().find(|r| r.0 == tier).map(|r| (r.1, r.2)).unwrap()
}

async fn copies_and_counters_replay_to_the_same_state(pg: bool) {
    let dir = tempfile::tempdir().unwrap();
    let (e, clock) = engine(pg, dir.path()).await;
    let t = e.create_tenant(&Principal::Admin, "cams").await.unwrap();
    let other = e.create_tenant(&Principal::Admin, "other").await.unwrap();
    let who = Principal::Tenant {
        tenant_id: t.id.clone(),
    };
    let asset = upload(&e, &who, 4000).await;
    let tenant = t.id.as_str();

    // Published: the hot copy holds what the store lists. Recording again changes nothing.
    for _ in 0..2 {
        e.record_hot_copy(tenant, &asset).await.unwrap();
        let u = e.tier_usage(tenant).await.unwrap();
        assert_eq!(usage(&u, Tier::Hot), (4000, 1));
        assert_eq!(usage(&u, Tier::Warm), (0, 0));
    }
    assert_eq!(e.readable(tenant, &asset).await.unwrap().tier, Tier::Hot);

    let hot = CopyKey {
        tenant,
        asset: &asset,
        tier: Tier::Hot,
        store: "hot",
    };
    let warm = CopyKey {
        tier: Tier::Warm,
        store: "warm",
        ..hot
    };
    let cold = CopyKey {
        tier: Tier::Cold,
        store: "warm",
        ..hot
    };

    // Move to warm: new active copy + old one draining, in one transaction; a replay
    // applies nothing and the counters stay.
    let to_warm = [
        CopyChange::Insert {
            key: warm,
            state: CopyState::Active,
            bytes: 4000,
            objects: 1,
            expires_at: None,
        },
        CopyChange::Switch {
            key: hot,
            from: CopyState::Active,
            to: CopyState::Draining,
            expires_at: None,
        },
    ];
    assert_eq!(e.change_copies(&to_warm).await.unwrap(), [true, true]);
    assert_eq!(e.change_copies(&to_warm).await.unwrap(), [false, false]);
    let u = e.tier_usage(tenant).await.unwrap();
    assert_eq!(usage(&u, Tier::Hot), (4000, 1));
    assert_eq!(usage(&u, Tier::Warm), (4000, 1));
    let r = e.readable(tenant, &asset).await.unwrap();
    assert_eq!((r.tier, r.storage.name()), (Tier::Warm, "warm"));

    // The source objects are gone: the draining row goes, once.
    let drop_hot = [CopyChange::Delete {
        key: hot,
        state: CopyState::Draining,
    }];
    assert_eq!(e.change_copies(&drop_hot).await.unwrap(), [true]);
    assert_eq!(e.change_copies(&drop_hot).await.unwrap(), [false]);
    let u = e.tier_usage(tenant).await.unwrap();
    assert_eq!(usage(&u, Tier::Hot), (0, 0));
    assert_eq!(usage(&u, Tier::Warm), (4000, 1));
    // A delete expecting another state does nothing.
    let wrong = [CopyChange::Delete {
        key: warm,
        state: CopyState::Restored,
    }];
    assert_eq!(e.change_copies(&wrong).await.unwrap(), [false]);

    // Archive: cold active, warm gone → archived, with how to restore.
    let archive = [
        CopyChange::Insert {
            key: cold,
            state: CopyState::Active,
            bytes: 4000,
            objects: 1,
            expires_at: None,
        },
        CopyChange::Delete {
            key: warm,
            state: CopyState::Active,
        },
    ];
    assert_eq!(e.change_copies(&archive).await.unwrap(), [true, true]);
    assert_eq!(e.change_copies(&archive).await.unwrap(), [false, false]);
    match e.readable(tenant, &asset).await {
        Err(Error::Archived(id)) => assert_eq!(id, asset),
        other => panic!("{other:?}"),
    }
    let msg = Error::Archived(asset.clone()).to_string();
    assert!(
        msg.contains(&format!("POST /v1/assets/{asset}/restore")),
        "{msg}"
    );

    // Restore for a while: readable until it expires; restoring again extends it.
    let now = clock.now_ms();
    let restored = [CopyChange::Insert {
        key: hot,
        state: CopyState::Restored,
        bytes: 4000,
        objects: 1,
        expires_at: Some(now + 1000),
    }];
    assert_eq!(e.change_copies(&restored).await.unwrap(), [true]);
    assert_eq!(e.readable(tenant, &asset).await.unwrap().tier, Tier::Hot);
    let extend = [CopyChange::Extend {
        key: hot,
        expires_at: now + 5000,
    }];
    assert_eq!(e.change_copies(&extend).await.unwrap(), [true]);
    // An earlier expiry never shortens it.
    let shorter = [CopyChange::Extend {
        key: hot,
        expires_at: now + 10,
    }];
    e.change_copies(&shorter).await.unwrap();
    let copies = e.asset_copies(tenant, &asset).await.unwrap();
    let h = copies.iter().find(|c| c.tier == Tier::Hot).unwrap();
    assert_eq!(
        (h.state, h.expires_at),
        (CopyState::Restored, Some(now + 5000))
    );
    clock.0.store(now + 5000, Ordering::SeqCst);
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    assert!(matches!(
        e.readable(tenant, &asset).await,
        Err(Error::Archived(_))
    ));
    let u = e.tier_usage(tenant).await.unwrap();
    assert_eq!(usage(&u, Tier::Hot), (4000, 1));
    assert_eq!(usage(&u, Tier::Cold), (4000, 1));

    // Another tenant sees none of it.
    assert!(e.asset_copies(&other.id, &asset).await.unwrap().is_empty());
    let u = e.tier_usage(&other.id).await.unwrap();
    assert!(u.iter().all(|r| r.1 == 0 && r.2 == 0), "{u:?}");
}

#[tokio::test]
async fn copies_and_counters_sqlite() {
    copies_and_counters_replay_to_the_same_state(false).await
}

#[tokio::test]
async fn copies_and_counters_postgres() {
    copies_and_counters_replay_to_the_same_state(true).await
}

/// Run every due tier job; returns how many ran.
async fn run_jobs(e: &Engine) -> usize {
    let mut n = 0;
    while e.run_next_tier_job("test-worker").await.unwrap() {
        n += 1;
    }
    n
}

async fn job(e: &Engine, who: &Principal, id: &str) -> serde_json::Value {
    serde_json::to_value(e.get_job(who, id).await.unwrap()).unwrap()
}

/// Files under a local store's directory for one asset, and their total size.
fn listed(root: &std::path::Path, tenant: &str, asset: &str) -> (u64, u64) {
    let dir = root.join("tenants").join(tenant).join("assets").join(asset);
    let mut stack = vec![dir];
    let (mut n, mut bytes) = (0, 0);
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else {
                n += 1;
                bytes += m.len();
            }
        }
    }
    (bytes, n)
}

async fn tier_jobs_archive_restore_and_expire(pg: bool) {
    let dir = tempfile::tempdir().unwrap();
    let (e, clock) = engine(pg, dir.path()).await;
    let t = e.create_tenant(&Principal::Admin, "cams").await.unwrap();
    let other = e.create_tenant(&Principal::Admin, "other").await.unwrap();
    let who = Principal::Tenant {
        tenant_id: t.id.clone(),
    };
    let stranger = Principal::Tenant {
        tenant_id: other.id.clone(),
    };
    let tenant = t.id.as_str();
    let asset = upload(&e, &who, 20_000).await;
    // A raw upload is not ready: it does not move.
    assert!(matches!(
        e.request_tier(&who, &asset, "warm").await,
        Err(Error::Conflict(_))
    ));
    // A worker publishes it: ready, and its hot copy recorded with the counters.
    let main = sluice_engine::TranscodeJob {
        job_id: e.get_asset(&who, &asset).await.unwrap().job_id.unwrap(),
        tenant_id: t.id.clone(),
        asset_id: asset.clone(),
    };
    let jobs = e.job_reporter();
    jobs.job_started(&main, "w1").await.unwrap().unwrap();
    jobs.job_succeeded(&main, &[], 1.0).await.unwrap();
    let u = e.tier_usage(tenant).await.unwrap();
    assert_eq!(usage(&u, Tier::Hot), (20_000, 1));
    let (hot_dir, warm_dir, cold_dir) = (
        dir.path().join("hot"),
        dir.path().join("warm-store"),
        dir.path().join("cold-store"),
    );

    // Other tenants and bad input.
    assert!(matches!(
        e.request_tier(&stranger, &asset, "warm").await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        e.request_tier(&who, &asset, "lukewarm").await,
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        e.request_tier(&who, &asset, "hot").await,
        Err(Error::Conflict(_))
    ));

    // Archive straight to cold.
    let j = e.request_tier(&who, &asset, "cold").await.unwrap();
    assert_eq!(j.status, "queued");
    assert!(
        matches!(
            e.request_tier(&who, &asset, "warm").await,
            Err(Error::Conflict(_))
        ),
        "one tier job per asset at a time"
    );
    assert_eq!(run_jobs(&e).await, 1);
    let done = job(&e, &who, &j.id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["result"]["objects_copied"], 1);
    assert_eq!(done["result"]["bytes_copied"], 20_000);
    assert_eq!(done["result"]["objects_deleted"], 1);
    assert_eq!(done["result"]["failed"], serde_json::json!([]));
    assert!(e.get_job(&stranger, &j.id).await.is_err());
    // Listed with the tenant's other jobs (the transcode), newest first; not to others.
    let listed_jobs = e.list_jobs(&who, None, None).await.unwrap();
    assert_eq!(listed_jobs[0].id, j.id);
    assert_eq!(listed_jobs.len(), 2);
    assert!(e.list_jobs(&stranger, None, None).await.unwrap().is_empty());
    assert_eq!(
        e.list_jobs(&who, Some("succeeded"), Some(1)).await.unwrap()[0].id,
        j.id
    );
    assert_eq!(listed(&hot_dir, tenant, &asset), (0, 0));
    assert_eq!(listed(&cold_dir, tenant, &asset), (20_000, 1));
    let u = e.tier_usage(tenant).await.unwrap();
    assert_eq!(
        (usage(&u, Tier::Hot), usage(&u, Tier::Cold)),
        ((0, 0), (20_000, 1))
    );
    assert!(matches!(
        e.readable(tenant, &asset).await,
        Err(Error::Archived(_))
    ));

    // Restore: bounded days, then a hot copy that expires.
    for bad in [0, 366] {
        assert!(matches!(
            e.request_restore(&who, &asset, bad).await,
            Err(Error::InvalidInput(_))
        ));
    }
    let r = e.request_restore(&who, &asset, 2).await.unwrap();
    assert_eq!(run_jobs(&e).await, 1);
    assert_eq!(job(&e, &who, &r.id).await["status"], "succeeded");
    assert_eq!(e.readable(tenant, &asset).await.unwrap().tier, Tier::Hot);
    assert_eq!(listed(&hot_dir, tenant, &asset), (20_000, 1));
    // Restoring again extends (a copy-less job).
    clock.0.fetch_add(86_400_000, Ordering::SeqCst);
    let r2 = e.request_restore(&who, &asset, 2).await.unwrap();
    assert_eq!(run_jobs(&e).await, 1);
    let r2 = job(&e, &who, &r2.id).await;
    assert_eq!(r2["result"]["objects_copied"], 0, "{r2}");
    // Two days after the first restore it still plays (extended to day 3).
    clock.0.fetch_add(86_400_000 + 1000, Ordering::SeqCst);
    e.sweep_tiers().await.unwrap();
    assert_eq!(e.readable(tenant, &asset).await.unwrap().tier, Tier::Hot);
    // Past the extension: the sweep removes the objects and the row, counters too.
    clock.0.fetch_add(86_400_000, Ordering::SeqCst);
    e.sweep_tiers().await.unwrap();
    assert!(matches!(
        e.readable(tenant, &asset).await,
        Err(Error::Archived(_))
    ));
    assert_eq!(listed(&hot_dir, tenant, &asset), (0, 0));
    let u = e.tier_usage(tenant).await.unwrap();
    assert_eq!(
        (usage(&u, Tier::Hot), usage(&u, Tier::Cold)),
        ((0, 0), (20_000, 1))
    );
    // A second sweep finds nothing.
    e.sweep_tiers().await.unwrap();

    // A sweep that died between its switch and its deletes: the next one finishes it.
    e.request_restore(&who, &asset, 1).await.unwrap();
    assert_eq!(run_jobs(&e).await, 1);
    assert_eq!(listed(&hot_dir, tenant, &asset), (20_000, 1));
    let hot = CopyKey {
        tenant,
        asset: &asset,
        tier: Tier::Hot,
        store: "hot",
    };
    let died = [CopyChange::Switch {
        key: hot,
        from: CopyState::Restored,
        to: CopyState::Draining,
        expires_at: None,
    }];
    assert_eq!(e.change_copies(&died).await.unwrap(), [true]);
    e.sweep_tiers().await.unwrap();
    assert_eq!(listed(&hot_dir, tenant, &asset), (0, 0));
    assert_eq!(e.asset_copies(tenant, &asset).await.unwrap().len(), 1);
    let u = e.tier_usage(tenant).await.unwrap();
    assert_eq!(usage(&u, Tier::Hot), (0, 0));

    // Back to warm for good: copied from cold, cold drained.
    let w = e.request_tier(&who, &asset, "warm").await.unwrap();
    assert_eq!(run_jobs(&e).await, 1);
    assert_eq!(job(&e, &who, &w.id).await["status"], "succeeded");
    assert_eq!(listed(&warm_dir, tenant, &asset), (20_000, 1));
    assert_eq!(listed(&cold_dir, tenant, &asset), (0, 0));
    let u = e.tier_usage(tenant).await.unwrap();
    assert_eq!(
        (usage(&u, Tier::Warm), usage(&u, Tier::Cold)),
        ((20_000, 1), (0, 0))
    );
    let r = e.readable(tenant, &asset).await.unwrap();
    assert_eq!((r.tier, r.storage.name()), (Tier::Warm, "warm"));
    // Not archived: no restore.
    assert!(matches!(
        e.request_restore(&who, &asset, 1).await,
        Err(Error::Conflict(_))
    ));

    // Lifecycle: expire beats the warm→cold rule; a dry run changes nothing.
    e.put_lifecycle(
        &who,
        serde_json::from_str(
            r#"{"rules": [{"after": "1d", "action": "cold"},
                          {"after": "1d", "tag": "temp", "action": "expire"}]}"#,
        )
        .unwrap(),
    )
    .await
    .unwrap();
    let plan = e.run_lifecycle(&Principal::Admin, true).await.unwrap();
    assert_eq!(plan.len(), 1);
    assert_eq!(
        (plan[0].to, plan[0].bytes),
        (sluice_engine::lifecycle::Action::Cold, 20_000)
    );
    assert_eq!(run_jobs(&e).await, 0);
    e.set_tags(&who, &asset, vec!["temp".into()]).await.unwrap();
    let x = e.explain_lifecycle(&who, &asset).await.unwrap();
    assert_eq!(x["decision"]["action"], "expire", "{x}");
    assert_eq!(x["decision"]["rule"], 1);
    assert!(matches!(
        e.run_lifecycle(&who, false).await,
        Err(Error::Forbidden(_))
    ));
    let plan = e.run_lifecycle(&Principal::Admin, false).await.unwrap();
    assert_eq!(plan.len(), 1);
    assert!(plan[0].job.is_some());
    assert_eq!(run_jobs(&e).await, 1);
    assert!(matches!(
        e.get_asset(&who, &asset).await,
        Err(Error::NotFound { .. })
    ));
    assert_eq!(listed(&warm_dir, tenant, &asset), (0, 0));
    let u = e.tier_usage(tenant).await.unwrap();
    assert!(u.iter().all(|r| r.1 == 0 && r.2 == 0), "{u:?}");
}

#[tokio::test]
async fn tier_jobs_sqlite() {
    tier_jobs_archive_restore_and_expire(false).await
}

#[tokio::test]
async fn tier_jobs_postgres() {
    tier_jobs_archive_restore_and_expire(true).await
}
