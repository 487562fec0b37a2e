//! The write lease of an upload: one writer at a time, across every gateway process.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::{Engine, Error, Result, store};

/// How long a writer's lease on an upload lasts without renewal, and how often its holder's
/// timer renews it.
pub(crate) const LEASE: Duration = Duration::from_secs(10);
pub(crate) const LEASE_RENEW: Duration = Duration::from_secs(3);
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

impl Engine {
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
}
