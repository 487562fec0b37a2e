//! The domain of Sluice: tenants, API keys, assets, uploads and jobs, their metadata store
//! and the job queue handle, and the orchestration that ties ingest, queue and storage
//! together.
//!
//! The gateway talks to an [`Engine`]; the workers get a [`JobReporter`], which reaches job
//! state and nothing else. Neither knows the other. One `impl Engine` per concern, each in
//! its own file:
//!
//! | file | concern |
//! | --- | --- |
//! | `bootstrap.rs` | opening databases, queue, hot store, secrets; readiness |
//! | `auth.rs` | credentials: admin, tenant, device and role keys, JWTs |
//! | `roles.rs`, `keys.rs`, `jwt/`, `audit.rs` | roles, keys per role, JWT key sets, the audit log |
//! | `tenants.rs`, `devices.rs` | tenants, their devices and quotas |
//! | `limits.rs`, `quotas.rs` | rate-limit settings; quota counters and `quota_usage` |
//! | `assets.rs` | assets and their source bytes |
//! | `uploads.rs`, `uploads/`, `raw.rs` | tus and raw uploads |
//! | `playback.rs` | signed playback grants |
//! | `jobs/` | jobs (`mod.rs`), the queue (`queue.rs`), the worker's side (`worker.rs`), pure queue policy (`policy.rs`) |
//! | `presets.rs` | per-tenant transcode presets |
//! | `live/` | live HLS ingest, playlists, recording to VOD |
//! | `webhooks.rs` | the webhook outbox |
//! | `tiers/` | named stores, tiers, asset copies, read resolution |
//! | `lifecycle/` | lifecycle rules (pure in `rules.rs`), their evaluation and actions |
//! | `store/` | every SQL query, grouped by aggregate |

mod assets;
mod audit;
mod auth;
mod bootstrap;
pub mod checksum;
pub mod clock;
pub mod config;
mod devices;
pub mod error;
pub mod jobs;
pub mod jwt;
mod keys;
pub mod lifecycle;
pub mod limits;
pub mod live;
pub mod model;
pub mod ops;
mod playback;
mod presets;
mod queue_metrics;
pub mod quotas;
mod raw;
pub mod roles;
mod secrets;
pub mod sniff;
mod store;
mod tenants;
pub mod tiers;
mod uploads;
pub mod webhooks;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sluice_cdn::PlaybackSigner;
use sluice_storage::Storage;
use sqlx::AnyPool;

use bootstrap::QueuePool;
pub(crate) use secrets::random_token;

pub use audit::{AuditEntry, AuditRecord, DEFAULT_AUDIT_PAGE, MAX_AUDIT_PAGE};
pub use auth::Identity;
pub use bootstrap::OpenReport;
pub use clock::{Clock, SystemClock};
pub use config::Config;
pub use error::{Error, Result};
/// The pure queue policy, under its former name.
pub use jobs::policy as queue;
pub use jobs::policy::JobClass;
pub use jobs::{JobReporter, JobSpec, TRANSCODE_QUEUE, TranscodeQueue};
pub use keys::{KeyInfo, NewKey};
pub use model::*;
pub use playback::PlaybackOptions;
pub use presets::PresetView;
pub use raw::{IDEMPOTENCY_TTL_MS, RawUpload};
pub use roles::Role;
pub use sluice_media::preset::{self, PresetOverrides, TranscodePreset};
pub use uploads::{MAX_CONCAT_PARTS, NewUploadSpec};

/// Handle on the engine. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    db: AnyPool,
    queue_pool: QueuePool,
    /// The hot tier's store (`stores.hot()`).
    storage: Storage,
    /// Every named store and the tier map.
    stores: tiers::Stores,
    /// Resolved readable copies, briefly.
    readable: tiers::resolve::ReadableCache,
    /// Recent last-view writes of this process (lifecycle `since = "last_view"`).
    views: lifecycle::ViewStamps,
    signer: PlaybackSigner,
    /// Set when `[cdn.cloudfront]` is configured.
    cloudfront: Option<sluice_cdn::cloudfront::CloudFrontSigner>,
    admin_key_hash: [u8; 32],
    uploads_dir: PathBuf,
    work_dir: PathBuf,
    clock: Arc<dyn Clock>,
    /// This process's locks of live streams' state changes (see [`live`]).
    live_locks: live::StreamLocks,
    /// Set when `[auth.jwt]` is configured.
    jwt: Option<Arc<jwt::JwtVerifier>>,
    /// Quota counters of this process (see [`quotas`]).
    usage: quotas::UsageState,
}

/// A background task that lives exactly as long as this value (a heartbeat or a lease
/// renewal beside a request): aborted when dropped, however the request ends.
pub(crate) struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl AbortOnDrop {
    /// Run `tick` every `period` (first after one period) until dropped; a failed tick is
    /// logged (`what` failed) and the next one tried.
    pub(crate) fn every<F, Fut>(period: Duration, what: &'static str, mut tick: F) -> Self
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<()>> + Send,
    {
        Self(tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                if let Err(e) = tick().await {
                    tracing::warn!("could not {what}: {e}");
                }
            }
        }))
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Engine {
    pub(crate) fn now_ms(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    /// The tenant of a tenant key; devices and admin are refused.
    fn tenant_of<'a>(&self, who: &'a Principal) -> Result<&'a str> {
        if who.is_device() {
            return Err(Error::DeviceNotAllowed);
        }
        who.tenant()
            .ok_or(Error::Forbidden("this endpoint needs a tenant key"))
    }

    /// The tenant an upload is for: tenant, device and uploader keys (not viewers).
    fn upload_tenant_of<'a>(&self, who: &'a Principal) -> Result<&'a str> {
        if matches!(who, Principal::Viewer { .. }) {
            return Err(Error::Forbidden("a viewer cannot upload"));
        }
        who.tenant()
            .ok_or(Error::Forbidden("uploading needs a tenant or device key"))
    }

    /// Admin (every tenant) or a tenant key; devices are refused, and so is ops (which
    /// holds no tenant yet is no admin).
    fn scope<'a>(&self, who: &'a Principal) -> Result<Option<&'a str>> {
        if who.is_device() {
            return Err(Error::DeviceNotAllowed);
        }
        if *who == Principal::Ops {
            return Err(Error::Forbidden("the ops role reads no tenant's data"));
        }
        Ok(who.tenant())
    }
}

/// RFC 3339 text of a unix-millisecond time.
pub fn rfc3339_ms(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// RFC 3339 text of a unix-second time.
pub fn rfc3339_s(s: u64) -> String {
    rfc3339_ms(s as i64 * 1000)
}
