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

/// Every test runs twice: on the embedded SQLite store and on PostgreSQL. Those that do not
/// look at local files run a third time with the hot tier on S3 (the Garage that
/// `scripts/test.sh` starts; `SLUICE_TEST_S3_*`).
#[derive(Clone, Copy, Debug)]
enum Backend {
    Sqlite,
    Postgres,
    SqliteOnS3,
}

fn s3_test_config() -> sluice_storage::S3Config {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!("{name} is not set: scripts/test.sh starts Garage and exports SLUICE_TEST_S3_*")
        })
    };
    sluice_storage::S3Config {
        endpoint: Some(var("SLUICE_TEST_S3_ENDPOINT")),
        bucket: var("SLUICE_TEST_S3_BUCKET"),
        region: var("SLUICE_TEST_S3_REGION"),
        access_key_id: var("SLUICE_TEST_S3_ACCESS_KEY_ID"),
        secret_access_key: Some(var("SLUICE_TEST_S3_SECRET_ACCESS_KEY")),
        allow_http: true,
        prefix: Some(format!(
            "engine-tests/{}",
            ulid::Ulid::new().to_string().to_lowercase()
        )),
        part_size: 5 << 20,
    }
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
        Backend::Sqlite | Backend::SqliteOnS3 => None,
        Backend::Postgres => Some(fresh_pg_database().await),
    };
    let mut config = Config {
        data_dir: dir.to_path_buf(),
        database_url,
        ..Config::default()
    };
    if let Backend::SqliteOnS3 = backend {
        config.storage.s3 = Some(s3_test_config());
    }
    config
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

/// Generates `mod name_on_s3 { s3() }` for an `async fn name(Backend)`.
macro_rules! on_s3 {
    ($($name:ident => $module:ident),* $(,)?) => {$(
        mod $module {
            #[tokio::test]
            async fn s3() {
                super::$name(super::Backend::SqliteOnS3).await
            }
        }
    )*};
}

on_s3!(
    upload_survives_a_broken_request_and_completes_exactly => upload_broken_request_on_s3,
    limits_and_termination => limits_and_termination_on_s3,
    abandoned_uploads_expire_and_are_swept => abandoned_uploads_on_s3,
    raw_uploads_are_idempotent => raw_uploads_on_s3,
    non_media_is_refused_at_the_first_bytes => non_media_on_s3,
    live_push_is_recorded_windowed_and_ends_idle => live_push_on_s3,
    a_zero_length_upload_fails_at_once => zero_length_on_s3,
    deferred_length_is_declared_once => deferred_length_on_s3,
    partial_uploads_concatenate_into_one_asset => concatenation_on_s3,
    unused_partials_expire => unused_partials_on_s3,
);

on_both!(
    admin_key_is_generated_once_and_keys_authenticate,
    upload_survives_a_broken_request_and_completes_exactly,
    limits_and_termination,
    playback_tokens_expire_with_the_clock,
    playback_keys_rotate_from_the_database_and_bind_clients,
    a_backlog_does_not_starve_another_tenant,
    one_writer_per_upload_across_processes,
    abandoned_uploads_expire_and_are_swept,
    device_keys_upload_only_and_revocation_is_immediate,
    raw_uploads_are_idempotent,
    storage_quota_counts_sources_and_reservations,
    non_media_is_refused_at_the_first_bytes,
    live_push_is_recorded_windowed_and_ends_idle,
    live_segments_from_two_gateways_get_distinct_objects,
    a_late_copy_of_a_sliding_playlist_is_not_a_restart,
    a_segment_in_flight_when_a_stream_ends_does_not_reopen_it,
    an_event_playlist_restart_is_recorded,
    a_cancel_that_races_a_requeue_ends_the_job,
    presets_are_stored_validated_and_snapshotted_into_jobs,
    one_rendition_of_a_ready_asset_can_be_rerun,
    a_zero_length_upload_fails_at_once,
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

/// Playback options with only a lifetime.
fn ttl(ttl_s: Option<u64>) -> sluice_engine::PlaybackOptions<'static> {
    sluice_engine::PlaybackOptions {
        ttl_s,
        client_ip: None,
    }
}

/// `Upload-Metadata` as the gateway's tus parser hands it over.
fn meta(header: &str, filename: &str) -> sluice_engine::UploadMetadata {
    sluice_engine::UploadMetadata {
        header: header.into(),
        filename: Some(filename.into()),
    }
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
        .create_upload(&who, 12, Some(&meta("filename YS5tcDQ=", "a.mp4")))
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
    // A malformed Upload-Metadata is refused by the gateway's tus parser (its unit tests).
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
        e.playback_grant(&who, &a.id, ttl(None)).await,
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
    assert_eq!(
        e.job_reporter().job_started(&job, "w1").await.unwrap(),
        Some(1)
    );
    e.job_reporter()
        .job_succeeded(&job, &[], 1.0)
        .await
        .unwrap();
    // A redelivered finished job is skipped.
    assert_eq!(
        e.job_reporter().job_started(&job, "w2").await.unwrap(),
        None
    );
    assert!(matches!(
        e.playback_grant(&who, &a.id, ttl(Some(0))).await,
        Err(Error::InvalidInput(_))
    ));
    // A token signed for this asset resolves until it expires.
    let grant = e.playback_grant(&who, &a.id, ttl(Some(60))).await.unwrap();
    assert_eq!(grant.expires, 1_700_000_060);
    let token = grant.token.as_str();
    assert_eq!(grant.entry, "master.m3u8");
    let key = e
        .resolve_playback(&t.id, &a.id, token, "720p/seg_00000.ts", None)
        .unwrap();
    assert_eq!(
        key,
        format!("tenants/{}/assets/{}/hls/720p/seg_00000.ts", t.id, a.id)
    );
    assert!(
        e.resolve_playback(&t.id, &a.id, token, "../source", None)
            .is_err()
    );
    assert!(
        e.resolve_playback("other", &a.id, token, "master.m3u8", None)
            .is_err()
    );
    clock.0.store(1_700_000_060_000, Ordering::SeqCst);
    assert!(matches!(
        e.resolve_playback(&t.id, &a.id, token, "master.m3u8", None),
        Err(Error::Token(sluice_cdn::Error::Expired))
    ));
}

/// The generated key (k1) lives in the database; a rotation to k2 needs no secret in the
/// configuration: k1 keeps verifying from the stored secret until its verify_until, and a
/// second process with the same configuration signs with the same k2. Client binding is
/// judged against the address the gateway hands in.
async fn playback_keys_rotate_from_the_database_and_bind_clients(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(backend, dir.path()).await;
    let clock = Arc::new(FakeClock(AtomicI64::new(1_700_000_000_000)));
    let (e1, _) = Engine::open_with_clock(config.clone(), None, clock.clone())
        .await
        .unwrap();
    let t = e1.create_tenant(&Principal::Admin, "acme").await.unwrap();
    let who = Principal::Tenant {
        tenant_id: t.id.clone(),
    };
    let live = e1.create_live(&who, None, None, None).await.unwrap();
    let g1 = e1
        .live_playback_grant(&who, &live.id, ttl(Some(3600)))
        .await
        .unwrap();
    assert!(g1.token.starts_with("k1.1700003600._."), "{}", g1.token);
    let play = |e: &Engine, g: &sluice_engine::PlaybackGrant, ip: Option<&str>| {
        e.resolve_playback(
            &g.tenant,
            &g.asset,
            &g.token,
            "live/index.m3u8",
            ip.map(|i| i.parse().unwrap()),
        )
        .map(|_| ())
    };
    play(&e1, &g1, None).unwrap();
    drop(e1);

    let mut rotated = config.clone();
    rotated.playback.key_id = "k2".into();
    rotated.playback.previous_keys = vec![sluice_engine::config::PreviousKeyConfig {
        id: "k1".into(),
        secret: None,
        secret_env: None,
        verify_until: "2023-11-14T23:13:20Z".into(),
    }];
    assert_eq!(
        rotated.playback.previous_keys[0]
            .verify_until_unix()
            .unwrap(),
        1_700_003_600
    );
    let (e2, _) = Engine::open_with_clock(rotated.clone(), None, clock.clone())
        .await
        .unwrap();
    let (e3, _) = Engine::open_with_clock(rotated, None, clock.clone())
        .await
        .unwrap();
    // The old URL still plays during the overlap, on either process.
    play(&e2, &g1, None).unwrap();
    play(&e3, &g1, None).unwrap();
    let g2 = e2
        .live_playback_grant(&who, &live.id, ttl(Some(7200)))
        .await
        .unwrap();
    assert!(g2.token.starts_with("k2."), "{}", g2.token);
    play(&e3, &g2, None).unwrap();
    // After verify_until, k1's tokens are refused; k2's play on.
    clock.0.store(1_700_003_600_000, Ordering::SeqCst);
    assert!(matches!(
        play(&e2, &g1, None),
        Err(Error::Token(sluice_cdn::Error::UnknownKey))
    ));
    play(&e2, &g2, None).unwrap();

    // Client binding: the grant carries the network; the token needs a client inside.
    let bound = e2
        .live_playback_grant(
            &who,
            &live.id,
            sluice_engine::PlaybackOptions {
                ttl_s: None,
                client_ip: Some("198.51.100.77/24"),
            },
        )
        .await
        .unwrap();
    assert_eq!(bound.client.unwrap().to_string(), "198.51.100.0/24");
    play(&e2, &bound, Some("198.51.100.1")).unwrap();
    for outside in [Some("198.51.101.1"), Some("::1"), None] {
        assert!(matches!(
            play(&e2, &bound, outside),
            Err(Error::Token(sluice_cdn::Error::ClientNotAllowed))
        ));
    }
    assert!(matches!(
        e2.live_playback_grant(
            &who,
            &live.id,
            sluice_engine::PlaybackOptions {
                ttl_s: None,
                client_ip: Some("example.com"),
            },
        )
        .await,
        Err(Error::InvalidInput(_))
    ));

    // A previous key with no secret anywhere is a configuration error naming the key.
    let mut unknown = config.clone();
    unknown.playback.previous_keys = vec![sluice_engine::config::PreviousKeyConfig {
        id: "k9".into(),
        secret: None,
        secret_env: Some("SLUICE_TEST_UNSET_PLAYBACK_SECRET".into()),
        verify_until: "2030-01-01T00:00:00Z".into(),
    }];
    let err = Engine::open_with_clock(unknown, None, clock.clone())
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("\"k9\"") && err.contains("SLUICE_TEST_UNSET_PLAYBACK_SECRET"),
        "{err}"
    );
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

/// Bytes that sniff as an MP4 (an `ftyp` box), `n` long.
fn mp4_like(n: usize, seed: u8) -> Vec<u8> {
    let mut v = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2".to_vec();
    v.extend((0..n.saturating_sub(v.len())).map(|i| (i as u8).wrapping_mul(31) ^ seed));
    v.truncate(n);
    v
}

fn body_of(
    data: &[u8],
    chunk: usize,
) -> impl futures::Stream<Item = Result<Bytes, String>> + Unpin {
    let parts: Vec<Result<Bytes, String>> = data
        .chunks(chunk)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    stream::iter(parts)
}

fn raw(len: usize, key: Option<&str>) -> sluice_engine::RawUpload<'_> {
    sluice_engine::RawUpload {
        content_length: Some(len as u64),
        filename: Some("cam.mp4"),
        idempotency_key: key,
    }
}

/// A device key uploads (tus and raw) for its tenant only, is refused everything else,
/// shows up with `last_seen_at` (throttled) and its uploads, and stops working on every
/// engine sharing the database the moment it is revoked.
async fn device_keys_upload_only_and_revocation_is_immediate(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (e, clock) = engine(backend, dir.path()).await;
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        database_url: e.config().database_url.clone(),
        ..Config::default()
    };
    let (e2, _) = Engine::open_with_clock(config, None, clock.clone())
        .await
        .unwrap();
    let t = e.create_tenant(&Principal::Admin, "acme").await.unwrap();
    let tenant = Principal::Tenant {
        tenant_id: t.id.clone(),
    };
    let d = e.create_device(&tenant, " cam-1 ").await.unwrap();
    assert_eq!(d.name, "cam-1");
    assert!(d.key.starts_with("dk_"));
    assert!(matches!(
        e.create_device(&tenant, "").await,
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        e.create_device(&Principal::Admin, "x").await,
        Err(Error::Forbidden(_))
    ));
    let listed = e.get_device(&tenant, &d.id).await.unwrap();
    assert!(listed.last_seen_at.is_none() && listed.revoked_at.is_none());

    let dev = e.authenticate(&d.key).await.unwrap();
    assert_eq!(
        dev,
        Principal::Device {
            tenant_id: t.id.clone(),
            device_id: d.id.clone()
        }
    );
    let seen = e.get_device(&tenant, &d.id).await.unwrap().last_seen_at;
    assert_eq!(seen.as_deref(), Some("2023-11-14T22:13:20Z"));
    // Throttled: a second authentication 1 s later does not move it; 6 s later it does.
    clock.0.fetch_add(1000, Ordering::SeqCst);
    e.authenticate(&d.key).await.unwrap();
    assert_eq!(
        e.get_device(&tenant, &d.id).await.unwrap().last_seen_at,
        seen
    );
    clock.0.fetch_add(5000, Ordering::SeqCst);
    e2.authenticate(&d.key).await.unwrap();
    assert_eq!(
        e.get_device(&tenant, &d.id)
            .await
            .unwrap()
            .last_seen_at
            .as_deref(),
        Some("2023-11-14T22:13:26Z")
    );

    // Uploads: tus and raw, recorded with the device.
    let data = mp4_like(3000, 1);
    let a = e
        .create_upload(&dev, data.len() as u64, None)
        .await
        .unwrap();
    assert_eq!(a.device_id.as_deref(), Some(d.id.as_str()));
    e.append_upload(&dev, &a.id, 0, body_of(&data, 1000))
        .await
        .unwrap();
    let r = e
        .raw_upload(&dev, raw(data.len(), None), body_of(&data, 700))
        .await
        .unwrap();
    let a2 = e.get_asset(&tenant, &r.asset_id).await.unwrap();
    assert_eq!(a2.status, AssetStatus::Queued);
    assert_eq!(a2.device_id.as_deref(), Some(d.id.as_str()));
    assert_eq!(a2.filename.as_deref(), Some("cam.mp4"));
    // A tenant upload has no device; the device cannot touch it.
    let mine = e.create_upload(&tenant, 10, None).await.unwrap();
    assert!(mine.device_id.is_none());
    assert!(matches!(
        e.upload_state(&dev, &mine.id).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        e.terminate_upload(&dev, &mine.id).await,
        Err(Error::NotFound { .. })
    ));
    // Nothing else.
    assert!(matches!(
        e.get_asset(&dev, &a.id).await,
        Err(Error::DeviceNotAllowed)
    ));
    assert!(matches!(
        e.list_jobs(&dev, None, None).await,
        Err(Error::DeviceNotAllowed)
    ));
    assert!(matches!(
        e.get_job(&dev, a2.job_id.as_deref().unwrap()).await,
        Err(Error::DeviceNotAllowed)
    ));
    assert!(matches!(
        e.playback_grant(&dev, &a.id, ttl(None)).await,
        Err(Error::DeviceNotAllowed)
    ));
    assert!(matches!(
        e.create_device(&dev, "x").await,
        Err(Error::DeviceNotAllowed)
    ));
    assert!(matches!(
        e.list_webhooks(&dev).await,
        Err(Error::DeviceNotAllowed)
    ));
    // The listing shows its latest uploads, newest first, and not the tenant's own.
    let list = e.list_devices(&tenant).await.unwrap();
    assert_eq!(list.len(), 1);
    let ups: Vec<&str> = list[0]
        .last_uploads
        .iter()
        .map(|u| u.asset_id.as_str())
        .collect();
    assert_eq!(ups, vec![r.asset_id.as_str(), a.id.as_str()]);
    // At most five.
    for i in 0..5 {
        e.raw_upload(&dev, raw(500, None), body_of(&mp4_like(500, i), 500))
            .await
            .unwrap();
    }
    assert_eq!(
        e.get_device(&tenant, &d.id)
            .await
            .unwrap()
            .last_uploads
            .len(),
        5
    );
    // Another tenant sees no such device.
    let other = e.create_tenant(&Principal::Admin, "other").await.unwrap();
    let other = Principal::Tenant {
        tenant_id: other.id,
    };
    assert!(matches!(
        e.get_device(&other, &d.id).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        e.revoke_device(&other, &d.id).await,
        Err(Error::NotFound { .. })
    ));

    // Revoked through one engine: refused by both at once (no cache).
    let revoked = e.revoke_device(&tenant, &d.id).await.unwrap();
    assert!(revoked.revoked_at.is_some());
    assert!(matches!(
        e2.authenticate(&d.key).await,
        Err(Error::Unauthenticated)
    ));
    assert!(matches!(
        e.authenticate(&d.key).await,
        Err(Error::Unauthenticated)
    ));
    // Revoking again keeps the first time; the tenant key still works.
    clock.0.fetch_add(60_000, Ordering::SeqCst);
    assert_eq!(
        e.revoke_device(&tenant, &d.id).await.unwrap().revoked_at,
        revoked.revoked_at
    );
    assert_eq!(e2.authenticate(&t.api_key).await.unwrap(), tenant);
}

/// `Idempotency-Key`: a retry with the same body replays the first answer and creates
/// nothing; another body is refused; a concurrent duplicate is refused while the first
/// runs; a failed request frees its key; keys lapse after 24 h.
async fn raw_uploads_are_idempotent(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (e, clock) = engine(backend, dir.path()).await;
    let t = e.create_tenant(&Principal::Admin, "acme").await.unwrap();
    let who = Principal::Tenant {
        tenant_id: t.id.clone(),
    };
    let data = mp4_like(5000, 7);
    let first = e
        .raw_upload(&who, raw(data.len(), Some("k-1")), body_of(&data, 999))
        .await
        .unwrap();
    assert!(!first.replayed);
    let again = e
        .raw_upload(&who, raw(data.len(), Some("k-1")), body_of(&data, 4096))
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(
        (again.asset_id.as_str(), again.body.as_str()),
        (first.asset_id.as_str(), first.body.as_str())
    );
    let jobs = e.list_jobs(&who, None, None).await.unwrap();
    assert_eq!(jobs.len(), 1, "one asset, one job");
    let src = e
        .storage()
        .get_bytes(&sluice_storage::keys::source(&t.id, &first.asset_id))
        .await
        .unwrap();
    assert_eq!(&src[..], &data[..]);

    // Same key, other body (same length): 422.
    let other = mp4_like(5000, 8);
    assert!(matches!(
        e.raw_upload(&who, raw(other.len(), Some("k-1")), body_of(&other, 999))
            .await,
        Err(Error::IdempotencyKeyReused)
    ));
    // Keys are per tenant.
    let t2 = e.create_tenant(&Principal::Admin, "b").await.unwrap();
    let who2 = Principal::Tenant { tenant_id: t2.id };
    let r2 = e
        .raw_upload(&who2, raw(other.len(), Some("k-1")), body_of(&other, 999))
        .await
        .unwrap();
    assert!(!r2.replayed);

    // A concurrent duplicate while the first is still streaming: refused, not a second
    // asset; the first completes.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, String>>(1);
    tx.send(Ok(Bytes::copy_from_slice(&data[..100])))
        .await
        .unwrap();
    let (ec, whoc) = (e.clone(), who.clone());
    let slow = tokio::spawn(async move {
        ec.raw_upload(&whoc, raw(5000, Some("k-2")), tokio_stream_from(rx))
            .await
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(matches!(
        e.raw_upload(&who, raw(data.len(), Some("k-2")), body_of(&data, 999))
            .await,
        Err(Error::IdempotencyInFlight)
    ));
    tx.send(Ok(Bytes::copy_from_slice(&data[100..])))
        .await
        .unwrap();
    drop(tx);
    let done = slow.await.unwrap().unwrap();
    let replay = e
        .raw_upload(&who, raw(data.len(), Some("k-2")), body_of(&data, 999))
        .await
        .unwrap();
    assert_eq!(replay.asset_id, done.asset_id);
    assert_eq!(e.list_jobs(&who, None, None).await.unwrap().len(), 2);

    // A request that fails (body cut short) stores nothing and frees its key.
    let broken = stream::iter(vec![
        Ok(Bytes::copy_from_slice(&data[..1000])),
        Err("connection reset".to_string()),
    ]);
    assert!(matches!(
        e.raw_upload(&who, raw(data.len(), Some("k-3")), broken)
            .await,
        Err(Error::Body(_))
    ));
    assert!(
        std::fs::read_dir(dir.path().join("uploads"))
            .unwrap()
            .next()
            .is_none()
    );
    let ok = e
        .raw_upload(&who, raw(other.len(), Some("k-3")), body_of(&other, 999))
        .await
        .unwrap();
    assert!(!ok.replayed);

    // Bad keys and lengths.
    assert!(matches!(
        e.raw_upload(&who, raw(data.len(), Some("")), body_of(&data, 999))
            .await,
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        e.raw_upload(&who, raw(10, None), body_of(&data, 999)).await,
        Err(Error::InvalidInput(_))
    ));
    let huge = sluice_engine::RawUpload {
        content_length: Some(1 << 50),
        ..Default::default()
    };
    assert!(matches!(
        e.raw_upload(&who, huge, body_of(&data, 999)).await,
        Err(Error::TooLarge { .. })
    ));
    assert!(
        std::fs::read_dir(dir.path().join("uploads"))
            .unwrap()
            .next()
            .is_none()
    );

    // After 24 h the key is forgotten: the same key makes a new asset.
    clock.0.fetch_add(24 * 3600 * 1000 + 1, Ordering::SeqCst);
    e.sweep_expired_uploads().await.unwrap();
    let fresh = e
        .raw_upload(&who, raw(other.len(), Some("k-1")), body_of(&other, 999))
        .await
        .unwrap();
    assert!(!fresh.replayed);
    assert_ne!(fresh.asset_id, first.asset_id);
}

/// Quota: sources plus the declared length of uploads in progress; refused before any
/// byte lands (tus creation, raw with Content-Length) or while streaming (raw without);
/// terminating an upload frees its reservation.
async fn storage_quota_counts_sources_and_reservations(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (e, _) = engine(backend, dir.path()).await;
    let t = e
        .create_tenant_with(
            &Principal::Admin,
            "small",
            sluice_engine::TenantQuotas {
                storage_bytes: Some(10_000),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(t.quotas.storage_bytes, Some(10_000));
    let who = Principal::Tenant {
        tenant_id: t.id.clone(),
    };
    let data = mp4_like(4000, 3);
    e.raw_upload(&who, raw(data.len(), None), body_of(&data, 1000))
        .await
        .unwrap();
    assert_eq!(e.storage_usage(&who).await.unwrap(), (Some(10_000), 4000));
    // A 5000-byte tus upload reserves its length at creation.
    let up = e.create_upload(&who, 5000, None).await.unwrap();
    assert_eq!(e.storage_usage(&who).await.unwrap().1, 9000);
    assert!(matches!(
        e.create_upload(&who, 1001, None).await,
        Err(Error::QuotaExceeded {
            used: 9000,
            requested: 1001,
            quota: 10_000
        })
    ));
    assert!(matches!(
        e.raw_upload(&who, raw(1001, None), body_of(&mp4_like(1001, 1), 1001))
            .await,
        Err(Error::QuotaExceeded { .. })
    ));
    // No length: refused once the bytes pass the quota, and nothing is kept.
    let unknown = sluice_engine::RawUpload {
        content_length: None,
        ..Default::default()
    };
    assert!(matches!(
        e.raw_upload(&who, unknown.clone(), body_of(&mp4_like(3000, 2), 500))
            .await,
        Err(Error::QuotaExceeded { .. })
    ));
    assert_eq!(e.storage_usage(&who).await.unwrap().1, 9000);
    // Terminating the tus upload frees its reservation.
    e.terminate_upload(&who, &up.id).await.unwrap();
    assert_eq!(e.storage_usage(&who).await.unwrap().1, 4000);
    let r = e
        .raw_upload(&who, unknown, body_of(&mp4_like(3000, 2), 500))
        .await
        .unwrap();
    let a = e.get_asset(&who, &r.asset_id).await.unwrap();
    assert_eq!((a.size, a.status), (Some(3000), AssetStatus::Queued));
    assert_eq!(e.storage_usage(&who).await.unwrap().1, 7000);
    assert!(
        std::fs::read_dir(dir.path().join("uploads"))
            .unwrap()
            .next()
            .is_none()
    );
    // Tenants without a quota are unlimited; over-large quotas are refused.
    let free = e.create_tenant(&Principal::Admin, "free").await.unwrap();
    assert_eq!(free.quotas.storage_bytes, None);
    assert!(matches!(
        e.create_tenant_with(
            &Principal::Admin,
            "x",
            sluice_engine::TenantQuotas {
                storage_bytes: Some(u64::MAX),
                ..Default::default()
            }
        )
        .await,
        Err(Error::InvalidInput(_))
    ));
}

/// Sniffing: text is refused (and deleted) as soon as its first bytes are known, through
/// tus (whatever the chunking) and raw uploads; random bytes are accepted for the worker.
async fn non_media_is_refused_at_the_first_bytes(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (e, _) = engine(backend, dir.path()).await;
    let t = e.create_tenant(&Principal::Admin, "acme").await.unwrap();
    let who = Principal::Tenant { tenant_id: t.id };
    let text = "These are not the frames you are looking for.\n".repeat(100);
    let a = e
        .create_upload(&who, text.len() as u64, None)
        .await
        .unwrap();
    // A first request of 100 bytes cannot decide yet; the next one does.
    let s = e
        .append_upload(&who, &a.id, 0, body_of(&text.as_bytes()[..100], 100))
        .await
        .unwrap();
    assert_eq!(s.offset, 100);
    assert!(matches!(
        e.append_upload(&who, &a.id, 100, body_of(&text.as_bytes()[100..], 4096))
            .await,
        Err(Error::UnsupportedMedia("text"))
    ));
    assert!(matches!(
        e.get_asset(&who, &a.id).await,
        Err(Error::NotFound { .. })
    ));
    assert!(!dir.path().join("uploads").join(&a.id).exists());
    let png = [&b"\x89PNG\r\n\x1a\n"[..], &[0u8; 600]].concat();
    assert!(matches!(
        e.raw_upload(&who, raw(png.len(), None), body_of(&png, 64))
            .await,
        Err(Error::UnsupportedMedia("a PNG image"))
    ));
    assert!(
        std::fs::read_dir(dir.path().join("uploads"))
            .unwrap()
            .next()
            .is_none()
    );
    assert!(e.list_jobs(&who, None, None).await.unwrap().is_empty());
    // Unrecognisable bytes go through (the worker fails them with a clear message).
    let noise: Vec<u8> = (0..2000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect();
    let r = e
        .raw_upload(&who, raw(noise.len(), None), body_of(&noise, 300))
        .await
        .unwrap();
    assert_eq!(
        e.get_asset(&who, &r.asset_id).await.unwrap().status,
        AssetStatus::Queued
    );
}

/// The secret of a stream's ingest URL, shown at creation.
fn ingest_token(s: &sluice_engine::live::LiveStream) -> String {
    let grant = s
        .ingest
        .as_ref()
        .expect("the ingest URL is shown at creation");
    grant.token.clone()
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
    let s = e
        .create_live(&who, Some("door"), Some(2), None)
        .await
        .unwrap();
    let token = ingest_token(&s);
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
        Err(Error::UnsupportedSegment(_))
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

    // The final playlist (ENDLIST) may arrive before the last segment it names: the stream
    // ends only once that segment is in, and the recording has it.
    let s2 = e.create_live(&who, None, None, None).await.unwrap();
    let token2 = ingest_token(&s2);
    e.live_put_segment(&s2.id, &token2, "seg0.ts", seg(7))
        .await
        .unwrap();
    e.live_put_playlist(&s2.id, &token2, "index.m3u8", playlist(0, 2, true))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(e.get_live(&who, &s2.id).await.unwrap().state, "receiving");
    e.live_put_segment(&s2.id, &token2, "seg1.ts", seg(8))
        .await
        .unwrap();
    let mut state = String::new();
    for _ in 0..50 {
        state = e.get_live(&who, &s2.id).await.unwrap().state;
        if state == "ended" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(state, "ended");
    let source2 = format!("tenants/{}/assets/{}/source", t.id, s2.asset_id);
    let mut expected2 = ts(7, 2).to_vec();
    expected2.extend_from_slice(&ts(8, 2));
    assert_eq!(
        e.storage().get_bytes(&source2).await.unwrap().to_vec(),
        expected2
    );
}

/// Review finding 10: a segment PUT whose body was still arriving when the stream ended
/// re-rendered the viewer playlist without ENDLIST (for good). Now the state is re-checked
/// under the stream's lock: the late segment is refused and the playlist stays closed.
async fn a_segment_in_flight_when_a_stream_ends_does_not_reopen_it(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (e, _clock) = engine(backend, dir.path()).await;
    let t = e.create_tenant(&Principal::Admin, "late").await.unwrap();
    let who = Principal::Tenant {
        tenant_id: t.id.clone(),
    };
    let s = e.create_live(&who, None, None, None).await.unwrap();
    let token = ingest_token(&s);
    let one = |i: u8| stream::iter(vec![Ok::<_, String>(ts(i, 2))]);
    e.live_put_segment(&s.id, &token, "seg0.ts", one(0))
        .await
        .unwrap();
    e.live_put_playlist(
        &s.id,
        &token,
        "index.m3u8",
        Bytes::from_static(
            b"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:0\n\
              #EXTINF:1.0,\nseg0.ts\n#EXTINF:1.0,\nseg1.ts\n",
        ),
    )
    .await
    .unwrap();
    // seg1's body: half now, the rest after the stream has ended.
    let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Bytes, String>>();
    let seg1 = ts(1, 2);
    tx.unbounded_send(Ok(seg1.slice(..188))).unwrap();
    // The request is past its checks once it reads the body's first chunk.
    let reading = Arc::new(tokio::sync::Notify::new());
    let body = {
        use futures::StreamExt;
        let reading = reading.clone();
        rx.inspect(move |_| reading.notify_one())
    };
    let put = tokio::spawn({
        let (e, id, token) = (e.clone(), s.id.clone(), token.clone());
        async move { e.live_put_segment(&id, &token, "seg1.ts", body).await }
    });
    reading.notified().await;
    let ending = e.end_live(&who, &s.id).await.unwrap();
    assert!(matches!(ending.state.as_str(), "ending" | "ended"));
    for _ in 0..100 {
        if e.get_live(&who, &s.id).await.unwrap().state == "ended" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(e.get_live(&who, &s.id).await.unwrap().state, "ended");
    let viewer = format!("tenants/{}/assets/{}/live/index.m3u8", t.id, s.asset_id);
    let closed = e.storage().get_bytes(&viewer).await.unwrap();
    assert!(closed.ends_with(b"#EXT-X-ENDLIST\n"));
    tx.unbounded_send(Ok(seg1.slice(188..))).unwrap();
    drop(tx);
    let late = put.await.unwrap();
    assert!(matches!(late, Err(Error::Conflict(_))), "{late:?}");
    let after = e.storage().get_bytes(&viewer).await.unwrap();
    assert_eq!(after, closed, "the closed playlist was rewritten");
}

/// Review finding 9: an encoder restart whose media sequence does not go backwards (an
/// event playlist, `-hls_list_size 0`: always 0) was missed, and the new run's first
/// segments were dropped from viewers and the recording.
async fn an_event_playlist_restart_is_recorded(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (e, _clock) = engine(backend, dir.path()).await;
    let t = e.create_tenant(&Principal::Admin, "event").await.unwrap();
    let who = Principal::Tenant {
        tenant_id: t.id.clone(),
    };
    let s = e.create_live(&who, None, None, None).await.unwrap();
    let token = ingest_token(&s);
    let event = |names: &[&str], end: bool| {
        let mut p = String::from("#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:0\n");
        for n in names {
            p += &format!("#EXTINF:1.0,\n{n}\n");
        }
        if end {
            p += "#EXT-X-ENDLIST\n";
        }
        Bytes::from(p)
    };
    let put = |name: &'static str, body: Bytes| {
        let (e, id, token) = (e.clone(), s.id.clone(), token.clone());
        async move {
            e.live_put_segment(&id, &token, name, stream::iter(vec![Ok::<_, String>(body)]))
                .await
                .unwrap()
        }
    };
    // First run: seg0, seg1.
    put("seg0.ts", ts(1, 2)).await;
    e.live_put_playlist(&s.id, &token, "index.m3u8", event(&["seg0.ts"], false))
        .await
        .unwrap();
    put("seg1.ts", ts(2, 2)).await;
    e.live_put_playlist(
        &s.id,
        &token,
        "index.m3u8",
        event(&["seg0.ts", "seg1.ts"], false),
    )
    .await
    .unwrap();
    // The encoder restarts: the same names from 0 again, new bytes.
    put("seg0.ts", ts(3, 3)).await;
    e.live_put_playlist(&s.id, &token, "index.m3u8", event(&["seg0.ts"], false))
        .await
        .unwrap();
    put("seg1.ts", ts(4, 3)).await;
    e.live_put_playlist(
        &s.id,
        &token,
        "index.m3u8",
        event(&["seg0.ts", "seg1.ts"], true),
    )
    .await
    .unwrap();
    let viewer = format!("tenants/{}/assets/{}/live/index.m3u8", t.id, s.asset_id);
    let text = String::from_utf8(e.storage().get_bytes(&viewer).await.unwrap().to_vec()).unwrap();
    assert_eq!(text.matches("#EXTINF").count(), 4, "{text}");
    assert_eq!(text.matches("#EXT-X-DISCONTINUITY\n").count(), 1, "{text}");
    let mut state = String::new();
    for _ in 0..100 {
        state = e.get_live(&who, &s.id).await.unwrap().state;
        if state == "ended" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(state, "ended");
    let source = format!("tenants/{}/assets/{}/source", t.id, s.asset_id);
    let mut expected = ts(1, 2).to_vec();
    for b in [ts(2, 2), ts(3, 3), ts(4, 3)] {
        expected.extend_from_slice(&b);
    }
    assert_eq!(
        e.storage().get_bytes(&source).await.unwrap().to_vec(),
        expected
    );
}

/// Review finding 11: a cancel requested while the job ran, followed by the worker giving
/// the job back (a retry), left it queued with the request set: every later delivery was
/// skipped, and the job stayed queued for ever. The next delivery now ends it cancelled.
async fn a_cancel_that_races_a_requeue_ends_the_job(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (e, _clock) = engine(backend, dir.path()).await;
    let t = e.create_tenant(&Principal::Admin, "race").await.unwrap();
    let who = Principal::Tenant {
        tenant_id: t.id.clone(),
    };
    let asset = e.create_upload(&who, 1, None).await.unwrap();
    e.append_upload(&who, &asset.id, 0, chunks(vec![b"x"]))
        .await
        .unwrap();
    let job_id = e.get_asset(&who, &asset.id).await.unwrap().job_id.unwrap();
    let tj = sluice_engine::TranscodeJob {
        job_id: job_id.clone(),
        tenant_id: t.id.clone(),
        asset_id: asset.id.clone(),
    };
    assert_eq!(
        e.job_reporter().job_started(&tj, "w1").await.unwrap(),
        Some(1)
    );
    assert_eq!(e.cancel_job(&who, &job_id).await.unwrap().status, "running");
    e.job_reporter()
        .job_retry_later(&tj, 1, "a transient error")
        .await
        .unwrap();
    assert_eq!(e.job_reporter().job_started(&tj, "w2").await.unwrap(), None);
    assert_eq!(e.get_job(&who, &job_id).await.unwrap().status, "cancelled");
}

/// Playlist PUTs can overtake each other (an encoder uploading from several threads or
/// connections: GStreamer applications writing hlssink2's playlists over HTTP do). A late copy
/// of a sliding-window playlist has a lower media sequence than the one before it: that is
/// not an encoder restart, and it must neither add a discontinuity nor re-list segments
/// whose bytes will never be sent again.
async fn a_late_copy_of_a_sliding_playlist_is_not_a_restart(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (e, _clock) = engine(backend, dir.path()).await;
    let t = e.create_tenant(&Principal::Admin, "gst").await.unwrap();
    let who = Principal::Tenant {
        tenant_id: t.id.clone(),
    };
    let s = e.create_live(&who, None, None, None).await.unwrap();
    let token = ingest_token(&s);
    // hlssink2's shape: a blank line after the header, integer and long float durations.
    let playlist = |first: u64, last: u64, end: bool| {
        let mut p = format!(
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-MEDIA-SEQUENCE:{first}\n#EXT-X-TARGETDURATION:2\n\n"
        );
        for i in first..=last {
            let d = if i == 4 { "1.0399999618530273" } else { "2" };
            p += &format!("#EXTINF:{d},\nsegment{i:05}.ts\n");
        }
        if end {
            p += "#EXT-X-ENDLIST";
        }
        Bytes::from(p)
    };
    let put_seg = |i: u8| {
        let e = e.clone();
        let (id, token) = (s.id.clone(), token.clone());
        async move {
            let body = stream::iter(vec![Ok::<_, String>(ts(i, 2))]);
            e.live_put_segment(&id, &token, &format!("segment{i:05}.ts"), body)
                .await
                .unwrap()
        }
    };
    let put_pl = |first: u64, last: u64, end: bool| {
        let e = e.clone();
        let (id, token) = (s.id.clone(), token.clone());
        async move {
            e.live_put_playlist(&id, &token, "index.m3u8", playlist(first, last, end))
                .await
                .unwrap()
        }
    };
    let viewer = || {
        let key = format!("tenants/{}/assets/{}/live/index.m3u8", t.id, s.asset_id);
        let storage = e.storage().clone();
        async move { String::from_utf8(storage.get_bytes(&key).await.unwrap().to_vec()).unwrap() }
    };
    // playlist-length 3: [0], [0,1], [0..2], [1..3], [2..4]; the copy [1..3] comes last.
    for i in 0..=2u8 {
        put_seg(i).await;
        put_pl(0, i as u64, false).await;
    }
    put_seg(3).await;
    put_seg(4).await;
    put_pl(2, 4, false).await;
    let before = viewer().await;
    assert_eq!(before.matches("#EXTINF").count(), 5, "{before}");
    put_pl(1, 3, false).await; // the late copy
    let after = viewer().await;
    assert_eq!(after, before);
    assert!(!after.contains("#EXT-X-DISCONTINUITY"), "{after}");
    assert_eq!(
        e.get_live(&who, &s.id).await.unwrap().playlists[0].segments,
        5
    );
    // The stream goes on: the next segment is shown at once.
    put_seg(5).await;
    put_pl(3, 5, false).await;
    let v = viewer().await;
    assert_eq!(v.matches("#EXTINF").count(), 6, "{v}");

    // The final playlist comes before its last segment, then a late copy of an earlier
    // version without #EXT-X-ENDLIST (as a playlist that has not filled its window yet
    // looks): the end is not undone, and the stream ends once the last segment is in.
    put_pl(4, 6, true).await;
    put_pl(4, 5, false).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(e.get_live(&who, &s.id).await.unwrap().state, "receiving");
    put_seg(6).await;
    let mut state = String::new();
    for _ in 0..50 {
        state = e.get_live(&who, &s.id).await.unwrap().state;
        if state == "ended" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(state, "ended");
    let source = format!("tenants/{}/assets/{}/source", t.id, s.asset_id);
    let expected: Vec<u8> = (0..=6u8).flat_map(|i| ts(i, 2).to_vec()).collect();
    assert_eq!(
        e.storage().get_bytes(&source).await.unwrap().to_vec(),
        expected
    );

    // A real restart still is one: media sequence back to 0 below the window, names reused.
    let s2 = e.create_live(&who, None, None, None).await.unwrap();
    let token2 = ingest_token(&s2);
    for i in 0..=4u8 {
        let body = stream::iter(vec![Ok::<_, String>(ts(i, 2))]);
        e.live_put_segment(&s2.id, &token2, &format!("segment{i:05}.ts"), body)
            .await
            .unwrap();
        let first = (i as u64).saturating_sub(2);
        e.live_put_playlist(
            &s2.id,
            &token2,
            "index.m3u8",
            playlist(first, i as u64, false),
        )
        .await
        .unwrap();
    }
    let body = stream::iter(vec![Ok::<_, String>(ts(9, 2))]);
    e.live_put_segment(&s2.id, &token2, "segment00000.ts", body)
        .await
        .unwrap();
    e.live_put_playlist(&s2.id, &token2, "index.m3u8", playlist(0, 0, false))
        .await
        .unwrap();
    let key2 = format!("tenants/{}/assets/{}/live/index.m3u8", t.id, s2.asset_id);
    let v2 = String::from_utf8(e.storage().get_bytes(&key2).await.unwrap().to_vec()).unwrap();
    assert_eq!(v2.matches("#EXTINF").count(), 6, "{v2}");
    assert!(v2.contains("#EXT-X-DISCONTINUITY"), "{v2}");
}

/// Two gateway processes taking the requests of one stream at once (an encoder behind a
/// load balancer): every segment gets its own sequence number and object.
async fn live_segments_from_two_gateways_get_distinct_objects(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (e1, clock) = engine(backend, dir.path()).await;
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        database_url: e1.config().database_url.clone(),
        ..Config::default()
    };
    let (e2, _) = Engine::open_with_clock(config, None, clock).await.unwrap();
    let t = e1.create_tenant(&Principal::Admin, "lb").await.unwrap();
    let who = Principal::Tenant {
        tenant_id: t.id.clone(),
    };
    let s = e1.create_live(&who, None, Some(600), None).await.unwrap();
    let token = ingest_token(&s);
    const N: u8 = 24;
    let puts = (0..N).map(|i| {
        let e = if i % 2 == 0 { e1.clone() } else { e2.clone() };
        let (id, token) = (s.id.clone(), token.clone());
        tokio::spawn(async move {
            let body = stream::iter(vec![Ok::<_, String>(ts(i + 1, 3))]);
            e.live_put_segment(&id, &token, &format!("s{i}.ts"), body)
                .await
        })
    });
    for r in futures::future::join_all(puts).await {
        r.unwrap().unwrap();
    }
    let mut p = String::from("#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:0\n");
    for i in 0..N {
        p += &format!("#EXTINF:1.0,\ns{i}.ts\n");
    }
    e2.live_put_playlist(&s.id, &token, "index.m3u8", Bytes::from(p))
        .await
        .unwrap();
    let prefix = format!("tenants/{}/assets/{}/live/", t.id, s.asset_id);
    let storage = e1.storage();
    let viewer = storage
        .get_bytes(&format!("{prefix}index.m3u8"))
        .await
        .unwrap();
    let uris: Vec<String> = String::from_utf8(viewer.to_vec())
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(String::from)
        .collect();
    assert_eq!(uris.len(), N as usize);
    let distinct: std::collections::HashSet<&String> = uris.iter().collect();
    assert_eq!(distinct.len(), N as usize, "{uris:?}");
    for (i, uri) in uris.iter().enumerate() {
        let bytes = storage.get_bytes(&format!("{prefix}{uri}")).await.unwrap();
        assert_eq!(bytes, ts(i as u8 + 1, 3), "segment {i} at {uri}");
    }
    assert_eq!(
        e1.get_live(&who, &s.id).await.unwrap().segments_received,
        N as u64
    );
}

async fn presets_are_stored_validated_and_snapshotted_into_jobs(backend: Backend) {
    use sluice_engine::config::RungConfig;
    use sluice_engine::{PresetOverrides, TranscodePreset};
    let dir = tempfile::tempdir().unwrap();
    let (e, _) = engine(backend, dir.path()).await;
    let t = e.create_tenant(&Principal::Admin, "acme").await.unwrap();
    let who = Principal::Tenant {
        tenant_id: t.id.clone(),
    };
    let defaults = TranscodePreset::from_config(&e.config().transcode);
    let v = e.get_preset(&who).await.unwrap();
    assert_eq!(v.overrides, PresetOverrides::default());
    assert_eq!(v.effective, defaults);
    assert!(v.updated_at.is_none());
    assert!(matches!(
        e.get_preset(&Principal::Admin).await,
        Err(Error::Forbidden(_))
    ));

    // Bad values are refused with the validator's message and nothing is stored.
    let bad = PresetOverrides {
        segment_duration_s: Some(11.0),
        ..Default::default()
    };
    match e.put_preset(&who, bad).await {
        Err(Error::InvalidInput(m)) => {
            assert_eq!(
                m,
                "segment_duration_s must be between 1 and 10 seconds, got 11"
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        e.get_preset(&who).await.unwrap().overrides,
        PresetOverrides::default()
    );

    let rung = |name: &str, height, video_bitrate| RungConfig {
        name: name.into(),
        height,
        video_bitrate,
    };
    let mine = PresetOverrides {
        ladder: Some(vec![rung("240p", 240, 400_000), rung("144p", 144, 200_000)]),
        segment_duration_s: Some(4.0),
        audio_only: Some(true),
        ..Default::default()
    };
    let v = e.put_preset(&who, mine.clone()).await.unwrap();
    assert_eq!(v.overrides, mine);
    assert_eq!(v.effective.segment_duration_s, 4.0);
    assert_eq!(v.effective.ladder.len(), 2);
    assert!(v.effective.audio_only);
    assert_eq!(v.effective.x264_preset, defaults.x264_preset);
    assert!(v.updated_at.is_some());
    // Stored, not cached: a second engine on the same database sees it.
    assert_eq!(e.get_preset(&who).await.unwrap().overrides, mine);

    // A completed upload's job carries the preset in effect at enqueue time.
    let asset = e.create_upload(&who, 1, None).await.unwrap();
    e.append_upload(&who, &asset.id, 0, chunks(vec![b"x"]))
        .await
        .unwrap();
    let job_id = e.get_asset(&who, &asset.id).await.unwrap().job_id.unwrap();
    let tj = sluice_engine::TranscodeJob {
        job_id: job_id.clone(),
        tenant_id: t.id.clone(),
        asset_id: asset.id.clone(),
    };
    let spec = e.job_reporter().job_spec(&tj).await.unwrap();
    assert_eq!(spec.preset, v.effective);
    assert_eq!(spec.rendition, None);
    assert_eq!(e.get_job(&who, &job_id).await.unwrap().rendition, None);

    // Changing the preset later does not change that job.
    let later = PresetOverrides {
        segment_duration_s: Some(6.0),
        ..Default::default()
    };
    e.put_preset(&who, later).await.unwrap();
    assert_eq!(
        e.job_reporter()
            .job_spec(&tj)
            .await
            .unwrap()
            .preset
            .segment_duration_s,
        4.0
    );
    assert_eq!(
        e.effective_preset(&t.id).await.unwrap().segment_duration_s,
        6.0
    );
    // The replacement is whole: the ladder override is gone.
    assert_eq!(
        e.effective_preset(&t.id).await.unwrap().ladder,
        defaults.ladder
    );

    // Presets are per tenant.
    let other = e.create_tenant(&Principal::Admin, "other").await.unwrap();
    let other = Principal::Tenant {
        tenant_id: other.id,
    };
    assert_eq!(e.get_preset(&other).await.unwrap().effective, defaults);

    e.delete_preset(&who).await.unwrap();
    assert_eq!(e.get_preset(&who).await.unwrap().effective, defaults);
}

async fn one_rendition_of_a_ready_asset_can_be_rerun(backend: Backend) {
    use sluice_engine::{PresetOverrides, Rendition, TranscodeJob};
    let dir = tempfile::tempdir().unwrap();
    let (e, _) = engine(backend, dir.path()).await;
    let t = e.create_tenant(&Principal::Admin, "acme").await.unwrap();
    let who = Principal::Tenant {
        tenant_id: t.id.clone(),
    };
    e.put_preset(
        &who,
        PresetOverrides {
            segment_duration_s: Some(3.0),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let asset = e.create_upload(&who, 1, None).await.unwrap();
    e.append_upload(&who, &asset.id, 0, chunks(vec![b"x"]))
        .await
        .unwrap();
    let main_id = e.get_asset(&who, &asset.id).await.unwrap().job_id.unwrap();
    // Not ready yet: 409.
    assert!(matches!(
        e.rerun_rendition(&who, &asset.id, "360p").await,
        Err(Error::Conflict(_))
    ));
    let main = TranscodeJob {
        job_id: main_id.clone(),
        tenant_id: t.id.clone(),
        asset_id: asset.id.clone(),
    };
    e.job_reporter()
        .job_started(&main, "w1")
        .await
        .unwrap()
        .unwrap();
    let r = |name: &str, bandwidth| Rendition {
        name: name.into(),
        width: 640,
        height: 360,
        bandwidth,
        codecs: "avc1.64001e,mp4a.40.2".into(),
    };
    e.job_reporter()
        .job_succeeded(
            &main,
            &[r("360p", 900_000), r("180p", 300_000), r("audio", 140_000)],
            5.0,
        )
        .await
        .unwrap();
    // The tenant's preset changes after the asset was made.
    e.put_preset(
        &who,
        PresetOverrides {
            segment_duration_s: Some(6.0),
            ..Default::default()
        },
    )
    .await
    .unwrap();

    assert!(matches!(
        e.rerun_rendition(&who, &asset.id, "1080p").await,
        Err(Error::NotFound {
            what: "rendition",
            ..
        })
    ));
    assert!(matches!(
        e.rerun_rendition(&who, "nope", "360p").await,
        Err(Error::NotFound { what: "asset", .. })
    ));
    // The audio-only rendition cannot be re-run alone; the message reads as one sentence
    // (it once carried a run of spaces from a broken line continuation).
    match e.rerun_rendition(&who, &asset.id, "audio").await {
        Err(Error::InvalidInput(m)) => assert_eq!(
            m,
            "the audio-only rendition shares its audio encode with the ladder: re-run a \
             video rendition or the whole job"
        ),
        other => panic!("{other:?}"),
    }
    let job = e.rerun_rendition(&who, &asset.id, "360p").await.unwrap();
    assert_eq!(job.rendition.as_deref(), Some("360p"));
    assert_eq!(job.status, "queued");
    // One job per asset at a time.
    assert!(matches!(
        e.rerun_rendition(&who, &asset.id, "180p").await,
        Err(Error::Conflict(_))
    ));
    let rj = TranscodeJob {
        job_id: job.id.clone(),
        tenant_id: t.id.clone(),
        asset_id: asset.id.clone(),
    };
    // The re-run uses the asset's own preset (its segment duration), not today's.
    let spec = e.job_reporter().job_spec(&rj).await.unwrap();
    assert_eq!(spec.rendition.as_deref(), Some("360p"));
    assert_eq!(spec.preset.segment_duration_s, 3.0);

    // While it runs and when it fails, the asset stays ready and playable.
    e.job_reporter()
        .job_started(&rj, "w1")
        .await
        .unwrap()
        .unwrap();
    let a = e.get_asset(&who, &asset.id).await.unwrap();
    assert_eq!(a.status, AssetStatus::Ready);
    assert_eq!(a.job_id.as_deref(), Some(main_id.as_str()));
    e.job_reporter().job_failed(&rj, "boom").await.unwrap();
    let a = e.get_asset(&who, &asset.id).await.unwrap();
    assert_eq!((a.status, a.error), (AssetStatus::Ready, None));
    assert_eq!(e.get_job(&who, &job.id).await.unwrap().status, "failed");
    e.playback_grant(&who, &asset.id, ttl(None)).await.unwrap();

    // Through the job route; success replaces that rendition's entry only.
    let job2 = e.rerun_job_rendition(&who, &main_id, "360p").await.unwrap();
    let rj2 = TranscodeJob {
        job_id: job2.id.clone(),
        ..rj
    };
    e.job_reporter()
        .job_started(&rj2, "w1")
        .await
        .unwrap()
        .unwrap();
    e.job_reporter()
        .job_rendition_succeeded(&rj2, &r("360p", 950_000))
        .await
        .unwrap();
    let a = e.get_asset(&who, &asset.id).await.unwrap();
    assert_eq!(a.status, AssetStatus::Ready);
    assert_eq!(
        a.renditions
            .iter()
            .map(|r| (r.name.as_str(), r.bandwidth))
            .collect::<Vec<_>>(),
        vec![("360p", 950_000), ("180p", 300_000), ("audio", 140_000)]
    );
    assert_eq!(e.get_job(&who, &job2.id).await.unwrap().status, "succeeded");
}

async fn a_zero_length_upload_fails_at_once(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (e, _) = engine(backend, dir.path()).await;
    let t = e.create_tenant(&Principal::Admin, "acme").await.unwrap();
    let who = Principal::Tenant { tenant_id: t.id };
    let a = e
        .create_upload(&who, 0, Some(&meta("filename ZW1wdHk=", "empty")))
        .await
        .unwrap();
    assert_eq!(a.status, AssetStatus::Failed);
    assert!(
        a.error
            .as_deref()
            .unwrap()
            .starts_with("the upload is empty"),
        "{a:?}"
    );
    assert_eq!((a.job_id, a.size), (None, Some(0)));
    let s = e.upload_state(&who, &a.id).await.unwrap();
    assert_eq!((s.offset, s.length, s.expires_at), (0, Some(0), None));
    // The empty source is kept like any other; the upload takes no bytes.
    let (_, info, _) = e.asset_source(&who, &a.id).await.unwrap();
    assert_eq!(info.size, 0);
    assert!(matches!(
        e.append_upload(&who, &a.id, 0, chunks(vec![b"x"])).await,
        Err(Error::Conflict(_))
    ));
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

    // A deferred upload declared empty completes with an empty source and fails at once,
    // without a job, as an empty one at creation does — on either tier.
    let id = e
        .create_upload_with(&who, &spec(None, false))
        .await
        .unwrap();
    let s = e
        .append_upload_declaring(&who, &id, 0, chunks(vec![]), None, Some(0))
        .await
        .unwrap();
    assert_eq!((s.offset, s.length, s.expires_at), (0, Some(0), None));
    let a = e.get_asset(&who, &id).await.unwrap();
    assert_eq!((a.status, a.job_id), (AssetStatus::Failed, None));
    assert!(a.error.unwrap().contains("empty"));
    let (_, info, _) = e.asset_source(&who, &id).await.unwrap();
    assert_eq!(info.size, 0);
    // Declared empty while the body carries bytes: refused, nothing changes.
    let id = e
        .create_upload_with(&who, &spec(None, false))
        .await
        .unwrap();
    assert!(matches!(
        e.append_upload_declaring(&who, &id, 0, chunks(vec![b"x"]), None, Some(0))
            .await,
        Err(Error::InvalidInput(_))
    ));
    assert_eq!(e.upload_state(&who, &id).await.unwrap().length, None);

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
    // Partial bytes live in local files only on the local hot tier.
    let local = !matches!(backend, Backend::SqliteOnS3);
    let dir = tempfile::tempdir().unwrap();
    let (e, _) = engine(backend, dir.path()).await;
    let t = e.create_tenant(&Principal::Admin, "acme").await.unwrap();
    let who = Principal::Tenant {
        tenant_id: t.id.clone(),
    };
    let mut parts = Vec::new();
    // An MP4 head cut into partials (text would be refused once assembled: the final's
    // head is sniffed, the partials are not).
    for body in [
        &b"\x00\x00\x00\x18ft"[..],
        b"",
        b"ypisom\x00\x00\x02\x00iso",
        b"m\x1f\x8b\x08\x00",
    ] {
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
        assert_eq!(dir.path().join("uploads").join(p).exists(), local);
    }

    let a = e
        .create_final_upload(
            &who,
            &parts,
            Some(&meta("filename Y2xpcC5tcDQ=", "clip.mp4")),
            Some(24),
        )
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
    assert_eq!(
        src,
        Bytes::from_static(b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isom\x1f\x8b\x08\x00")
    );
    // Text cut into small partials (each too short to judge) is refused once assembled.
    if local {
        let mut text_parts = Vec::new();
        for body in [&b"just some "[..], b"plain text, ", b"not a video\n"] {
            let id = e
                .create_upload_with(&who, &spec(Some(body.len() as u64), true))
                .await
                .unwrap();
            e.append_upload(&who, &id, 0, chunks(vec![body]))
                .await
                .unwrap();
            text_parts.push(id);
        }
        assert!(matches!(
            e.create_final_upload(&who, &text_parts, None, None).await,
            Err(Error::UnsupportedMedia(_))
        ));
    }
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

/// The job of a finished upload is recorded in one transaction with the upload's completion
/// and the asset's `queued` status, before its task is pushed: a worker that takes the task
/// at once finds the asset queued with its job. (Once, the job was recorded and pushed
/// first and the asset marked `queued` after, unconditionally: a fast worker's
/// `processing` could be overwritten, or the asset left without its job.)
///
/// PostgreSQL only, on purpose: the test holds a row lock on the asset, which stops the
/// status change but not the job's insertion; SQLite locks the whole database, which would
/// stop both and cannot tell the two orders apart.
#[tokio::test]
async fn a_finished_uploads_job_is_recorded_with_its_queued_status() {
    let dir = tempfile::tempdir().unwrap();
    let (e, _) = engine(Backend::Postgres, dir.path()).await;
    let t = e.create_tenant(&Principal::Admin, "acme").await.unwrap();
    let who = Principal::Tenant {
        tenant_id: t.id.clone(),
    };
    let asset = e.create_upload(&who, 8, None).await.unwrap();
    let url = e.config().database_url.clone().unwrap();
    let pg = sqlx::PgPool::connect(&url).await.unwrap();
    // Blocks an UPDATE of the asset row (not a foreign-key check against it).
    let mut lock = pg.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM sluice.assets WHERE id = $1 FOR NO KEY UPDATE")
        .bind(&asset.id)
        .execute(&mut *lock)
        .await
        .unwrap();
    let finishing = tokio::spawn({
        let (e, who, id) = (e.clone(), who.clone(), asset.id.clone());
        async move {
            e.append_upload(&who, &id, 0, chunks(vec![b"abcdefgh"]))
                .await
        }
    });
    // The finish is waiting for the asset row: no job of it may be visible yet.
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    let jobs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sluice.jobs WHERE asset_id = $1")
        .bind(&asset.id)
        .fetch_one(&pg)
        .await
        .unwrap();
    assert_eq!(jobs, 0, "the job was visible before its asset was queued");
    assert!(!finishing.is_finished());
    lock.rollback().await.unwrap();
    let state = tokio::time::timeout(std::time::Duration::from_secs(30), finishing)
        .await
        .expect("the finish did not resume")
        .unwrap()
        .unwrap();
    assert_eq!(state.offset, 8);
    let a = e.get_asset(&who, &asset.id).await.unwrap();
    assert_eq!(a.status, AssetStatus::Queued);
    let job = a.job_id.expect("the asset records its job");
    assert_eq!(e.get_job(&who, &job).await.unwrap().status, "queued");
}
