//! tus uploads into an S3 hot tier: bytes stream straight into a multipart upload of the
//! asset's source key, so no gateway needs a local copy and any gateway can continue.
//!
//! The state lives in the metadata store: the multipart upload id, every committed part
//! (index, ETag, size) and the *tail*, a small object holding the committed bytes past the
//! last whole part. A request's bytes fill a part-sized buffer (prefilled from the tail);
//! each full buffer becomes a part and is committed at once, so the offset is durable after
//! each part. When the request ends short of the upload's end, the rest of the buffer is
//! written as a new tail object (named by its end offset, so the committed one is never
//! overwritten) and committed with the offset: every byte the client was told about is
//! stored, as tus requires. Memory stays bounded by one part per request.
//!
//! Commits are conditional on the request still holding the upload's lease. Parts sent by a
//! request that dies before committing are simply sent again by the next request (a part
//! index uploaded twice keeps the last); S3 ignores parts a completion does not list.

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use sluice_storage::keys;

use super::{LEASE_RENEW, UploadLease};
use crate::checksum::Checksum;
use crate::model::UploadState;
use crate::sniff::{Sniffer, WINDOW};
use crate::store::{self, MultipartRow, UploadPart};
use crate::{Engine, Error, Result};

impl Engine {
    /// The part size of multipart uploads (S3 hot tier).
    fn part_size(&self) -> usize {
        self.inner
            .config
            .storage
            .s3
            .as_ref()
            .map_or(8 << 20, |s| s.part_size as usize)
    }

    /// Open the multipart upload a new tus upload streams into.
    pub(super) async fn open_multipart(&self, tenant: &str, asset: &str) -> Result<()> {
        let key = keys::source(tenant, asset);
        let id = self.inner.storage.create_multipart(&key).await?;
        if let Err(e) = store::set_upload_multipart(&self.inner.db, asset, &id).await {
            let _ = self.inner.storage.abort_multipart(&key, &id).await;
            return Err(e);
        }
        Ok(())
    }

    /// Drop the S3 side of an unfinished upload: abort its multipart upload (freeing the
    /// parts), delete its tail objects, and the source object in case a completion went
    /// through but was never recorded. Safe to repeat.
    pub(super) async fn discard_multipart(
        &self,
        tenant: &str,
        asset: &str,
        mp: &MultipartRow,
    ) -> Result<()> {
        let storage = &self.inner.storage;
        storage
            .abort_multipart(&keys::source(tenant, asset), &mp.multipart_id)
            .await?;
        storage
            .delete_prefix(&keys::upload_prefix(tenant, asset))
            .await?;
        // Only when it exists: on some stores (Garage) deleting a key also drops the
        // multipart uploads in progress on it, which would hide a failed abort.
        let source = keys::source(tenant, asset);
        if storage.head(&source).await.is_ok() {
            storage.delete(&source).await?;
        }
        metrics::counter!("sluice_upload_multipart_aborted_total").increment(1);
        Ok(())
    }

    /// Commit under the lease, or fail with `UploadLocked` when another request took it.
    async fn commit_parts(
        &self,
        asset: &str,
        lease: &UploadLease,
        parts: &[UploadPart],
        tail: Option<&str>,
        offset: u64,
    ) -> Result<()> {
        let ok = store::commit_upload_parts(
            &self.inner.db,
            asset,
            &lease.owner,
            parts,
            tail,
            offset,
            self.upload_expiry(),
        )
        .await?;
        if !ok {
            return Err(Error::UploadLocked(asset.to_string()));
        }
        metrics::counter!("sluice_upload_parts_total").increment(parts.len() as u64);
        Ok(())
    }

    /// Best-effort removal of a tail object no longer referenced (a leftover is deleted
    /// with the upload's prefix at the end anyway).
    async fn drop_tail(&self, key: Option<&str>) {
        if let Some(k) = key
            && let Err(e) = self.inner.storage.delete(k).await
        {
            tracing::warn!(key = k, "could not delete an old upload tail: {e}");
        }
    }

    /// tus PATCH on an S3 hot tier (see the module docs). `state` was read under `lease`.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn append_multipart<S, E>(
        &self,
        tenant: &str,
        asset: &str,
        state: UploadState,
        mp: MultipartRow,
        body: &mut S,
        lease: &UploadLease,
        checksum: Option<&Checksum>,
    ) -> Result<UploadState>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let storage = &self.inner.storage;
        let source = keys::source(tenant, asset);
        let part_size = self.part_size();
        let parts_bytes: u64 = mp.parts.iter().map(|p| p.size).sum();
        // Known on S3: creation refuses deferred lengths there.
        let length = state.length.unwrap_or(0);

        // The buffer starts with the committed tail: the next part begins with it.
        let mut buf = BytesMut::with_capacity(part_size);
        if let Some(tail) = &mp.tail_key {
            buf.extend_from_slice(&storage.get_bytes(tail).await?);
        }
        if parts_bytes + buf.len() as u64 != state.offset {
            return Err(Error::Conflict(format!(
                "upload {asset} is inconsistent: {} bytes in parts and tail, offset {}",
                parts_bytes + buf.len() as u64,
                state.offset
            )));
        }
        let head = if state.offset < WINDOW as u64 && mp.parts.is_empty() {
            buf.to_vec()
        } else {
            Vec::new()
        };
        let mut sniffer = Sniffer::new(head, state.length);

        let mut next_index = mp.parts.len() as i64;
        // Committed so far by this request, and parts sent but not yet committed (with a
        // checksum, nothing is committed before the whole body is verified).
        let mut committed = state.offset;
        let mut committed_tail = mp.tail_key.clone();
        let mut pending: Vec<UploadPart> = Vec::new();
        let mut received = state.offset;
        let mut body_error = None;
        let mut too_long = false;
        let mut renewed = std::time::Instant::now();
        let mut hasher = checksum.map(Checksum::hasher);

        while let Some(chunk) = body.next().await {
            if renewed.elapsed() >= LEASE_RENEW {
                self.renew_lease(lease).await?;
                renewed = std::time::Instant::now();
            }
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    body_error = Some(e.to_string());
                    break;
                }
            };
            if received + chunk.len() as u64 > length {
                too_long = true;
                break;
            }
            if let Err(what) = sniffer.feed(&chunk) {
                self.refuse_upload(tenant, asset, what).await?;
                return Err(Error::UnsupportedMedia(what));
            }
            if let Some(h) = hasher.as_mut() {
                h.update(&chunk);
            }
            received += chunk.len() as u64;
            buf.extend_from_slice(&chunk);
            // Each full part goes out at once (S3 needs every part but the last to be at
            // least 5 MiB: all are exactly `part_size`).
            while buf.len() >= part_size {
                let data = buf.split_to(part_size).freeze();
                let etag = storage
                    .put_part(&source, &mp.multipart_id, next_index as usize, data)
                    .await?;
                pending.push(UploadPart {
                    index: next_index,
                    etag,
                    size: part_size as u64,
                });
                next_index += 1;
                self.renew_lease(lease).await?;
                renewed = std::time::Instant::now();
                if hasher.is_none() {
                    // Durable now: the bytes up to this part's end.
                    committed = parts_bytes
                        + (next_index as u64 - mp.parts.len() as u64) * part_size as u64;
                    self.commit_parts(asset, lease, &pending, None, committed)
                        .await?;
                    pending.clear();
                    self.drop_tail(committed_tail.take().as_deref()).await;
                }
            }
        }
        if too_long {
            return Err(Error::InvalidInput(format!(
                "the body runs past Upload-Length ({} bytes){}",
                length,
                if committed > state.offset {
                    format!("; bytes up to offset {committed} were stored")
                } else {
                    String::new()
                }
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
                // Parts sent for this request stay unreferenced: the next request sends
                // its own under the same indexes.
                metrics::counter!("sluice_upload_checksum_failures_total").increment(1);
                return Err(err);
            }
        }

        let finished = received == length;
        if received > committed {
            if finished {
                if !buf.is_empty() {
                    let size = buf.len() as u64;
                    let etag = storage
                        .put_part(&source, &mp.multipart_id, next_index as usize, buf.freeze())
                        .await?;
                    pending.push(UploadPart {
                        index: next_index,
                        etag,
                        size,
                    });
                }
                self.commit_parts(asset, lease, &pending, None, received)
                    .await?;
            } else {
                // The rest becomes the new tail, under a new name; then the commit makes
                // it the upload's.
                let key = keys::upload_tail(tenant, asset, received);
                storage.put(&key, buf.freeze()).await?;
                self.commit_parts(asset, lease, &pending, Some(&key), received)
                    .await?;
            }
            committed = received;
            // The old tail ends before `received`: never the key just committed.
            self.drop_tail(committed_tail.take().as_deref()).await;
        }
        if committed > state.offset {
            metrics::counter!("sluice_upload_bytes_total").increment(committed - state.offset);
        }
        if let Some(e) = body_error {
            tracing::info!(asset, offset = received, "upload request ended early: {e}");
        }
        if finished {
            self.finish_multipart(tenant, asset).await?;
        }
        let expires_at = self.upload_expiry();
        Ok(UploadState {
            offset: received,
            expires_at: (!finished).then_some(if received != state.offset {
                expires_at
            } else {
                state.expires_at.unwrap_or(expires_at)
            }),
            ..state
        })
    }

    /// All bytes are committed: complete the multipart upload into the source object, clean
    /// the tail objects, then queue the transcode. Safe to repeat after a failure half-way
    /// (a completed multipart upload is recognised by its object).
    pub(super) async fn finish_multipart(&self, tenant: &str, asset: &str) -> Result<()> {
        let storage = &self.inner.storage;
        let source = keys::source(tenant, asset);
        let mp = store::upload_multipart(&self.inner.db, asset)
            .await?
            .ok_or_else(|| Error::not_found("upload", asset))?;
        let (state, _) = store::get_upload(&self.inner.db, tenant, asset)
            .await?
            .ok_or_else(|| Error::not_found("upload", asset))?;
        let etags: Vec<String> = mp.parts.iter().map(|p| p.etag.clone()).collect();
        if let Err(e) = storage
            .complete_multipart(&source, &mp.multipart_id, etags)
            .await
        {
            // Completed by an earlier attempt that failed afterwards?
            match storage.head(&source).await {
                Ok(info) if Some(info.size) == state.length => {}
                _ => return Err(e.into()),
            }
        }
        storage
            .delete_prefix(&keys::upload_prefix(tenant, asset))
            .await?;
        let job_id = self
            .enqueue_transcode(tenant, asset, crate::JobClass::Upload)
            .await?;
        store::complete_upload(&self.inner.db, asset, &job_id, self.now_ms()).await?;
        tracing::info!(asset, job = %job_id, parts = mp.parts.len(), "upload complete, transcode queued");
        Ok(())
    }
}
