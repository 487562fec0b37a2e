//! The engine against a real SQLite metadata store, queue and local hot tier.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use bytes::Bytes;
use futures::stream;
use sluice_engine::{AssetStatus, Clock, Config, Engine, Error, Principal};

struct FakeClock(AtomicI64);
impl Clock for FakeClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Every test runs twice: on the embedded SQLite store and on PostgreSQL.
#[derive(Clone, Copy, Debug)]
enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh database on the test PostgreSQL server. The test scripts start one
/// (`scripts/pg.sh`) and export its URL; without it this fails rather than skips.
async fn fresh_pg_database() -> String {
    use sqlx::Connection;
    let admin = std::env::var("SLUICE_TEST_PG_URL").expect(
        "SLUICE_TEST_PG_URL must name a PostgreSQL server for the PostgreSQL half of these \
         tests: scripts/test.sh starts one with scripts/pg.sh",
    );
    let name = format!("t_{}", ulid::Ulid::new().to_string().to_lowercase());
    let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .unwrap();
    let (base, _) = admin.rsplit_once('/').unwrap();
    format!("{base}/{name}")
}

async fn config_for(backend: Backend, dir: &std::path::Path) -> Config {
    let database_url = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(fresh_pg_database().await),
    };
    Config {
        data_dir: dir.to_path_buf(),
        database_url,
        ..Config::default()
    }
}

/// Generates `mod name { sqlite(), postgres() }` for an `async fn name(Backend)`.
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
    admin_key_is_generated_once_and_keys_authenticate,
    upload_survives_a_broken_request_and_completes_exactly,
    limits_and_termination,
    playback_tokens_expire_with_the_clock,
    a_backlog_does_not_starve_another_tenant,
    one_writer_per_upload_across_processes,
    abandoned_uploads_expire_and_are_swept,
    live_push_is_recorded_windowed_and_ends_idle,
);

async fn engine(backend: Backend, dir: &std::path::Path) -> (Engine, Arc<FakeClock>) {
    let clock = Arc::new(FakeClock(AtomicI64::new(1_700_000_000_000)));
    let config = config_for(backend, dir).await;
    let (e, report) = Engine::open_with_clock(config, None, clock.clone())
        .await
        .unwrap();
    assert!(report.generated_admin_key.is_some());
    (e, clock)
}

fn chunks(parts: Vec<&'static [u8]>) -> impl futures::Stream<Item = Result<Bytes, String>> + Unpin {
    stream::iter(parts.into_iter().map(|p| Ok(Bytes::from_static(p))))
}

async fn admin_key_is_generated_once_and_keys_authenticate(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (e, _) = engine(backend, dir.path()).await;
    let admin = std::fs::read_to_string(dir.path().join("admin.key")).unwrap();
    assert_eq!(
        e.authenticate(admin.trim()).await.unwrap(),
        Principal::Admin
    );
    let t = e.create_tenant(&Principal::Admin, "acme").await.unwrap();
    assert_eq!(
        e.authenticate(&t.api_key).await.unwrap(),
        Principal::Tenant {
            tenant_id: t.id.clone()
        }
    );
    assert!(matches!(
        e.authenticate("sk_nope").await,
        Err(Error::Unauthenticated)
    ));
    let tenant = Principal::Tenant { tenant_id: t.id };
    assert!(matches!(
        e.create_tenant(&tenant, "x").await,
        Err(Error::Forbidden(_))
    ));
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        database_url: e.config().database_url.clone(),
        ..Config::default()
    };
    drop(e);
    // A second start keeps the key and does not print it again.
    let (e2, report) = Engine::open(config, None).await.unwrap();
    assert!(report.generated_admin_key.is_none());
    assert_eq!(
        e2.authenticate(admin.trim()).await.unwrap(),
        Principal::Admin
    );
}

async fn upload_survives_a_broken_request_and_completes_exactly(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (e, _) = engine(backend, dir.path()).await;
    let t = e.create_tenant(&Principal::Admin, "acme").await.unwrap();
    let who = Principal::Tenant {
        tenant_id: t.id.clone(),
    };
    let asset = e
        .create_upload(&who, 12, Some("filename YS5tcDQ="))
        .await
        .unwrap();
    assert_eq!(asset.status, AssetStatus::Uploading);
    assert_eq!(asset.filename.as_deref(), Some("a.mp4"));

    // A request that breaks after 4 bytes: those 4 are kept and committed.
    let broken = stream::iter(vec![
        Ok(Bytes::from_static(b"abcd")),
        Err("connection reset".to_string()),
    ]);
    let s = e.append_upload(&who, &asset.id, 0, broken).await.unwrap();
    assert_eq!(s.offset, 4);
    assert_eq!(e.upload_state(&who, &asset.id).await.unwrap().offset, 4);

    // Wrong offset, too many bytes: refused, nothing committed.
    assert!(matches!(
        e.append_upload(&who, &asset.id, 0, chunks(vec![b"x"]))
            .await,
        Err(Error::OffsetMismatch {
            expected: 4,
            got: 0
        })
    ));
    assert!(matches!(
        e.append_upload(&who, &asset.id, 4, chunks(vec![b"efghijklmnop"]))
            .await,
        Err(Error::InvalidInput(_))
    ));
    assert_eq!(e.upload_state(&who, &asset.id).await.unwrap().offset, 4);

    // Resume to the end: the source is exact and a job is queued.
    let s = e
        .append_upload(&who, &asset.id, 4, chunks(vec![b"efgh", b"ijkl"]))
        .await
        .unwrap();
    assert_eq!(s.offset, 12);
    let a = e.get_asset(&who, &asset.id).await.unwrap();
    assert_eq!(a.status, AssetStatus::Queued);
    let job = e.get_job(&who, a.job_id.as_deref().unwrap()).await.unwrap();
    assert_eq!((job.status.as_str(), job.attempts), ("queued", 0));
    let src = e
        .storage()
        .get_bytes(&sluice_storage::keys::source(&t.id, &asset.id))
        .await
        .unwrap();
    assert_eq!(src, Bytes::from_static(b"abcdefghijkl"));
    assert!(!dir.path().join("uploads").join(&asset.id).exists());
    // Complete uploads take no more bytes and can't be terminated.
    assert!(matches!(
        e.append_upload(&who, &asset.id, 12, chunks(vec![b"x"]))
            .await,
        Err(Error::Conflict(_))
    ));
    assert!(matches!(
        e.terminate_upload(&who, &asset.id).await,
        Err(Error::Conflict(_))
    ));
    // Another tenant sees nothing.
    let other = e.create_tenant(&Principal::Admin, "other").await.unwrap();
    let other = Principal::Tenant {
        tenant_id: other.id,
    };
    assert!(matches!(
        e.get_asset(&other, &asset.id).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        e.get_job(&other, a.job_id.as_deref().unwrap()).await,
        Err(Error::NotFound { .. })
    ));
}

async fn limits_and_termination(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (e, _) = engine(backend, dir.path()).await;
    let t = e.create_tenant(&Principal::Admin, "acme").await.unwrap();
    let who = Principal::Tenant { tenant_id: t.id };
    assert!(matches!(
        e.create_upload(&who, 1 << 50, None).await,
        Err(Error::TooLarge { .. })
    ));
    assert!(matches!(
        e.create_upload(&who, 0, None).await,
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        e.create_upload(&who, 10, Some("filename ***")).await,
        Err(Error::InvalidInput(_))
    ));
    let a = e.create_upload(&who, 10, None).await.unwrap();
    e.terminate_upload(&who, &a.id).await.unwrap();
    assert!(matches!(
        e.upload_state(&who, &a.id).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        e.get_asset(&who, &a.id).await,
        Err(Error::NotFound { .. })
    ));
}

async fn playback_tokens_expire_with_the_clock(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (e, clock) = engine(backend, dir.path()).await;
    let t = e.create_tenant(&Principal::Admin, "acme").await.unwrap();
    let who = Principal::Tenant {
        tenant_id: t.id.clone(),
    };
    let a = e.create_upload(&who, 1, None).await.unwrap();
    // Not ready: no playback URL.
    assert!(matches!(
        e.playback_path(&who, &a.id, None).await,
        Err(Error::Conflict(_))
    ));
    e.append_upload(&who, &a.id, 0, chunks(vec![b"x"]))
        .await
        .unwrap();
    let job = sluice_engine::TranscodeJob {
        job_id: e.get_asset(&who, &a.id).await.unwrap().job_id.unwrap(),
        tenant_id: t.id.clone(),
        asset_id: a.id.clone(),
    };
    assert_eq!(e.job_started(&job, "w1").await.unwrap(), Some(1));
    e.job_succeeded(&job, &[], 1.0).await.unwrap();
    // A redelivered finished job is skipped.
    assert_eq!(e.job_started(&job, "w2").await.unwrap(), None);
    assert!(matches!(
        e.playback_path(&who, &a.id, Some(0)).await,
        Err(Error::InvalidInput(_))
    ));
    // A token signed for this asset resolves until it expires.
    let (path, expires) = e.playback_path(&who, &a.id, Some(60)).await.unwrap();
    assert_eq!(expires, 1_700_000_060);
    let token = path.split('/').nth(5).unwrap();
    assert!(path.ends_with("/master.m3u8"));
    let key = e
        .resolve_playback(&t.id, &a.id, token, "720p/seg_00000.ts")
        .unwrap();
    assert_eq!(
        key,
        format!("tenants/{}/assets/{}/hls/720p/seg_00000.ts", t.id, a.id)
    );
    assert!(
        e.resolve_playback(&t.id, &a.id, token, "../source")
            .is_err()
    );
    assert!(
        e.resolve_playback("other", &a.id, token, "master.m3u8")
            .is_err()
    );
    clock.0.store(1_700_000_060_000, Ordering::SeqCst);
    assert!(matches!(
        e.resolve_playback(&t.id, &a.id, token, "master.m3u8"),
        Err(Error::Token(sluice_cdn::TokenError::Expired))
    ));
}

/// Fairness through the real queue: a tenant's backlog does not delay another tenant's
/// single job by more than one job slot; priorities are honoured by apalis's fetch order.
async fn a_backlog_does_not_starve_another_tenant(backend: Backend) {
    use apalis::prelude::{BoxDynError, Data, WorkerBuilder, WorkerBuilderExt};
    use std::sync::Mutex;

    let dir = tempfile::tempdir().unwrap();
    let (e, _) = engine(backend, dir.path()).await;
    let a = e.create_tenant(&Principal::Admin, "busy").await.unwrap();
    let b = e.create_tenant(&Principal::Admin, "quiet").await.unwrap();
    let busy = Principal::Tenant {
        tenant_id: a.id.clone(),
    };
    let quiet = Principal::Tenant {
        tenant_id: b.id.clone(),
    };
    // Each completed upload queues one transcode.
    async fn upload(e: &Engine, who: &Principal) {
        let asset = e.create_upload(who, 1, None).await.unwrap();
        e.append_upload(who, &asset.id, 0, chunks(vec![b"x"]))
            .await
            .unwrap();
    }
    for _ in 0..30 {
        upload(&e, &busy).await;
    }
    upload(&e, &quiet).await;

    type Order = Arc<Mutex<Vec<String>>>;
    let order: Order = Arc::default();
    async fn record(
        job: sluice_engine::TranscodeJob,
        order: Data<Order>,
    ) -> Result<(), BoxDynError> {
        order.lock().unwrap().push(job.tenant_id);
        Ok(())
    }
    let watch = order.clone();
    let done = async move {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while watch.lock().unwrap().len() < 31 && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        Ok::<(), std::io::Error>(())
    };
    macro_rules! consume {
        ($q:expr) => {
            WorkerBuilder::new("fairness")
                .backend($q)
                .concurrency(1)
                .data(order.clone())
                .build(record)
                .run_until(done)
                .await
                .unwrap()
        };
    }
    match e.transcode_queue() {
        sluice_engine::TranscodeQueue::Sqlite(q) => consume!(q),
        sluice_engine::TranscodeQueue::Postgres(q) => consume!(q),
    }
    let order = order.lock().unwrap().clone();
    assert_eq!(order.len(), 31, "every job ran once");
    let pos = order.iter().position(|t| *t == b.id).unwrap();
    assert!(
        pos <= 1,
        "the quiet tenant's job ran at position {pos}: {order:?}"
    );
}

/// Two engines on one database (two gateway processes): while one writes an upload, the
/// other is refused (423), and can continue the upload once the first request ends.
async fn one_writer_per_upload_across_processes(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (e1, clock) = engine(backend, dir.path()).await;
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        database_url: e1.config().database_url.clone(),
        ..Config::default()
    };
    let (e2, _) = Engine::open_with_clock(config, None, clock).await.unwrap();
    let t = e1.create_tenant(&Principal::Admin, "acme").await.unwrap();
    let who = Principal::Tenant { tenant_id: t.id };
    let a = e1.create_upload(&who, 6, None).await.unwrap();

    // A slow body: one chunk now, the rest when we say so.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, String>>(1);
    tx.send(Ok(Bytes::from_static(b"abc"))).await.unwrap();
    let body = tokio_stream_from(rx);
    let (e1c, whoc, id) = (e1.clone(), who.clone(), a.id.clone());
    let first = tokio::spawn(async move { e1c.append_upload(&whoc, &id, 0, body).await });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(matches!(
        e2.append_upload(&who, &a.id, 0, chunks(vec![b"xyz"])).await,
        Err(Error::UploadLocked(_))
    ));
    assert!(matches!(
        e2.terminate_upload(&who, &a.id).await,
        Err(Error::UploadLocked(_))
    ));
    drop(tx); // the first request ends after 3 bytes
    assert_eq!(first.await.unwrap().unwrap().offset, 3);
    // The lease is released in the background when the request ends.
    let mut done = None;
    for _ in 0..50 {
        match e2.append_upload(&who, &a.id, 3, chunks(vec![b"def"])).await {
            Err(Error::UploadLocked(_)) => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await
            }
            other => {
                done = Some(other.unwrap());
                break;
            }
        }
    }
    assert_eq!(done.unwrap().offset, 6);
    let a = e1.get_asset(&who, &a.id).await.unwrap();
    assert_eq!(a.status, AssetStatus::Queued);
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Bytes, String>>,
) -> impl futures::Stream<Item = Result<Bytes, String>> + Unpin {
    Box::pin(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}

/// tus expiration on the injected clock: an upload untouched for `expire_after_s` answers
/// `Expired`, and the sweep deletes its bytes, session and asset; activity extends it.
async fn abandoned_uploads_expire_and_are_swept(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (e, clock) = engine(backend, dir.path()).await;
    let t = e.create_tenant(&Principal::Admin, "acme").await.unwrap();
    let who = Principal::Tenant { tenant_id: t.id };
    let day = 24 * 3600 * 1000;
    let idle = e.create_upload(&who, 10, None).await.unwrap();
    let busy = e.create_upload(&who, 10, None).await.unwrap();
    let s = e.upload_state(&who, &idle.id).await.unwrap();
    assert_eq!(s.expires_at, Some(1_700_000_000_000 + day));

    clock.0.fetch_add(day - 1000, Ordering::SeqCst);
    // Activity on `busy` pushes its expiry a day further.
    let s = e
        .append_upload(&who, &busy.id, 0, chunks(vec![b"abc"]))
        .await
        .unwrap();
    assert_eq!(s.expires_at, Some(1_700_000_000_000 + 2 * day - 1000));
    assert_eq!(e.sweep_expired_uploads().await.unwrap(), 0);

    clock.0.fetch_add(2000, Ordering::SeqCst);
    assert!(matches!(
        e.upload_state(&who, &idle.id).await,
        Err(Error::Expired(_))
    ));
    assert!(matches!(
        e.append_upload(&who, &idle.id, 0, chunks(vec![b"x"])).await,
        Err(Error::Expired(_))
    ));
    assert_eq!(e.sweep_expired_uploads().await.unwrap(), 1);
    assert!(matches!(
        e.get_asset(&who, &idle.id).await,
        Err(Error::NotFound { .. })
    ));
    assert!(!dir.path().join("uploads").join(&idle.id).exists());
    assert_eq!(e.upload_state(&who, &busy.id).await.unwrap().offset, 3);
}

/// A fake TS segment: `n` packets with the sync byte, tagged so segments differ.
fn ts(tag: u8, n: usize) -> Bytes {
    let mut v = vec![tag; 188 * n];
    for p in 0..n {
        v[p * 188] = 0x47;
    }
    Bytes::from(v)
}

async fn live_push_is_recorded_windowed_and_ends_idle(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (e, clock) = engine(backend, dir.path()).await;
    let t = e.create_tenant(&Principal::Admin, "cam").await.unwrap();
    let who = Principal::Tenant {
        tenant_id: t.id.clone(),
    };
    let s = e.create_live(&who, Some("door"), Some(2)).await.unwrap();
    let path = s.ingest_path.clone().unwrap();
    let token = path
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(s.state, "idle");
    let viewer = |e: &Engine| {
        let key = format!("tenants/{}/assets/{}/live/index.m3u8", t.id, s.asset_id);
        let storage = e.storage().clone();
        async move { String::from_utf8(storage.get_bytes(&key).await.unwrap().to_vec()).unwrap() }
    };
    let playlist = |first: u64, n: u64, end: bool| {
        let mut p = format!("#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:{first}\n");
        for i in first..first + n {
            p += &format!("#EXTINF:1.0,\nseg{i}.ts\n");
        }
        if end {
            p += "#EXT-X-ENDLIST\n";
        }
        Bytes::from(p)
    };
    let seg = |i: u8| stream::iter(vec![Ok::<_, String>(ts(i, 2))]);

    // Wrong token: not found; nothing recorded.
    assert!(matches!(
        e.live_put_segment(&s.id, "nope", "seg0.ts", seg(0)).await,
        Err(Error::NotFound { .. })
    ));
    // Playlist first, then the segments out of order.
    e.live_put_playlist(&s.id, &token, "index.m3u8", playlist(0, 3, false))
        .await
        .unwrap();
    assert!(!viewer(&e).await.contains("#EXTINF"));
    e.live_put_segment(&s.id, &token, "seg1.ts", seg(1))
        .await
        .unwrap();
    assert!(!viewer(&e).await.contains("#EXTINF"));
    e.live_put_segment(&s.id, &token, "seg0.ts", seg(0))
        .await
        .unwrap();
    e.live_put_segment(&s.id, &token, "seg2.ts", seg(2))
        .await
        .unwrap();
    let v = viewer(&e).await;
    // DVR window 2 s: the last two segments; the first one scrolled out.
    assert!(v.contains("#EXT-X-MEDIA-SEQUENCE:1\n"), "{v}");
    assert_eq!(v.matches("#EXTINF").count(), 2, "{v}");
    assert!(
        v.contains("seg/00000002.ts") && v.contains("seg/00000003.ts"),
        "{v}"
    );
    assert!(!v.contains("#EXT-X-ENDLIST"));

    // Refused requests are counted and explained.
    let garbage = stream::iter(vec![Ok::<_, String>(Bytes::from_static(b"<html></html>"))]);
    assert!(matches!(
        e.live_put_segment(&s.id, &token, "seg3.ts", garbage).await,
        Err(Error::UnsupportedMedia(_))
    ));
    assert!(matches!(
        e.live_put_playlist(
            &s.id,
            &token,
            "index.m3u8",
            Bytes::from_static(b"#EXTM3U\nx.ts\n")
        )
        .await,
        Err(Error::InvalidInput(_))
    ));
    let st = e.get_live(&who, &s.id).await.unwrap();
    assert_eq!(st.state, "rejected");
    assert_eq!(st.rejected_requests, 2);
    assert_eq!(st.segments_received, 3);
    assert_eq!(st.last_error.unwrap()["code"], "invalid_request");

    // Silence past the idle timeout: the sweeper ends it and queues the recording.
    let idle = e.config().live.idle_timeout_s as i64 * 1000;
    clock.0.fetch_add(idle + 1000, Ordering::SeqCst);
    assert_eq!(e.sweep_live().await.unwrap(), 1);
    assert_eq!(e.sweep_live().await.unwrap(), 0);
    let st = e.get_live(&who, &s.id).await.unwrap();
    assert_eq!(
        (st.state.as_str(), st.end_reason.as_deref()),
        ("ended", Some("idle"))
    );
    assert!(viewer(&e).await.ends_with("#EXT-X-ENDLIST\n"));
    let asset = e.get_asset(&who, &s.asset_id).await.unwrap();
    assert_eq!(asset.status, AssetStatus::Queued);
    let source = format!("tenants/{}/assets/{}/source", t.id, s.asset_id);
    let mut expected = ts(0, 2).to_vec();
    expected.extend_from_slice(&ts(1, 2));
    expected.extend_from_slice(&ts(2, 2));
    assert_eq!(
        e.storage().get_bytes(&source).await.unwrap().to_vec(),
        expected
    );
    assert!(matches!(
        e.live_put_segment(&s.id, &token, "seg4.ts", seg(4)).await,
        Err(Error::Conflict(_))
    ));
}
