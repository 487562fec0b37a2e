//! tus uploads into an S3 hot tier: bytes stream straight into a multipart upload of the
//! asset's source key, so no gateway needs a local copy and any gateway can continue.
//!
//! The state lives in the metadata store: the multipart upload id, every committed part
//! (index, ETag, size) and the *tail*, a small object holding the committed bytes past the
//! last whole part. The bytes are written by the storage crate's [`MultipartWrite`] (through
//! the body loop all uploads share): a request's bytes fill a part-sized buffer (prefilled
//! from the tail); each full buffer becomes a part and is committed at once, so the offset is
//! durable after each part (with a checksum to verify, only at the end). When the request
//! ends short of the upload's end, the rest of the buffer is written as a new tail object
//! (named by its end offset, so the committed one is never overwritten) and committed with
//! the offset: every byte the client was told about is stored, as tus requires. Memory stays
//! bounded by one part per request.
//!
//! Commits are conditional on the request still holding the upload's lease. Parts sent by a
//! request that dies before committing are simply sent again by the next request (a part
//! index uploaded twice keeps the last); S3 ignores parts a completion does not list.
//!
//! A deferred length (creation-defer-length) changes nothing but the bound: until a PATCH
//! declares it, the maximum upload size limits the bytes; a length declared after the bytes
//! (a tail still pending) turns the tail into the last part when the upload completes.
//!
//! Concatenation: a partial streams into its own multipart upload like any upload; its
//! last byte completes nothing. A final upload first *seals* each partial (its multipart
//! upload is completed into the partial's own source object, idempotently), then builds its
//! source: one server-side copy when a single partial holds every byte, otherwise a new
//! multipart upload of the final's source key fed by ranged reads of the partials, cut into
//! `part_size` parts (object_store offers no UploadPartCopy; memory stays one part). Only
//! once that object is complete does one transaction record the final's offset and delete
//! the partials' sessions; their objects are deleted when the final completes. A gateway
//! that dies before that transaction leaves the partials whole and a final whose lease
//! lapses; the final expired at creation, so the next sweep deletes it and its objects (the
//! client may send the final again). A gateway that dies after it leaves a whole final,
//! which the next sweep completes (and queues), like a stalled upload.

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use sluice_storage::{MultipartState, MultipartWrite, Part, ResumableWrite, keys};

use super::UploadLease;
use crate::model::{UploadConcat, UploadState};
use crate::store::{self, MultipartRow, UploadPart};
use crate::{Engine, Error, Result};

/// The largest object one S3 CopyObject request may copy (5 GiB); a single larger
/// partial is assembled through a multipart upload like several.
const MAX_SERVER_COPY: u64 = 5 << 30;

impl Engine {
    /// The part size of multipart uploads (S3 hot tier).
    fn part_size(&self) -> usize {
        self.inner.storage.part_size()
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

    /// Drop the S3 side of an unfinished upload: abort its multipart upload if it has one
    /// (freeing the parts), delete its tail objects, and the source object in case a
    /// completion (or a final's assembly) went through but was never recorded. Safe to
    /// repeat.
    pub(super) async fn discard_multipart(
        &self,
        tenant: &str,
        asset: &str,
        mp: Option<&MultipartRow>,
    ) -> Result<()> {
        let storage = &self.inner.storage;
        let source = keys::source(tenant, asset);
        if let Some(mp) = mp {
            storage.abort_multipart(&source, &mp.multipart_id).await?;
            metrics::counter!("sluice_upload_multipart_aborted_total").increment(1);
        }
        storage
            .delete_prefix(&keys::upload_prefix(tenant, asset))
            .await?;
        // Only when it exists: on some stores (Garage) deleting a key also drops the
        // multipart uploads in progress on it, which would hide a failed abort.
        if storage.head(&source).await.is_ok() {
            storage.delete(&source).await?;
        }
        Ok(())
    }

    /// Delete the objects of partial uploads a final consumed (their sealed sources and
    /// any upload objects). Safe to repeat.
    pub(super) async fn drop_partial_objects(
        &self,
        tenant: &str,
        partials: &[String],
    ) -> Result<()> {
        let storage = &self.inner.storage;
        for p in partials {
            storage.delete(&keys::source(tenant, p)).await?;
            storage
                .delete_prefix(&keys::upload_prefix(tenant, p))
                .await?;
        }
        Ok(())
    }

    /// Commit under the lease, or fail with `UploadLocked` when another request took it.
    pub(super) async fn commit_parts(
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
            lease.owner(),
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

    /// The writer of a tus PATCH on an S3 hot tier, resumed from the recorded parts and
    /// tail. `state` was read under the request's lease.
    pub(super) async fn multipart_writer(
        &self,
        tenant: &str,
        asset: &str,
        state: &UploadState,
        mp: MultipartRow,
    ) -> Result<MultipartWrite> {
        let parts = mp
            .parts
            .into_iter()
            .map(|p| Part {
                index: p.index as usize,
                etag: p.etag,
                size: p.size,
            })
            .collect();
        let recorded = MultipartState {
            upload_id: mp.multipart_id,
            parts,
            tail: mp.tail_key,
        };
        let writer = self
            .inner
            .storage
            .resume_multipart(tenant, asset, recorded)
            .await?;
        if writer.resumed() != state.offset {
            return Err(Error::Conflict(format!(
                "upload {asset} is inconsistent: {} bytes in parts and tail, offset {}",
                writer.resumed(),
                state.offset
            )));
        }
        Ok(writer)
    }

    /// Make the source object of an upload whose bytes are all committed: a pending tail
    /// becomes the last part, the multipart upload is completed (an upload of no bytes is
    /// an empty object), and the object's size is checked. Safe to repeat after a failure
    /// half-way (a completed multipart upload is recognised by its object).
    async fn seal_multipart(
        &self,
        tenant: &str,
        asset: &str,
        state: &UploadState,
        lease: &UploadLease,
    ) -> Result<()> {
        let storage = &self.inner.storage;
        let source = keys::source(tenant, asset);
        let length = match state.length {
            Some(l) if l == state.offset => l,
            _ => {
                return Err(Error::Conflict(format!(
                    "upload {asset} is not complete: {} bytes of {} received",
                    state.offset,
                    state
                        .length
                        .map_or("an undeclared length".into(), |l| l.to_string())
                )));
            }
        };
        let mp = store::upload_multipart(&self.inner.db, tenant, asset).await?;
        if length == 0 {
            // S3 completes no multipart upload without parts.
            if let Some(mp) = &mp {
                storage.abort_multipart(&source, &mp.multipart_id).await?;
            }
            storage.put(&source, Bytes::new()).await?;
            return Ok(());
        }
        // No multipart upload: a final assembled by one server-side copy.
        if let Some(mut mp) = mp {
            if let Some(tail) = mp.tail_key.clone() {
                let data = storage.get_bytes(&tail).await?;
                let index = mp.parts.len() as i64;
                let size = data.len() as u64;
                let etag = storage
                    .put_part(&source, &mp.multipart_id, index as usize, data)
                    .await?;
                let part = UploadPart { index, etag, size };
                self.commit_parts(asset, lease, std::slice::from_ref(&part), None, length)
                    .await?;
                mp.parts.push(part);
                self.drop_tail(Some(&tail)).await;
            }
            let etags: Vec<String> = mp.parts.iter().map(|p| p.etag.clone()).collect();
            if let Err(e) = storage
                .complete_multipart(&source, &mp.multipart_id, etags)
                .await
            {
                // Completed by an earlier attempt that failed afterwards?
                match storage.head(&source).await {
                    Ok(info) if info.size == length => {}
                    _ => return Err(e.into()),
                }
            }
        }
        let size = storage.head(&source).await?.size;
        if size != length {
            return Err(Error::Conflict(format!(
                "upload {asset} is inconsistent: its object holds {size} of {length} bytes"
            )));
        }
        Ok(())
    }

    /// All bytes are committed: seal the source object, clean the upload's objects (and a
    /// final's consumed partials), then queue the transcode. Safe to repeat after a
    /// failure half-way.
    pub(super) async fn finish_multipart(
        &self,
        tenant: &str,
        asset: &str,
        lease: &UploadLease,
    ) -> Result<()> {
        let storage = &self.inner.storage;
        let (state, _) = store::get_upload(&self.inner.db, tenant, asset)
            .await?
            .ok_or_else(|| Error::not_found("upload", asset))?;
        self.seal_multipart(tenant, asset, &state, lease).await?;
        if let UploadConcat::Final(partials) = &state.concat {
            self.drop_partial_objects(tenant, partials).await?;
        }
        storage
            .delete_prefix(&keys::upload_prefix(tenant, asset))
            .await?;
        let job_id = self.upload_job(tenant, asset).await?;
        tracing::info!(asset, job = %job_id, "upload complete, transcode queued");
        Ok(())
    }

    /// Build the source object of final upload `dest` from its complete partials, in order
    /// (see the module docs), under the partials' `leases` (same order) and its own. Leaves
    /// the partials and their sessions intact; on failure the caller discards `dest`.
    pub(super) async fn assemble_multipart(
        &self,
        tenant: &str,
        dest: &str,
        partials: &[String],
        lengths: &[u64],
        leases: &[UploadLease],
        own: &UploadLease,
    ) -> Result<()> {
        let storage = &self.inner.storage;
        let started = std::time::Instant::now();
        for (id, lease) in partials.iter().zip(leases) {
            let (state, _) = store::get_upload(&self.inner.db, tenant, id)
                .await?
                .ok_or_else(|| Error::not_found("upload", id))?;
            self.seal_multipart(tenant, id, &state, lease).await?;
            check_leases(leases, own)?;
        }
        let target = keys::source(tenant, dest);
        let total: u64 = lengths.iter().sum();
        let non_empty: Vec<(&String, u64)> = partials
            .iter()
            .zip(lengths.iter().copied())
            .filter(|(_, l)| *l > 0)
            .collect();
        match non_empty.as_slice() {
            [] => storage.put(&target, Bytes::new()).await?,
            [(id, len)] if *len <= MAX_SERVER_COPY => {
                storage.copy(&keys::source(tenant, id), &target).await?;
            }
            _ => {
                let upload = storage.create_multipart(&target).await?;
                // Recorded first, so a sweep after a crash aborts it.
                if let Err(e) = store::set_upload_multipart(&self.inner.db, dest, &upload).await {
                    let _ = storage.abort_multipart(&target, &upload).await;
                    return Err(e);
                }
                let part_size = self.part_size();
                let mut buf = BytesMut::with_capacity(part_size);
                let mut etags = Vec::new();
                for (id, len) in &non_empty {
                    let key = keys::source(tenant, id);
                    let mut at = 0u64;
                    while at < *len {
                        // Exactly what fills the part buffer (or ends the partial).
                        let want = ((part_size - buf.len()) as u64).min(len - at);
                        let (_, mut stream) = storage.get_stream(&key, Some(at..at + want)).await?;
                        let before = buf.len();
                        while let Some(chunk) = stream.next().await {
                            buf.extend_from_slice(&chunk?);
                        }
                        let got = (buf.len() - before) as u64;
                        if got != want {
                            return Err(Error::Conflict(format!(
                                "partial upload {id} is inconsistent: a read of {want} bytes \
                                 at {at} returned {got}"
                            )));
                        }
                        at += want;
                        if buf.len() == part_size {
                            let etag = storage
                                .put_part(&target, &upload, etags.len(), buf.split().freeze())
                                .await?;
                            etags.push(etag);
                            // The sent part is dropped by now: this takes its memory back.
                            buf.reserve(part_size);
                        }
                        check_leases(leases, own)?;
                    }
                }
                if !buf.is_empty() {
                    let etag = storage
                        .put_part(&target, &upload, etags.len(), buf.freeze())
                        .await?;
                    etags.push(etag);
                }
                storage.complete_multipart(&target, &upload, etags).await?;
            }
        }
        let size = storage.head(&target).await?.size;
        if size != total {
            return Err(Error::Conflict(format!(
                "final upload {dest} is inconsistent: its object holds {size} of {total} bytes"
            )));
        }
        let secs = started.elapsed().as_secs_f64();
        tracing::info!(
            asset = dest,
            bytes = total,
            ms = (secs * 1000.0) as u64,
            mib_per_s = format!("{:.1}", total as f64 / (1 << 20) as f64 / secs.max(1e-6)),
            "final upload assembled from its partials"
        );
        Ok(())
    }
}

/// Are all the leases a final upload's assembly holds still its own?
fn check_leases(leases: &[UploadLease], own: &UploadLease) -> Result<()> {
    leases
        .iter()
        .chain(std::iter::once(own))
        .try_for_each(UploadLease::check)
}
