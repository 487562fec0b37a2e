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

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use sluice_storage::keys;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use crate::checksum::Checksum;
use crate::model::{Asset, Principal, UploadState, upload_metadata_filename};
use crate::sniff::{Sniffer, WINDOW};
use crate::{Engine, Error, Result, store};

mod multipart;

/// How long a writer's lease on an upload lasts without renewal; renewed while bytes flow.
pub(crate) const LEASE: Duration = Duration::from_secs(10);
pub(crate) const LEASE_RENEW: Duration = Duration::from_secs(3);
/// The error of an asset whose upload had no bytes.
const EMPTY_UPLOAD: &str = "the upload is empty (Upload-Length: 0): there is no video to process";

/// The write lease of one upload, held in the metadata store so that it excludes writers
/// in every gateway process. Released when dropped, however the request ends.
pub(crate) struct UploadLease {
    engine: Engine,
    asset: String,
    owner: String,
}

impl UploadLease {
    /// Release now, so the client's next request (usually immediate) finds it free.
    pub(crate) async fn release(mut self) -> Result<()> {
        let owner = std::mem::take(&mut self.owner);
        store::release_upload(&self.engine.inner.db, &self.asset, &owner).await
    }
}

impl Drop for UploadLease {
    /// Fallback for requests that end without `release` (a dropped connection cancels the
    /// handler mid-await): release in the background; the lease would expire anyway.
    fn drop(&mut self) {
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

impl Engine {
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
            // Every byte committed on S3 but completing failed (and the client, told the
            // upload was whole, never came back): finish it rather than drop it.
            if let Some((state, false)) = store::get_upload(&self.inner.db, &tenant, &asset).await?
                && state.offset == state.length
                && state.length > 0
                && store::upload_multipart(&self.inner.db, &asset)
                    .await?
                    .is_some()
            {
                match self.finish_multipart(&tenant, &asset).await {
                    Ok(()) => tracing::info!(asset, "stalled upload completed by the sweeper"),
                    Err(e) => tracing::warn!(asset, "could not complete a whole upload: {e}"),
                }
                lease.release().await?;
                continue;
            }
            self.delete_upload_and_bytes(&tenant, &asset).await?;
            lease.release().await?;
            tracing::info!(asset, tenant, "expired upload swept");
            swept += 1;
        }
        if swept > 0 {
            metrics::counter!("sluice_uploads_expired_total").increment(swept as u64);
        }
        // Raw-upload idempotency keys expire on the same beat.
        let keys = store::sweep_idempotency_keys(&self.inner.db, self.now_ms()).await?;
        if keys > 0 {
            tracing::debug!(keys, "expired idempotency keys swept");
        }
        Ok(swept)
    }

    /// Delete an unfinished upload (under its lease): its bytes wherever they are (the
    /// multipart upload is aborted first, so a failure leaves the session for a retry),
    /// then its session and asset.
    async fn delete_upload_and_bytes(&self, tenant: &str, asset: &str) -> Result<()> {
        if let Some(mp) = store::upload_multipart(&self.inner.db, asset).await? {
            self.discard_multipart(tenant, asset, &mp).await?;
        }
        store::delete_upload(&self.inner.db, asset).await?;
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
        if !store::lease_upload(&self.inner.db, asset, &owner, now, until).await? {
            return match store::get_upload(&self.inner.db, tenant, asset).await? {
                Some(_) => Err(Error::UploadLocked(asset.to_string())),
                None => Err(Error::not_found("upload", asset)),
            };
        }
        Ok(UploadLease {
            engine: self.clone(),
            asset: asset.to_string(),
            owner,
        })
    }

    pub(crate) async fn renew_lease(&self, lease: &UploadLease) -> Result<()> {
        let now = self.now_ms();
        let until = now + LEASE.as_millis() as i64;
        if store::lease_upload(&self.inner.db, &lease.asset, &lease.owner, now, until).await? {
            Ok(())
        } else {
            Err(Error::UploadLocked(lease.asset.clone()))
        }
    }

    /// tus creation: a new asset in `uploading` with an empty upload of `length` bytes.
    pub async fn create_upload(
        &self,
        who: &Principal,
        length: u64,
        metadata: Option<&str>,
    ) -> Result<Asset> {
        let tenant = self.upload_tenant_of(who)?;
        let max = self.inner.config.uploads.max_size;
        if length > max {
            return Err(Error::TooLarge { size: length, max });
        }
        let filename = match metadata {
            Some(m) => upload_metadata_filename(m).map_err(Error::InvalidInput)?,
            None => None,
        };
        let id = ulid::Ulid::new().to_string();
        let path = self.upload_path(&id);
        // On S3 the bytes go to a multipart upload, opened below; locally, to this file.
        let multipart = self.inner.storage.resumable_multipart();
        if !multipart {
            tokio::fs::File::create(&path)
                .await
                .map_err(|e| Error::io(&path, e))?;
        }
        store::insert_upload(
            &self.inner.db,
            store::NewUpload {
                tenant,
                asset: &id,
                length,
                size: Some(length),
                metadata: metadata.filter(|m| !m.trim().is_empty()),
                filename: filename.as_deref(),
                device: who.device(),
                now: self.now_ms(),
                expires_at: self.upload_expiry(),
            },
        )
        .await
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&path);
        })?;
        if multipart
            && length > 0
            && let Err(e) = self.open_multipart(tenant, &id).await
        {
            let _ = store::delete_upload(&self.inner.db, &id).await;
            return Err(e);
        }
        metrics::counter!("sluice_uploads_created_total").increment(1);
        if length == 0 {
            self.finish_empty_upload(tenant, &id).await?;
        }
        store::get_asset(&self.inner.db, tenant, &id)
            .await?
            .ok_or_else(|| Error::not_found("asset", &id))
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
        mut body: S,
        checksum: Option<&Checksum>,
    ) -> Result<UploadState>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let tenant = self.upload_tenant_of(who)?.to_string();
        self.check_upload_owner(who, asset).await?;
        let lease = self.lease_upload(&tenant, asset).await?;
        let result = self
            .append_leased(&tenant, asset, offset, &mut body, &lease, checksum)
            .await;
        // Released on every path, before answering: clients PATCH again immediately.
        let released = lease.release().await;
        let state = result?;
        released?;
        Ok(state)
    }

    async fn append_leased<S, E>(
        &self,
        tenant: &str,
        asset: &str,
        offset: u64,
        body: &mut S,
        lease: &UploadLease,
        checksum: Option<&Checksum>,
    ) -> Result<UploadState>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let (state, complete) = self.live_upload(tenant, asset).await?;
        let multipart = store::upload_multipart(&self.inner.db, asset).await?;
        if let Some(mp) = multipart {
            if !complete && state.offset == state.length && offset == state.length {
                // Every byte is committed but completing failed half-way: finish now.
                self.finish_multipart(tenant, asset).await?;
                return Ok(UploadState {
                    expires_at: None,
                    ..state
                });
            }
            if complete || state.offset == state.length {
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
            return self
                .append_multipart(tenant, asset, state, mp, body, lease, checksum)
                .await;
        }
        if complete || state.offset == state.length {
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
        let path = self.upload_path(asset);
        let io = |e| Error::io(&path, e);
        // The leading bytes already stored, for the content sniffer (only while they are
        // within its window).
        let mut head = Vec::new();
        if state.offset < WINDOW as u64 {
            use tokio::io::AsyncReadExt;
            tokio::fs::File::open(&path)
                .await
                .map_err(io)?
                .take(state.offset)
                .read_to_end(&mut head)
                .await
                .map_err(io)?;
        }
        let mut sniffer = Sniffer::new(head, Some(state.length));
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .await
            .map_err(io)?;
        // Drop bytes past the committed offset left by a request that died before commit.
        file.set_len(state.offset).await.map_err(io)?;
        file.seek(std::io::SeekFrom::Start(state.offset))
            .await
            .map_err(io)?;

        let mut written = state.offset;
        let mut body_error = None;
        let mut too_long = false;
        let mut renewed = std::time::Instant::now();
        let mut hasher = checksum.map(Checksum::hasher);
        while let Some(chunk) = body.next().await {
            if renewed.elapsed() >= LEASE_RENEW {
                // Still ours? If not, nothing of this request is committed.
                if let Err(e) = self.renew_lease(lease).await {
                    file.set_len(state.offset).await.map_err(io)?;
                    return Err(e);
                }
                renewed = std::time::Instant::now();
            }
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    body_error = Some(e.to_string());
                    break;
                }
            };
            if written + chunk.len() as u64 > state.length {
                too_long = true;
                break;
            }
            if let Err(what) = sniffer.feed(&chunk) {
                drop(file);
                self.refuse_upload(tenant, asset, what).await?;
                return Err(Error::UnsupportedMedia(what));
            }
            file.write_all(&chunk).await.map_err(io)?;
            if let Some(h) = hasher.as_mut() {
                h.update(&chunk);
            }
            written += chunk.len() as u64;
        }
        if too_long {
            // Nothing of this request is committed.
            file.set_len(state.offset).await.map_err(io)?;
            return Err(Error::InvalidInput(format!(
                "the body runs past Upload-Length ({} bytes)",
                state.length
            )));
        }
        if let (Some(h), Some(c)) = (hasher, checksum) {
            let verdict = match &body_error {
                Some(e) => Some(Error::Body(format!(
                    "the request ended early ({e}) so its checksum cannot be verified; \
                     nothing of it was stored"
                ))),
                None if !h.matches(&c.expected) => Some(Error::ChecksumMismatch),
                None => None,
            };
            if let Some(err) = verdict {
                file.set_len(state.offset).await.map_err(io)?;
                metrics::counter!("sluice_upload_checksum_failures_total").increment(1);
                return Err(err);
            }
        }
        file.flush().await.map_err(io)?;
        file.sync_data().await.map_err(io)?;
        drop(file);
        let expires_at = self.upload_expiry();
        if written != state.offset {
            store::set_upload_offset(&self.inner.db, asset, written, expires_at).await?;
            metrics::counter!("sluice_upload_bytes_total").increment(written - state.offset);
        }
        if let Some(e) = body_error {
            tracing::info!(asset, offset = written, "upload request ended early: {e}");
        }
        if written == state.length {
            self.finish_upload(tenant, asset).await?;
        }
        Ok(UploadState {
            offset: written,
            expires_at: (written < state.length).then_some(if written != state.offset {
                expires_at
            } else {
                state.expires_at.unwrap_or(expires_at)
            }),
            ..state
        })
    }

    /// All bytes are in: move the file into the hot tier as the asset's source, then queue
    /// the transcode.
    pub(crate) async fn finish_upload(&self, tenant: &str, asset: &str) -> Result<()> {
        let path = self.upload_path(asset);
        let key = keys::source(tenant, asset);
        self.inner.storage.put_file_move(&key, &path).await?;
        let job_id = self
            .enqueue_transcode(tenant, asset, crate::JobClass::Upload)
            .await?;
        store::complete_upload(&self.inner.db, asset, &job_id, self.now_ms()).await?;
        tracing::info!(asset, job = %job_id, "upload complete, transcode queued");
        Ok(())
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
}
