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
    let mut config = Config::from_toml(&format!(
        "[gateway]\ncache_ttl_ms = 1\n\
         [storage.stores.warm]\nurl = \"file://{}\"\n[storage.tiers]\nwarm = \"warm\"\n",
        warm.display()
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
