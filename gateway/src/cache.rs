//! The playback cache: what viewers ask for most, in memory, read from the store once.
//!
//! A live stream's viewers all want the same new segment at the same instant, and a VOD
//! title's viewers the same few hundred objects. Without a cache each of those requests
//! reads the store. Here every playback object of at most `gateway.cache_max_object_bytes`
//! is kept as one [`Bytes`] (shared by every response without a copy), in a cache bounded
//! by `gateway.cache_bytes`, with TinyLFU admission (an object seen once does not push out
//! one seen often), and loads are **single-flight**: a thousand concurrent misses on one
//! key make one storage read, the other callers wait for it.
//!
//! Compressed variants of text objects (playlists, WebVTT) are made once, at load time.
//! Entries are short-lived ([`ttl`]): a live playlist is not kept at all (only concurrent
//! requests share its read), everything else one second, so that a rendition re-run (which
//! rewrites objects under the same names) or a removal shows on every gateway within a
//! second without any invalidation between processes.
//! Objects larger than the per-object cap are remembered as "stream it" (their metadata
//! only) and streamed from the store on each request.

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::HeaderValue;
use moka::Expiry;
use moka::future::Cache;
use moka::notification::RemovalCause;
use sluice_cdn::CachePolicy;
use sluice_storage::{ObjectInfo, Storage, Whole};

/// How long an entry of each kind stays in the cache.
///
/// `lifetime` (`gateway.cache_ttl_ms`, default one second) is short on purpose. The cache exists to collapse floods (every request for an object
/// within a second is answered from one read) and to serve hot objects from memory; a
/// gateway re-reads a hot object once a second, which costs nothing next to the requests
/// it answers. In exchange an object that changes in the store is served new within a
/// second on every gateway, with no invalidation between processes: a rendition re-run
/// rewrites its segments and playlists under the same names, and a removed asset stops
/// being served. (The CDN-facing `Cache-Control` is another matter: see `sluice_cdn`.)
pub fn ttl(policy: CachePolicy, lifetime: Duration) -> Duration {
    match policy {
        // Not kept: concurrent requests share one read, and the next request reads
        // again, so a viewer never gets a playlist older than the encoder's last PUT.
        CachePolicy::LivePlaylist => Duration::ZERO,
        CachePolicy::VodPlaylist
        | CachePolicy::WatchPage
        | CachePolicy::ImmutableSegment
        | CachePolicy::FingerprintedAsset
        | CachePolicy::NoStore => lifetime,
    }
}

/// Objects at most this large get compressed variants (playlists are a few KB; a DVR
/// window's playlist can reach a few hundred).
const COMPRESS_MAX: usize = 1 << 20;

/// One object as it is served.
#[derive(Debug)]
pub struct Object {
    pub info: ObjectInfo,
    pub body: Bytes,
    pub gzip: Option<Bytes>,
    pub br: Option<Bytes>,
    /// The strong ETag of the identity representation, quoted.
    pub etag: Option<String>,
    /// `etag` and `Last-Modified` as header values, made once.
    pub etag_header: Option<HeaderValue>,
    pub last_modified_header: Option<HeaderValue>,
    pub policy: CachePolicy,
    /// `Cache-Control` for this object (a live playlist's depends on its target duration).
    pub cache_control: HeaderValue,
}

/// What a lookup found.
#[derive(Debug, Clone)]
pub enum Found {
    /// In memory.
    Memory(Arc<Object>),
    /// Too large to keep: stream it from the store (its metadata as last read).
    Stream(Arc<ObjectInfo>),
}

impl Found {
    fn policy_ttl(&self, key: &str, lifetime: Duration) -> Duration {
        match self {
            Found::Memory(o) => ttl(o.policy, lifetime),
            Found::Stream(_) => ttl(policy_for_key(key), lifetime),
        }
    }

    fn weight(&self) -> u32 {
        match self {
            Found::Memory(o) => {
                let n = o.body.len()
                    + o.gzip.as_ref().map_or(0, Bytes::len)
                    + o.br.as_ref().map_or(0, Bytes::len)
                    + 256;
                u32::try_from(n).unwrap_or(u32::MAX)
            }
            Found::Stream(_) => 256,
        }
    }
}

/// The policy of a storage key of a playback object: live playlists live under
/// `…/live/`, VOD playlists end in `.m3u8`, the rest is immutable.
fn policy_for_key(key: &str) -> CachePolicy {
    if key.ends_with(".m3u8") && key.contains("/live/") {
        CachePolicy::LivePlaylist
    } else {
        CachePolicy::for_vod_path(key)
    }
}

struct PerKind(Duration);

impl Expiry<Arc<str>, Found> for PerKind {
    fn expire_after_create(&self, key: &Arc<str>, value: &Found, _: Instant) -> Option<Duration> {
        Some(value.policy_ttl(key, self.0))
    }
}

/// The cache. Cheap to clone.
#[derive(Clone)]
pub struct PlaybackCache {
    cache: Option<Cache<Arc<str>, Found>>,
    max_object: u64,
}

impl PlaybackCache {
    /// A cache of at most `budget` bytes keeping objects of at most `max_object` bytes
    /// for `lifetime` ([`ttl`]); a zero budget turns it off (every request reads the store).
    pub fn new(budget: u64, max_object: u64, lifetime: Duration) -> Self {
        let cache = (budget > 0).then(|| {
            Cache::builder()
                .max_capacity(budget)
                .weigher(|_: &Arc<str>, v: &Found| v.weight())
                .expire_after(PerKind(lifetime))
                .eviction_listener(|_, _, cause| {
                    if cause == RemovalCause::Size {
                        metrics::counter!("sluice_playback_cache_evictions_total").increment(1);
                    }
                })
                .build()
        });
        Self { cache, max_object }
    }

    /// The object at `key` with `policy`, from memory or loaded once from `storage`.
    pub async fn get(
        &self,
        storage: &Storage,
        key: &str,
        policy: CachePolicy,
    ) -> Result<Found, Arc<sluice_storage::Error>> {
        let Some(cache) = &self.cache else {
            return load(storage, key, policy, self.max_object)
                .await
                .map_err(Arc::new);
        };
        if let Some(found) = cache.get(key).await {
            metrics::counter!("sluice_playback_cache_total", "result" => "hit").increment(1);
            return Ok(found);
        }
        metrics::counter!("sluice_playback_cache_total", "result" => "miss").increment(1);
        let found = cache
            .try_get_with(Arc::from(key), load(storage, key, policy, self.max_object))
            .await?;
        metrics::gauge!("sluice_playback_cache_bytes").set(cache.weighted_size() as f64);
        Ok(found)
    }

    /// Forget one object (after this process rewrote it).
    pub async fn invalidate(&self, key: &str) {
        if let Some(c) = &self.cache {
            c.invalidate(key).await;
        }
    }

    /// Drop every object `storage` publishes from now on, as soon as it is stored: a
    /// rendition re-run by this process's workers is served new at once (other processes'
    /// publications show within the entries' lifetime, [`ttl`]). Runs until every handle
    /// of `storage` is gone; needs a Tokio runtime.
    pub fn follow(&self, storage: &Storage) {
        use tokio::sync::broadcast::error::RecvError;
        let (Some(cache), Ok(rt)) = (self.cache.clone(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let mut published = storage.subscribe_published();
        rt.spawn(async move {
            loop {
                match published.recv().await {
                    Ok(keys) => {
                        for key in keys.iter() {
                            cache.invalidate(key.as_str()).await;
                        }
                    }
                    // Fell behind: some keys are unknown, so forget everything.
                    Err(RecvError::Lagged(_)) => cache.invalidate_all(),
                    Err(RecvError::Closed) => break,
                }
            }
        });
    }
}

async fn load(
    storage: &Storage,
    key: &str,
    policy: CachePolicy,
    max_object: u64,
) -> Result<Found, sluice_storage::Error> {
    Ok(match storage.read_whole(key, max_object).await? {
        Whole::TooLarge(info) => Found::Stream(Arc::new(info)),
        Whole::Bytes(info, body) => Found::Memory(Arc::new(Object::new(info, body, policy))),
    })
}

impl Object {
    /// Prepare an object for serving: its ETag, its cache header, compressed variants.
    pub fn new(info: ObjectInfo, body: Bytes, policy: CachePolicy) -> Self {
        let etag = info
            .etag
            .as_ref()
            .map(|e| format!("\"{}\"", e.trim_matches('"')));
        let cache_control = match policy {
            CachePolicy::LivePlaylist => {
                HeaderValue::try_from(sluice_cdn::live_playlist_header(target_duration(&body)))
                    .unwrap_or(HeaderValue::from_static(policy.header_value()))
            }
            other => HeaderValue::from_static(other.header_value()),
        };
        let (gzip, br) = if compressible(&info.key) && body.len() <= COMPRESS_MAX {
            (gzip(&body), brotli(&body))
        } else {
            (None, None)
        };
        let etag_header = etag.as_deref().and_then(|e| HeaderValue::from_str(e).ok());
        let last_modified_header = http_date(info.last_modified);
        Self {
            info,
            body,
            gzip,
            br,
            etag,
            etag_header,
            last_modified_header,
            policy,
            cache_control,
        }
    }
}

/// Text objects worth compressing.
pub fn compressible(key: &str) -> bool {
    key.ends_with(".m3u8") || key.ends_with(".vtt")
}

/// `#EXT-X-TARGETDURATION` of a media playlist; None for a master playlist or garbage.
pub fn target_duration(playlist: &[u8]) -> Option<u64> {
    const TAG: &[u8] = b"#EXT-X-TARGETDURATION:";
    playlist.split(|&b| b == b'\n').find_map(|line| {
        let v = line.strip_prefix(TAG)?;
        let v = std::str::from_utf8(v).ok()?.trim();
        v.parse::<u64>().ok().filter(|&n| n > 0 && n <= 86_400)
    })
}

/// Keep a compressed variant only when it saves something.
fn smaller(raw: &[u8], packed: Vec<u8>) -> Option<Bytes> {
    (packed.len() < raw.len()).then(|| Bytes::from(packed))
}

fn gzip(raw: &[u8]) -> Option<Bytes> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    enc.write_all(raw).ok()?;
    smaller(raw, enc.finish().ok()?)
}

fn brotli(raw: &[u8]) -> Option<Bytes> {
    let mut out = Vec::new();
    {
        let mut enc = brotli::CompressorWriter::new(&mut out, 4096, 5, 20);
        enc.write_all(raw).ok()?;
        enc.flush().ok()?;
    }
    smaller(raw, out)
}

/// When an object was last modified, for `Last-Modified`.
pub fn http_date(t: SystemTime) -> Option<HeaderValue> {
    HeaderValue::from_str(&httpdate::fmt_http_date(t)).ok()
}

#[cfg(test)]
mod tests;
