//! Resumable uploads (the engine side of tus).
//!
//! Every request body (a tus PATCH on either tier, a raw upload) goes through one loop
//! ([`body`]) into one of the storage crate's resumable writers. On an S3 hot tier, bytes
//! stream into a multipart upload part by part ([`multipart`]). On the local hot tier (the
//! embedded default), the bytes of an unfinished upload live in
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
//!
//! Here: creation, PATCH, finishing, termination. Beside it: [`lease`] (one writer at a
//! time), [`body`] (the body loop), [`concat`], [`sweep`] (expiry), [`multipart`] (S3).

use std::path::PathBuf;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use sluice_storage::{Checkpoint, FileWrite, keys};

use crate::checksum::Checksum;
use crate::model::{Asset, Principal, UploadConcat, UploadMetadata, UploadState};
use crate::{Engine, Error, Result, store};

mod body;
mod concat;
mod lease;
mod multipart;
mod sweep;

pub(crate) use body::{Commit, Kind, Rules, write_error};
pub use concat::MAX_CONCAT_PARTS;
pub(crate) use lease::{LEASE, LEASE_RENEW, UploadLease};

/// The error of an asset whose upload had no bytes.
const EMPTY_UPLOAD: &str = "the upload is empty (Upload-Length: 0): there is no video to process";
/// What a tus creation request asks for.
#[derive(Debug, Clone, Default)]
pub struct NewUploadSpec<'a> {
    /// `None`: `Upload-Defer-Length: 1`, declared by a later PATCH.
    pub length: Option<u64>,
    /// `Upload-Metadata`, as the gateway read it.
    pub metadata: Option<&'a UploadMetadata>,
    /// `Upload-Concat: partial`.
    pub partial: bool,
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

    /// tus creation: a new asset in `uploading` with an empty upload of `length` bytes.
    pub async fn create_upload(
        &self,
        who: &Principal,
        length: u64,
        metadata: Option<&UploadMetadata>,
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
        let filename = spec.metadata.and_then(|m| m.filename.clone());
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
                metadata: spec
                    .metadata
                    .map(|m| m.header.as_str())
                    .filter(|m| !m.trim().is_empty()),
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
        if let Principal::Device {
            tenant_id,
            device_id,
        } = who
            && store::asset_device(&self.inner.db, tenant_id, asset)
                .await?
                .as_deref()
                != Some(device_id.as_str())
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
        self.queue_finished_upload(tenant, asset, crate::JobClass::Upload, "transcode")
            .await
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
        store::complete_empty_upload(&self.inner.db, tenant, asset, EMPTY_UPLOAD, self.now_ms())
            .await?;
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
}
