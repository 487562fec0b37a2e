//! Domain types and their JSON shapes (the contract's asset and job JSON).

use serde::{Deserialize, Serialize};

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Admin,
    Tenant {
        tenant_id: String,
    },
    /// A device key: it may upload for its tenant (tus and raw uploads) and nothing else.
    Device {
        tenant_id: String,
        device_id: String,
    },
    /// The ops role (a JWT): ops routes only, no tenant's data.
    Ops,
    /// An uploader key or JWT not tied to a device: like a device, it only uploads.
    Uploader {
        tenant_id: String,
    },
    /// A viewer key or JWT: reads its tenant's things, changes nothing.
    Viewer {
        tenant_id: String,
    },
}

impl Principal {
    /// The tenant this principal belongs to; admin and ops belong to none. A device (or
    /// uploader) belongs to its tenant but holds none of the tenant's rights beyond
    /// uploading: engine methods check [`Principal::is_device`] (and the gateway refuses
    /// each role outside its routes), so a forgotten check stays inside the tenant.
    pub fn tenant(&self) -> Option<&str> {
        match self {
            Principal::Tenant { tenant_id }
            | Principal::Device { tenant_id, .. }
            | Principal::Uploader { tenant_id }
            | Principal::Viewer { tenant_id } => Some(tenant_id),
            Principal::Admin | Principal::Ops => None,
        }
    }

    /// Whether this principal may only upload (a device key, or an uploader key or JWT).
    pub fn is_device(&self) -> bool {
        matches!(self, Principal::Device { .. } | Principal::Uploader { .. })
    }

    /// The device behind a device key.
    pub fn device(&self) -> Option<&str> {
        match self {
            Principal::Device { device_id, .. } => Some(device_id),
            _ => None,
        }
    }

    /// The role this principal holds ([`crate::Role`] decides what it may do).
    pub fn role(&self) -> crate::Role {
        use crate::Role;
        match self {
            Principal::Admin => Role::PlatformAdmin,
            Principal::Ops => Role::Ops,
            Principal::Tenant { .. } => Role::TenantAdmin,
            Principal::Device { .. } | Principal::Uploader { .. } => Role::Uploader,
            Principal::Viewer { .. } => Role::Viewer,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AssetStatus {
    Uploading,
    Queued,
    Processing,
    Ready,
    Failed,
}

impl AssetStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AssetStatus::Uploading => "uploading",
            AssetStatus::Queued => "queued",
            AssetStatus::Processing => "processing",
            AssetStatus::Ready => "ready",
            AssetStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "uploading" => AssetStatus::Uploading,
            "queued" => AssetStatus::Queued,
            "processing" => AssetStatus::Processing,
            "ready" => AssetStatus::Ready,
            "failed" => AssetStatus::Failed,
            _ => return None,
        })
    }
}

/// A published rendition, as listed on the asset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rendition {
    pub name: String,
    pub width: u32,
    pub height: u32,
    /// Peak bits per second, as in the master playlist's `BANDWIDTH`.
    pub bandwidth: u64,
    pub codecs: String,
}

/// The asset JSON of the contract.
#[derive(Debug, Clone, Serialize)]
pub struct Asset {
    pub id: String,
    #[serde(skip)]
    pub tenant_id: String,
    pub status: AssetStatus,
    pub progress: f64,
    pub duration_s: Option<f64>,
    pub error: Option<String>,
    pub filename: Option<String>,
    pub size: Option<u64>,
    pub job_id: Option<String>,
    /// The device that uploaded it (`None`: a tenant key).
    pub device_id: Option<String>,
    pub renditions: Vec<Rendition>,
    pub probe: Option<serde_json::Value>,
    pub created_at: String,
    pub updated_at: String,
}

/// Job states. `failed`: the input is at fault; `dead`: infrastructure errors used up
/// every attempt.
pub const JOB_STATUSES: [&str; 6] = [
    "queued",
    "running",
    "succeeded",
    "failed",
    "cancelled",
    "dead",
];

/// The job JSON.
#[derive(Debug, Clone, Serialize)]
pub struct Job {
    pub id: String,
    pub asset_id: String,
    pub kind: String,
    pub status: String,
    pub progress: f64,
    pub attempts: i64,
    pub max_attempts: i64,
    pub priority: i64,
    pub worker_id: Option<String>,
    pub error: Option<String>,
    /// Seconds left, estimated from progress so far (running jobs only).
    pub eta_s: Option<f64>,
    /// When a retry is due (queued jobs waiting for their backoff).
    pub run_after: Option<String>,
    pub cancel_requested: bool,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// The one rendition this job re-runs; `None` for a whole-ladder transcode.
    pub rendition: Option<String>,
    /// What a tier job did (`objects_copied`, `objects_skipped`, `bytes_copied`,
    /// `failed`); absent on transcodes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
}

/// A tenant, as returned on creation (the API key is shown once).
#[derive(Debug, Clone, Serialize)]
pub struct NewTenant {
    pub id: String,
    pub name: String,
    pub api_key: String,
    pub quotas: TenantQuotas,
    /// The tenant's own rate limit (every route class); `None`: the configured defaults.
    pub rate_limit: Option<crate::limits::RateLimit>,
}

/// Limits of a tenant; `None` is unlimited. The quotas added after `storage_bytes` are
/// left out of the JSON when unset, so earlier answers keep their shape.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantQuotas {
    /// Bytes of stored sources plus the declared length of uploads in progress.
    pub storage_bytes: Option<u64>,
    /// Bytes sent to clients (playback and source downloads) per calendar month (UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_bytes_per_month: Option<u64>,
    /// Playback responses being sent at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrent_viewers: Option<u64>,
    /// Upload requests (tus creation and PATCH, raw uploads) running at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrent_uploads: Option<u64>,
    /// Minutes of transcoded output per calendar month (UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcode_minutes_per_month: Option<u64>,
}

/// A device as returned on creation: its key is shown once.
#[derive(Debug, Clone, Serialize)]
pub struct NewDevice {
    pub id: String,
    pub name: String,
    pub key: String,
    pub created_at: String,
}

/// A device as listed.
#[derive(Debug, Clone, Serialize)]
pub struct Device {
    pub id: String,
    pub name: String,
    pub created_at: String,
    pub revoked_at: Option<String>,
    pub last_seen_at: Option<String>,
    /// Its latest uploads, newest first.
    pub last_uploads: Vec<DeviceUpload>,
}

/// One of a device's recent uploads.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceUpload {
    pub asset_id: String,
    pub status: AssetStatus,
    pub created_at: String,
}

/// The answer to a raw upload: the asset JSON body of the first response, replayed as is
/// for a retry with the same `Idempotency-Key` and body.
#[derive(Debug, Clone)]
pub struct RawUploaded {
    pub asset_id: String,
    pub body: String,
    pub replayed: bool,
}

/// The right to play one asset until `expires`: everything a playback URL carries. The
/// engine signs it; the gateway alone turns it into a URL (its `paths` module), so the
/// URL's shape is written once, beside the parser that reads it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaybackGrant {
    pub tenant: String,
    pub asset: String,
    /// The signed token, bound to tenant, asset, expiry and optionally a client network
    /// (`sluice_cdn::token`).
    pub token: String,
    /// The file the URL opens, relative to the asset's HLS root: `master.m3u8`, or
    /// `live/{playlist}` for a live stream.
    pub entry: String,
    /// Unix seconds.
    pub expires: u64,
    /// The client network the token is bound to, if the tenant asked for one.
    pub client: Option<sluice_cdn::ClientNet>,
}

/// The right to push one live stream: what its ingest URL carries. Shown once, at the
/// stream's creation (only a hash of the token is stored); rendered by the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestGrant {
    pub stream: String,
    pub token: String,
}

/// The state of a resumable upload (tus HEAD).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadState {
    pub offset: u64,
    /// `None` while the length is deferred (tus creation-defer-length).
    pub length: Option<u64>,
    pub metadata: Option<String>,
    /// When an unfinished upload expires (unix ms); `None` once complete. A partial upload
    /// keeps expiring after its last byte, until a final upload consumes it.
    pub expires_at: Option<i64>,
    pub concat: UploadConcat,
}

impl UploadState {
    /// Every byte is in.
    pub fn is_full(&self) -> bool {
        self.length == Some(self.offset)
    }

    /// Every byte is committed but the upload was not finished (its finishing was cut
    /// short: a crash, a queue error, a shutdown): it is to be finished, not refused or
    /// dropped. A partial is not: it waits for its final upload.
    pub fn awaits_finish(&self, complete: bool) -> bool {
        !complete && self.is_full() && self.offset > 0 && self.concat != UploadConcat::Partial
    }
}

/// The upload's role in tus concatenation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum UploadConcat {
    /// A plain upload: its last byte makes it the asset's source.
    #[default]
    None,
    /// `Upload-Concat: partial`: a part of a later final upload; never an asset itself.
    Partial,
    /// `Upload-Concat: final;…`: assembled from these partial uploads, in order.
    Final(Vec<String>),
}

impl UploadConcat {
    /// The text kept in the metadata store (`NULL`, `partial` or `final;ID ID…`).
    pub fn to_db(&self) -> Option<String> {
        match self {
            UploadConcat::None => None,
            UploadConcat::Partial => Some("partial".into()),
            UploadConcat::Final(ids) => Some(format!("final;{}", ids.join(" "))),
        }
    }

    pub fn from_db(s: Option<&str>) -> Self {
        match s {
            Some("partial") => UploadConcat::Partial,
            Some(s) if s.starts_with("final;") => UploadConcat::Final(
                s["final;".len()..]
                    .split_whitespace()
                    .map(str::to_string)
                    .collect(),
            ),
            _ => UploadConcat::None,
        }
    }
}

/// The message on the queue: a description of work, executed by `sluice-workers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TranscodeJob {
    pub job_id: String,
    pub tenant_id: String,
    pub asset_id: String,
}

/// A tus upload's `Upload-Metadata`, as the gateway read it: the header itself (stored and
/// echoed back on HEAD, as tus asks) and the file name it carries, if any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UploadMetadata {
    pub header: String,
    pub filename: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concat_round_trips_through_the_store_text() {
        for c in [
            UploadConcat::None,
            UploadConcat::Partial,
            UploadConcat::Final(vec!["A".into(), "B".into()]),
        ] {
            assert_eq!(UploadConcat::from_db(c.to_db().as_deref()), c);
        }
        assert_eq!(
            UploadConcat::Final(vec!["A".into(), "B".into()])
                .to_db()
                .unwrap(),
            "final;A B"
        );
    }
}
