//! The engine's one error type. The gateway maps it to HTTP in exactly one place
//! (`sluice_gateway::error`); workers use `is_retryable` to decide between retry and fail.

/// Errors of the domain layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: String },
    #[error("missing or invalid credentials")]
    Unauthenticated,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0}")]
    InvalidInput(String),
    #[error(
        "upload offset mismatch: the upload is at byte {expected}, the request starts at {got}"
    )]
    OffsetMismatch { expected: u64, got: u64 },
    #[error("another request is writing to upload {0}; retry after it ends")]
    UploadLocked(String),
    #[error("{0}")]
    Conflict(String),
    /// The asset's only copy is in the cold tier and not restored.
    #[error(
        "asset {0} is archived (cold tier) and is not served until restored: \
         POST /v1/assets/{0}/restore with {{\"days\": N}}, then play it when the restore job succeeds"
    )]
    Archived(String),
    #[error("upload {0} expired and was abandoned; start a new upload")]
    Expired(String),
    #[error("the body does not match its Upload-Checksum; nothing of it was stored")]
    ChecksumMismatch,
    #[error("upload of {size} bytes exceeds the maximum of {max} bytes")]
    TooLarge { size: u64, max: u64 },
    #[error("{0}")]
    UnsupportedSegment(String),
    #[error(
        "quota storage_bytes exceeded: {used} bytes used or reserved, {requested} more requested, \
         quota {quota} bytes"
    )]
    QuotaExceeded {
        used: u64,
        requested: u64,
        quota: u64,
    },
    /// A tenant quota other than storage: `quota` is its contract name.
    #[error("quota {quota} exceeded: {used} used, limit {limit}")]
    QuotaLimit {
        quota: &'static str,
        used: u64,
        limit: u64,
    },
    #[error("this is not a video file (it looks like {0}); the upload was deleted")]
    UnsupportedMedia(&'static str),
    #[error(
        "this Idempotency-Key was already used with a different body; use a new key for a \
         new upload"
    )]
    IdempotencyKeyReused,
    #[error("a request with this Idempotency-Key is still in progress; retry after it ends")]
    IdempotencyInFlight,
    #[error("a device key can only upload (tus /v1/uploads and POST /v1/assets)")]
    DeviceNotAllowed,
    /// A presented playback token refused (or, rarely, CDN signing failing: a 5xx).
    #[error("playback token rejected: {0}")]
    Token(#[from] sluice_cdn::Error),
    #[error("configuration error: {0}")]
    Config(String),
    #[error("storage error: {0}")]
    Storage(#[from] sluice_storage::Error),
    #[error("metadata database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("job queue error: {0}")]
    Queue(String),
    #[error("i/o error on {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("request body error: {0}")]
    Body(String),
}

impl Error {
    pub(crate) fn not_found(what: &'static str, id: impl Into<String>) -> Self {
        Error::NotFound {
            what,
            id: id.into(),
        }
    }

    pub(crate) fn io(path: impl Into<std::path::PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Whether the same operation may succeed later (infrastructure hiccups), as opposed
    /// to errors the caller must fix.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Storage(e) => e.is_retryable(),
            Error::Db(_) | Error::Queue(_) | Error::Io { .. } | Error::UploadLocked(_) => true,
            _ => false,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
