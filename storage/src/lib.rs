//! Object storage for Sluice: where every byte lives, and nothing else.
//!
//! The rest of the engine names objects through [`keys`] (a pure key layout) and reads or
//! writes them through [`Storage`], which wraps one `object_store` backend per tier. The
//! embedded default is a local-filesystem hot tier inside the data dir; an S3-compatible
//! store (AWS S3, Garage, MinIO) plugs in behind the same methods through [`S3Config`].
//!
//! Besides whole-object writes, an S3 hot tier offers *resumable* multipart uploads
//! ([`Storage::create_multipart`] and friends): each part is named by the upload id and its
//! index, so a tus upload begun in one gateway process can be continued and completed by
//! another (object_store's `put_multipart` handle lives in one process only).
//!
//! Unfinished uploads are written through one trait, [`ResumableWrite`]: a local file
//! ([`FileWrite`]) or an S3 multipart upload ([`MultipartWrite`]), appended to request after
//! request from the offset the caller committed, reporting the [`Checkpoint`]s it must record.

mod breaker;
pub mod keys;
mod named;
mod publish;
mod resumable;
mod s3;

pub use breaker::{INTERACTIVE_TIMEOUT, OPEN_FOR, TRIP_AFTER};
pub use named::{MAX_STORE_NAME, StoreConfig, StoreUrl, is_valid_store_name, store_env_var};
pub use publish::{PUBLISH_CONCURRENCY, Source};
pub use resumable::{Checkpoint, FileWrite, MultipartState, MultipartWrite, Part, ResumableWrite};
pub use s3::{MIN_PART_SIZE, S3Config};

use std::ops::Range;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use tokio::io::AsyncReadExt;

/// Errors from the storage layer. Each carries the key it concerns.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("object not found: {key}")]
    NotFound { key: String },
    #[error("invalid object key {key:?}: {reason}")]
    InvalidKey { key: String, reason: &'static str },
    #[error("storage backend error on {key}: {source}")]
    Backend {
        key: String,
        #[source]
        source: Box<object_store::Error>,
    },
    #[error("local i/o error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid storage configuration: {0}")]
    Config(String),
    #[error("{what} is not supported by this storage backend")]
    Unsupported { what: &'static str },
    /// The store is not answering interactive reads (its breaker is open, or a read timed
    /// out): retry after `retry_after_s`.
    #[error("store {store} is not answering; retry in {retry_after_s} s")]
    Unavailable { store: String, retry_after_s: u32 },
}

impl Error {
    fn backend(key: &str, source: object_store::Error) -> Self {
        match source {
            object_store::Error::NotFound { .. } => Error::NotFound {
                key: key.to_string(),
            },
            other => Error::Backend {
                key: key.to_string(),
                source: Box::new(other),
            },
        }
    }

    /// Whether trying the same operation again may succeed (backend hiccup vs. a missing
    /// object or a bad key).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Backend { .. } | Error::Io { .. } | Error::Unavailable { .. }
        )
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Metadata of a stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    pub etag: Option<String>,
    pub last_modified: std::time::SystemTime,
}

/// An object read by [`Storage::read_whole`].
#[derive(Debug, Clone)]
pub enum Whole {
    /// The object and its bytes.
    Bytes(ObjectInfo, Bytes),
    /// The object is larger than asked for: metadata only.
    TooLarge(ObjectInfo),
}

/// `sluice_storage_reads_total`: objects (or ranges of one) read from a store, by tier.
/// Every read path counts, so a dashboard shows what caches in front of the store save.
fn count_read(tier: &'static str) {
    metrics::counter!("sluice_storage_reads_total", "tier" => tier).increment(1);
}

/// A byte stream read from storage.
pub type ByteStream = BoxStream<'static, Result<Bytes>>;

/// Chunk size used when streaming a local file into a multipart upload: large enough for S3's
/// 5 MiB part minimum, small enough to keep memory bounded.
const UPLOAD_CHUNK: usize = 8 * 1024 * 1024;

/// The part size of resumable multipart writes when no configuration sets one.
const DEFAULT_PART_SIZE: usize = 8 << 20;

/// Handle on the storage tiers. Cheap to clone.
#[derive(Clone)]
pub struct Storage {
    hot: Arc<dyn ObjectStore>,
    /// Set when the hot tier is a local filesystem: lets GStreamer read sources in place
    /// instead of copying them to a scratch file first.
    hot_root: Option<PathBuf>,
    /// Set when the hot tier can continue a multipart upload from any process (S3).
    multipart: Option<Arc<dyn MultipartStore>>,
    /// Every key lives under this prefix in the backend (no trailing `/`), e.g. to share
    /// one bucket between deployments.
    prefix: Option<String>,
    /// The part size of resumable multipart writes.
    part_size: usize,
    /// Keys [`Storage::publish`] has just (re)written, for caches of this process that
    /// must drop their copies (a rendition re-run rewrites objects under the same names).
    published: tokio::sync::broadcast::Sender<Arc<[String]>>,
    /// The store's name (`[storage.stores.NAME]`; `hot` for the hot tier of old configs).
    name: Arc<str>,
    /// The tier label of `sluice_storage_reads_total` (the tier this store serves).
    tier: &'static str,
    /// Attributes of every write: the S3 storage class, when configured.
    attributes: object_store::Attributes,
    /// This store's breaker, shared by every clone of the handle.
    breaker: Arc<breaker::Breaker>,
    /// Set on an interactive handle ([`Storage::interactive`]): the timeout of each read,
    /// and reads refused while the breaker is open.
    interactive: Option<std::time::Duration>,
}

/// How many batches of published keys a slow subscriber may fall behind before it is
/// told it lagged (and must drop everything it caches).
const PUBLISHED_BACKLOG: usize = 256;

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("hot", &self.hot.to_string())
            .field("prefix", &self.prefix)
            .field("name", &self.name)
            .finish()
    }
}

impl Storage {
    /// A hot tier on the local filesystem under `root` (created if missing).
    pub fn local(root: impl AsRef<FsPath>) -> Result<Self> {
        let root = root.as_ref();
        std::fs::create_dir_all(root).map_err(|source| Error::Io {
            path: root.to_path_buf(),
            source,
        })?;
        let root = root.canonicalize().map_err(|source| Error::Io {
            path: root.to_path_buf(),
            source,
        })?;
        let fs = LocalFileSystem::new_with_prefix(&root)
            .map_err(|e| Error::backend("/", e))?
            .with_automatic_cleanup(true);
        Ok(Self {
            hot: Arc::new(fs),
            hot_root: Some(root),
            multipart: None,
            prefix: None,
            part_size: DEFAULT_PART_SIZE,
            published: tokio::sync::broadcast::channel(PUBLISHED_BACKLOG).0,
            name: Arc::from("hot"),
            tier: "hot",
            attributes: object_store::Attributes::new(),
            breaker: Arc::default(),
            interactive: None,
        })
    }

    /// A hot tier on an S3-compatible store. Builds the client only: nothing is sent until
    /// the first request (`check` is the readiness probe).
    pub fn s3(config: &S3Config) -> Result<Self> {
        let (store, prefix) = s3::build(config)?;
        let store = Arc::new(store);
        Ok(Self {
            hot: store.clone(),
            hot_root: None,
            multipart: Some(store),
            prefix,
            part_size: config.part_size as usize,
            published: tokio::sync::broadcast::channel(PUBLISHED_BACKLOG).0,
            name: Arc::from("hot"),
            tier: "hot",
            attributes: object_store::Attributes::new(),
            breaker: Arc::default(),
            interactive: None,
        })
    }

    /// Wrap any `object_store` backend as the hot tier.
    pub fn from_store(hot: Arc<dyn ObjectStore>) -> Self {
        Self {
            hot,
            hot_root: None,
            multipart: None,
            prefix: None,
            part_size: DEFAULT_PART_SIZE,
            published: tokio::sync::broadcast::channel(PUBLISHED_BACKLOG).0,
            name: Arc::from("hot"),
            tier: "hot",
            attributes: object_store::Attributes::new(),
            breaker: Arc::default(),
            interactive: None,
        }
    }

    /// This handle under the store name `name`.
    pub fn named(mut self, name: &str) -> Self {
        self.name = Arc::from(name);
        self
    }

    /// This handle for interactive reads (playback): each object read is bounded by
    /// [`INTERACTIVE_TIMEOUT`] and refused at once while the store's breaker is open
    /// ([`Error::Unavailable`]). Writes and background reads keep the client's own retries.
    pub fn interactive(&self) -> Self {
        let mut s = self.clone();
        s.interactive = Some(INTERACTIVE_TIMEOUT);
        s
    }

    /// Run one backend read through the breaker: refused while it is open (interactive
    /// handles), bounded by the interactive timeout, its outcome recorded either way.
    async fn guarded<T>(
        &self,
        key: &str,
        read: impl std::future::Future<Output = object_store::Result<T>>,
    ) -> Result<T> {
        let unavailable = |retry_after_s| Error::Unavailable {
            store: self.name.to_string(),
            retry_after_s,
        };
        let outcome = match self.interactive {
            None => read.await,
            Some(limit) => {
                self.breaker
                    .admit(std::time::Instant::now())
                    .map_err(unavailable)?;
                match tokio::time::timeout(limit, read).await {
                    Ok(r) => r,
                    Err(_) => {
                        self.breaker.failure(std::time::Instant::now());
                        return Err(unavailable(limit.as_secs().max(1) as u32));
                    }
                }
            }
        };
        match &outcome {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => self.breaker.success(),
            Err(_) => {
                self.breaker.failure(std::time::Instant::now());
                // A viewer is told the store is down, and when to retry.
                if self.interactive.is_some() {
                    return Err(unavailable(1));
                }
            }
        }
        outcome.map_err(|e| Error::backend(key, e))
    }

    /// The store's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Count reads of this store under `tier` in `sluice_storage_reads_total`.
    pub fn with_tier_label(mut self, tier: &'static str) -> Self {
        self.tier = tier;
        self
    }

    /// Write every object (whole or multipart through [`Storage::put`] and
    /// [`Storage::put_file`]) with this S3 storage class. Resumable uploads
    /// ([`Storage::create_multipart`]) only ever write to the hot store and keep the
    /// bucket's default class.
    pub fn with_storage_class(mut self, class: Option<String>) -> Self {
        let mut attributes = object_store::Attributes::new();
        if let Some(c) = class {
            attributes.insert(object_store::Attribute::StorageClass, c.into());
        }
        self.attributes = attributes;
        self
    }

    /// The keys every later [`Storage::publish`] on this handle (or a clone of it) writes,
    /// batch by batch, as soon as each batch is stored. Only this process sees them: a
    /// cache in another process relies on its own expiry.
    pub fn subscribe_published(&self) -> tokio::sync::broadcast::Receiver<Arc<[String]>> {
        self.published.subscribe()
    }

    /// The backend path of a key: validated, then put under the configured prefix.
    fn path(&self, key: &str) -> Result<Path> {
        keys::validate(key)?;
        let full = match &self.prefix {
            Some(p) => format!("{p}/{key}"),
            None => key.to_string(),
        };
        Path::parse(&full).map_err(|_| Error::InvalidKey {
            key: key.to_string(),
            reason: "not a valid object path",
        })
    }

    /// The key of a backend path (the prefix removed).
    fn key_of(&self, location: &Path) -> String {
        let full = location.to_string();
        match &self.prefix {
            Some(p) => full
                .strip_prefix(p.as_str())
                .and_then(|rest| rest.strip_prefix('/'))
                .map(str::to_string)
                .unwrap_or(full),
            None => full,
        }
    }

    /// Whether the hot tier can continue multipart uploads across processes (S3): then
    /// uploads stream into it part by part instead of into a local file.
    pub fn resumable_multipart(&self) -> bool {
        self.multipart.is_some()
    }

    fn multipart_store(&self) -> Result<&Arc<dyn MultipartStore>> {
        self.multipart.as_ref().ok_or(Error::Unsupported {
            what: "resumable multipart upload",
        })
    }

    /// Open a multipart upload that will become object `key`. Returns its upload id, which
    /// any process can use to add parts, complete or abort it.
    pub async fn create_multipart(&self, key: &str) -> Result<String> {
        let path = self.path(key)?;
        self.multipart_store()?
            .create_multipart(&path)
            .await
            .map_err(|e| Error::backend(key, e))
    }

    /// Upload part `index` (0-based; S3 part number `index + 1`) of a multipart upload.
    /// Every part but the last must be at least [`MIN_PART_SIZE`]. Uploading the same
    /// index again replaces the part. Returns the part's ETag, needed to complete.
    pub async fn put_part(
        &self,
        key: &str,
        upload: &str,
        index: usize,
        data: Bytes,
    ) -> Result<String> {
        let path = self.path(key)?;
        let id = upload.to_string();
        let part = self
            .multipart_store()?
            .put_part(&path, &id, index, data.into())
            .await
            .map_err(|e| Error::backend(key, e))?;
        Ok(part.content_id)
    }

    /// Complete a multipart upload from the ETags of its parts, in index order: the object
    /// appears atomically.
    pub async fn complete_multipart(
        &self,
        key: &str,
        upload: &str,
        etags: Vec<String>,
    ) -> Result<()> {
        let path = self.path(key)?;
        let id = upload.to_string();
        let parts = etags
            .into_iter()
            .map(|content_id| PartId { content_id })
            .collect();
        self.multipart_store()?
            .complete_multipart(&path, &id, parts)
            .await
            .map_err(|e| Error::backend(key, e))?;
        Ok(())
    }

    /// Abort a multipart upload and free its parts; aborting an unknown (already aborted
    /// or completed) upload is not an error.
    pub async fn abort_multipart(&self, key: &str, upload: &str) -> Result<()> {
        let path = self.path(key)?;
        let id = upload.to_string();
        match self.multipart_store()?.abort_multipart(&path, &id).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(Error::backend(key, e)),
        }
    }

    /// The filesystem path of a hot-tier object, when the hot tier is local.
    pub fn local_path(&self, key: &str) -> Option<PathBuf> {
        let root = self.hot_root.as_ref()?;
        keys::validate(key).ok()?;
        Some(root.join(key))
    }

    /// Store a small object in one request.
    pub async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        let path = self.path(key)?;
        let opts = object_store::PutOptions {
            attributes: self.attributes.clone(),
            ..Default::default()
        };
        self.hot
            .put_opts(&path, data.into(), opts)
            .await
            .map_err(|e| Error::backend(key, e))?;
        Ok(())
    }

    /// Stream a local file into the store as a multipart upload: memory stays bounded by
    /// the part size whatever the file size, and the object appears atomically at the end.
    pub async fn put_file(&self, key: &str, file: &FsPath) -> Result<u64> {
        let path = self.path(key)?;
        let io_err = |source| Error::Io {
            path: file.to_path_buf(),
            source,
        };
        let mut f = tokio::fs::File::open(file).await.map_err(io_err)?;
        let size = f.metadata().await.map_err(io_err)?.len();
        if size < UPLOAD_CHUNK as u64 {
            // Small enough for one request (and for memory): no multipart round trips.
            let mut buf = Vec::with_capacity(size as usize);
            f.read_to_end(&mut buf).await.map_err(io_err)?;
            let n = buf.len() as u64;
            self.put(key, Bytes::from(buf)).await?;
            return Ok(n);
        }
        let opts = object_store::PutMultipartOptions {
            attributes: self.attributes.clone(),
            ..Default::default()
        };
        let upload = self
            .hot
            .put_multipart_opts(&path, opts)
            .await
            .map_err(|e| Error::backend(key, e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, UPLOAD_CHUNK);
        let mut buf = vec![0u8; 1024 * 1024];
        let mut total = 0u64;
        loop {
            let n = match f.read(&mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(io_err(e));
                }
            };
            if n == 0 {
                break;
            }
            if let Err(e) = writer.wait_for_capacity(4).await {
                return Err(Error::backend(key, e));
            }
            writer.write(&buf[..n]);
            total += n as u64;
        }
        writer.finish().await.map_err(|e| Error::backend(key, e))?;
        Ok(total)
    }

    /// Metadata of one object.
    pub async fn head(&self, key: &str) -> Result<ObjectInfo> {
        let path = self.path(key)?;
        let meta = self.guarded(key, self.hot.head(&path)).await?;
        Ok(ObjectInfo {
            key: key.to_string(),
            size: meta.size,
            etag: meta.e_tag,
            last_modified: meta.last_modified.into(),
        })
    }

    /// Read a whole object into memory (playlists and other small objects).
    pub async fn get_bytes(&self, key: &str) -> Result<Bytes> {
        let path = self.path(key)?;
        let res = self
            .hot
            .get(&path)
            .await
            .map_err(|e| Error::backend(key, e))?;
        count_read(self.tier);
        res.bytes().await.map_err(|e| Error::backend(key, e))
    }

    /// Read an object whole when it has at most `max` bytes: one request to the backend
    /// (on the local filesystem one blocking read of the file, not a stream of 8 KiB
    /// reads). A larger object answers [`Whole::TooLarge`] with its metadata and no body:
    /// the caller streams it instead. The playback cache fills itself through this.
    pub async fn read_whole(&self, key: &str, max: u64) -> Result<Whole> {
        let (info, res) = self.open(key, None).await?;
        if info.size > max {
            return Ok(Whole::TooLarge(info));
        }
        let body = res.bytes().await.map_err(|e| Error::backend(key, e))?;
        // The object may have been replaced between the metadata and the read.
        if body.len() as u64 != info.size {
            return Err(Error::Backend {
                key: key.to_string(),
                source: Box::new(object_store::Error::Generic {
                    store: "sluice",
                    source: "object changed while it was read".into(),
                }),
            });
        }
        Ok(Whole::Bytes(info, body))
    }

    /// Open an object (or a range of it) for reading: its metadata and the pending body.
    /// Every whole-object read goes through here, and counts as one read.
    async fn open(
        &self,
        key: &str,
        range: Option<Range<u64>>,
    ) -> Result<(ObjectInfo, object_store::GetResult)> {
        let path = self.path(key)?;
        let opts = object_store::GetOptions {
            range: range.map(Into::into),
            ..Default::default()
        };
        let res = self.guarded(key, self.hot.get_opts(&path, opts)).await?;
        count_read(self.tier);
        let info = ObjectInfo {
            key: key.to_string(),
            size: res.meta.size,
            etag: res.meta.e_tag.clone(),
            last_modified: res.meta.last_modified.into(),
        };
        Ok((info, res))
    }

    /// Read one byte range of an object.
    pub async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let path = self.path(key)?;
        let bytes = self
            .hot
            .get_range(&path, range)
            .await
            .map_err(|e| Error::backend(key, e))?;
        count_read(self.tier);
        Ok(bytes)
    }

    /// Stream an object (or a range of it) without holding it in memory.
    pub async fn get_stream(
        &self,
        key: &str,
        range: Option<Range<u64>>,
    ) -> Result<(ObjectInfo, ByteStream)> {
        let (info, res) = self.open(key, range).await?;
        let owned = key.to_string();
        let stream = res
            .into_stream()
            .map_err(move |e| Error::backend(&owned, e))
            .boxed();
        Ok((info, stream))
    }

    /// Write the objects `keys`, one after the other, into a new local file `dest`
    /// (streamed: memory stays bounded), flushed and, with `sync`, on disk. Returns the
    /// bytes written. A job reading its source, a recording assembled from segments.
    pub async fn get_concat_to_file<K: AsRef<str>>(
        &self,
        keys: &[K],
        dest: &FsPath,
        sync: bool,
    ) -> Result<u64> {
        use tokio::io::AsyncWriteExt;
        let io_err = |source| Error::Io {
            path: dest.to_path_buf(),
            source,
        };
        let mut file = tokio::fs::File::create(dest).await.map_err(io_err)?;
        let mut total = 0u64;
        for key in keys {
            let (_, mut stream) = self.get_stream(key.as_ref(), None).await?;
            while let Some(chunk) = stream.try_next().await? {
                total += chunk.len() as u64;
                file.write_all(&chunk).await.map_err(io_err)?;
            }
        }
        file.flush().await.map_err(io_err)?;
        if sync {
            file.sync_all().await.map_err(io_err)?;
        }
        Ok(total)
    }

    /// Delete one object; deleting a missing object is not an error.
    pub async fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key)?;
        match self.hot.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(Error::backend(key, e)),
        }
    }

    /// Keys of every object under `prefix`, sorted.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let path = self.path(prefix.trim_end_matches('/'))?;
        let mut out: Vec<ObjectInfo> = self
            .hot
            .list(Some(&path))
            .map_ok(|m| ObjectInfo {
                key: self.key_of(&m.location),
                size: m.size,
                etag: m.e_tag,
                last_modified: m.last_modified.into(),
            })
            .try_collect()
            .await
            .map_err(|e| Error::backend(prefix, e))?;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Delete every object under `prefix` (cleanup of staging areas and failed outputs).
    pub async fn delete_prefix(&self, prefix: &str) -> Result<usize> {
        let objects = self.list(prefix).await?;
        for o in &objects {
            self.delete(&o.key).await?;
        }
        Ok(objects.len())
    }

    /// Server-side copy within the hot tier.
    pub async fn copy(&self, from: &str, to: &str) -> Result<()> {
        let (f, t) = (self.path(from)?, self.path(to)?);
        self.hot
            .copy(&f, &t)
            .await
            .map_err(|e| Error::backend(from, e))
    }

    /// Round-trip probe used by `/readyz`.
    pub async fn check(&self) -> Result<()> {
        let key = keys::HEALTH_KEY;
        self.put(key, Bytes::from_static(b"ok")).await?;
        self.get_bytes(key).await?;
        Ok(())
    }
}

impl Storage {
    /// Move a finished local file into the store. On a local hot tier this is a rename
    /// (no second copy of a large upload); elsewhere it streams as multipart and removes
    /// the file afterwards.
    pub async fn put_file_move(&self, key: &str, file: &FsPath) -> Result<u64> {
        if let Some(dest) = self.local_path(key) {
            let size = tokio::fs::metadata(file)
                .await
                .map_err(|source| Error::Io {
                    path: file.to_path_buf(),
                    source,
                })?
                .len();
            if let Some(parent) = dest.parent() {
                tokio::fs::create_dir_all(parent)
                    .await
                    .map_err(|source| Error::Io {
                        path: parent.to_path_buf(),
                        source,
                    })?;
            }
            if tokio::fs::rename(file, &dest).await.is_ok() {
                return Ok(size);
            }
        }
        let n = self.put_file(key, file).await?;
        let _ = tokio::fs::remove_file(file).await;
        Ok(n)
    }
}
