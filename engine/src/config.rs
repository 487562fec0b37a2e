//! Configuration: a TOML file (every field optional, unknown fields rejected) layered under
//! environment variables and flags by the binary. Defaults are the embedded deployment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Listen address. Default `127.0.0.1:8080`.
    pub addr: SocketAddr,
    /// Data directory: metadata, queue, hot tier, upload scratch. Default `./sluice-data`.
    pub data_dir: PathBuf,
    /// Metadata and queue database. Unset: SQLite files in the data dir (embedded default).
    /// `postgres://…`: one PostgreSQL database shared by every gateway and worker.
    pub database_url: Option<String>,
    /// Base URL put in front of playback and upload URLs. Default: derived from the
    /// request's `Host` header (http).
    pub public_url: Option<String>,
    pub gateway: GatewayConfig,
    pub storage: StorageConfig,
    pub uploads: UploadConfig,
    pub playback: PlaybackConfig,
    pub transcode: TranscodeConfig,
    pub workers: WorkerConfig,
    pub live: LiveConfig,
    pub webhooks: WebhooksConfig,
    pub cdn: CdnConfig,
    /// `[auth]`: JWTs beside API keys (`[auth.jwt]`, docs/auth.md).
    pub auth: crate::jwt::AuthConfig,
    /// Rate limits per route class (docs/limits.md).
    pub rate_limit: crate::limits::RateLimitConfig,
    /// How quota usage is counted (docs/limits.md).
    pub quotas: crate::limits::QuotaConfig,
    pub lifecycle: LifecycleConfig,
    pub ops: OpsConfig,
}

/// `[lifecycle]`: the default lifecycle rules (for tenants that set none with
/// `PUT /v1/lifecycle`) and how often they are evaluated.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LifecycleConfig {
    /// `[[lifecycle.rules]]`: `after = "30d"`, `since = "upload"|"last_view"`, `tag`,
    /// `action = "warm"|"cold"|"expire"`. Default: none.
    pub rules: Vec<crate::lifecycle::Rule>,
    /// How often every tenant's rules are evaluated, seconds. Default 3600.
    pub interval_s: u64,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        Self {
            rules: Vec::new(),
            interval_s: 3600,
        }
    }
}

/// CDN integrations.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CdnConfig {
    /// CloudFront in front of Sluice. Set: playback answers also carry a CloudFront-signed
    /// master URL and the three signed-cookie values. Default: unset.
    pub cloudfront: Option<CloudFrontConfig>,
}

/// A CloudFront distribution whose behaviour for `/v1/play/*` trusts a key group holding
/// the public key of `key_pair_id`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudFrontConfig {
    /// The distribution's base URL, as `https://d111111abcdef8.cloudfront.net` (or a
    /// custom domain). Required.
    pub domain: String,
    /// The CloudFront public key's id (`Key-Pair-Id`). Required.
    pub key_pair_id: String,
    /// The matching RSA private key, PEM (PKCS#1 or PKCS#8). Required; read at start.
    pub private_key_file: PathBuf,
}

impl CloudFrontConfig {
    /// The domain without a trailing slash.
    pub fn base_url(&self) -> &str {
        self.domain.trim_end_matches('/')
    }
}

/// Webhook delivery.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Hosts (names or IP addresses, as written in webhook URLs) that may be delivered to
    /// although they are or resolve to loopback, private, link-local or other non-public
    /// addresses. Empty by default: a tenant cannot make Sluice call into its own network.
    pub allow_hosts: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            addr: "127.0.0.1:8080".parse().expect("valid default address"),
            data_dir: PathBuf::from("./sluice-data"),
            database_url: None,
            public_url: None,
            gateway: GatewayConfig::default(),
            storage: StorageConfig::default(),
            uploads: UploadConfig::default(),
            playback: PlaybackConfig::default(),
            transcode: TranscodeConfig::default(),
            workers: WorkerConfig::default(),
            live: LiveConfig::default(),
            webhooks: WebhooksConfig::default(),
            cdn: CdnConfig::default(),
            auth: Default::default(),
            rate_limit: Default::default(),
            quotas: Default::default(),
            lifecycle: LifecycleConfig::default(),
            ops: OpsConfig::default(),
        }
    }
}

pub use crate::ops::OpsConfig;

/// Live HLS push (`POST /v1/live`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LiveConfig {
    /// How much of a live stream viewers can seek back (the DVR window) when the stream is
    /// created without its own, seconds. Default 300.
    pub dvr_window_s: u64,
    /// Largest DVR window a stream may ask for, seconds. Default 6 h.
    pub max_dvr_window_s: u64,
    /// With no request for this long, a stream is reported `stalled`, seconds. Default 10.
    pub stall_after_s: u64,
    /// With no request for this long, a stream ends and becomes a VOD asset, seconds.
    /// Default 60.
    pub idle_timeout_s: u64,
    /// Largest accepted segment (or init segment), bytes. Default 64 MiB.
    pub max_segment_bytes: u64,
    /// Largest accepted playlist, bytes. Default 1 MiB.
    pub max_playlist_bytes: u64,
    /// How often the live sweeper ends idle streams, seconds. Default 2.
    pub sweep_interval_s: u64,
    /// How a recording becomes VOD when a stream does not say (`POST /v1/live` `vod`):
    /// `transcode` (the tenant's ladder) or `copy` (the pushed renditions as they are).
    /// Default `transcode`.
    pub vod: sluice_media::VodMode,
}

impl Default for LiveConfig {
    fn default() -> Self {
        Self {
            dvr_window_s: 300,
            max_dvr_window_s: 6 * 3600,
            stall_after_s: 10,
            idle_timeout_s: 60,
            max_segment_bytes: 64 << 20,
            max_playlist_bytes: 1 << 20,
            sweep_interval_s: 2,
            vod: sluice_media::VodMode::Transcode,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Deadline for API requests, seconds (not for upload bodies or media streams).
    /// Default 30.
    pub request_timeout_s: u64,
    /// Grace period for in-flight requests at shutdown, seconds. Default 10.
    pub shutdown_grace_s: u64,
    /// Deadline for a client to send a request's headers (slowloris), seconds. Default 10.
    pub header_read_timeout_s: u64,
    /// A request body that sends nothing for this long fails, seconds. Default 8: shorter
    /// than an upload's write lease (10 s), so a stalled PATCH ends before it could lose
    /// the lease.
    pub body_idle_timeout_s: u64,
    /// TCP keepalive probes on client sockets start after this idle time, seconds
    /// (half-open connections are found and closed). Default 60.
    pub tcp_keepalive_s: u64,
    /// Open client connections at most; further clients wait in the listen backlog.
    /// Default 10000.
    pub max_connections: usize,
    /// Memory for the playback cache (segments, playlists, thumbnails), bytes. 0 turns
    /// it off. Default 256 MiB.
    pub cache_bytes: u64,
    /// Largest object the playback cache keeps; larger ones are streamed from the store,
    /// bytes. Default 16 MiB.
    pub cache_max_object_bytes: u64,
    /// How long the playback cache keeps an object, milliseconds: how late a gateway sees
    /// an object another process rewrote (a rendition re-run by a separate worker), and
    /// how often it re-reads a hot object from the store. Default 1000, at most one hour.
    pub cache_ttl_ms: u64,
    /// Peers (IP addresses or CIDR networks) whose `X-Forwarded-For` is believed: for a
    /// request from one of them, the client is the right-most address of that header.
    /// From any other peer the client is the socket's peer address. Default: none.
    pub trusted_proxies: Vec<sluice_cdn::ClientNet>,

    // Transport hardening (docs/hardening.md).
    /// Largest request head (request line and headers), bytes: a larger HTTP/1.1 head is
    /// answered 431 and the connection closed; HTTP/2 advertises it as its header list
    /// limit. Default 65536, at least 8192.
    pub max_header_bytes: usize,
    /// A connection on which no bytes have moved for this long is closed gracefully (an
    /// answer under way is finished first), seconds: idle keep-alive connections give their
    /// socket back. Default 75.
    pub idle_timeout_s: u64,
    /// Largest declared request body on the API and operational routes, bytes: a larger
    /// `Content-Length` is answered 413 before the handler runs. Default 65536.
    pub max_api_body_bytes: u64,
    /// Largest declared request body on the playback routes (which read none), bytes.
    /// Default 4096.
    pub max_playback_body_bytes: u64,
    /// PEM certificate chain and private key: with both set the listener speaks HTTPS only
    /// (HTTP/2 and HTTP/1.1 through ALPN). `--tls-cert`/`--tls-key` and `SLUICE_TLS_CERT`/
    /// `SLUICE_TLS_KEY` win over these. Default: none (plain HTTP/1.1 and h2c).
    pub tls_cert: Option<std::path::PathBuf>,
    pub tls_key: Option<std::path::PathBuf>,
    /// Deadline for a client to finish the TLS handshake, seconds. Default 10.
    pub tls_handshake_timeout_s: u64,
    /// How often the certificate files are checked for a change (a reload also follows
    /// `SIGHUP`), seconds. Default 5.
    pub tls_reload_poll_s: u64,
    /// `Strict-Transport-Security` max-age sent on HTTPS answers, seconds; 0 sends none.
    /// Default 31536000 (one year).
    pub hsts_max_age_s: u64,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            request_timeout_s: 30,
            shutdown_grace_s: 10,
            header_read_timeout_s: 10,
            body_idle_timeout_s: 8,
            tcp_keepalive_s: 60,
            max_connections: 10_000,
            cache_bytes: 256 << 20,
            cache_max_object_bytes: 16 << 20,
            cache_ttl_ms: 1000,
            trusted_proxies: Vec::new(),
            max_header_bytes: 64 << 10,
            idle_timeout_s: 75,
            max_api_body_bytes: 64 << 10,
            max_playback_body_bytes: 4096,
            tls_cert: None,
            tls_key: None,
            tls_handshake_timeout_s: 10,
            tls_reload_poll_s: 5,
            hsts_max_age_s: 365 * 24 * 3600,
        }
    }
}

/// Where bytes live. Scale-out processes either share an S3-compatible store (`[storage.s3]`)
/// or, on one host (or a shared filesystem), point these at the same directories.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// The local hot tier. Default `{data_dir}/hot`. Unused when `s3` is set.
    pub hot_dir: Option<PathBuf>,
    /// Bytes of uploads in progress on the local hot tier, and the scratch file of raw
    /// (`POST /v1/assets`) uploads on any tier. Default `{data_dir}/uploads`.
    pub uploads_dir: Option<PathBuf>,
    /// An S3-compatible store (AWS S3, Garage, MinIO) as the hot tier. Set: every object
    /// lives in the bucket, and tus uploads stream into it as multipart parts, so any gateway
    /// can continue any upload. Default: unset (the local hot tier).
    pub s3: Option<sluice_storage::S3Config>,
    /// Named object stores (`[storage.stores.NAME]`), see docs/storage-tiers.md. The hot
    /// store of `hot_dir` / `[storage.s3]` is the store named `hot`. Default: none.
    pub stores: std::collections::BTreeMap<String, sluice_storage::StoreConfig>,
    /// Which store holds each tier. Default: hot = `hot`, no warm or cold tier.
    pub tiers: TiersConfig,
}

/// `[storage.tiers]`: tier → store name.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TiersConfig {
    /// The hot tier's store. Default `hot` (the store of `hot_dir` / `[storage.s3]`).
    pub hot: Option<String>,
    /// The warm tier's store. Default: none (assets cannot move to warm).
    pub warm: Option<String>,
    /// The cold (archive) tier's store. Default: none (assets cannot be archived).
    pub cold: Option<String>,
}

impl StorageConfig {
    /// Check the named stores and the tier map: valid names and URLs, every tier naming a
    /// defined store, and no second definition of the store `hot`.
    pub fn validate_stores(&self) -> Result<(), crate::Error> {
        let err = |m: String| Err(crate::Error::Config(m));
        for (name, store) in &self.stores {
            store
                .validate(name)
                .map_err(|e| crate::Error::Config(e.to_string()))?;
        }
        if self.stores.contains_key(crate::tiers::LEGACY_HOT)
            && (self.hot_dir.is_some() || self.s3.is_some())
        {
            return err(
                "storage.stores.hot is defined twice: by [storage.stores.hot] and by \
                 storage.hot_dir / [storage.s3]; keep one"
                    .into(),
            );
        }
        for (tier, name) in [
            ("hot", &self.tiers.hot),
            ("warm", &self.tiers.warm),
            ("cold", &self.tiers.cold),
        ] {
            if let Some(n) = name
                && n != crate::tiers::LEGACY_HOT
                && !self.stores.contains_key(n)
            {
                return err(format!(
                    "storage.tiers.{tier} names the store {n:?}, which no [storage.stores.{n}] \
                     defines"
                ));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UploadConfig {
    /// Largest accepted upload, bytes. Default 20 GiB.
    pub max_size: u64,
    /// An unfinished upload expires this long after its last byte arrived (tus
    /// `Upload-Expires`), seconds. Default 86400 (24 h).
    pub expire_after_s: u64,
    /// How often the sweeper deletes expired uploads, seconds. Default 60.
    pub sweep_interval_s: u64,
}

impl Default for UploadConfig {
    fn default() -> Self {
        Self {
            max_size: 20 << 30,
            expire_after_s: 24 * 3600,
            sweep_interval_s: 60,
        }
    }
}

/// Playback URLs and the keys that sign their tokens (the token format: `sluice_cdn`).
/// `Debug` shows no secret.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlaybackConfig {
    /// Lifetime of a playback URL when the request names none, seconds. Default 3600.
    pub default_ttl_s: u64,
    /// Longest lifetime a client may ask for, seconds. Default 7 days.
    pub max_ttl_s: u64,
    /// Id of the key that signs new tokens: 1–16 characters of `[A-Za-z0-9_-]`. Default
    /// `k1`.
    pub key_id: String,
    /// The signing key's secret (at least 16 bytes). Default: unset, and then the secret
    /// stored in the metadata database under this key id is used, generated by the first
    /// process that needs it, so every gateway shares it.
    #[serde(skip_serializing)]
    pub secret: Option<String>,
    /// The name of an environment variable that holds the signing key's secret (instead
    /// of `secret`). Default: unset.
    pub secret_env: Option<String>,
    /// Keys that no longer sign but still verify tokens until their `verify_until`, so
    /// that URLs handed out before a rotation keep playing. Default: none.
    pub previous_keys: Vec<PreviousKeyConfig>,
}

impl Default for PlaybackConfig {
    fn default() -> Self {
        Self {
            default_ttl_s: 3600,
            max_ttl_s: 7 * 24 * 3600,
            key_id: "k1".to_string(),
            secret: None,
            secret_env: None,
            previous_keys: Vec::new(),
        }
    }
}

/// A retired playback key (`[[playback.previous_keys]]`). `Debug` shows no secret.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviousKeyConfig {
    /// Its key id, as in the tokens it signed.
    pub id: String,
    /// Its secret. Default: unset, and then `secret_env`, else the secret stored in the
    /// metadata database under this id (a generated key's).
    #[serde(default, skip_serializing)]
    pub secret: Option<String>,
    /// The name of an environment variable holding its secret. Default: unset.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// Until when its tokens verify: an RFC 3339 time in quotes, as
    /// `"2026-12-01T00:00:00Z"`. Required. Set it at least the longest URL lifetime
    /// (`max_ttl_s`) after the rotation for every URL handed out before it to keep playing.
    pub verify_until: String,
}

/// `Some("<redacted>")` for a set secret.
fn redacted(secret: &Option<String>) -> Option<&'static str> {
    secret.as_ref().map(|_| "<redacted>")
}

impl std::fmt::Debug for PlaybackConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlaybackConfig")
            .field("default_ttl_s", &self.default_ttl_s)
            .field("max_ttl_s", &self.max_ttl_s)
            .field("key_id", &self.key_id)
            .field("secret", &redacted(&self.secret))
            .field("secret_env", &self.secret_env)
            .field("previous_keys", &self.previous_keys)
            .finish()
    }
}

impl std::fmt::Debug for PreviousKeyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreviousKeyConfig")
            .field("id", &self.id)
            .field("secret", &redacted(&self.secret))
            .field("secret_env", &self.secret_env)
            .field("verify_until", &self.verify_until)
            .finish()
    }
}

impl PreviousKeyConfig {
    /// `verify_until` as unix seconds.
    pub fn verify_until_unix(&self) -> Result<u64, crate::Error> {
        let t = time::OffsetDateTime::parse(
            &self.verify_until,
            &time::format_description::well_known::Rfc3339,
        )
        .map_err(|_| {
            crate::Error::Config(format!(
                "playback.previous_keys {:?}: verify_until must be an RFC 3339 time in quotes, \
                 as \"2026-12-01T00:00:00Z\"",
                self.id
            ))
        })?;
        Ok(t.unix_timestamp().max(0) as u64)
    }
}

impl PlaybackConfig {
    /// Check the key set: valid and distinct ids, one secret source per key, parseable
    /// times. Never puts a secret in an error.
    fn validate(&self) -> Result<(), crate::Error> {
        let err = |m: String| Err(crate::Error::Config(m));
        if self.default_ttl_s == 0 || self.default_ttl_s > self.max_ttl_s {
            return err("playback.default_ttl_s must be between 1 and playback.max_ttl_s".into());
        }
        let mut ids = vec![self.key_id.as_str()];
        let keys = std::iter::once(("playback", &self.key_id, &self.secret, &self.secret_env))
            .chain(
                self.previous_keys
                    .iter()
                    .map(|k| ("playback.previous_keys", &k.id, &k.secret, &k.secret_env)),
            );
        for (section, id, secret, secret_env) in keys {
            if !sluice_cdn::token::is_valid_key_id(id) {
                return err(format!(
                    "{section}: key id {id:?} must be 1 to 16 characters of A-Z, a-z, 0-9, '_', '-'"
                ));
            }
            if secret.is_some() && secret_env.is_some() {
                return err(format!(
                    "{section}: key {id:?} has both secret and secret_env; keep one"
                ));
            }
            if secret
                .as_ref()
                .is_some_and(|s| s.len() < sluice_cdn::token::MIN_SECRET_LEN)
            {
                return err(format!(
                    "{section}: the secret of key {id:?} must be at least {} bytes",
                    sluice_cdn::token::MIN_SECRET_LEN
                ));
            }
            if secret_env.as_ref().is_some_and(|v| v.is_empty()) {
                return err(format!("{section}: key {id:?} has an empty secret_env"));
            }
        }
        for k in &self.previous_keys {
            if ids.contains(&k.id.as_str()) {
                return err(format!(
                    "playback: key id {:?} is used twice (the signing key_id and \
                     previous_keys must all differ)",
                    k.id
                ));
            }
            ids.push(&k.id);
            k.verify_until_unix()?;
        }
        Ok(())
    }
}

// The transcode section and its ladder are media vocabulary, shared with the workers.
pub use sluice_media::{RungConfig, SegmentFormat, TranscodeConfig};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// Transcode jobs run at once per process. Default 1 (a transcode already uses every
    /// core through x264's threads).
    pub concurrency: usize,
    /// Run workers inside `sluice serve`. Default true.
    pub in_process: bool,
    /// Worker heartbeat, seconds. A worker silent for two heartbeats is presumed dead and
    /// its jobs go back to the queue (the lease). Default 5 (lease 10 s).
    pub heartbeat_s: u64,
    /// An idle worker looks for queued jobs this often, milliseconds: the longest a new
    /// job waits for an idle worker. Default 250 (one cheap indexed query per tick).
    pub poll_ms: u64,
    /// Attempts per job before it is `dead`. Only infrastructure errors are retried; bad
    /// input fails at the first attempt. Default 3.
    pub max_attempts: u32,
    /// First retry delay, seconds; doubles per attempt, plus jitter. Default 2.
    pub retry_base_s: u64,
    /// Longest retry delay, seconds. Default 300.
    pub retry_cap_s: u64,
    /// A job running longer than this is stopped and retried, seconds. Default 3600.
    pub job_timeout_s: u64,
    /// At shutdown, running jobs get this long to finish before they are stopped and
    /// released back to the queue without losing an attempt, seconds. Default 20.
    pub shutdown_grace_s: u64,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            concurrency: 1,
            in_process: true,
            heartbeat_s: 5,
            poll_ms: 250,
            max_attempts: 3,
            retry_base_s: 2,
            retry_cap_s: 300,
            job_timeout_s: 3600,
            shutdown_grace_s: 20,
        }
    }
}

impl Config {
    /// Parse a TOML config file's text.
    pub fn from_toml(text: &str) -> Result<Self, crate::Error> {
        toml::from_str(text).map_err(|e| crate::Error::Config(e.to_string()))
    }

    /// Check values that parse but make no sense.
    pub fn validate(&self) -> Result<(), crate::Error> {
        let bad = |m: &str| Err(crate::Error::Config(m.to_string()));
        self.rate_limit.validate().map_err(crate::Error::Config)?;
        self.quotas.validate().map_err(crate::Error::Config)?;
        if let Some(url) = &self.database_url
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            return bad("database_url must be a postgres:// URL (or unset for SQLite)");
        }
        if let Some(s3) = &self.storage.s3 {
            s3.validate()
                .map_err(|e| crate::Error::Config(e.to_string()))?;
            // S3 completes a multipart upload of at most 10,000 parts.
            let most = s3.part_size.saturating_mul(10_000);
            if self.uploads.max_size > most {
                return Err(crate::Error::Config(format!(
                    "uploads.max_size ({}) is more than storage.s3.part_size x 10000 parts \
                     ({most}): raise part_size or lower max_size",
                    self.uploads.max_size
                )));
            }
        }
        self.storage.validate_stores()?;
        crate::lifecycle::Rules {
            rules: self.lifecycle.rules.clone(),
        }
        .validate()
        .map_err(|e| crate::Error::Config(format!("lifecycle.rules: {e}")))?;
        if self.lifecycle.interval_s == 0 {
            return bad("lifecycle.interval_s must be at least 1");
        }
        self.ops.validate()?;
        let t = &self.transcode;
        if !(0.5..=30.0).contains(&t.segment_duration_s) {
            return bad("transcode.segment_duration_s must be between 0.5 and 30");
        }
        if t.max_duration_s <= 0.0 || t.max_pixels == 0 {
            return bad("transcode.max_duration_s and max_pixels must be positive");
        }
        if t.ladder.is_empty() {
            return bad("transcode.ladder must have at least one rung");
        }
        for r in &t.ladder {
            if r.height < 16 || r.height > 4320 || r.video_bitrate < 50_000 {
                return bad(
                    "each ladder rung needs 16 <= height <= 4320 and video_bitrate >= 50000",
                );
            }
            sluice_media::check_rung_name(&r.name)
                .map_err(|e| crate::Error::Config(format!("transcode.ladder: {e}")))?;
        }
        let w = &self.workers;
        if w.concurrency == 0 || w.max_attempts == 0 || w.heartbeat_s == 0 || w.poll_ms == 0 {
            return bad("workers.concurrency, max_attempts and heartbeat_s must be at least 1");
        }
        if w.job_timeout_s == 0 || w.retry_cap_s < w.retry_base_s {
            return bad("workers.job_timeout_s must be > 0 and retry_cap_s >= retry_base_s");
        }
        self.playback.validate()?;
        if let Some(cf) = &self.cdn.cloudfront {
            let d = cf.base_url();
            let host = d
                .strip_prefix("https://")
                .or_else(|| d.strip_prefix("http://"))
                .unwrap_or("");
            if host.is_empty()
                || !host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'))
            {
                return bad("cdn.cloudfront.domain must be a base URL with no path, as \
                     \"https://d111111abcdef8.cloudfront.net\"");
            }
        }
        let g = &self.gateway;
        if !(8192..=1 << 20).contains(&g.max_header_bytes)
            || g.idle_timeout_s == 0
            || g.tls_handshake_timeout_s == 0
            || g.tls_reload_poll_s == 0
            || g.tls_cert.is_some() != g.tls_key.is_some()
        {
            return bad(
                "gateway.max_header_bytes must be 8192..=1048576; idle_timeout_s, \
                 tls_handshake_timeout_s and tls_reload_poll_s at least 1; tls_cert and \
                 tls_key set together",
            );
        }
        if g.header_read_timeout_s == 0 || g.max_connections == 0 || g.tcp_keepalive_s == 0 {
            return bad(
                "gateway.header_read_timeout_s, tcp_keepalive_s and max_connections must be at least 1",
            );
        }
        if g.cache_ttl_ms == 0 || g.cache_ttl_ms > 3_600_000 {
            return bad("gateway.cache_ttl_ms must be between 1 and 3600000");
        }
        if g.cache_bytes > 0 && g.cache_max_object_bytes > g.cache_bytes {
            return bad("gateway.cache_max_object_bytes must not exceed gateway.cache_bytes");
        }
        if g.body_idle_timeout_s == 0 || g.body_idle_timeout_s >= crate::uploads::LEASE.as_secs() {
            return bad(&format!(
                "gateway.body_idle_timeout_s must be between 1 and {} (below the upload write lease)",
                crate::uploads::LEASE.as_secs() - 1
            ));
        }
        let l = &self.live;
        if l.sweep_interval_s == 0 || l.stall_after_s == 0 || l.idle_timeout_s < l.stall_after_s {
            return bad(
                "live.sweep_interval_s and stall_after_s must be >= 1, idle_timeout_s >= stall_after_s",
            );
        }
        if l.dvr_window_s == 0 || l.dvr_window_s > l.max_dvr_window_s {
            return bad("live.dvr_window_s must be between 1 and live.max_dvr_window_s");
        }
        if l.max_segment_bytes < 1024 || l.max_playlist_bytes < 1024 {
            return bad("live.max_segment_bytes and max_playlist_bytes must be at least 1024");
        }
        Ok(())
    }

    pub fn segment_duration(&self) -> Duration {
        Duration::from_secs_f64(self.transcode.segment_duration_s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_default_and_unknown_fields_fail() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.addr.to_string(), "127.0.0.1:8080");
        assert_eq!(c.transcode.ladder.len(), 4);
        c.validate().unwrap();
        assert!(Config::from_toml("adr = \"x\"").is_err());
        assert!(Config::from_toml("[transcode]\nsegment_secs = 2").is_err());
    }

    #[test]
    fn reserved_rendition_names_are_refused_in_the_configured_ladder() {
        for (name, why) in [
            ("audio", "the audio-only rendition"),
            ("live", "live playback paths"),
        ] {
            let c = Config::from_toml(&format!(
                "[[transcode.ladder]]\nname = \"{name}\"\nheight = 480\nvideo_bitrate = 1000000\n"
            ))
            .unwrap();
            let e = c.validate().unwrap_err().to_string();
            assert!(
                e.contains(&format!("rung name \"{name}\" is reserved for {why}")),
                "{e}"
            );
        }
    }

    #[test]
    fn partial_sections_keep_other_defaults() {
        let c = Config::from_toml(
            "[transcode]\nsegment_duration_s = 4\nladder = [{name = \"240p\", height = 240, video_bitrate = 400000}]",
        )
        .unwrap();
        assert_eq!(c.transcode.segment_duration_s, 4.0);
        assert_eq!(c.transcode.x264_preset, "veryfast");
        assert_eq!(c.transcode.ladder[0].name, "240p");
        c.validate().unwrap();
        let bad = Config::from_toml(
            "[transcode]\nladder = [{name = \"../x\", height = 240, video_bitrate = 400000}]",
        )
        .unwrap();
        assert!(bad.validate().is_err());
    }

    #[test]
    fn s3_section_parses_and_is_validated() {
        let c = Config::from_toml(
            "[storage.s3]\nendpoint = \"http://127.0.0.1:3900\"\nbucket = \"media\"\n\
             region = \"garage\"\naccess_key_id = \"GK1\"\nallow_http = true\n",
        )
        .unwrap();
        let s3 = c.storage.s3.as_ref().unwrap();
        assert_eq!(s3.part_size, 8 << 20);
        assert_eq!(s3.secret_access_key, None);
        c.validate().unwrap();
        // Plain http without allow_http, a tiny part size, unknown keys: refused.
        let no_http = Config::from_toml(
            "[storage.s3]\nendpoint = \"http://h:1\"\nbucket = \"b\"\naccess_key_id = \"k\"\n",
        )
        .unwrap();
        assert!(no_http.validate().is_err());
        let small = Config::from_toml(
            "[storage.s3]\nbucket = \"b\"\naccess_key_id = \"k\"\npart_size = 1024\n",
        )
        .unwrap();
        assert!(small.validate().is_err());
        // More than 10,000 parts would be needed for the largest upload: refused.
        let too_big = Config::from_toml(
            "[uploads]\nmax_size = 60000000000\n\
             [storage.s3]\nbucket = \"b\"\naccess_key_id = \"k\"\npart_size = 5242880\n",
        )
        .unwrap();
        assert!(too_big.validate().is_err());
        // A body-idle timeout at or above the upload lease: refused.
        let idle = Config::from_toml("[gateway]\nbody_idle_timeout_s = 10\n").unwrap();
        assert!(idle.validate().is_err());
        assert!(
            Config::from_toml(
                "[storage.s3]\nbucket = \"b\"\naccess_key_id = \"k\"\nsecret = \"x\"\n"
            )
            .is_err()
        );
    }

    #[test]
    fn named_stores_and_tiers_are_validated() {
        let c = Config::from_toml(
            "[storage.stores.warm]\nurl = \"file:///srv/warm\"\n\
             [storage.stores.glacier]\nurl = \"s3://archive/sluice\"\nregion = \"eu-west-1\"\n\
             storage_class = \"DEEP_ARCHIVE\"\n\
             [storage.tiers]\nwarm = \"warm\"\ncold = \"glacier\"\n",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.storage.tiers.cold.as_deref(), Some("glacier"));
        let bad = |toml: &str, want: &str| {
            let e = Config::from_toml(toml)
                .and_then(|c| c.validate())
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{toml}: {e}");
        };
        bad(
            "[storage.tiers]\ncold = \"nowhere\"\n",
            "storage.tiers.cold names the store \"nowhere\", which no [storage.stores.nowhere]",
        );
        bad(
            "[storage.stores.w]\nurl = \"file://rel\"\n",
            "storage.stores.w.url: \"file://rel\" is not an absolute path",
        );
        bad(
            "[storage.stores.w]\nurl = \"ftp://x\"\n",
            "must start with file:/// or s3://",
        );
        bad(
            "[storage]\nhot_dir = \"/x\"\n[storage.stores.hot]\nurl = \"file:///y\"\n",
            "defined twice",
        );
        bad(
            "[storage.stores.w]\nurl = \"file:///y\"\ncolour = 1\n",
            "unknown field",
        );
    }

    #[test]
    fn cloudfront_section_parses_and_is_validated() {
        let c = Config::from_toml(
            "[cdn.cloudfront]\ndomain = \"https://d111111abcdef8.cloudfront.net/\"\n\
             key_pair_id = \"K2JCJMDEHXQW5F\"\nprivate_key_file = \"/etc/sluice/cf.pem\"\n",
        )
        .unwrap();
        c.validate().unwrap();
        let cf = c.cdn.cloudfront.as_ref().unwrap();
        assert_eq!(cf.base_url(), "https://d111111abcdef8.cloudfront.net");
        for domain in ["d111.cloudfront.net", "https://d.example/path", "https://"] {
            let c = Config::from_toml(&format!(
                "[cdn.cloudfront]\ndomain = \"{domain}\"\nkey_pair_id = \"K\"\n\
                 private_key_file = \"/k.pem\"\n"
            ))
            .unwrap();
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains("cdn.cloudfront.domain"), "{domain}: {e}");
        }
        // Every field is required; unknown ones are refused.
        assert!(Config::from_toml("[cdn.cloudfront]\ndomain = \"https://d.net\"\n").is_err());
        assert!(Config::from_toml("[cdn]\ncloudfrnt = {}\n").is_err());
    }

    #[test]
    fn playback_keys_are_validated_without_echoing_secrets() {
        let c = Config::from_toml(
            "[playback]\nkey_id = \"k2\"\nsecret_env = \"SLUICE_PLAYBACK_K2\"\n\
             [[playback.previous_keys]]\nid = \"k1\"\nverify_until = \"2026-12-01T00:00:00Z\"\n\
             [[playback.previous_keys]]\nid = \"k0\"\nsecret = \"an old secret of 16+ bytes\"\n\
             verify_until = \"2026-11-01T12:00:00+01:00\"\n",
        )
        .unwrap();
        c.validate().unwrap();
        let dbg = format!("{c:?}");
        assert!(
            !dbg.contains("an old secret") && dbg.contains("redacted"),
            "{dbg}"
        );
        assert_eq!(
            c.playback.previous_keys[0].verify_until_unix().unwrap(),
            1_796_083_200
        );
        assert_eq!(Config::default().playback.key_id, "k1");
        let bad = |toml: &str, want: &str| {
            let e = Config::from_toml(toml)
                .and_then(|c| c.validate())
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{toml}: {e}");
            assert!(!e.contains("sekret"), "{e}");
        };
        bad(
            "[playback]\nkey_id = \"k.1\"\n",
            "key id \"k.1\" must be 1 to 16",
        );
        bad("[playback]\nkey_id = \"\"\n", "must be 1 to 16");
        bad(
            "[playback]\nsecret = \"sekret\"\n",
            "the secret of key \"k1\" must be at least 16 bytes",
        );
        bad(
            "[playback]\nsecret = \"sekret-sekret-sekret\"\nsecret_env = \"X\"\n",
            "both secret and secret_env",
        );
        bad(
            "[[playback.previous_keys]]\nid = \"k1\"\nverify_until = \"2026-12-01T00:00:00Z\"\n",
            "key id \"k1\" is used twice",
        );
        bad(
            "[[playback.previous_keys]]\nid = \"k0\"\nverify_until = \"tomorrow\"\n",
            "verify_until must be an RFC 3339 time",
        );
        bad("[[playback.previous_keys]]\nid = \"k0\"\n", "verify_until");
        bad(
            "[[playback.previous_keys]]\nid = \"k0\"\nverify_until = \"2026-12-01T00:00:00Z\"\ncolour = 1\n",
            "unknown field",
        );
        // Trusted proxies are IPs or CIDRs.
        let c =
            Config::from_toml("[gateway]\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]\n").unwrap();
        assert_eq!(c.gateway.trusted_proxies.len(), 2);
        bad(
            "[gateway]\ntrusted_proxies = [\"10.0.0.0/99\"]\n",
            "not an IP address or CIDR",
        );
    }
}
