//! `POST /v1/assets`: an upload in one request body, for devices that cannot speak tus.
//!
//! The body streams to the uploads directory through the loop tus bytes go through (bounded
//! memory, the same size limit, quota and content sniffing), then the asset is queued like a
//! completed tus upload. A raw upload is not resumable: if its body breaks, nothing is kept.
//!
//! `Idempotency-Key`: the first request under a key claims it in the database (a unique
//! row per tenant and key, so two concurrent requests cannot both run: the second gets
//! 409 until the first ends). When the first succeeds, the sha256 of its body and its
//! response body are stored; a retry with the same body gets that response again, a
//! different body gets 422. A failed request frees its key. Keys expire after 24 h.

use bytes::Bytes;
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};

use sluice_storage::{Checkpoint, FileWrite};

use crate::model::{Principal, RawUploaded};
use crate::uploads::{Commit, Kind, LEASE, LEASE_RENEW, Rules, UploadLease, write_error};
use crate::{Engine, Error, Result, store};

/// How long an idempotency key remembers its first response.
pub const IDEMPOTENCY_TTL_MS: i64 = 24 * 3600 * 1000;

/// What a raw upload request says about itself.
#[derive(Debug, Clone, Default)]
pub struct RawUpload<'a> {
    /// `Content-Length`, when the client sent one.
    pub content_length: Option<u64>,
    pub filename: Option<&'a str>,
    pub idempotency_key: Option<&'a str>,
}

fn validate_key(key: &str) -> Result<()> {
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| (0x20..0x7F).contains(&b)) {
        return Err(Error::InvalidInput(
            "Idempotency-Key must be 1 to 255 printable ASCII characters".into(),
        ));
    }
    Ok(())
}

/// Records a raw upload's one checkpoint (its whole body, synced): its length when it was
/// not declared, then its offset and, under an `Idempotency-Key`, the key's staging.
struct RawCommit<'a> {
    engine: &'a Engine,
    tenant: &'a str,
    id: &'a str,
    lease: &'a UploadLease,
    /// Whether the request declared its length (`Content-Length`).
    declared: bool,
    key: Option<&'a str>,
    /// Set once the upload is staged (whole body, offset committed): it is kept then.
    staged: &'a mut bool,
}

impl Commit for RawCommit<'_> {
    async fn commit(&mut self, checkpoint: Checkpoint, sha256: Option<&str>) -> Result<()> {
        let (db, tenant, id) = (&self.engine.inner.db, self.tenant, self.id);
        let written = checkpoint.offset();
        if !self.declared {
            store::set_upload_length(db, tenant, id, written).await?;
        }
        // The offset commit and the key's staging are one transaction: once the upload is
        // whole, a retry under the key finds this asset, whatever happens to this request.
        let committed = store::commit_raw_upload(
            db,
            tenant,
            id,
            self.lease.owner(),
            written,
            self.engine.upload_expiry(),
            self.key.zip(sha256),
        )
        .await?;
        if !committed {
            return Err(Error::UploadLocked(id.to_string()));
        }
        *self.staged = true;
        Ok(())
    }
}

impl Engine {
    /// Store a whole upload from one request body and queue its transcode; or, for a retry
    /// under an `Idempotency-Key` already used with the same body, return the first answer.
    pub async fn raw_upload<S, E>(
        &self,
        who: &Principal,
        req: RawUpload<'_>,
        mut body: S,
    ) -> Result<RawUploaded>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let tenant = self.upload_tenant_of(who)?;
        let max = self.inner.config.uploads.max_size;
        match req.content_length {
            Some(0) => {
                return Err(Error::InvalidInput(
                    "the body is empty: an empty file is not a video".into(),
                ));
            }
            Some(size) if size > max => return Err(Error::TooLarge { size, max }),
            _ => {}
        }
        let Some(key) = req.idempotency_key else {
            return self.raw_store(who, tenant, &req, &mut body).await;
        };
        validate_key(key)?;
        let now = self.now_ms();
        let lock = now + LEASE.as_millis() as i64;
        match store::claim_idempotency_key(
            &self.inner.db,
            tenant,
            key,
            now,
            lock,
            now + IDEMPOTENCY_TTL_MS,
        )
        .await?
        {
            store::KeyClaim::InFlight => Err(Error::IdempotencyInFlight),
            store::KeyClaim::Done(sha, asset_id, response) => {
                // Same key: the same body replays the first answer, another body is refused.
                match hash_body(&mut body, max).await? {
                    Some(h) if h == sha => {
                        metrics::counter!("sluice_raw_upload_replays_total").increment(1);
                        Ok(RawUploaded {
                            asset_id,
                            body: response,
                            replayed: true,
                        })
                    }
                    _ => Err(Error::IdempotencyKeyReused),
                }
            }
            store::KeyClaim::Recover(sha, asset_id) => {
                let _renewal = self.hold_key(tenant, key);
                let result = self
                    .raw_recover(tenant, key, &sha, &asset_id, max, &mut body)
                    .await;
                if result.is_err()
                    && let Err(e) = store::lapse_idempotency_key(&self.inner.db, tenant, key).await
                {
                    tracing::warn!(
                        "could not give back an idempotency key (it lapses anyway): {e}"
                    );
                }
                result
            }
            store::KeyClaim::Claimed => {
                let _renewal = self.hold_key(tenant, key);
                let result = self.raw_store(who, tenant, &req, &mut body).await;
                if result.is_err()
                    && let Err(e) =
                        store::release_idempotency_key(&self.inner.db, tenant, key).await
                {
                    tracing::warn!("could not free an idempotency key (it lapses anyway): {e}");
                }
                result
            }
        }
    }

    /// Renew this request's claim on `key` on a timer until the returned value is dropped:
    /// a slow step (reading the body, completing the upload, recording the answer) never
    /// lets a retry claim the key meanwhile.
    fn hold_key(&self, tenant: &str, key: &str) -> crate::AbortOnDrop {
        let (engine, tenant, key) = (self.clone(), tenant.to_string(), key.to_string());
        crate::AbortOnDrop::every(LEASE_RENEW, "renew an idempotency key's claim", move || {
            let (engine, tenant, key) = (engine.clone(), tenant.clone(), key.clone());
            async move {
                let until = engine.now_ms() + LEASE.as_millis() as i64;
                store::renew_idempotency_key(&engine.inner.db, &tenant, &key, until).await
            }
        })
    }

    /// A retry under a key whose first request staged its asset and died before answering:
    /// the same body gets that asset (completed now if the first request could not), any
    /// other body is refused. Never a second asset for one key.
    async fn raw_recover<S, E>(
        &self,
        tenant: &str,
        key: &str,
        sha: &str,
        asset_id: &str,
        max: u64,
        body: &mut S,
    ) -> Result<RawUploaded>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        match hash_body(body, max).await? {
            Some(h) if h == sha => {}
            _ => return Err(Error::IdempotencyKeyReused),
        }
        let lease = self
            .lease_upload(tenant, asset_id)
            .await
            .map_err(|e| match e {
                // The sweeper (or another retry) is finishing it right now.
                Error::UploadLocked(_) => Error::IdempotencyInFlight,
                e => e,
            })?;
        let finished = self.finish_staged_raw(tenant, asset_id, &lease).await;
        let released = lease.release().await;
        finished?;
        released?;
        let asset = store::get_asset(&self.inner.db, tenant, asset_id)
            .await?
            .ok_or_else(|| Error::not_found("asset", asset_id))?;
        let response = serde_json::to_string(&asset).unwrap_or_else(|_| "{}".into());
        store::finish_idempotency_key(&self.inner.db, tenant, key, sha, asset_id, &response)
            .await?;
        metrics::counter!("sluice_raw_upload_recoveries_total").increment(1);
        tracing::info!(
            asset = asset_id,
            "raw upload recovered for a retry under its key"
        );
        Ok(RawUploaded {
            asset_id: asset_id.to_string(),
            body: response,
            replayed: true,
        })
    }

    /// Complete a staged raw upload (whole body, synced, offset committed) if its request
    /// died before completing it; nothing to do when it is complete already.
    async fn finish_staged_raw(
        &self,
        tenant: &str,
        asset_id: &str,
        lease: &crate::uploads::UploadLease,
    ) -> Result<()> {
        match store::get_upload(&self.inner.db, tenant, asset_id).await? {
            Some((_, true)) => Ok(()),
            Some((state, false)) if state.awaits_finish(false) => {
                self.finish_whole(tenant, asset_id, lease).await
            }
            // Staged but its bytes never committed, or swept: there is no asset to give.
            _ => Err(Error::Conflict(
                "the first request under this Idempotency-Key did not complete its upload; \
                 retry with a new key"
                    .into(),
            )),
        }
    }

    async fn raw_store<S, E>(
        &self,
        who: &Principal,
        tenant: &str,
        req: &RawUpload<'_>,
        body: &mut S,
    ) -> Result<RawUploaded>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let id = ulid::Ulid::new().to_string();
        let path = self.upload_path(&id);
        FileWrite::create(&path).await.map_err(write_error)?;
        let filename: Option<String> = req
            .filename
            .map(|f| f.chars().filter(|c| !c.is_control()).take(255).collect())
            .filter(|f: &String| !f.trim().is_empty());
        let created = store::insert_upload(
            &self.inner.db,
            store::NewUpload {
                tenant,
                asset: &id,
                length: Some(
                    req.content_length
                        .unwrap_or(self.inner.config.uploads.max_size),
                ),
                size: req.content_length,
                already_counted: 0,
                concat: &crate::model::UploadConcat::None,
                metadata: None,
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
        let lease = match self.lease_upload(tenant, &id).await {
            Ok(l) => l,
            Err(e) => {
                self.discard_raw(tenant, &id).await;
                return Err(e);
            }
        };
        let mut staged = false;
        let result = self
            .raw_stream(tenant, &id, req, body, &lease, &mut staged)
            .await;
        // A staged upload (whole body, offset committed) is kept: the sweeper or a retry
        // under its key completes it.
        if result.is_err() && !staged {
            self.discard_raw(tenant, &id).await;
        }
        let released = lease.release().await;
        let sha = result?;
        released?;
        let asset = store::get_asset(&self.inner.db, tenant, &id)
            .await?
            .ok_or_else(|| Error::not_found("asset", &id))?;
        let body = serde_json::to_string(&asset).unwrap_or_else(|_| "{}".into());
        if let Some(key) = req.idempotency_key {
            store::finish_idempotency_key(&self.inner.db, tenant, key, &sha, &id, &body).await?;
        }
        metrics::counter!("sluice_uploads_created_total").increment(1);
        Ok(RawUploaded {
            asset_id: id,
            body,
            replayed: false,
        })
    }

    /// Stream the body into the upload file and complete the upload. Returns the body's
    /// sha256 (hex).
    async fn raw_stream<S, E>(
        &self,
        tenant: &str,
        id: &str,
        req: &RawUpload<'_>,
        body: &mut S,
        lease: &UploadLease,
        staged: &mut bool,
    ) -> Result<String>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        // With no declared length nothing is reserved: the quota is enforced as bytes come.
        let quota = match req.content_length {
            Some(_) => None,
            None => match store::storage_usage(&self.inner.db, tenant).await? {
                (Some(q), used) => Some((q, used)),
                (None, _) => None,
            },
        };
        let writer = FileWrite::open(&self.upload_path(id), 0)
            .await
            .map_err(write_error)?;
        let rules = Rules {
            tenant,
            asset: id,
            length: req.content_length,
            quota,
            sniff: true,
            kind: Kind::Raw,
        };
        let mut commit = RawCommit {
            engine: self,
            tenant,
            id,
            lease,
            declared: req.content_length.is_some(),
            key: req.idempotency_key,
            staged,
        };
        let received = self
            .receive_body(rules, body, writer, lease, &mut commit)
            .await?;
        self.finish_upload(tenant, id).await?;
        Ok(received.sha256.unwrap_or_default())
    }

    /// Remove a raw upload that did not complete: its asset, session and bytes.
    async fn discard_raw(&self, tenant: &str, id: &str) {
        if let Err(e) = store::delete_upload(&self.inner.db, tenant, id).await {
            tracing::warn!(asset = id, "could not delete a failed raw upload: {e}");
        }
        let path = self.upload_path(id);
        if let Err(e) = tokio::fs::remove_file(&path).await
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(
                asset = id,
                "could not remove a failed raw upload's bytes: {e}"
            );
        }
    }
}

/// The sha256 (hex) of a whole body, or `None` when it runs past `max` bytes (so it cannot
/// be the body that was accepted).
async fn hash_body<S, E>(body: &mut S, max: u64) -> Result<Option<String>>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut hasher = Sha256::new();
    let mut n = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk =
            chunk.map_err(|e| Error::Body(format!("the request body ended early ({e})")))?;
        n += chunk.len() as u64;
        if n > max {
            return Ok(None);
        }
        hasher.update(&chunk);
    }
    Ok(Some(hex::encode(hasher.finalize())))
}
