//! Resumable uploads (the engine side of tus).
//!
//! On an S3 hot tier, bytes stream into a multipart upload part by part ([`multipart`]).
//! On the local hot tier (the embedded default), the bytes of an unfinished upload live in
//! `{data_dir}/uploads/{asset}`; the committed offset
//! lives in the metadata store and is written only after the bytes before it are synced to
//! disk. A request that dies half-way leaves bytes past the committed offset: the next
//! write truncates them, so the stored object is always exactly the bytes the client was
//! told were received. On the last byte the file moves into the hot tier as the asset's
//! source and a transcode job is queued.
//!
//! tus creation-defer-length: an upload may start without a length; PATCHes are then bounded
//! by the maximum upload size, and one of them declares the length. Both tiers alike.
//!
//! tus concatenation: a *partial* upload fills its file (or multipart upload) like any other
//! but never becomes an asset (its asset row is hidden) and keeps expiring after its last
//! byte. A *final* upload names complete partials in order. On the local tier its file is
//! assembled in the uploads directory without moving bytes through user space: the first
//! partial's file is renamed to the final's, and the others are appended with
//! `copy_file_range(2)` (through `std::io::copy`), which shares extents on filesystems with
//! reflinks (XFS, btrfs) and is an in-kernel copy elsewhere (ext4). The file is synced, the
//! partials' sessions are deleted in the same transaction that records the final's offset,
//! and the final then completes like any upload (a rename into a local hot tier). A crash
//! during local assembly leaves the final unfinished (it expires) and the first partial
//! without its bytes: the client starts the upload again. On S3 the partials stay intact
//! until the final's source object is complete (see [`multipart`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use sluice_storage::{Checkpoint, FileWrite, keys};

use crate::checksum::Checksum;
use crate::model::{Asset, Principal, UploadConcat, UploadState, upload_metadata_filename};
use crate::sniff::{Sniffer, WINDOW};
use crate::{Engine, Error, Result, store};

mod body;
mod multipart;

pub(crate) use body::{Commit, Kind, Rules, write_error};

/// How long a writer's lease on an upload lasts without renewal, and how often its holder's
/// timer renews it.
pub(crate) const LEASE: Duration = Duration::from_secs(10);
pub(crate) const LEASE_RENEW: Duration = Duration::from_secs(3);
/// The error of an asset whose upload had no bytes.
const EMPTY_UPLOAD: &str = "the upload is empty (Upload-Length: 0): there is no video to process";
/// Most partial uploads one final upload may name.
pub const MAX_CONCAT_PARTS: usize = 1000;

/// What a tus creation request asks for.
#[derive(Debug, Clone, Default)]
pub struct NewUploadSpec<'a> {
    /// `None`: `Upload-Defer-Length: 1`, declared by a later PATCH.
    pub length: Option<u64>,
    /// The raw `Upload-Metadata` header.
    pub metadata: Option<&'a str>,
    /// `Upload-Concat: partial`.
    pub partial: bool,
}

/// The write lease of one upload, held in the metadata store so that it excludes writers
/// in every gateway process. A timer renews it while it is held (a request waiting for a
/// slow client keeps it); when a renewal finds it taken, or cannot reach the database for
/// longer than the lease, the lease counts as lost: the holder stops at its next step and
/// touches nothing, and its offset commit (fenced by owner) would fail anyway. Released
/// when dropped, however the request ends.
pub(crate) struct UploadLease {
    engine: Engine,
    asset: String,
    owner: String,
    lost: Arc<AtomicBool>,
    renewer: tokio::task::JoinHandle<()>,
}

impl UploadLease {
    /// Is the lease still ours? (Its timer renews it; this reads what the timer found.)
    pub(crate) fn check(&self) -> Result<()> {
        if self.lost.load(Ordering::SeqCst) {
            Err(Error::UploadLocked(self.asset.clone()))
        } else {
            Ok(())
        }
    }

    /// The lease's owner token, for writes fenced by it.
    pub(crate) fn owner(&self) -> &str {
        &self.owner
    }

    /// Release now, so the client's next request (usually immediate) finds it free.
    pub(crate) async fn release(mut self) -> Result<()> {
        self.renewer.abort();
        let owner = std::mem::take(&mut self.owner);
        store::release_upload(&self.engine.inner.db, &self.asset, &owner).await
    }
}

impl Drop for UploadLease {
    /// Fallback for requests that end without `release` (a dropped connection cancels the
    /// handler mid-await): release in the background; the lease would expire anyway.
    fn drop(&mut self) {
        self.renewer.abort();
        if self.owner.is_empty() {
            return;
        }
        let (engine, asset, owner) = (
            self.engine.clone(),
            std::mem::take(&mut self.asset),
            std::mem::take(&mut self.owner),
        );
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = store::release_upload(&engine.inner.db, &asset, &owner).await {
                    tracing::warn!(
                        asset,
                        "could not release upload lease (it expires anyway): {e}"
                    );
                }
            });
        }
    }
}

/// Renew a held lease every `LEASE_RENEW` until aborted; mark it lost when another writer
/// has it, or when no renewal succeeded for a whole lease period.
async fn renew_on_timer(
    engine: Engine,
    tenant: String,
    asset: String,
    owner: String,
    lost: Arc<AtomicBool>,
) {
    let mut last_ok = std::time::Instant::now();
    loop {
        tokio::time::sleep(LEASE_RENEW).await;
        let now = engine.now_ms();
        let until = now + LEASE.as_millis() as i64;
        match store::lease_upload(&engine.inner.db, &tenant, &asset, &owner, now, until).await {
            Ok(true) => last_ok = std::time::Instant::now(),
            Ok(false) => break,
            Err(e) => {
                tracing::warn!(asset, "could not renew an upload's write lease: {e}");
                if last_ok.elapsed() + LEASE_RENEW >= LEASE {
                    break;
                }
            }
        }
    }
    lost.store(true, Ordering::SeqCst);
}

/// The quota error for an upload of deferred length that would reach `upload_bytes`, if
/// it does not fit (`quota`: the tenant's quota and the bytes used without this upload).
pub(crate) fn over_quota(quota: Option<(u64, u64)>, upload_bytes: u64) -> Option<Error> {
    let (q, used) = quota?;
    (used.saturating_add(upload_bytes) > q).then_some(Error::QuotaExceeded {
        used,
        requested: upload_bytes,
        quota: q,
    })
}

/// Records a tus PATCH's checkpoints, fenced by its lease: the offset of a local file, or
/// the parts, tail and offset of a multipart upload.
struct TusCommit<'a> {
    engine: &'a Engine,
    tenant: &'a str,
    asset: &'a str,
    lease: &'a UploadLease,
}

impl Commit for TusCommit<'_> {
    async fn commit(&mut self, checkpoint: Checkpoint, _sha256: Option<&str>) -> Result<()> {
        let (engine, asset) = (self.engine, self.asset);
        match checkpoint {
            Checkpoint::File { offset } => {
                // Fenced: a request that lost its lease commits nothing.
                let db = &engine.inner.db;
                let owner = self.lease.owner();
                let expires_at = engine.upload_expiry();
                if !store::set_upload_offset(db, self.tenant, asset, owner, offset, expires_at)
                    .await?
                {
                    return Err(Error::UploadLocked(asset.to_string()));
                }
                Ok(())
            }
            Checkpoint::Multipart {
                parts,
                tail,
                offset,
            } => {
                let parts: Vec<store::UploadPart> = parts
                    .into_iter()
                    .map(|p| store::UploadPart {
                        index: p.index as i64,
                        etag: p.etag,
                        size: p.size,
                    })
                    .collect();
                engine
                    .commit_parts(asset, self.lease, &parts, tail.as_deref(), offset)
                    .await
            }
        }
    }
}

impl Engine {
    /// For an upload of deferred length (its size is not reserved yet): the tenant's
    /// quota and current usage, so the bytes are charged as they arrive.
    pub(crate) async fn deferred_quota(
        &self,
        tenant: &str,
        state: &UploadState,
    ) -> Result<Option<(u64, u64)>> {
        if state.length.is_some() {
            return Ok(None);
        }
        Ok(match store::storage_usage(&self.inner.db, tenant).await? {
            (Some(q), used) => Some((q, used)),
            (None, _) => None,
        })
    }

    /// When an upload touched now expires.
    pub(crate) fn upload_expiry(&self) -> i64 {
        self.now_ms() + (self.inner.config.uploads.expire_after_s as i64).saturating_mul(1000)
    }

    /// The upload's state, refusing expired ones (they are swept soon).
    async fn live_upload(&self, tenant: &str, asset: &str) -> Result<(UploadState, bool)> {
        let (state, complete) = store::get_upload(&self.inner.db, tenant, asset)
            .await?
            .ok_or_else(|| Error::not_found("upload", asset))?;
        if !complete && state.expires_at.is_some_and(|e| e < self.now_ms()) {
            return Err(Error::Expired(asset.to_string()));
        }
        Ok((state, complete))
    }

    /// Delete expired unfinished uploads: their bytes, session and asset. Returns how many.
    pub async fn sweep_expired_uploads(&self) -> Result<usize> {
        let mut swept = 0;
        for (asset, tenant) in store::expired_uploads(&self.inner.db, self.now_ms(), 100).await? {
            // A request writing it right now holds the lease: leave it for the next sweep.
            let Ok(lease) = self.lease_upload(&tenant, &asset).await else {
                continue;
            };
            // Every byte committed but finishing cut short (and the client, told the upload
            // was whole, never came back): finish it rather than drop it. (A final whose
            // partials were consumed is whole too.) An unused partial is not finished: it
            // expires like any unfinished upload.
            let whole = match store::get_upload(&self.inner.db, &tenant, &asset).await {
                Ok(Some((state, complete))) => state.awaits_finish(complete),
                Ok(None) => false,
                Err(e) => {
                    tracing::warn!(asset, "could not read an expired upload: {e}");
                    continue;
                }
            };
            if whole {
                match self.finish_whole(&tenant, &asset, &lease).await {
                    Ok(()) => tracing::info!(asset, "stalled upload completed by the sweeper"),
                    Err(e) => tracing::warn!(asset, "could not complete a whole upload: {e}"),
                }
                let _ = lease.release().await;
                continue;
            }
            // One upload that cannot be deleted now does not stop the sweep of the others.
            match self.delete_upload_and_bytes(&tenant, &asset).await {
                Ok(()) => {
                    tracing::info!(asset, tenant, "expired upload swept");
                    swept += 1;
                }
                Err(e) => tracing::warn!(asset, "could not sweep an expired upload: {e}"),
            }
            let _ = lease.release().await;
        }
        if swept > 0 {
            metrics::counter!("sluice_uploads_expired_total").increment(swept as u64);
        }
        self.sweep_orphan_scratch().await;
        // Raw-upload idempotency keys expire on the same beat.
        let keys = store::sweep_idempotency_keys(&self.inner.db, self.now_ms()).await?;
        if keys > 0 {
            tracing::debug!(keys, "expired idempotency keys swept");
        }
        Ok(swept)
    }

    /// Scratch files with no upload session: a process died between creating an upload's
    /// file and recording its session (or after deleting the session). Only files older
    /// than the upload expiry go, so a file whose session is being created right now stays.
    async fn sweep_orphan_scratch(&self) {
        let dir = &self.inner.uploads_dir;
        let max_age = Duration::from_secs(self.inner.config.uploads.expire_after_s);
        let Ok(mut entries) = tokio::fs::read_dir(dir).await else {
            return;
        };
        let mut checked = 0;
        while let Ok(Some(entry)) = entries.next_entry().await {
            let old = entry
                .metadata()
                .await
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > max_age);
            let name = entry.file_name();
            let Some(asset) = name.to_str().filter(|n| ulid::Ulid::from_string(n).is_ok()) else {
                continue;
            };
            if !old {
                continue;
            }
            checked += 1;
            if checked > 1000 {
                break; // the rest next time
            }
            match store::upload_session_exists(&self.inner.db, asset).await {
                Ok(false) => {
                    if tokio::fs::remove_file(entry.path()).await.is_ok() {
                        tracing::info!(asset, "orphan upload scratch file removed");
                    }
                }
                Ok(true) => {}
                Err(e) => {
                    tracing::warn!("could not check an upload scratch file: {e}");
                    return;
                }
            }
        }
    }

    /// Delete an unfinished upload (under its lease): its bytes wherever they are (the
    /// multipart upload is aborted first, so a failure leaves the session for a retry),
    /// then its session and asset.
    async fn delete_upload_and_bytes(&self, tenant: &str, asset: &str) -> Result<()> {
        if self.inner.storage.resumable_multipart() {
            let mp = store::upload_multipart(&self.inner.db, tenant, asset).await?;
            self.discard_multipart(tenant, asset, mp.as_ref()).await?;
            // A final whose partials were consumed (their sessions are gone) still owns
            // their objects until it completes.
            if let Some((state, false)) = store::get_upload(&self.inner.db, tenant, asset).await?
                && let UploadConcat::Final(partials) = &state.concat
                && state.is_full()
            {
                self.drop_partial_objects(tenant, partials).await?;
            }
        }
        store::delete_upload(&self.inner.db, tenant, asset).await?;
        let path = self.upload_path(asset);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(&path, e)),
        }
    }

    pub(crate) fn upload_path(&self, asset: &str) -> PathBuf {
        self.inner.uploads_dir.join(asset)
    }

    /// Take the write lease of an upload: 423 while another request (in any gateway)
    /// holds it, 404 when there is no such upload.
    pub(crate) async fn lease_upload(&self, tenant: &str, asset: &str) -> Result<UploadLease> {
        let owner = crate::random_token(12);
        let now = self.now_ms();
        let until = now + LEASE.as_millis() as i64;
        if !store::lease_upload(&self.inner.db, tenant, asset, &owner, now, until).await? {
            return match store::get_upload(&self.inner.db, tenant, asset).await? {
                Some(_) => Err(Error::UploadLocked(asset.to_string())),
                None => Err(Error::not_found("upload", asset)),
            };
        }
        let lost = Arc::new(AtomicBool::new(false));
        let renewer = tokio::spawn(renew_on_timer(
            self.clone(),
            tenant.to_string(),
            asset.to_string(),
            owner.clone(),
            lost.clone(),
        ));
        Ok(UploadLease {
            engine: self.clone(),
            asset: asset.to_string(),
            owner,
            lost,
            renewer,
        })
    }

    /// tus creation: a new asset in `uploading` with an empty upload of `length` bytes.
    pub async fn create_upload(
        &self,
        who: &Principal,
        length: u64,
        metadata: Option<&str>,
    ) -> Result<Asset> {
        let spec = NewUploadSpec {
            length: Some(length),
            metadata,
            partial: false,
        };
        let id = self.create_upload_with(who, &spec).await?;
        let tenant = self.upload_tenant_of(who)?;
        store::get_asset(&self.inner.db, tenant, &id)
            .await?
            .ok_or_else(|| Error::not_found("asset", &id))
    }

    /// Check a length a client declares (at creation or, when deferred, in a PATCH). An
    /// empty whole file is accepted and then fails at once (see `finish_empty_upload`).
    fn check_length(&self, length: u64) -> Result<()> {
        let max = self.inner.config.uploads.max_size;
        if length > max {
            return Err(Error::TooLarge { size: length, max });
        }
        Ok(())
    }

    /// tus creation with every option (deferred length, partial upload). Returns the
    /// upload id, which is also the asset id (a partial's asset stays hidden).
    pub async fn create_upload_with(
        &self,
        who: &Principal,
        spec: &NewUploadSpec<'_>,
    ) -> Result<String> {
        let tenant = self.upload_tenant_of(who)?;
        if let Some(length) = spec.length {
            self.check_length(length)?;
        }
        let filename = match spec.metadata {
            Some(m) => upload_metadata_filename(m).map_err(Error::InvalidInput)?,
            None => None,
        };
        let id = ulid::Ulid::new().to_string();
        let path = self.upload_path(&id);
        // On S3 the bytes go to a multipart upload, opened below (also while the length is
        // deferred); locally, to this file.
        let multipart = self.inner.storage.resumable_multipart();
        if !multipart {
            FileWrite::create(&path).await.map_err(write_error)?;
        }
        let concat = if spec.partial {
            UploadConcat::Partial
        } else {
            UploadConcat::None
        };
        let created = store::insert_upload(
            &self.inner.db,
            store::NewUpload {
                tenant,
                asset: &id,
                length: spec.length,
                size: spec.length,
                already_counted: 0,
                concat: &concat,
                metadata: spec.metadata.filter(|m| !m.trim().is_empty()),
                filename: filename.as_deref(),
                device: who.device(),
                now: self.now_ms(),
                expires_at: self.upload_expiry(),
            },
        )
        .await;
        if let Err(e) = created {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(e);
        }
        if multipart
            && spec.length != Some(0)
            && let Err(e) = self.open_multipart(tenant, &id).await
        {
            let _ = store::delete_upload(&self.inner.db, tenant, &id).await;
            return Err(e);
        }
        metrics::counter!("sluice_uploads_created_total").increment(1);
        if spec.length == Some(0) && !spec.partial {
            self.finish_empty_upload(tenant, &id).await?;
        }
        Ok(id)
    }

    /// A device may only touch its own uploads; a tenant key any of its tenant's.
    async fn check_upload_owner(&self, who: &Principal, asset: &str) -> Result<()> {
        if let Some(device) = who.device()
            && store::asset_device(&self.inner.db, asset).await?.as_deref() != Some(device)
        {
            return Err(Error::not_found("upload", asset));
        }
        Ok(())
    }

    /// tus HEAD: the committed offset.
    pub async fn upload_state(&self, who: &Principal, asset: &str) -> Result<UploadState> {
        let tenant = self.upload_tenant_of(who)?;
        self.check_upload_owner(who, asset).await?;
        Ok(self.live_upload(tenant, asset).await?.0)
    }

    /// tus PATCH: append the body at `offset`. Bytes received before a broken connection
    /// are kept (that is what makes the upload resumable). Returns the new state.
    pub async fn append_upload<S, E>(
        &self,
        who: &Principal,
        asset: &str,
        offset: u64,
        body: S,
    ) -> Result<UploadState>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        self.append_upload_checked(who, asset, offset, body, None)
            .await
    }

    /// Like [`Engine::append_upload`], keeping the body only if it matches `checksum`
    /// (tus checksum extension). A body cut short cannot be verified and is discarded.
    pub async fn append_upload_checked<S, E>(
        &self,
        who: &Principal,
        asset: &str,
        offset: u64,
        body: S,
        checksum: Option<&Checksum>,
    ) -> Result<UploadState>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        self.append_upload_declaring(who, asset, offset, body, checksum, None)
            .await
    }

    /// Like [`Engine::append_upload_checked`], with the `Upload-Length` a PATCH carries:
    /// it sets a deferred length (once), and must match a known one.
    pub async fn append_upload_declaring<S, E>(
        &self,
        who: &Principal,
        asset: &str,
        offset: u64,
        mut body: S,
        checksum: Option<&Checksum>,
        declared_length: Option<u64>,
    ) -> Result<UploadState>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let tenant = self.upload_tenant_of(who)?.to_string();
        self.check_upload_owner(who, asset).await?;
        let lease = self.lease_upload(&tenant, asset).await?;
        let result = self
            .append_leased(
                &tenant,
                asset,
                offset,
                &mut body,
                &lease,
                checksum,
                declared_length,
            )
            .await;
        // Released on every path, before answering: clients PATCH again immediately.
        let released = lease.release().await;
        let state = result?;
        released?;
        Ok(state)
    }

    #[allow(clippy::too_many_arguments)]
    async fn append_leased<S, E>(
        &self,
        tenant: &str,
        asset: &str,
        offset: u64,
        body: &mut S,
        lease: &UploadLease,
        checksum: Option<&Checksum>,
        declared_length: Option<u64>,
    ) -> Result<UploadState>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let (mut state, complete) = self.live_upload(tenant, asset).await?;
        if matches!(state.concat, UploadConcat::Final(_)) {
            return Err(Error::Forbidden(
                "a final upload is assembled from its partial uploads and takes no PATCH",
            ));
        }
        let partial = state.concat == UploadConcat::Partial;
        let multipart = store::upload_multipart(&self.inner.db, tenant, asset).await?;
        if state.awaits_finish(complete) && offset == state.offset {
            // Every byte is committed but finishing was cut short: finish now.
            self.finish_whole(tenant, asset, lease).await?;
            return Ok(UploadState {
                expires_at: None,
                ..state
            });
        }
        if complete || state.is_full() {
            return Err(Error::Conflict(format!(
                "upload {asset} is already complete"
            )));
        }
        if offset != state.offset {
            return Err(Error::OffsetMismatch {
                expected: state.offset,
                got: offset,
            });
        }
        match (state.length, declared_length) {
            (Some(known), Some(declared)) if known != declared => {
                return Err(Error::InvalidInput(format!(
                    "Upload-Length {declared} differs from the upload's length {known}"
                )));
            }
            (None, Some(declared)) => {
                self.check_length(declared)?;
                if declared < state.offset {
                    return Err(Error::InvalidInput(format!(
                        "Upload-Length {declared} is less than the {} bytes already received",
                        state.offset
                    )));
                }
                if declared == 0 && !partial {
                    return self
                        .declare_empty(tenant, asset, state, body, multipart.as_ref())
                        .await;
                }
                store::set_upload_length(&self.inner.db, tenant, asset, declared).await?;
                state.length = Some(declared);
            }
            _ => {}
        }
        let rules = body::Rules {
            tenant,
            asset,
            length: state.length,
            quota: self.deferred_quota(tenant, &state).await?,
            sniff: !partial,
            kind: body::Kind::Tus { checksum },
        };
        let mut commit = TusCommit {
            engine: self,
            tenant,
            asset,
            lease,
        };
        let is_multipart = multipart.is_some();
        let received = match multipart {
            Some(mp) => {
                let writer = self.multipart_writer(tenant, asset, &state, mp).await?;
                self.receive_body(rules, body, writer, lease, &mut commit)
                    .await?
            }
            None => {
                let writer = FileWrite::open(&self.upload_path(asset), state.offset)
                    .await
                    .map_err(body::write_error)?;
                self.receive_body(rules, body, writer, lease, &mut commit)
                    .await?
            }
        };
        let written = received.offset;
        let full = state.length == Some(written);
        // A full partial waits for its final upload; anything else full is an asset now.
        if full && !partial {
            if is_multipart {
                self.finish_multipart(tenant, asset, lease).await?;
            } else {
                self.finish_upload(tenant, asset).await?;
            }
        }
        let expires_at = self.upload_expiry();
        Ok(UploadState {
            offset: written,
            expires_at: (!full || partial).then_some(if written != state.offset {
                expires_at
            } else {
                state.expires_at.unwrap_or(expires_at)
            }),
            ..state
        })
    }

    /// All bytes are in: move the file into the hot tier as the asset's source, then queue
    /// the transcode.
    ///
    /// Idempotent, so that an upload whose last bytes were committed but whose finishing
    /// was cut short (crash, queue error, shutdown) is finished later, by the client's
    /// repeated PATCH or by the sweeper: a file already moved is not moved again, and a
    /// job already queued for the asset is not queued twice.
    pub(crate) async fn finish_upload(&self, tenant: &str, asset: &str) -> Result<()> {
        let path = self.upload_path(asset);
        let key = keys::source(tenant, asset);
        match tokio::fs::metadata(&path).await {
            Ok(_) => {
                self.inner.storage.put_file_move(&key, &path).await?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Moved by an earlier attempt: the source must be there.
                self.inner.storage.head(&key).await?;
            }
            Err(e) => return Err(Error::io(&path, e)),
        }
        let job_id = self.upload_job(tenant, asset).await?;
        store::complete_upload(&self.inner.db, asset, &job_id, self.now_ms()).await?;
        tracing::info!(asset, job = %job_id, "upload complete, transcode queued");
        Ok(())
    }

    /// Finish an upload whose every byte is committed (`UploadState::awaits_finish`), under
    /// its lease: complete its S3 multipart upload, or move its file into the hot tier (the
    /// local tier, and raw uploads on any tier). Idempotent.
    pub(crate) async fn finish_whole(
        &self,
        tenant: &str,
        asset: &str,
        lease: &UploadLease,
    ) -> Result<()> {
        if store::upload_multipart(&self.inner.db, tenant, asset)
            .await?
            .is_some()
        {
            self.finish_multipart(tenant, asset, lease).await
        } else {
            self.finish_upload(tenant, asset).await
        }
    }

    /// The transcode job of a finished upload: the one an interrupted earlier finish
    /// queued already (never a second), or a new one.
    pub(crate) async fn upload_job(&self, tenant: &str, asset: &str) -> Result<String> {
        match store::asset_job(&self.inner.db, tenant, asset).await? {
            Some(job) => Ok(job),
            None => {
                self.enqueue_transcode(tenant, asset, crate::JobClass::Upload)
                    .await
            }
        }
    }

    /// The sniffer refused an upload: delete it (session, asset and bytes) under the lease
    /// the caller holds.
    pub(crate) async fn refuse_upload(&self, tenant: &str, asset: &str, what: &str) -> Result<()> {
        self.delete_upload_and_bytes(tenant, asset).await?;
        metrics::counter!("sluice_uploads_refused_total", "reason" => "unsupported_media")
            .increment(1);
        tracing::info!(asset, what, "upload refused: not media");
        Ok(())
    }

    /// A deferred whole upload declared empty (`Upload-Length: 0` on its first PATCH): like
    /// an empty one at creation, it fails at once without a job. The body must be empty.
    async fn declare_empty<S, E>(
        &self,
        tenant: &str,
        asset: &str,
        state: UploadState,
        body: &mut S,
        multipart: Option<&store::MultipartRow>,
    ) -> Result<UploadState>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        while let Some(chunk) = body.next().await {
            if !chunk.map_err(|e| Error::Body(e.to_string()))?.is_empty() {
                return Err(Error::InvalidInput(
                    "the request carries bytes past the declared Upload-Length 0".into(),
                ));
            }
        }
        store::set_upload_length(&self.inner.db, tenant, asset, 0).await?;
        if multipart.is_some() {
            self.discard_multipart(tenant, asset, multipart).await?;
        }
        self.finish_empty_upload(tenant, asset).await?;
        Ok(UploadState {
            length: Some(0),
            expires_at: None,
            ..state
        })
    }

    /// A zero-length upload is complete the moment it is created, and there is nothing to
    /// transcode: the (empty) source is kept like any other, and the asset fails at once
    /// with a clear message, without a job.
    async fn finish_empty_upload(&self, tenant: &str, asset: &str) -> Result<()> {
        let key = keys::source(tenant, asset);
        if self.inner.storage.resumable_multipart() {
            self.inner.storage.put(&key, Bytes::new()).await?;
        } else {
            let path = self.upload_path(asset);
            self.inner.storage.put_file_move(&key, &path).await?;
        }
        store::complete_empty_upload(&self.inner.db, asset, EMPTY_UPLOAD, self.now_ms()).await?;
        tracing::info!(asset, "zero-length upload: asset failed");
        self.emit_asset(tenant, asset, "asset.failed").await;
        Ok(())
    }

    /// tus termination: drop an unfinished upload and its asset.
    pub async fn terminate_upload(&self, who: &Principal, asset: &str) -> Result<()> {
        let tenant = self.upload_tenant_of(who)?;
        self.check_upload_owner(who, asset).await?;
        let lease = self.lease_upload(tenant, asset).await?;
        let complete = store::get_upload(&self.inner.db, tenant, asset)
            .await?
            .is_some_and(|(_, complete)| complete);
        if complete {
            lease.release().await?;
            return Err(Error::Conflict(format!(
                "upload {asset} is complete; it can no longer be terminated"
            )));
        }
        self.delete_upload_and_bytes(tenant, asset).await?;
        lease.release().await // a no-op once the row is gone
    }

    /// tus concatenation: create the final upload from complete partial uploads of the
    /// caller's tenant, in order, and complete it at once (its asset is queued). Each
    /// partial is consumed: its session disappears. `declared_length`, if the client sent
    /// one, must be the sum of the partials.
    pub async fn create_final_upload(
        &self,
        who: &Principal,
        partials: &[String],
        metadata: Option<&str>,
        declared_length: Option<u64>,
    ) -> Result<Asset> {
        let tenant = self.upload_tenant_of(who)?.to_string();
        if partials.is_empty() {
            return Err(Error::InvalidInput(
                "Upload-Concat: final names no partial upload".into(),
            ));
        }
        if partials.len() > MAX_CONCAT_PARTS {
            return Err(Error::InvalidInput(format!(
                "Upload-Concat: final names {} partial uploads; at most {MAX_CONCAT_PARTS}",
                partials.len()
            )));
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = partials.iter().find(|p| !seen.insert(p.as_str())) {
            return Err(Error::InvalidInput(format!(
                "Upload-Concat: final names partial upload {dup} twice"
            )));
        }
        // A device concatenates only its own partials (like it patches only its uploads).
        for p in partials {
            self.check_upload_owner(who, p).await?;
        }
        let filename = match metadata {
            Some(m) => upload_metadata_filename(m).map_err(Error::InvalidInput)?,
            None => None,
        };
        // Hold every partial's lease: no PATCH, DELETE, sweep or other final touches them
        // while they are checked and assembled. Released on every path, before answering.
        let mut leases = Vec::with_capacity(partials.len());
        let result = self
            .concat_leased(
                &tenant,
                partials,
                metadata,
                filename.as_deref(),
                declared_length,
                who.device(),
                &mut leases,
            )
            .await;
        for lease in leases {
            if let Err(e) = lease.release().await {
                tracing::warn!("could not release a partial upload's lease: {e}");
            }
        }
        let id = result?;
        store::get_asset(&self.inner.db, &tenant, &id)
            .await?
            .ok_or_else(|| Error::not_found("asset", &id))
    }

    #[allow(clippy::too_many_arguments)]
    async fn concat_leased(
        &self,
        tenant: &str,
        partials: &[String],
        metadata: Option<&str>,
        filename: Option<&str>,
        declared_length: Option<u64>,
        device: Option<&str>,
        leases: &mut Vec<UploadLease>,
    ) -> Result<String> {
        let tenant = tenant.to_string();
        let mut lengths = Vec::with_capacity(partials.len());
        for id in partials {
            let lease = self.lease_upload(&tenant, id).await?;
            let (state, _) = self.live_upload(&tenant, id).await?;
            leases.push(lease);
            if state.concat != UploadConcat::Partial {
                return Err(Error::InvalidInput(format!(
                    "upload {id} is not a partial upload (create it with \
                     'Upload-Concat: partial')"
                )));
            }
            match state.length {
                Some(l) if l == state.offset => lengths.push(l),
                Some(l) => {
                    return Err(Error::InvalidInput(format!(
                        "partial upload {id} is not complete: {} of {l} bytes received",
                        state.offset
                    )));
                }
                None => {
                    return Err(Error::InvalidInput(format!(
                        "partial upload {id} is not complete: its length is still deferred"
                    )));
                }
            }
        }
        let total: u64 = lengths.iter().sum();
        self.check_length(total)?;
        if let Some(d) = declared_length.filter(|d| *d != total) {
            return Err(Error::InvalidInput(format!(
                "Upload-Length {d} differs from the {total} bytes of the partial uploads"
            )));
        }

        let id = ulid::Ulid::new().to_string();
        let concat = UploadConcat::Final(partials.to_vec());
        let multipart = self.inner.storage.resumable_multipart();
        // On S3 the final expires soon: its lease (taken right after the insert, well
        // within the lease period) keeps the sweeper away while it is assembled, so only
        // a gateway that died half-way leaves it to a sweep.
        let expires_at = if multipart {
            self.now_ms() + LEASE.as_millis() as i64
        } else {
            self.upload_expiry()
        };
        store::insert_upload(
            &self.inner.db,
            store::NewUpload {
                tenant: &tenant,
                asset: &id,
                length: Some(total),
                // The partials already count these bytes until they are consumed below.
                size: Some(total),
                already_counted: total,
                concat: &concat,
                metadata: metadata.filter(|m| !m.trim().is_empty()),
                filename,
                device,
                now: self.now_ms(),
                expires_at,
            },
        )
        .await?;
        // Its own lease keeps the sweeper away until it is complete.
        let final_lease = self.lease_upload(&tenant, &id).await?;
        if multipart {
            let assembled = self
                .assemble_multipart(&tenant, &id, partials, &lengths, leases, &final_lease)
                .await;
            if let Err(e) = assembled {
                // The partials are untouched: drop the final and whatever it wrote.
                if let Err(e2) = self.delete_upload_and_bytes(&tenant, &id).await {
                    tracing::warn!(asset = %id, "could not drop the failed final upload: {e2}");
                }
                drop(final_lease);
                return Err(e);
            }
            store::consume_partials(&self.inner.db, &tenant, &id, total, partials).await?;
            let finished = self.finish_multipart(&tenant, &id, &final_lease).await;
            final_lease.release().await?;
            finished?;
            metrics::counter!("sluice_uploads_concatenated_total").increment(1);
            tracing::info!(asset = %id, parts = partials.len(), bytes = total, "partial uploads concatenated");
            return Ok(id);
        }
        let paths: Vec<PathBuf> = partials.iter().map(|p| self.upload_path(p)).collect();
        let dest = self.upload_path(&id);
        // The partials were not sniffed (they start mid-file): the final's head is.
        let assembled = match sniff_head(&paths, total).await {
            Ok(()) => self.assemble(&dest, &paths, &lengths, leases).await,
            Err(e) => Err(e),
        };
        if let Err(e) = assembled {
            // The partials are intact again: drop the final so nothing half-made remains.
            if let Err(e2) = store::delete_upload(&self.inner.db, &tenant, &id).await {
                tracing::warn!(asset = %id, "could not drop the failed final upload: {e2}");
            }
            drop(final_lease);
            return Err(e);
        }
        store::consume_partials(&self.inner.db, &tenant, &id, total, partials).await?;
        for path in &paths[1..] {
            match tokio::fs::remove_file(path).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(path = %path.display(), "could not remove partial: {e}"),
            }
        }
        let finished = self.finish_upload(&tenant, &id).await;
        final_lease.release().await?;
        finished?;
        metrics::counter!("sluice_uploads_concatenated_total").increment(1);
        tracing::info!(asset = %id, parts = partials.len(), bytes = total, "partial uploads concatenated");
        Ok(id)
    }

    /// Build `dest` from the partial files, in order: rename the first, append the others
    /// with `copy_file_range`, sync. On failure the first partial's file is put back.
    async fn assemble(
        &self,
        dest: &std::path::Path,
        parts: &[PathBuf],
        lengths: &[u64],
        leases: &[UploadLease],
    ) -> Result<()> {
        let first = parts[0].clone();
        tokio::fs::rename(&first, dest)
            .await
            .map_err(|e| Error::io(&first, e))?;
        let result = self.append_parts(dest, parts, lengths, leases).await;
        if result.is_err() {
            // Best effort: give the first partial its bytes back, so the client may retry.
            let (dest, first, len) = (dest.to_path_buf(), first, lengths[0]);
            let _ = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&dest)?
                    .set_len(len)?;
                std::fs::rename(&dest, &first)
            })
            .await;
        }
        result
    }

    async fn append_parts(
        &self,
        dest: &std::path::Path,
        parts: &[PathBuf],
        lengths: &[u64],
        leases: &[UploadLease],
    ) -> Result<()> {
        let io = |p: &std::path::Path| {
            let p = p.to_path_buf();
            move |e| Error::io(p, e)
        };
        // Bytes past a partial's committed length (none when it completed) are dropped.
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .open(dest)
            .await
            .map_err(io(dest))?
            .into_std()
            .await;
        file.set_len(lengths[0]).map_err(io(dest))?;
        for (path, &len) in parts.iter().zip(lengths).skip(1) {
            let (src_path, mut out) = (path.clone(), file);
            // std::io::copy between two files is copy_file_range(2) on Linux: no bytes pass
            // through this process (a reflink where the filesystem shares extents).
            let (res, back) = tokio::task::spawn_blocking(move || {
                use std::io::{Read, Seek};
                let res = (|| {
                    out.seek(std::io::SeekFrom::End(0))?;
                    let mut src = std::fs::File::open(&src_path)?.take(len);
                    std::io::copy(&mut src, &mut out)
                })();
                (res, out)
            })
            .await
            .map_err(|e| Error::io(path, std::io::Error::other(e)))?;
            file = back;
            let copied = res.map_err(io(path))?;
            if copied != len {
                return Err(Error::io(
                    path,
                    std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("partial file holds {copied} of its {len} bytes"),
                    ),
                ));
            }
            for lease in leases {
                lease.check()?;
            }
        }
        tokio::task::spawn_blocking(move || file.sync_data())
            .await
            .map_err(|e| Error::io(dest, std::io::Error::other(e)))?
            .map_err(io(dest))?;
        Ok(())
    }
}

/// Judge the head of a file made of `parts` (in order) as the content sniffer judges one
/// upload of `total` bytes: `UnsupportedMedia` when it is certainly not media.
async fn sniff_head(parts: &[PathBuf], total: u64) -> Result<()> {
    use tokio::io::AsyncReadExt;
    let mut sniffer = Sniffer::new(Vec::new(), Some(total));
    let mut left = WINDOW as u64;
    for path in parts {
        if left == 0 {
            break;
        }
        let mut buf = Vec::new();
        tokio::fs::File::open(path)
            .await
            .map_err(|e| Error::io(path, e))?
            .take(left)
            .read_to_end(&mut buf)
            .await
            .map_err(|e| Error::io(path, e))?;
        left -= buf.len() as u64;
        sniffer.feed(&buf).map_err(Error::UnsupportedMedia)?;
    }
    Ok(())
}
