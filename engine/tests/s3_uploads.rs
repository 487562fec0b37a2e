//! tus uploads on an S3 hot tier (a real Garage on loopback, started by `scripts/test.sh`,
//! which exports the `SLUICE_TEST_S3_*` variables; without them these tests fail rather than
//! skip). Bytes stream into multipart parts recorded in the metadata store, so a second
//! engine, with its own uploads directory, continues an upload the first one began.
//! Every test runs on SQLite and on PostgreSQL (`SLUICE_TEST_PG_URL`).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use base64::Engine as _;
use bytes::Bytes;
use futures::stream;
use sha1::Digest;
use sluice_engine::checksum::Checksum;
use sluice_engine::{AssetStatus, Clock, Config, Engine, Error, Principal};
use sluice_storage::{S3Config, keys};
use sqlx::Connection;

const MIB: usize = 1 << 20;
const PART: usize = 5 * MIB;

struct FakeClock(AtomicI64);
impl Clock for FakeClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[derive(Clone, Copy, Debug)]
enum Backend {
    Sqlite,
    Postgres,
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
    uploads_resume_across_engines_part_by_part,
    termination_expiry_and_refusal_abort_the_multipart_upload,
);

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: these tests need a real S3-compatible server (scripts/test.sh \
             starts Garage with scripts/garage.sh and exports SLUICE_TEST_S3_*)"
        )
    })
}

/// The test Garage, under a fresh prefix per test.
fn s3_config() -> S3Config {
    S3Config {
        endpoint: Some(env("SLUICE_TEST_S3_ENDPOINT")),
        bucket: env("SLUICE_TEST_S3_BUCKET"),
        region: env("SLUICE_TEST_S3_REGION"),
        access_key_id: env("SLUICE_TEST_S3_ACCESS_KEY_ID"),
        secret_access_key: Some(env("SLUICE_TEST_S3_SECRET_ACCESS_KEY")),
        allow_http: true,
        prefix: Some(format!(
            "engine-tests/{}",
            ulid::Ulid::new().to_string().to_lowercase()
        )),
        part_size: PART as u64,
    }
}

async fn fresh_pg_database() -> String {
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

/// Two engines sharing one database and one bucket, each with its own uploads directory
/// (as two gateways on two hosts).
async fn two_engines(backend: Backend, dir: &std::path::Path) -> (Engine, Engine, Arc<FakeClock>) {
    let clock = Arc::new(FakeClock(AtomicI64::new(1_700_000_000_000)));
    let database_url = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(fresh_pg_database().await),
    };
    let mut config = Config {
        data_dir: dir.to_path_buf(),
        database_url,
        ..Config::default()
    };
    config.storage.s3 = Some(s3_config());
    config.storage.uploads_dir = Some(dir.join("uploads-1"));
    let (e1, _) = Engine::open_with_clock(config.clone(), None, clock.clone())
        .await
        .unwrap();
    config.storage.uploads_dir = Some(dir.join("uploads-2"));
    let (e2, _) = Engine::open_with_clock(config, None, clock.clone())
        .await
        .unwrap();
    (e1, e2, clock)
}

/// Bytes that sniff as an MP4 (an `ftyp` box), `n` long.
fn mp4_like(n: usize) -> Vec<u8> {
    let mut v = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2".to_vec();
    v.extend((0..n.saturating_sub(v.len())).map(|i| (i % 251) as u8 ^ (i >> 20) as u8));
    v.truncate(n);
    v
}

/// A body of 1 MiB chunks, optionally breaking (a dropped connection) at the end.
fn body(
    data: &[u8],
    broken: bool,
) -> impl futures::Stream<Item = Result<Bytes, String>> + Unpin + use<> {
    let mut parts: Vec<Result<Bytes, String>> = data
        .chunks(MIB)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    if broken {
        parts.push(Err("connection reset".to_string()));
    }
    stream::iter(parts)
}

fn sha1_checksum(data: &[u8]) -> Checksum {
    let digest = sha1::Sha1::digest(data);
    Checksum::parse(&format!(
        "sha1 {}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    ))
    .unwrap()
}

/// The multipart upload id recorded for an upload, read straight from the database.
async fn multipart_id(e: &Engine, dir: &std::path::Path, asset: &str) -> String {
    match &e.config().database_url {
        None => {
            let url = format!("sqlite://{}", dir.join("meta.db").display());
            let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::query_scalar("SELECT multipart_id FROM uploads WHERE asset_id = $1")
                .bind(asset)
                .fetch_one(&mut c)
                .await
                .unwrap()
        }
        Some(url) => {
            let mut c = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::query_scalar("SELECT multipart_id FROM sluice.uploads WHERE asset_id = $1")
                .bind(asset)
                .fetch_one(&mut c)
                .await
                .unwrap()
        }
    }
}

async fn upload_objects(e: &Engine, tenant: &str, asset: &str) -> Vec<String> {
    e.storage()
        .list(&keys::upload_prefix(tenant, asset))
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect()
}

fn files_in(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}

async fn uploads_resume_across_engines_part_by_part(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (e1, e2, _) = two_engines(backend, dir.path()).await;
    let t = e1.create_tenant(&Principal::Admin, "acme").await.unwrap();
    let who = Principal::Tenant {
        tenant_id: t.id.clone(),
    };
    let data = mp4_like(12 * MIB + 12_345);
    let a = e1
        .create_upload(&who, data.len() as u64, Some("filename YS5tcDQ="))
        .await
        .unwrap();

    // Gateway 1: a request that breaks after 7 MiB keeps all 7 (one part + a 2 MiB tail).
    let s = e1
        .append_upload(&who, &a.id, 0, body(&data[..7 * MIB], true))
        .await
        .unwrap();
    assert_eq!(s.offset, 7 * MIB as u64);
    let tails = upload_objects(&e1, &t.id, &a.id).await;
    assert_eq!(tails, vec![keys::upload_tail(&t.id, &a.id, 7 * MIB as u64)]);

    // Gateway 2 continues: another broken request; the tail is replaced, not added to.
    assert_eq!(
        e2.upload_state(&who, &a.id).await.unwrap().offset,
        7 * MIB as u64
    );
    let s = e2
        .append_upload(
            &who,
            &a.id,
            7 * MIB as u64,
            body(&data[7 * MIB..8 * MIB], true),
        )
        .await
        .unwrap();
    assert_eq!(s.offset, 8 * MIB as u64);
    assert_eq!(
        upload_objects(&e2, &t.id, &a.id).await,
        vec![keys::upload_tail(&t.id, &a.id, 8 * MIB as u64)]
    );

    // A body that fails its checksum stores nothing, even though it filled a part.
    let wrong = sha1_checksum(b"something else");
    assert!(matches!(
        e2.append_upload_checked(
            &who,
            &a.id,
            8 * MIB as u64,
            body(&data[8 * MIB..11 * MIB], false),
            Some(&wrong)
        )
        .await,
        Err(Error::ChecksumMismatch)
    ));
    assert_eq!(
        e1.upload_state(&who, &a.id).await.unwrap().offset,
        8 * MIB as u64
    );
    // Wrong offsets and bodies past the end are refused.
    assert!(matches!(
        e1.append_upload(&who, &a.id, 0, body(b"x", false)).await,
        Err(Error::OffsetMismatch { .. })
    ));
    // A body running past the end is refused; the whole part it completed on the way
    // (bytes inside the upload) stays committed, and the client resumes from the offset
    // HEAD reports.
    let mut long = data[8 * MIB..].to_vec();
    long.push(0);
    match e1
        .append_upload(&who, &a.id, 8 * MIB as u64, body(&long, false))
        .await
    {
        Err(Error::InvalidInput(m)) => assert!(m.contains("10485760"), "{m}"),
        other => panic!("{other:?}"),
    }
    let at = e2.upload_state(&who, &a.id).await.unwrap().offset;
    assert_eq!(at, 2 * PART as u64);
    assert!(upload_objects(&e1, &t.id, &a.id).await.is_empty());

    // Gateway 1 sends the rest with a good checksum: the source is exact, a job queued,
    // and no scratch object or local file is left anywhere.
    let rest = &data[at as usize..];
    let s = e1
        .append_upload_checked(
            &who,
            &a.id,
            at,
            body(rest, false),
            Some(&sha1_checksum(rest)),
        )
        .await
        .unwrap();
    assert_eq!(s.offset, data.len() as u64);
    let asset = e2.get_asset(&who, &a.id).await.unwrap();
    assert_eq!(asset.status, AssetStatus::Queued);
    let src = e2
        .storage()
        .get_bytes(&keys::source(&t.id, &a.id))
        .await
        .unwrap();
    assert_eq!(src.len(), data.len());
    assert!(src.as_ref() == data.as_slice(), "source bytes differ");
    assert!(upload_objects(&e1, &t.id, &a.id).await.is_empty());
    assert_eq!(files_in(&dir.path().join("uploads-1")), 0);
    assert_eq!(files_in(&dir.path().join("uploads-2")), 0);
    assert!(matches!(
        e2.append_upload(&who, &a.id, data.len() as u64, body(b"x", false))
            .await,
        Err(Error::Conflict(_))
    ));

    // A small upload in one request (a single short part) and an empty one.
    let small = mp4_like(3000);
    let b = e2.create_upload(&who, 3000, None).await.unwrap();
    e2.append_upload(&who, &b.id, 0, body(&small, false))
        .await
        .unwrap();
    assert_eq!(
        e1.storage()
            .get_bytes(&keys::source(&t.id, &b.id))
            .await
            .unwrap(),
        Bytes::from(small)
    );
    let empty = e1.create_upload(&who, 0, None).await.unwrap();
    assert_eq!(empty.status, AssetStatus::Failed);
    assert_eq!(
        e1.storage()
            .head(&keys::source(&t.id, &empty.id))
            .await
            .unwrap()
            .size,
        0
    );
    e1.storage().delete_prefix("tenants/").await.unwrap();
}

async fn termination_expiry_and_refusal_abort_the_multipart_upload(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (e1, e2, clock) = two_engines(backend, dir.path()).await;
    let t = e1.create_tenant(&Principal::Admin, "acme").await.unwrap();
    let who = Principal::Tenant {
        tenant_id: t.id.clone(),
    };
    let storage = e1.storage().clone();
    let data = mp4_like(6 * MIB);

    // Checks that an upload's multipart upload is gone (no part can be added), and that
    // neither its source nor a tail object exists.
    let gone = |asset: String, id: String| {
        let (storage, tenant) = (storage.clone(), t.id.clone());
        async move {
            let key = keys::source(&tenant, &asset);
            assert!(
                storage
                    .put_part(&key, &id, 3, Bytes::from_static(b"late"))
                    .await
                    .is_err(),
                "the multipart upload of {asset} is still open"
            );
            assert!(storage.head(&key).await.is_err());
            assert!(
                storage
                    .list(&keys::upload_prefix(&tenant, &asset))
                    .await
                    .unwrap()
                    .is_empty()
            );
        }
    };

    // Termination (by the other gateway) aborts the multipart upload.
    let a = e1.create_upload(&who, 10 * MIB as u64, None).await.unwrap();
    e1.append_upload(&who, &a.id, 0, body(&data, true))
        .await
        .unwrap();
    let id = multipart_id(&e1, dir.path(), &a.id).await;
    // Before: the upload is open and takes parts.
    storage
        .put_part(
            &keys::source(&t.id, &a.id),
            &id,
            7,
            Bytes::from_static(b"x"),
        )
        .await
        .unwrap();
    e2.terminate_upload(&who, &a.id).await.unwrap();
    gone(a.id.clone(), id).await;
    assert!(matches!(
        e1.upload_state(&who, &a.id).await,
        Err(Error::NotFound { .. })
    ));

    // Expiry: the sweeper aborts it too.
    let b = e1.create_upload(&who, 10 * MIB as u64, None).await.unwrap();
    e2.append_upload(&who, &b.id, 0, body(&data, false))
        .await
        .unwrap();
    let id = multipart_id(&e1, dir.path(), &b.id).await;
    clock.0.fetch_add(25 * 3600 * 1000, Ordering::SeqCst);
    assert_eq!(e1.sweep_expired_uploads().await.unwrap(), 1);
    gone(b.id.clone(), id).await;
    assert!(matches!(
        e2.get_asset(&who, &b.id).await,
        Err(Error::NotFound { .. })
    ));

    // Bytes that are not media: refused at once, multipart upload aborted.
    let c = e2.create_upload(&who, 10_000, None).await.unwrap();
    let id = multipart_id(&e2, dir.path(), &c.id).await;
    let text = b"<html><body>not a video</body></html>".repeat(100);
    assert!(matches!(
        e2.append_upload(&who, &c.id, 0, body(&text, false)).await,
        Err(Error::UnsupportedMedia(_))
    ));
    gone(c.id.clone(), id).await;
}
