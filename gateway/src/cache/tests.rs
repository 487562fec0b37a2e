use super::*;

const SECOND: Duration = Duration::from_secs(1);

fn info(key: &str, size: u64) -> ObjectInfo {
    ObjectInfo {
        key: key.to_string(),
        size,
        etag: Some("abc".into()),
        last_modified: SystemTime::UNIX_EPOCH,
    }
}

const LIVE: &str = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:6\n#EXT-X-MEDIA-SEQUENCE:3\n";

#[test]
fn target_duration_of_a_media_playlist() {
    assert_eq!(target_duration(LIVE.as_bytes()), Some(6));
    assert_eq!(
        target_duration(b"#EXTM3U\r\n#EXT-X-TARGETDURATION:4\r\n"),
        Some(4)
    );
    assert_eq!(
        target_duration(b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n"),
        None
    );
    assert_eq!(target_duration(b"#EXT-X-TARGETDURATION:0\n"), None);
    assert_eq!(target_duration(b"#EXT-X-TARGETDURATION:x\n"), None);
    assert_eq!(
        target_duration(b"#EXT-X-TARGETDURATION:99999999999999999999999\n"),
        None
    );
}

#[test]
fn a_live_playlist_is_fresh_for_half_its_target_duration() {
    let o = Object::new(
        info("t/live/index.m3u8", LIVE.len() as u64),
        Bytes::from_static(LIVE.as_bytes()),
        CachePolicy::LivePlaylist,
    );
    assert_eq!(
        o.cache_control,
        "public, max-age=3, stale-while-revalidate=6"
    );
    assert_eq!(o.etag.as_deref(), Some("\"abc\""));
}

#[test]
fn text_gets_compressed_variants_that_decompress_to_the_original() {
    let text: String = (0..200)
        .map(|i| format!("#EXTINF:2.000,\nseg_{i:05}.ts\n"))
        .collect();
    let o = Object::new(
        info("t/hls/720p/index.m3u8", text.len() as u64),
        Bytes::from(text.clone()),
        CachePolicy::VodPlaylist,
    );
    let gz = o.gzip.as_ref().expect("a gzip variant");
    let br = o.br.as_ref().expect("a brotli variant");
    assert!(gz.len() < text.len() && br.len() < text.len());
    let mut out = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz[..]), &mut out).unwrap();
    assert_eq!(out, text);
    let mut out = Vec::new();
    brotli::BrotliDecompress(&mut &br[..], &mut out).unwrap();
    assert_eq!(out, text.as_bytes());
    // Segments are not compressed (already compressed video); tiny texts keep no
    // variant that would be larger than the original.
    let seg = Object::new(
        info("t/hls/720p/seg_00001.ts", 4),
        Bytes::from_static(b"\x47\x47\x47\x47"),
        CachePolicy::ImmutableSegment,
    );
    assert!(seg.gzip.is_none() && seg.br.is_none());
    let tiny = Object::new(
        info("t/hls/master.m3u8", 1),
        Bytes::from_static(b"#"),
        CachePolicy::VodPlaylist,
    );
    assert!(tiny.gzip.is_none() && tiny.br.is_none());
}

#[test]
fn entries_live_by_kind() {
    assert_eq!(ttl(CachePolicy::LivePlaylist, SECOND), Duration::ZERO);
    assert_eq!(ttl(CachePolicy::ImmutableSegment, SECOND), SECOND);
    assert_eq!(ttl(CachePolicy::VodPlaylist, SECOND), SECOND);
    assert_eq!(
        policy_for_key("tenants/t/assets/a/live/index.m3u8"),
        CachePolicy::LivePlaylist
    );
    assert_eq!(
        policy_for_key("tenants/t/assets/a/hls/master.m3u8"),
        CachePolicy::VodPlaylist
    );
    assert_eq!(
        policy_for_key("tenants/t/assets/a/live/seg/00000001.ts"),
        CachePolicy::ImmutableSegment
    );
}

/// A thousand concurrent requests for an object nobody has read yet make one storage
/// read. (A current-thread runtime, so that the thread-local metrics recorder sees every
/// read.)
#[test]
fn concurrent_misses_read_the_store_once() {
    let dir = tempfile::tempdir().unwrap();
    let key = "tenants/t/assets/a/hls/720p/seg_00001.ts";
    let data = Bytes::from(vec![7u8; 1 << 20]);
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let storage = Storage::local(dir.path()).unwrap();
            storage.put(key, data.clone()).await.unwrap();
            let cache = PlaybackCache::new(64 << 20, 16 << 20, SECOND);
            let requests =
                (0..1000).map(|_| cache.get(&storage, key, CachePolicy::ImmutableSegment));
            for found in futures::future::join_all(requests).await {
                match found.unwrap() {
                    Found::Memory(o) => assert_eq!(o.body, data),
                    other => panic!("expected memory, got {other:?}"),
                }
            }
        })
    });
    let counter = |name: &str| -> u64 {
        snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .filter(|(k, ..)| k.key().name() == name)
            .map(|(.., v)| match v {
                metrics_util::debugging::DebugValue::Counter(n) => n,
                _ => 0,
            })
            .sum()
    };
    assert_eq!(counter("sluice_storage_reads_total"), 1);
}

/// A live playlist is read again by the next request: never older than the last write.
#[tokio::test]
async fn a_live_playlist_is_read_again_after_a_write() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::local(dir.path()).unwrap();
    let cache = PlaybackCache::new(1 << 20, 1000, SECOND);
    let key = "tenants/t/assets/a/live/index.m3u8";
    for text in [
        "#EXTM3U\n#EXT-X-TARGETDURATION:2\n",
        "#EXTM3U\n#EXT-X-TARGETDURATION:4\n",
    ] {
        storage.put(key, Bytes::from(text)).await.unwrap();
        match cache.get(&storage, key, CachePolicy::LivePlaylist).await {
            Ok(Found::Memory(o)) => assert_eq!(o.body, text),
            other => panic!("expected memory, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn large_objects_are_streamed_and_missing_ones_are_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::local(dir.path()).unwrap();
    let cache = PlaybackCache::new(1 << 20, 1000, SECOND);
    storage
        .put("k/big.ts", Bytes::from(vec![1u8; 1001]))
        .await
        .unwrap();
    match cache
        .get(&storage, "k/big.ts", CachePolicy::ImmutableSegment)
        .await
    {
        Ok(Found::Stream(info)) => assert_eq!(info.size, 1001),
        other => panic!("expected a stream, got {other:?}"),
    }
    let missing = cache
        .get(&storage, "k/none.ts", CachePolicy::ImmutableSegment)
        .await
        .unwrap_err();
    assert!(matches!(*missing, sluice_storage::Error::NotFound { .. }));
    // A miss is not remembered: the object is served once it exists.
    storage
        .put("k/none.ts", Bytes::from_static(b"x"))
        .await
        .unwrap();
    assert!(
        cache
            .get(&storage, "k/none.ts", CachePolicy::ImmutableSegment)
            .await
            .is_ok()
    );
}

/// An object rewritten in the store under the same name (a rendition re-run) is served new
/// within a second, with no invalidation.
#[tokio::test]
async fn a_rewritten_object_is_served_new_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::local(dir.path()).unwrap();
    let cache = PlaybackCache::new(1 << 20, 1000, SECOND);
    let key = "tenants/t/assets/a/hls/144p/seg_00001.ts";
    let body = |found: Found| match found {
        Found::Memory(o) => o.body.clone(),
        other => panic!("expected memory, got {other:?}"),
    };
    storage.put(key, Bytes::from_static(b"old")).await.unwrap();
    let get = || cache.get(&storage, key, CachePolicy::ImmutableSegment);
    assert_eq!(body(get().await.unwrap()), "old");
    storage.put(key, Bytes::from_static(b"new")).await.unwrap();
    assert_eq!(body(get().await.unwrap()), "old"); // still the cached copy
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(body(get().await.unwrap()), "new");
}

/// What this process publishes (a rendition re-run: same names, new bytes) is served new
/// at once.
#[tokio::test]
async fn a_publication_drops_the_cached_copies_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::local(dir.path()).unwrap();
    let cache = PlaybackCache::new(1 << 20, 1000, SECOND);
    cache.follow(&storage);
    let prefix = "tenants/t/assets/a/hls/";
    let key = "tenants/t/assets/a/hls/144p/seg_00001.ts";
    storage.put(key, Bytes::from_static(b"old")).await.unwrap();
    let body = |found: Found| match found {
        Found::Memory(o) => o.body.clone(),
        other => panic!("expected memory, got {other:?}"),
    };
    let get = || cache.get(&storage, key, CachePolicy::ImmutableSegment);
    assert_eq!(body(get().await.unwrap()), "old");
    storage
        .publish(
            prefix,
            vec![(
                "144p/seg_00001.ts".to_string(),
                sluice_storage::Source::Bytes(Bytes::from_static(b"new")),
            )],
        )
        .await
        .unwrap();
    // The invalidation runs on another task: give it its turn, well within the 1 s expiry.
    let mut got = body(get().await.unwrap());
    for _ in 0..50 {
        if got == "new" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
        got = body(get().await.unwrap());
    }
    assert_eq!(got, "new");
}
