//! The engine against a real SQLite metadata store, queue and local hot tier.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use bytes::Bytes;
use futures::stream;
use sluice_engine::{
    AssetStatus, Clock, Config, Engine, Error, NewUploadSpec, Principal, UploadConcat,
};

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
    deferred_length_is_declared_once,
    partial_uploads_concatenate_into_one_asset,
    unused_partials_expire,
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

fn spec(length: Option<u64>, partial: bool) -> NewUploadSpec<'static> {
    NewUploadSpec {
        length,
        metadata: None,
        partial,
    }
}

/// tus creation-defer-length: bytes flow before the length is known, bounded by the
/// maximum size; one PATCH declares the length, which may not change afterwards.
async fn deferred_length_is_declared_once(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (e, _) = engine(backend, dir.path()).await;
    let t = e.create_tenant(&Principal::Admin, "acme").await.unwrap();
    let who = Principal::Tenant {
        tenant_id: t.id.clone(),
    };
    let id = e
        .create_upload_with(&who, &spec(None, false))
        .await
        .unwrap();
    let s = e.upload_state(&who, &id).await.unwrap();
    assert_eq!((s.offset, s.length), (0, None));
    assert_eq!(e.get_asset(&who, &id).await.unwrap().size, None);
    let s = e
        .append_upload(&who, &id, 0, chunks(vec![b"abc", b"def"]))
        .await
        .unwrap();
    assert_eq!((s.offset, s.length), (6, None));
    // A declared length below the bytes received, or above the maximum, is refused.
    let declare = |offset, body, len| {
        e.append_upload_declaring(&who, &id, offset, chunks(body), None, Some(len))
    };
    assert!(matches!(
        declare(6, vec![], 5).await,
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        declare(6, vec![], 1 << 50).await,
        Err(Error::TooLarge { .. })
    ));
    assert_eq!(e.upload_state(&who, &id).await.unwrap().length, None);
    // Declared with the next bytes; the body may not run past it.
    assert!(matches!(
        declare(6, vec![b"ghijk"], 10).await,
        Err(Error::InvalidInput(_))
    ));
    let s = e.upload_state(&who, &id).await.unwrap();
    assert_eq!((s.offset, s.length), (6, Some(10)));
    assert_eq!(e.get_asset(&who, &id).await.unwrap().size, Some(10));
    // Once known, another value is refused; the same value is accepted.
    assert!(matches!(
        declare(6, vec![b"gh"], 11).await,
        Err(Error::InvalidInput(_))
    ));
    let s = declare(6, vec![b"gh"], 10).await.unwrap();
    assert_eq!(s.offset, 8);
    let s = e
        .append_upload(&who, &id, 8, chunks(vec![b"ij"]))
        .await
        .unwrap();
    assert_eq!((s.offset, s.expires_at), (10, None));
    assert_eq!(
        e.get_asset(&who, &id).await.unwrap().status,
        AssetStatus::Queued
    );
    let src = e
        .storage()
        .get_bytes(&sluice_storage::keys::source(&t.id, &id))
        .await
        .unwrap();
    assert_eq!(src, Bytes::from_static(b"abcdefghij"));

    // A deferred upload may end with an empty PATCH that declares the length.
    let id = e
        .create_upload_with(&who, &spec(None, false))
        .await
        .unwrap();
    e.append_upload(&who, &id, 0, chunks(vec![b"xyz"]))
        .await
        .unwrap();
    let s = e
        .append_upload_declaring(&who, &id, 3, chunks(vec![]), None, Some(3))
        .await
        .unwrap();
    assert_eq!(s.offset, 3);
    assert_eq!(
        e.get_asset(&who, &id).await.unwrap().status,
        AssetStatus::Queued
    );

    // Without a length, the maximum upload size still bounds the bytes.
    let dir2 = tempfile::tempdir().unwrap();
    let mut config = config_for(backend, dir2.path()).await;
    config.uploads.max_size = 4;
    let (small, _) = Engine::open(config, None).await.unwrap();
    let t2 = small
        .create_tenant(&Principal::Admin, "acme")
        .await
        .unwrap();
    let who2 = Principal::Tenant { tenant_id: t2.id };
    let id = small
        .create_upload_with(&who2, &spec(None, false))
        .await
        .unwrap();
    assert!(matches!(
        small
            .append_upload(&who2, &id, 0, chunks(vec![b"abc", b"de"]))
            .await,
        Err(Error::TooLarge { .. })
    ));
    assert_eq!(small.upload_state(&who2, &id).await.unwrap().offset, 0);
}

/// tus concatenation: partials are not assets; a final upload validates them, assembles
/// their bytes in order, consumes them, and queues its asset.
async fn partial_uploads_concatenate_into_one_asset(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (e, _) = engine(backend, dir.path()).await;
    let t = e.create_tenant(&Principal::Admin, "acme").await.unwrap();
    let who = Principal::Tenant {
        tenant_id: t.id.clone(),
    };
    let mut parts = Vec::new();
    for body in [&b"hello "[..], b"", b"concatenated ", b"world"] {
        let id = e
            .create_upload_with(&who, &spec(Some(body.len() as u64), true))
            .await
            .unwrap();
        if !body.is_empty() {
            let body: &'static [u8] = Box::leak(body.to_vec().into_boxed_slice());
            let s = e
                .append_upload(&who, &id, 0, chunks(vec![body]))
                .await
                .unwrap();
            // A full partial still expires until a final consumes it.
            assert!(s.expires_at.is_some());
        }
        // Partials are never assets.
        assert!(matches!(
            e.get_asset(&who, &id).await,
            Err(Error::NotFound { .. })
        ));
        assert_eq!(
            e.upload_state(&who, &id).await.unwrap().concat,
            UploadConcat::Partial
        );
        parts.push(id);
    }
    // An unfinished partial, a plain upload, another tenant's partial, a missing one,
    // a repeated one: each refused, and nothing consumed.
    let unfinished = e
        .create_upload_with(&who, &spec(Some(5), true))
        .await
        .unwrap();
    let deferred = e.create_upload_with(&who, &spec(None, true)).await.unwrap();
    let plain = e.create_upload(&who, 5, None).await.unwrap().id;
    let other = e.create_tenant(&Principal::Admin, "other").await.unwrap();
    let other = Principal::Tenant {
        tenant_id: other.id,
    };
    let foreign = e
        .create_upload_with(&other, &spec(Some(1), true))
        .await
        .unwrap();
    e.append_upload(&other, &foreign, 0, chunks(vec![b"!"]))
        .await
        .unwrap();
    let with = |extra: &str| {
        let mut v = parts.clone();
        v.push(extra.to_string());
        v
    };
    for (bad, want_not_found) in [
        (with(&unfinished), false),
        (with(&deferred), false),
        (with(&plain), false),
        (with(&parts[0]), false),
        (with(&foreign), true),
        (with("01NOSUCHUPLOAD"), true),
        (vec![], false),
    ] {
        let r = e.create_final_upload(&who, &bad, None, None).await;
        match r {
            Err(Error::NotFound { .. }) if want_not_found => {}
            Err(Error::InvalidInput(_)) if !want_not_found => {}
            other => panic!("{bad:?}: {other:?}"),
        }
    }
    assert!(matches!(
        e.create_final_upload(&who, &parts, None, Some(3)).await,
        Err(Error::InvalidInput(_))
    ));
    for p in &parts {
        assert_eq!(
            e.upload_state(&who, p).await.unwrap().concat,
            UploadConcat::Partial
        );
        assert!(dir.path().join("uploads").join(p).exists());
    }

    let a = e
        .create_final_upload(&who, &parts, Some("filename Y2xpcC5tcDQ="), Some(24))
        .await
        .unwrap();
    assert_eq!(a.status, AssetStatus::Queued);
    assert_eq!(
        (a.size, a.filename.as_deref()),
        (Some(24), Some("clip.mp4"))
    );
    let src = e
        .storage()
        .get_bytes(&sluice_storage::keys::source(&t.id, &a.id))
        .await
        .unwrap();
    assert_eq!(src, Bytes::from_static(b"hello concatenated world"));
    let s = e.upload_state(&who, &a.id).await.unwrap();
    assert_eq!((s.offset, s.length), (24, Some(24)));
    assert_eq!(s.concat, UploadConcat::Final(parts.clone()));
    // A final takes no PATCH; its partials are gone, files and sessions.
    assert!(matches!(
        e.append_upload(&who, &a.id, 24, chunks(vec![b"x"])).await,
        Err(Error::Forbidden(_))
    ));
    for p in &parts {
        assert!(matches!(
            e.upload_state(&who, p).await,
            Err(Error::NotFound { .. })
        ));
        assert!(!dir.path().join("uploads").join(p).exists());
    }
    // A second final over the same partials finds nothing.
    assert!(matches!(
        e.create_final_upload(&who, &parts, None, None).await,
        Err(Error::NotFound { .. })
    ));
}

/// Partials that no final upload consumes expire like unfinished uploads, complete or not.
async fn unused_partials_expire(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (e, clock) = engine(backend, dir.path()).await;
    let t = e.create_tenant(&Principal::Admin, "acme").await.unwrap();
    let who = Principal::Tenant { tenant_id: t.id };
    let full = e
        .create_upload_with(&who, &spec(Some(2), true))
        .await
        .unwrap();
    e.append_upload(&who, &full, 0, chunks(vec![b"ab"]))
        .await
        .unwrap();
    let empty = e
        .create_upload_with(&who, &spec(Some(2), true))
        .await
        .unwrap();
    clock.0.fetch_add(24 * 3600 * 1000 + 1, Ordering::SeqCst);
    assert_eq!(e.sweep_expired_uploads().await.unwrap(), 2);
    for id in [&full, &empty] {
        assert!(matches!(
            e.upload_state(&who, id).await,
            Err(Error::NotFound { .. })
        ));
        assert!(!dir.path().join("uploads").join(id).exists());
    }
}
