//! One conformance suite for every storage backend. Each backend gets a test that builds a
//! `Storage` for it and runs `suite`: the local filesystem tier, and a real S3-compatible
//! server (Garage on loopback, started by `scripts/test.sh`, which exports the
//! `SLUICE_TEST_S3_*` variables; without them the S3 tests fail rather than skip).

use bytes::Bytes;
use futures::TryStreamExt;
use sluice_storage::{
    Checkpoint, Error, FileWrite, MultipartState, Part, ResumableWrite, S3Config, Storage,
    StoreConfig, Whole, keys, store_env_var,
};

async fn suite(s: &Storage, scratch: &std::path::Path) {
    let k = "tenants/t/assets/a/hls/720p/seg_00000.ts";

    // Missing objects are NotFound everywhere, and deleting one is not an error.
    assert!(matches!(s.head(k).await, Err(Error::NotFound { .. })));
    assert!(matches!(s.get_bytes(k).await, Err(Error::NotFound { .. })));
    s.delete(k).await.unwrap();

    // put / head / get / range.
    let data = Bytes::from((0..=255u8).cycle().take(100_000).collect::<Vec<_>>());
    s.put(k, data.clone()).await.unwrap();
    let info = s.head(k).await.unwrap();
    assert_eq!(info.size, 100_000);
    assert_eq!(s.get_bytes(k).await.unwrap(), data);
    assert_eq!(s.get_range(k, 10..20).await.unwrap(), data.slice(10..20));
    let (meta, stream) = s.get_stream(k, Some(99_990..100_000)).await.unwrap();
    assert_eq!(meta.size, 100_000);
    let got: Vec<Bytes> = stream.try_collect().await.unwrap();
    assert_eq!(got.concat(), data.slice(99_990..).to_vec());

    // Whole reads: the bytes up to a limit, metadata only past it, NotFound when missing.
    match s.read_whole(k, 100_000).await.unwrap() {
        Whole::Bytes(info, body) => {
            assert_eq!((info.size, body), (100_000, data.clone()));
            assert_eq!(info.etag, s.head(k).await.unwrap().etag);
        }
        other => panic!("expected the bytes, got {other:?}"),
    }
    match s.read_whole(k, 99_999).await.unwrap() {
        Whole::TooLarge(info) => assert_eq!(info.size, 100_000),
        other => panic!("expected too large, got {other:?}"),
    }
    assert!(matches!(
        s.read_whole("tenants/t/assets/none/x.ts", 10).await,
        Err(Error::NotFound { .. })
    ));

    // Overwrite replaces the whole object.
    s.put(k, Bytes::from_static(b"short")).await.unwrap();
    assert_eq!(s.get_bytes(k).await.unwrap(), Bytes::from_static(b"short"));

    // Missing objects: ranges and streams are NotFound too.
    assert!(matches!(
        s.get_range("tenants/t/assets/none/source", 0..1).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        s.get_stream("tenants/t/assets/none/source", None).await,
        Err(Error::NotFound { .. })
    ));
    assert!(s.list("tenants/t/assets/none/").await.unwrap().is_empty());

    // Streaming a file of several parts (multipart, 20 MiB) is byte-exact.
    let big: Vec<u8> = (0..(20u32 << 20) + 12_345)
        .map(|i| (i % 251) as u8)
        .collect();
    let f = scratch.join("big.bin");
    std::fs::write(&f, &big).unwrap();
    let n = s.put_file("tenants/t/assets/a/source", &f).await.unwrap();
    assert_eq!(n, big.len() as u64);
    assert_eq!(
        s.get_bytes("tenants/t/assets/a/source")
            .await
            .unwrap()
            .as_ref(),
        &big[..]
    );
    // put_file_move leaves no local file behind.
    let f2 = scratch.join("moved.bin");
    std::fs::write(&f2, b"moved").unwrap();
    s.put_file_move("tenants/t/assets/b/source", &f2)
        .await
        .unwrap();
    assert!(!f2.exists());
    assert_eq!(
        s.get_bytes("tenants/t/assets/b/source").await.unwrap(),
        Bytes::from_static(b"moved")
    );

    // Objects concatenated into a local file, in order; a missing one is NotFound.
    let joined = scratch.join("joined.bin");
    let n = s
        .get_concat_to_file(
            &["tenants/t/assets/b/source", "tenants/t/assets/b/source"],
            &joined,
            true,
        )
        .await
        .unwrap();
    assert_eq!(
        (n, std::fs::read(&joined).unwrap()),
        (10, b"movedmoved".to_vec())
    );
    assert!(matches!(
        s.get_concat_to_file(&["tenants/t/assets/b/nope"], &joined, false)
            .await,
        Err(Error::NotFound { .. })
    ));

    // copy, list (sorted, recursive), delete_prefix.
    s.copy(k, "tenants/t/assets/a/hls/master.m3u8")
        .await
        .unwrap();
    let listed: Vec<String> = s
        .list("tenants/t/assets/a/hls/")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(
        listed,
        vec![
            "tenants/t/assets/a/hls/720p/seg_00000.ts",
            "tenants/t/assets/a/hls/master.m3u8"
        ]
    );
    assert_eq!(s.delete_prefix("tenants/t/assets/a/hls/").await.unwrap(), 2);
    assert!(s.list("tenants/t/assets/a/hls/").await.unwrap().is_empty());
    // Other objects are untouched by a prefix delete.
    assert!(s.head("tenants/t/assets/a/source").await.is_ok());

    // Keys that try to escape are refused before reaching the backend.
    for bad in ["../x", "tenants/../x", "/abs", "a//b"] {
        assert!(matches!(
            s.put(bad, Bytes::new()).await,
            Err(Error::InvalidKey { .. })
        ));
    }
    s.check().await.unwrap();

    resumable_writes(s, scratch).await;
}

/// What a caller recorded of a resumable write (the engine keeps it in its database).
#[derive(Debug, Default, Clone)]
struct Recorded {
    offset: u64,
    parts: Vec<Part>,
    tail: Option<String>,
}

impl Recorded {
    fn record(&mut self, checkpoint: Checkpoint) {
        self.offset = checkpoint.offset();
        if let Checkpoint::Multipart { parts, tail, .. } = checkpoint {
            for p in parts {
                self.parts.retain(|q| q.index != p.index);
                self.parts.push(p);
            }
            self.parts.sort_by_key(|p| p.index);
            self.tail = tail;
        }
    }
}

/// One upload written in several requests, one of which dies before its commit; then the
/// object is finished. `open` resumes a writer from what was recorded.
async fn resumable_upload<W: ResumableWrite>(
    open: impl AsyncFn(&Recorded) -> W,
    data: &[u8],
) -> Recorded {
    let mut rec = Recorded::default();
    let len = data.len() as u64;

    // A first request of a few bytes: one checkpoint at its end.
    let mut w = open(&rec).await;
    assert_eq!((w.resumed(), w.written()), (0, 0));
    assert!(w.head(512).await.unwrap().is_empty());
    w.append(&data[..300]).await.unwrap();
    assert_eq!(w.take_durable(), None);
    let cp = w.checkpoint(false).await.unwrap().unwrap();
    assert_eq!(cp.offset(), 300);
    rec.record(cp);
    w.recorded().await;
    // Nothing new: nothing to record.
    assert_eq!(w.checkpoint(false).await.unwrap(), None);
    drop(w);

    // A request that sends several MiB and dies before anything of it is recorded.
    let mut w = open(&rec).await;
    assert_eq!(w.resumed(), 300);
    assert_eq!(w.head(512).await.unwrap(), &data[..300]);
    assert!(w.head(100).await.unwrap().is_empty());
    for c in data[300..(6 << 20)].chunks(1 << 20) {
        w.append(c).await.unwrap();
    }
    assert_eq!(w.written(), 6 << 20);
    drop(w);

    // The next one resumes at the committed offset: the dead request's bytes are gone.
    // Bytes it discards are gone too; its durable checkpoints are recorded as they come.
    let mut w = open(&rec).await;
    assert_eq!(w.resumed(), 300);
    w.append(&[0xEE; 70_000]).await.unwrap();
    w.discard().await.unwrap();
    assert_eq!(w.written(), 300);
    let end = len - 1000;
    for c in data[300..end as usize].chunks(700_000) {
        w.append(c).await.unwrap();
        if let Some(cp) = w.take_durable() {
            assert!(cp.offset() <= w.written());
            rec.record(cp);
            w.recorded().await;
        }
    }
    let cp = w.checkpoint(false).await.unwrap().unwrap();
    assert_eq!(cp.offset(), end);
    rec.record(cp);
    w.recorded().await;
    drop(w);

    // The last request ends the object.
    let mut w = open(&rec).await;
    assert_eq!(w.resumed(), end);
    w.append(&data[end as usize..]).await.unwrap();
    let cp = w.checkpoint(true).await.unwrap().unwrap();
    assert_eq!(cp.offset(), len);
    rec.record(cp);
    w.recorded().await;
    rec
}

async fn resumable_writes(s: &Storage, scratch: &std::path::Path) {
    let data: Vec<u8> = (0..(12u32 << 20) + 777)
        .map(|i| (i % 241) as u8 ^ (i >> 16) as u8)
        .collect();

    // A file, finished by moving it into the store (a rename on a local tier).
    let path = scratch.join("resumable.bin");
    FileWrite::create(&path).await.unwrap();
    let rec = resumable_upload(
        async |rec: &Recorded| FileWrite::open(&path, rec.offset).await.unwrap(),
        &data,
    )
    .await;
    assert_eq!(rec.offset, data.len() as u64);
    let key = keys::source("t", "file");
    s.put_file_move(&key, &path).await.unwrap();
    assert!(!path.exists());
    assert_eq!(s.get_bytes(&key).await.unwrap().as_ref(), &data[..]);

    // An S3 multipart upload with its tail objects, finished by completing it from the
    // recorded parts.
    if !s.resumable_multipart() {
        return;
    }
    let key = keys::source("t", "parts");
    let upload_id = s.create_multipart(&key).await.unwrap();
    let rec = resumable_upload(
        async |rec: &Recorded| {
            s.resume_multipart(
                "t",
                "parts",
                MultipartState {
                    upload_id: upload_id.clone(),
                    parts: rec.parts.clone(),
                    tail: rec.tail.clone(),
                },
            )
            .await
            .unwrap()
        },
        &data,
    )
    .await;
    // Every part but the last is exactly the part size; no tail is left recorded.
    assert_eq!(rec.tail, None);
    let sizes: Vec<u64> = rec.parts.iter().map(|p| p.size).collect();
    let part = s.part_size() as u64;
    assert_eq!(sizes, vec![part, part, data.len() as u64 - 2 * part]);
    // Superseded tails were deleted once a later checkpoint was recorded (the request that
    // died sent parts only: they are replaced under the same indexes).
    let tails: Vec<String> = s
        .list(&keys::upload_prefix("t", "parts"))
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert!(tails.is_empty(), "{tails:?}");
    let etags = rec.parts.iter().map(|p| p.etag.clone()).collect();
    s.complete_multipart(&key, &upload_id, etags).await.unwrap();
    assert_eq!(s.get_bytes(&key).await.unwrap().as_ref(), &data[..]);
}

#[tokio::test]
async fn local_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::local(dir.path().join("hot")).unwrap();
    suite(&s, dir.path()).await;
    // The local tier exposes in-place paths, and only for valid keys.
    assert!(s.local_path("tenants/t/assets/a/source").is_some());
    assert!(s.local_path("../etc/passwd").is_none());
    // Resumable multipart uploads need an S3 backend, and say so.
    assert!(!s.resumable_multipart());
    assert!(matches!(
        s.create_multipart("tenants/t/assets/a/source").await,
        Err(Error::Unsupported { .. })
    ));
}

/// The Garage started by `scripts/test.sh`, with a fresh key prefix per test so that runs and
/// tests never see each other's objects.
fn garage_config(test: &str) -> S3Config {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!(
                "{name} is not set: the S3 tests need a real S3-compatible server \
                 (scripts/test.sh starts Garage; or `scripts/garage.sh start DIR PORT`)"
            )
        })
    };
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    S3Config {
        endpoint: Some(var("SLUICE_TEST_S3_ENDPOINT")),
        bucket: var("SLUICE_TEST_S3_BUCKET"),
        region: var("SLUICE_TEST_S3_REGION"),
        access_key_id: var("SLUICE_TEST_S3_ACCESS_KEY_ID"),
        secret_access_key: Some(var("SLUICE_TEST_S3_SECRET_ACCESS_KEY")),
        allow_http: true,
        prefix: Some(format!("conformance/{test}-{nonce}-{}", std::process::id())),
        part_size: 5 << 20,
    }
}

#[tokio::test]
async fn s3_garage() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::s3(&garage_config("suite")).unwrap();
    suite(&s, dir.path()).await;
    assert!(s.local_path("tenants/t/assets/a/source").is_none());
    // The prefix is invisible to callers: listed keys come back without it.
    let listed = s.list("tenants/t/assets/").await.unwrap();
    assert!(
        listed
            .iter()
            .all(|o| o.key.starts_with("tenants/t/assets/")),
        "{listed:?}"
    );
}

#[tokio::test]
async fn s3_multipart_resumes_across_clients_and_aborts() {
    let cfg = garage_config("multipart");
    let (one, two) = (Storage::s3(&cfg).unwrap(), Storage::s3(&cfg).unwrap());
    assert!(one.resumable_multipart());
    let key = "tenants/t/assets/m/source";
    let part0: Vec<u8> = (0..(5u32 << 20)).map(|i| (i % 253) as u8).collect();
    let part1 = b"the last part may be short".to_vec();

    // One client opens the upload and sends part 0; another (a second process in real
    // life) sends the last part and completes it by id.
    let id = one.create_multipart(key).await.unwrap();
    let e0 = one
        .put_part(key, &id, 0, Bytes::from(part0.clone()))
        .await
        .unwrap();
    // Re-sending a part replaces it (a retried request).
    let e0b = two
        .put_part(key, &id, 0, Bytes::from(part0.clone()))
        .await
        .unwrap();
    assert_eq!(e0, e0b);
    let e1 = two
        .put_part(key, &id, 1, Bytes::from(part1.clone()))
        .await
        .unwrap();
    assert!(matches!(one.head(key).await, Err(Error::NotFound { .. })));
    two.complete_multipart(key, &id, vec![e0, e1])
        .await
        .unwrap();
    let got = one.get_bytes(key).await.unwrap();
    assert_eq!(got.len(), part0.len() + part1.len());
    assert_eq!(&got[..part0.len()], &part0[..]);
    assert_eq!(&got[part0.len()..], &part1[..]);

    // An aborted upload leaves no object and accepts no more parts; aborting twice is fine.
    let key2 = "tenants/t/assets/n/source";
    let id2 = one.create_multipart(key2).await.unwrap();
    one.put_part(key2, &id2, 0, Bytes::from_static(b"abc"))
        .await
        .unwrap();
    two.abort_multipart(key2, &id2).await.unwrap();
    two.abort_multipart(key2, &id2).await.unwrap();
    assert!(
        one.put_part(key2, &id2, 1, Bytes::from_static(b"late"))
            .await
            .is_err()
    );
    assert!(matches!(one.head(key2).await, Err(Error::NotFound { .. })));
    one.delete_prefix("tenants/").await.unwrap();
}

/// A named `file://` store (`[storage.stores.NAME]`) passes the same suite.
#[tokio::test]
async fn named_local_store() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig {
        url: format!("file://{}", dir.path().join("warm").display()),
        endpoint: None,
        region: None,
        access_key_id: None,
        secret_access_key: None,
        allow_http: false,
        storage_class: None,
        part_size: None,
    };
    let s = cfg.open("warm").unwrap();
    assert_eq!(s.name(), "warm");
    suite(&s, dir.path()).await;
    assert!(dir.path().join("warm").is_dir());
}

/// A named `s3://bucket/prefix` store on Garage, credentials from the environment and a
/// storage class (Garage accepts and ignores it), passes the same suite.
#[tokio::test]
async fn named_garage_store() {
    let dir = tempfile::tempdir().unwrap();
    let g = garage_config("named");
    let name = format!("cold{}", std::process::id());
    // SAFETY: set before any other thread of this test reads this store's variable (the
    // variable name is unique to this test).
    unsafe {
        std::env::set_var(
            store_env_var(&name, "SECRET_ACCESS_KEY"),
            g.secret_access_key.clone().unwrap(),
        );
    }
    let cfg = StoreConfig {
        url: format!("s3://{}/{}", g.bucket, g.prefix.clone().unwrap()),
        endpoint: g.endpoint.clone(),
        region: Some(g.region.clone()),
        access_key_id: Some(g.access_key_id.clone()),
        secret_access_key: None,
        allow_http: true,
        storage_class: Some("STANDARD_IA".into()),
        part_size: Some(5 << 20),
    };
    let s = cfg.open(&name).unwrap();
    assert_eq!(s.name(), name);
    suite(&s, dir.path()).await;
    // The prefix of the URL is the store's: a plain client of the bucket sees it.
    let mut plain = g.clone();
    plain.prefix = None;
    let raw = Storage::s3(&plain).unwrap();
    s.put("tenants/t/assets/p/source", Bytes::from_static(b"x"))
        .await
        .unwrap();
    let key = format!("{}/tenants/t/assets/p/source", g.prefix.clone().unwrap());
    assert_eq!(raw.get_bytes(&key).await.unwrap().as_ref(), b"x");
    s.delete_prefix("tenants/").await.unwrap();
}

#[test]
fn s3_config_is_validated_and_never_prints_the_secret() {
    let mut c = garage_config_static();
    c.validate().unwrap();
    let shown = format!("{c:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    c.part_size = 1 << 20;
    assert!(c.validate().is_err());
    c.part_size = 8 << 20;
    c.allow_http = false;
    assert!(c.validate().is_err(), "plain http needs allow_http");
    c.allow_http = true;
    c.prefix = Some("../up".into());
    assert!(c.validate().is_err());
    c.prefix = Some("team/a".into());
    c.validate().unwrap();
    c.bucket = String::new();
    assert!(Storage::s3(&c).is_err());
}

fn garage_config_static() -> S3Config {
    S3Config {
        endpoint: Some("http://127.0.0.1:3900".into()),
        bucket: "b".into(),
        region: "garage".into(),
        access_key_id: "GK1".into(),
        secret_access_key: Some("hunter2".into()),
        allow_http: true,
        prefix: None,
        part_size: 8 << 20,
    }
}
