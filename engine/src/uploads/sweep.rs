//! The upload sweep: expired unfinished uploads are deleted (or, when every byte was
//! committed but finishing was cut short, finished), and scratch files without a session go.

use std::time::Duration;

use crate::{Engine, Result, store};

impl Engine {
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
}
