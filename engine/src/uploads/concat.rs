//! tus concatenation: a final upload assembled from complete partial uploads (see the
//! module docs of [`super`]; on S3, [`super::multipart`]).

use std::path::PathBuf;

use crate::model::{Asset, Principal, UploadConcat, UploadMetadata};
use crate::sniff::{Sniffer, WINDOW};
use crate::{Engine, Error, Result, store};

use super::{LEASE, UploadLease};

/// Most partial uploads one final upload may name.
pub const MAX_CONCAT_PARTS: usize = 1000;

impl Engine {
    /// tus concatenation: create the final upload from complete partial uploads of the
    /// caller's tenant, in order, and complete it at once (its asset is queued). Each
    /// partial is consumed: its session disappears. `declared_length`, if the client sent
    /// one, must be the sum of the partials.
    pub async fn create_final_upload(
        &self,
        who: &Principal,
        partials: &[String],
        metadata: Option<&UploadMetadata>,
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
        // Hold every partial's lease: no PATCH, DELETE, sweep or other final touches them
        // while they are checked and assembled. Released on every path, before answering.
        let mut leases = Vec::with_capacity(partials.len());
        let result = self
            .concat_leased(
                &tenant,
                partials,
                metadata,
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
        metadata: Option<&UploadMetadata>,
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
                metadata: metadata
                    .map(|m| m.header.as_str())
                    .filter(|m| !m.trim().is_empty()),
                filename: metadata.and_then(|m| m.filename.as_deref()),
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
