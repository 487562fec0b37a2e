//! Object storage for Sluice: where every byte lives, and nothing else.
//!
//! The rest of the engine names objects through [`keys`] (a pure key layout) and reads or
//! writes them through [`Storage`], which wraps one `object_store` backend per tier. The
//! embedded default is a local-filesystem hot tier inside the data dir; S3-compatible
//! backends plug in behind the same trait, so the engine never learns which one it has.

pub mod keys;

use std::ops::Range;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
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
        matches!(self, Error::Backend { .. } | Error::Io { .. })
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

/// A byte stream read from storage.
pub type ByteStream = BoxStream<'static, Result<Bytes>>;

/// Chunk size used when streaming a local file into a multipart upload: large enough for S3's
/// 5 MiB part minimum, small enough to keep memory bounded.
const UPLOAD_CHUNK: usize = 8 * 1024 * 1024;

/// Handle on the storage tiers. Cheap to clone.
#[derive(Clone)]
pub struct Storage {
    hot: Arc<dyn ObjectStore>,
    /// Set when the hot tier is a local filesystem: lets GStreamer read sources in place
    /// instead of copying them to a scratch file first.
    hot_root: Option<PathBuf>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("hot", &self.hot.to_string())
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
        })
    }

    /// Wrap any `object_store` backend as the hot tier.
    pub fn from_store(hot: Arc<dyn ObjectStore>) -> Self {
        Self {
            hot,
            hot_root: None,
        }
    }

    fn path(key: &str) -> Result<Path> {
        keys::validate(key)?;
        Path::parse(key).map_err(|_| Error::InvalidKey {
            key: key.to_string(),
            reason: "not a valid object path",
        })
    }

    /// The filesystem path of a hot-tier object, when the hot tier is local.
    pub fn local_path(&self, key: &str) -> Option<PathBuf> {
        let root = self.hot_root.as_ref()?;
        keys::validate(key).ok()?;
        Some(root.join(key))
    }

    /// Store a small object in one request.
    pub async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        let path = Self::path(key)?;
        self.hot
            .put(&path, data.into())
            .await
            .map_err(|e| Error::backend(key, e))?;
        Ok(())
    }

    /// Stream a local file into the store as a multipart upload: memory stays bounded by
    /// the part size whatever the file size, and the object appears atomically at the end.
    pub async fn put_file(&self, key: &str, file: &FsPath) -> Result<u64> {
        let path = Self::path(key)?;
        let io_err = |source| Error::Io {
            path: file.to_path_buf(),
            source,
        };
        let mut f = tokio::fs::File::open(file).await.map_err(io_err)?;
        let upload = self
            .hot
            .put_multipart(&path)
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
        let path = Self::path(key)?;
        let meta = self
            .hot
            .head(&path)
            .await
            .map_err(|e| Error::backend(key, e))?;
        Ok(ObjectInfo {
            key: key.to_string(),
            size: meta.size,
            etag: meta.e_tag,
            last_modified: meta.last_modified.into(),
        })
    }

    /// Read a whole object into memory (playlists and other small objects).
    pub async fn get_bytes(&self, key: &str) -> Result<Bytes> {
        let path = Self::path(key)?;
        let res = self
            .hot
            .get(&path)
            .await
            .map_err(|e| Error::backend(key, e))?;
        res.bytes().await.map_err(|e| Error::backend(key, e))
    }

    /// Read one byte range of an object.
    pub async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let path = Self::path(key)?;
        self.hot
            .get_range(&path, range)
            .await
            .map_err(|e| Error::backend(key, e))
    }

    /// Stream an object (or a range of it) without holding it in memory.
    pub async fn get_stream(
        &self,
        key: &str,
        range: Option<Range<u64>>,
    ) -> Result<(ObjectInfo, ByteStream)> {
        let path = Self::path(key)?;
        let opts = object_store::GetOptions {
            range: range.map(Into::into),
            ..Default::default()
        };
        let res = self
            .hot
            .get_opts(&path, opts)
            .await
            .map_err(|e| Error::backend(key, e))?;
        let info = ObjectInfo {
            key: key.to_string(),
            size: res.meta.size,
            etag: res.meta.e_tag.clone(),
            last_modified: res.meta.last_modified.into(),
        };
        let owned = key.to_string();
        let stream = res
            .into_stream()
            .map_err(move |e| Error::backend(&owned, e))
            .boxed();
        Ok((info, stream))
    }

    /// Delete one object; deleting a missing object is not an error.
    pub async fn delete(&self, key: &str) -> Result<()> {
        let path = Self::path(key)?;
        match self.hot.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(Error::backend(key, e)),
        }
    }

    /// Keys of every object under `prefix`, sorted.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let path = Self::path(prefix.trim_end_matches('/'))?;
        let mut out: Vec<ObjectInfo> = self
            .hot
            .list(Some(&path))
            .map_ok(|m| ObjectInfo {
                key: m.location.to_string(),
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
        let (f, t) = (Self::path(from)?, Self::path(to)?);
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
