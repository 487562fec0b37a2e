//! One conformance suite for every storage backend. Each backend gets a test that builds a
//! `Storage` for it and runs `suite`; today that is the local filesystem tier.

use bytes::Bytes;
use futures::TryStreamExt;
use sluice_storage::{Error, Storage};

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

    // Streaming a file larger than one part (multipart) is byte-exact.
    let big: Vec<u8> = (0..(9u32 << 20)).map(|i| (i % 251) as u8).collect();
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
}
