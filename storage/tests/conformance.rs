//! One conformance suite for every storage backend. Each backend gets a test that builds a
//! `Storage` for it and runs `suite`: the local filesystem tier, and a real S3-compatible
//! server (Garage on loopback, started by `scripts/test.sh`, which exports the
//! `SLUICE_TEST_S3_*` variables; without them the S3 tests fail rather than skip).

use bytes::Bytes;
use futures::TryStreamExt;
use sluice_storage::{Error, S3Config, Storage};

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
