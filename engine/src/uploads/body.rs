//! The one loop that receives an upload's bytes, for tus PATCHes (on either tier) and raw
//! `POST /v1/assets` bodies alike.
//!
//! It owns every rule a body is held to: the write lease is checked before each chunk, the
//! length bound (the declared length, else the maximum upload size), the quota of an upload
//! whose length is not reserved, the content sniffer, the digests (a tus `Upload-Checksum`,
//! the sha256 of a raw body), byte counting, and the verdicts (a broken body, a body too
//! long, a checksum that does not match). The bytes go to a [`ResumableWrite`] (a file or an
//! S3 multipart upload: the storage crate decides how they are stored); each checkpoint it
//! reports is recorded through the caller's [`Commit`], which is all that differs between
//! the callers, with how they finish the upload afterwards.

use std::future::Future;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use sluice_storage::{Checkpoint, ResumableWrite};

use super::{UploadLease, over_quota};
use crate::checksum::Checksum;
use crate::sniff::{Sniffer, WINDOW};
use crate::{Engine, Error, Result};

/// Records a checkpoint in the metadata store, fenced by the write lease (`UploadLocked`
/// when the lease was lost: nothing is recorded then).
pub(crate) trait Commit: Send {
    /// `sha256`: the hex digest of the whole body, when the rules asked for it.
    fn commit(
        &mut self,
        checkpoint: Checkpoint,
        sha256: Option<&str>,
    ) -> impl Future<Output = Result<()>> + Send;
}

/// What kind of body this is: it decides what a broken or short body means.
pub(crate) enum Kind<'a> {
    /// A tus PATCH: the bytes before a break are kept (unless a checksum must be verified).
    Tus { checksum: Option<&'a Checksum> },
    /// A raw upload, whole in one body: a break keeps nothing, the body must be exactly its
    /// `Content-Length`, must not be empty, and the sniffer judges its end too.
    Raw,
}

/// The rules one body is held to.
pub(crate) struct Rules<'a> {
    pub tenant: &'a str,
    pub asset: &'a str,
    /// The upload's whole length, when declared (`Upload-Length`, `Content-Length`).
    pub length: Option<u64>,
    /// With no declared length: the tenant's quota and its use without this upload.
    pub quota: Option<(u64, u64)>,
    /// Whether the content sniffer judges these bytes (not for a concatenation partial).
    pub sniff: bool,
    pub kind: Kind<'a>,
}

/// What a body brought.
pub(crate) struct Received {
    /// The upload's offset after it (every byte up to it is committed).
    pub offset: u64,
    /// The sha256 (hex) of the whole body, for a raw upload.
    pub sha256: Option<String>,
}

/// Hand a storage error of the writer on: an error on a local file stays a local i/o
/// error, as it was when the engine wrote the file itself.
pub(crate) fn write_error(e: sluice_storage::Error) -> Error {
    match e {
        sluice_storage::Error::Io { path, source } => Error::Io { path, source },
        e => Error::Storage(e),
    }
}

impl Engine {
    /// Receive `body` into `writer` under `lease` (see the module docs).
    pub(crate) async fn receive_body<S, E, W, C>(
        &self,
        rules: Rules<'_>,
        body: &mut S,
        mut writer: W,
        lease: &UploadLease,
        commit: &mut C,
    ) -> Result<Received>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
        W: ResumableWrite,
        C: Commit,
    {
        let Rules {
            tenant,
            asset,
            length,
            quota,
            sniff,
            kind,
        } = rules;
        let raw = matches!(kind, Kind::Raw);
        let checksum = match kind {
            Kind::Tus { checksum } => checksum,
            Kind::Raw => None,
        };
        let start = writer.resumed();
        // While the length is deferred, the maximum upload size bounds the bytes.
        let max = self.inner.config.uploads.max_size;
        let limit = length.unwrap_or(max);
        let mut sniffer = if sniff {
            // The leading bytes already stored, while they are within the sniffer's window.
            let head = writer.head(WINDOW).await.map_err(write_error)?;
            Sniffer::new(head, length)
        } else {
            Sniffer::skipped()
        };
        let mut hasher = checksum.map(Checksum::hasher);
        let mut sha256 = raw.then(Sha256::new);
        // The offset of the last checkpoint recorded by this request.
        let mut committed = start;
        let mut received = start;
        let mut body_error = None;
        let mut too_long = None;
        let mut over = None;

        while let Some(chunk) = body.next().await {
            // Still ours? (The lease's timer says.) If not, nothing more of this request is
            // committed, and the bytes are not touched again.
            lease.check()?;
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) if raw => {
                    return Err(Error::Body(format!(
                        "the request body ended early ({e}); nothing of it was stored"
                    )));
                }
                Err(e) => {
                    body_error = Some(e.to_string());
                    break;
                }
            };
            let next = received + chunk.len() as u64;
            if next > limit {
                too_long = Some(next);
                break;
            }
            if let Some(e) = over_quota(quota, next) {
                over = Some(e);
                break;
            }
            if let Err(what) = sniffer.feed(&chunk) {
                drop(writer);
                if !raw {
                    self.refuse_upload(tenant, asset, what).await?;
                }
                return Err(Error::UnsupportedMedia(what));
            }
            writer.append(&chunk).await.map_err(write_error)?;
            if let Some(h) = hasher.as_mut() {
                h.update(&chunk);
            }
            if let Some(h) = sha256.as_mut() {
                h.update(&chunk);
            }
            received = next;
            lease.check()?;
            // With a checksum, nothing is committed before the whole body is verified.
            if hasher.is_none()
                && let Some(checkpoint) = writer.take_durable()
            {
                let offset = checkpoint.offset();
                commit.commit(checkpoint, None).await?;
                committed = offset;
                writer.recorded().await;
            }
        }
        if let Some(e) = over {
            // Like a body past its length: what was committed stays (it was within the
            // quota), nothing more.
            writer.discard().await.map_err(write_error)?;
            return Err(e);
        }
        if let Some(size) = too_long {
            writer.discard().await.map_err(write_error)?;
            return Err(match length {
                Some(l) if raw => Error::InvalidInput(format!(
                    "the body is longer than its Content-Length ({l} bytes)"
                )),
                Some(l) => {
                    let stored = if committed > start {
                        format!("; bytes up to offset {committed} were stored")
                    } else {
                        String::new()
                    };
                    Error::InvalidInput(format!(
                        "the body runs past Upload-Length ({l} bytes){stored}"
                    ))
                }
                None => Error::TooLarge { size, max },
            });
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
                writer.discard().await.map_err(write_error)?;
                metrics::counter!("sluice_upload_checksum_failures_total").increment(1);
                return Err(err);
            }
        }
        if raw {
            if received == 0 {
                return Err(Error::InvalidInput(
                    "the body is empty: an empty file is not a video".into(),
                ));
            }
            if let Some(l) = length
                && received != l
            {
                return Err(Error::Body(format!(
                    "the body ended after {received} of {l} bytes; nothing of it was stored"
                )));
            }
            sniffer.finish(received).map_err(Error::UnsupportedMedia)?;
        }

        let sha256 = sha256.map(|h| hex::encode(h.finalize()));
        let last = raw || length == Some(received);
        if let Some(checkpoint) = writer.checkpoint(last).await.map_err(write_error)? {
            let offset = checkpoint.offset();
            commit.commit(checkpoint, sha256.as_deref()).await?;
            committed = offset;
            writer.recorded().await;
        }
        if committed > start {
            metrics::counter!("sluice_upload_bytes_total").increment(committed - start);
        }
        if let Some(e) = body_error {
            tracing::info!(asset, offset = received, "upload request ended early: {e}");
        }
        Ok(Received {
            offset: received,
            sha256,
        })
    }
}
