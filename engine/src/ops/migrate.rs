//! One migration's run: plan → per object copy → verify, then per asset switch → delete the
//! source (only if asked). Every step starts from the object's recorded state and ends by
//! recording the next one, conditionally, so a run cut anywhere continues where it was:
//!
//! ```text
//! planned ──put──────────────────────────────► copied ──verify──► verified
//!    └──create_multipart──► copying ──parts, complete──┘               │
//!                           (upload id, one row per part)              │ (all of an asset)
//!                                                   switched ◄──switch─┘ (one transaction)
//!                                                      └──delete source──► done
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use md5::{Digest, Md5};
use sluice_storage::Storage;
use sqlx::Row;
use tokio::sync::watch;

use super::OpsConfig;
use super::pace::Pacer;
use super::store::{self, JobRow, ObjectRow, PartRow};
use crate::tiers::{CopyKey, CopyState, Tier};
use crate::{Engine, Error, Result};

/// How a run ended.
pub(crate) enum Outcome {
    /// Every object was handled; `failed` of them could not be migrated.
    Finished { failed: u64 },
    /// The process is stopping: the job stays as it is, taken over after the restart.
    Stopped,
}

/// TEST ONLY: when the environment variable `SLUICE_TEST_PAUSE_AT` names this point, the
/// task that reaches it prints `test hook: paused at NAME` on stderr and never goes on, so
/// a black-box test can SIGKILL the process in exactly that state. Points:
/// `in_part` (a part sent, its checkpoint not written), `before_complete` (every part
/// recorded, the upload not completed), `after_complete` (completed, not recorded),
/// `after_switch` (metadata switched, the source not deleted). Unset in production: one
/// environment lookup per point.
pub async fn crash_point(name: &str) {
    if std::env::var("SLUICE_TEST_PAUSE_AT").ok().as_deref() == Some(name) {
        eprintln!("test hook: paused at {name}");
        std::future::pending::<()>().await;
    }
}

struct Ctx {
    engine: Engine,
    job: JobRow,
    src: Storage,
    dst: Storage,
    cfg: OpsConfig,
    pacer: Pacer,
}

fn md5_hex(data: &[u8]) -> String {
    hex::encode(Md5::digest(data))
}

fn unquote(etag: &str) -> &str {
    etag.trim().trim_matches('"')
}

/// The ETag S3 gives a multipart object: the MD5 of the parts' binary MD5s, `-N`.
pub(crate) fn composite_etag(parts: &[PartRow]) -> Option<String> {
    let mut h = Md5::new();
    for p in parts {
        h.update(hex::decode(&p.md5).ok()?);
    }
    Some(format!("{}-{}", hex::encode(h.finalize()), parts.len()))
}

fn mismatch(key: &str, what: &str) -> Error {
    Error::Conflict(format!("verification failed for {key}: {what}"))
}

/// Whether trying again may help: a store or database failure, or a copy that did not
/// verify (it is made again).
fn retryable(e: &Error) -> bool {
    match e {
        Error::Storage(s) => s.is_retryable(),
        Error::Db(_) | Error::Conflict(_) => true,
        _ => false,
    }
}

/// The MD5 and size of an object, read in a stream (memory stays bounded); `None` when
/// it does not exist.
async fn content_md5(store: &Storage, key: &str) -> Result<Option<(u64, String)>> {
    let (_, mut stream) = match store.get_stream(key, None).await {
        Ok(s) => s,
        Err(sluice_storage::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut h = Md5::new();
    let mut n = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        n = n.saturating_add(chunk.len() as u64);
        h.update(&chunk);
    }
    Ok(Some((n, hex::encode(h.finalize()))))
}

/// Run (or continue) a migration job to its end.
pub(crate) async fn run(
    engine: &Engine,
    job: &JobRow,
    shutdown: watch::Receiver<bool>,
) -> Result<Outcome> {
    let db = &engine.inner.db;
    let src = engine.stores().require(&job.from_store)?.clone();
    let dst = engine.stores().require(&job.to_store)?.clone();
    let cfg = engine.config().ops.clone();
    if !job.planned {
        // Planning lists the source store: a store that is down is waited for like any
        // other step (backoff up to `ops.retry_for_s`), not a failed job.
        let deadline = Instant::now() + Duration::from_secs(cfg.retry_for_s);
        let mut attempt = 0u32;
        let plan = loop {
            let mut stop = shutdown.clone();
            match engine
                .migration_plan(&job.from_store, job.tenant_id.as_deref())
                .await
            {
                Ok(plan) => break plan,
                Err(e) if retryable(&e) && Instant::now() < deadline => {
                    attempt = attempt.saturating_add(1);
                    let wait = crate::jobs::policy::backoff(
                        Duration::from_millis(500),
                        Duration::from_secs(30),
                        attempt,
                        rand::random::<f64>(),
                    );
                    tracing::info!(job = %job.id, "planning again in {wait:?} after: {e}");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = stop.wait_for(|s| *s) => return Ok(Outcome::Stopped),
                    }
                }
                Err(e) => return Err(e),
            }
        };
        store::record_plan(db, &job.id, &plan, engine.now_ms()).await?;
    }
    let ctx = Arc::new(Ctx {
        engine: engine.clone(),
        job: job.clone(),
        src,
        dst,
        pacer: Pacer::new(cfg.bandwidth_bytes_per_s),
        cfg,
    });
    // Copy and verify, `migrate_concurrency` objects at once.
    let todo: Vec<ObjectRow> = store::objects(db, &job.id)
        .await?
        .into_iter()
        .filter(|o| matches!(o.state.as_str(), "planned" | "copying" | "copied"))
        .collect();
    let mut results = futures::stream::iter(todo)
        .map(|o| {
            let ctx = ctx.clone();
            async move {
                let r = ctx.object(&o.key).await;
                (o, r)
            }
        })
        .buffer_unordered(ctx.cfg.migrate_concurrency);
    while let Some((o, r)) = results.next().await {
        if *shutdown.borrow() {
            return Ok(Outcome::Stopped);
        }
        if let Err(e) = r {
            tracing::warn!(job = %job.id, key = %o.key, "an object could not be migrated: {e}");
            store::object_failed(db, &job.id, &o.key, &e.to_string(), engine.now_ms()).await?;
        }
    }
    drop(results);
    // Switch each asset whose objects all verified, then delete its source if asked.
    let mut by_asset: BTreeMap<(String, String), Vec<ObjectRow>> = BTreeMap::new();
    for o in store::objects(db, &job.id).await? {
        by_asset
            .entry((o.tenant_id.clone(), o.asset_id.clone()))
            .or_default()
            .push(o);
    }
    let mut failed = 0u64;
    for ((tenant, asset), objs) in by_asset {
        if *shutdown.borrow() {
            return Ok(Outcome::Stopped);
        }
        let n_failed = objs.iter().filter(|o| o.state == "failed").count() as u64;
        if n_failed > 0 {
            failed += n_failed;
            continue;
        }
        if let Err(e) = ctx
            .retrying(|| ctx.switch_asset(&tenant, &asset, &objs))
            .await
        {
            tracing::warn!(job = %job.id, asset = %asset, "could not switch an asset: {e}");
            for o in objs.iter().filter(|o| o.state != "done") {
                store::object_failed(db, &job.id, &o.key, &e.to_string(), engine.now_ms()).await?;
                failed += 1;
            }
        }
    }
    Ok(Outcome::Finished { failed })
}

impl Ctx {
    fn db(&self) -> &sqlx::AnyPool {
        &self.engine.inner.db
    }

    fn now(&self) -> i64 {
        self.engine.now_ms()
    }

    fn multipart(&self, size: u64) -> bool {
        self.dst.resumable_multipart() && size > self.cfg.part_size
    }

    /// Run `step` until it succeeds, a failure no retry helps, or `ops.retry_for_s`
    /// passed; exponential backoff from 0.5 s to 30 s between tries.
    async fn retrying<F, Fut>(&self, mut step: F) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<()>>,
    {
        let deadline = Instant::now() + Duration::from_secs(self.cfg.retry_for_s);
        let mut attempt = 0u32;
        loop {
            match step().await {
                Ok(()) => return Ok(()),
                Err(e) if retryable(&e) && Instant::now() < deadline => {
                    attempt = attempt.saturating_add(1);
                    let wait = crate::jobs::policy::backoff(
                        Duration::from_millis(500),
                        Duration::from_secs(30),
                        attempt,
                        rand::random::<f64>(),
                    );
                    tracing::info!(job = %self.job.id, "retrying in {wait:?} after: {e}");
                    tokio::time::sleep(wait).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Copy and verify one object, from wherever its row says it is.
    async fn object(&self, key: &str) -> Result<()> {
        self.retrying(|| self.advance(key)).await
    }

    async fn row(&self, key: &str) -> Result<ObjectRow> {
        let r = sqlx::query(
            "SELECT tenant_id, asset_id, obj_key, size, state, upload_id, md5 \
             FROM migration_objects WHERE job_id = $1 AND obj_key = $2",
        )
        .bind(&self.job.id)
        .bind(key)
        .fetch_one(self.db())
        .await?;
        Ok(ObjectRow {
            tenant_id: r.try_get(0)?,
            asset_id: r.try_get(1)?,
            key: r.try_get(2)?,
            size: r.try_get::<i64, _>(3)?.max(0) as u64,
            state: r.try_get(4)?,
            upload_id: r.try_get(5)?,
            md5: r.try_get(6)?,
        })
    }

    /// Move the object through its states until it is verified.
    async fn advance(&self, key: &str) -> Result<()> {
        loop {
            let o = self.row(key).await?;
            match o.state.as_str() {
                "planned" if self.multipart(o.size) => {
                    let upload = self.dst.create_multipart(key).await?;
                    if !store::upload_opened(self.db(), &self.job.id, key, &upload, self.now())
                        .await?
                    {
                        // Someone else moved it on: this upload is not needed.
                        self.dst.abort_multipart(key, &upload).await?;
                    }
                }
                "planned" => self.single(&o).await?,
                "copying" => self.parts(&o).await?,
                "copied" => self.verify(&o).await?,
                _ => return Ok(()),
            }
        }
    }

    /// Copy an object in one request (small objects, or any object to a local store).
    async fn single(&self, o: &ObjectRow) -> Result<()> {
        let key = o.key.as_str();
        if o.size > self.cfg.part_size {
            // A large object to a store without resumable multipart (local): streamed
            // through a file, never whole in memory.
            let path = match self.src.local_path(key) {
                Some(p) => p,
                None => {
                    let scratch = self.engine.work_dir().join(format!(
                        "migrate-{}-{}",
                        self.job.id,
                        md5_hex(key.as_bytes())
                    ));
                    self.src.get_concat_to_file(&[key], &scratch, false).await?;
                    scratch
                }
            };
            let (size, md5) = content_md5(&self.src, key)
                .await?
                .ok_or_else(|| Error::not_found("source object", key))?;
            if size != o.size {
                return Err(Error::InvalidInput(format!(
                    "the source object {key} changed size since the plan"
                )));
            }
            self.pacer.take(size).await;
            store::note_send(self.db(), &self.job.id, key, size).await?;
            self.dst.put_file(key, &path).await?;
            if self.src.local_path(key).as_deref() != Some(path.as_path()) {
                let _ = tokio::fs::remove_file(&path).await;
            }
            store::object_copied(self.db(), &self.job.id, key, &md5, 0, false, self.now()).await?;
            return Ok(());
        }
        let data: Bytes = self.src.get_bytes(key).await?;
        if data.len() as u64 != o.size {
            return Err(Error::InvalidInput(format!(
                "the source object {key} changed size since the plan"
            )));
        }
        let md5 = md5_hex(&data);
        // Already in the target with the same bytes (a copy made before the job knew):
        // not sent again.
        let present = if self.dst.local_path(key).is_some() {
            content_md5(&self.dst, key)
                .await?
                .is_some_and(|(n, m)| n == o.size && m == md5)
        } else {
            match self.dst.head(key).await {
                Ok(info) => {
                    info.size == o.size && info.etag.as_deref().map(unquote) == Some(md5.as_str())
                }
                Err(sluice_storage::Error::NotFound { .. }) => false,
                Err(e) => return Err(e.into()),
            }
        };
        if present {
            store::object_copied(self.db(), &self.job.id, key, &md5, 0, true, self.now()).await?;
            return Ok(());
        }
        self.pacer.take(o.size).await;
        store::note_send(self.db(), &self.job.id, key, o.size).await?;
        self.dst.put(key, data).await?;
        store::object_copied(self.db(), &self.job.id, key, &md5, 0, false, self.now()).await?;
        Ok(())
    }

    /// Send the parts not yet recorded, then complete the upload.
    async fn parts(&self, o: &ObjectRow) -> Result<()> {
        let key = o.key.as_str();
        let upload = o
            .upload_id
            .clone()
            .ok_or_else(|| Error::Conflict(format!("{key} is copying without an upload id")))?;
        let ps = self.cfg.part_size;
        let n = o.size.div_ceil(ps);
        let done: std::collections::BTreeSet<u32> = store::parts(self.db(), &self.job.id, key)
            .await?
            .iter()
            .map(|p| p.number)
            .collect();
        for number in 1..=n {
            let number = u32::try_from(number)
                .map_err(|_| Error::InvalidInput(format!("{key} has too many parts")))?;
            if done.contains(&number) {
                continue;
            }
            let start = u64::from(number - 1) * ps;
            let end = (start + ps).min(o.size);
            let data = self.src.get_range(key, start..end).await?;
            if data.len() as u64 != end - start {
                return Err(Error::InvalidInput(format!(
                    "the source object {key} changed size since the plan"
                )));
            }
            let md5 = md5_hex(&data);
            self.pacer.take(end - start).await;
            store::note_send(self.db(), &self.job.id, key, end - start).await?;
            let etag = match self
                .dst
                .put_part(key, &upload, (number - 1) as usize, data)
                .await
            {
                Ok(t) => t,
                Err(sluice_storage::Error::NotFound { .. }) => {
                    // The upload is gone (aborted behind our back): start the object over.
                    store::upload_lost(self.db(), &self.job.id, key, self.now()).await?;
                    return Err(Error::Conflict(format!(
                        "the multipart upload of {key} disappeared; starting it over"
                    )));
                }
                Err(e) => return Err(e.into()),
            };
            if unquote(&etag) != md5 {
                return Err(mismatch(
                    key,
                    &format!("part {number}'s ETag is not its MD5"),
                ));
            }
            if number >= 2 {
                crash_point("in_part").await;
            }
            let part = PartRow {
                number,
                size: end - start,
                md5,
                etag: unquote(&etag).to_string(),
            };
            store::record_part(self.db(), &self.job.id, key, &upload, &part).await?;
        }
        let parts = store::parts(self.db(), &self.job.id, key).await?;
        let composite = composite_etag(&parts).ok_or_else(|| mismatch(key, "bad part MD5"))?;
        crash_point("before_complete").await;
        let etags = parts.iter().map(|p| p.etag.clone()).collect();
        if let Err(e) = self.dst.complete_multipart(key, &upload, etags).await {
            // Completed before a crash (the upload is gone, the object is there)?
            let there = match self.dst.head(key).await {
                Ok(info) => {
                    info.size == o.size
                        && info.etag.as_deref().map(unquote) == Some(composite.as_str())
                }
                Err(_) => false,
            };
            if !there {
                return Err(e.into());
            }
        }
        crash_point("after_complete").await;
        store::upload_completed(self.db(), &self.job.id, key, &composite, self.now()).await?;
        Ok(())
    }

    /// Check the copy from what the copy computed (and, with `verify: full`, by reading it
    /// back). A copy that does not verify is made again.
    async fn verify(&self, o: &ObjectRow) -> Result<()> {
        let key = o.key.as_str();
        let parts = store::parts(self.db(), &self.job.id, key).await?;
        let ok = if !parts.is_empty() {
            self.verify_multipart(o, &parts).await?
        } else {
            self.verify_single(o).await?
        };
        if let Err(what) = ok {
            store::upload_lost(self.db(), &self.job.id, key, self.now()).await?;
            store::set_state(
                self.db(),
                &self.job.id,
                key,
                "copied",
                "planned",
                self.now(),
            )
            .await?;
            return Err(mismatch(key, &what));
        }
        store::set_state(
            self.db(),
            &self.job.id,
            key,
            "copied",
            "verified",
            self.now(),
        )
        .await?;
        Ok(())
    }

    async fn verify_multipart(
        &self,
        o: &ObjectRow,
        parts: &[PartRow],
    ) -> Result<std::result::Result<(), String>> {
        let key = o.key.as_str();
        let composite = composite_etag(parts).unwrap_or_default();
        let info = match self.dst.head(key).await {
            Ok(i) => i,
            Err(sluice_storage::Error::NotFound { .. }) => {
                return Ok(Err("the copy is missing".into()));
            }
            Err(e) => return Err(e.into()),
        };
        if info.size != o.size {
            return Ok(Err(format!("size {} instead of {}", info.size, o.size)));
        }
        if info.etag.as_deref().map(unquote) != Some(composite.as_str()) {
            return Ok(Err(
                "the composite ETag does not match the parts sent".into()
            ));
        }
        if self.job.verify_full {
            let mut start = 0u64;
            for p in parts {
                let data = self.dst.get_range(key, start..start + p.size).await?;
                if md5_hex(&data) != p.md5 {
                    return Ok(Err(format!("part {} reads back different bytes", p.number)));
                }
                start += p.size;
            }
        }
        Ok(Ok(()))
    }

    async fn verify_single(&self, o: &ObjectRow) -> Result<std::result::Result<(), String>> {
        let key = o.key.as_str();
        let Some(md5) = o.md5.as_deref() else {
            return Ok(Err("no checksum was recorded".into()));
        };
        if self.dst.local_path(key).is_some() || self.job.verify_full {
            return Ok(match content_md5(&self.dst, key).await? {
                None => Err("the copy is missing".into()),
                Some((n, m)) if n == o.size && m == md5 => Ok(()),
                Some((n, _)) if n != o.size => Err(format!("size {n} instead of {}", o.size)),
                Some(_) => Err("the content MD5 differs".into()),
            });
        }
        Ok(match self.dst.head(key).await {
            Ok(i) if i.size != o.size => Err(format!("size {} instead of {}", i.size, o.size)),
            Ok(i) if i.etag.as_deref().map(unquote) == Some(md5) => Ok(()),
            Ok(_) => Err("the ETag is not the content MD5".into()),
            Err(sluice_storage::Error::NotFound { .. }) => Err("the copy is missing".into()),
            Err(e) => return Err(e.into()),
        })
    }

    /// All of an asset's objects verified: in one transaction, the target copy becomes
    /// active (its figures join the counters) and the source copy draining; then, if
    /// asked, the source objects are deleted and the source copy row with them.
    async fn switch_asset(&self, tenant: &str, asset: &str, objs: &[ObjectRow]) -> Result<()> {
        let db = self.db();
        let job = &self.job;
        let fresh: Vec<String> = {
            let rows = sqlx::query(
                "SELECT state FROM migration_objects WHERE job_id = $1 AND tenant_id = $2 \
                 AND asset_id = $3",
            )
            .bind(&job.id)
            .bind(tenant)
            .bind(asset)
            .fetch_all(db)
            .await?;
            rows.iter()
                .map(|r| r.try_get::<String, _>(0))
                .collect::<std::result::Result<_, _>>()?
        };
        let src_copy = sqlx::query(
            "SELECT tier, state FROM asset_copies WHERE tenant_id = $1 AND asset_id = $2 \
             AND store = $3",
        )
        .bind(tenant)
        .bind(asset)
        .bind(&job.from_store)
        .fetch_optional(db)
        .await?;
        let tier = match &src_copy {
            Some(r) => Tier::parse(&r.try_get::<String, _>(0)?).unwrap_or(Tier::Hot),
            None => {
                // The source copy row is gone: deleted after a completed switch (nothing
                // left to do), or the asset went away meanwhile.
                let dst_row = self
                    .engine
                    .asset_copies(tenant, asset)
                    .await?
                    .into_iter()
                    .any(|c| c.store == job.to_store);
                if dst_row {
                    return Ok(());
                }
                return Err(Error::Conflict(format!(
                    "asset {asset} has no copy in store {} any more",
                    job.from_store
                )));
            }
        };
        let src_key = CopyKey {
            tenant,
            asset,
            tier,
            store: &job.from_store,
        };
        if fresh.iter().any(|s| s == "verified") {
            let bytes = objs.iter().try_fold(0u64, |a, o| a.checked_add(o.size));
            let bytes =
                bytes.ok_or_else(|| Error::InvalidInput("the asset's size overflows".into()))?;
            let now = self.now();
            let after = if job.delete_source {
                "switched"
            } else {
                "done"
            };
            let mut tx = db.begin().await?;
            let dst_key = CopyKey {
                tenant,
                asset,
                tier,
                store: &job.to_store,
            };
            let created = crate::store::insert_copy(
                &mut tx,
                dst_key,
                CopyState::Active,
                bytes,
                objs.len() as u64,
                None,
                now,
            )
            .await?;
            if !created {
                // The target already held a copy (draining, from an earlier migration
                // away from it, whose objects were found in place): it is the home again.
                crate::store::switch_copy(
                    &mut tx,
                    dst_key,
                    CopyState::Draining,
                    CopyState::Active,
                    None,
                    now,
                )
                .await?;
            }
            crate::store::switch_copy(
                &mut tx,
                src_key,
                CopyState::Active,
                CopyState::Draining,
                None,
                now,
            )
            .await?;
            sqlx::query(
                "UPDATE migration_objects SET state = $1, updated_at = $2 WHERE job_id = $3 \
                 AND tenant_id = $4 AND asset_id = $5 AND state = 'verified'",
            )
            .bind(after)
            .bind(now)
            .bind(&job.id)
            .bind(tenant)
            .bind(asset)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            self.engine.forget_readable(tenant, asset).await;
            crash_point("after_switch").await;
        }
        if !job.delete_source {
            return Ok(());
        }
        for o in objs {
            if self.row(&o.key).await?.state == "switched" {
                self.src.delete(&o.key).await?;
                store::set_state(db, &job.id, &o.key, "switched", "done", self.now()).await?;
            }
        }
        let mut tx = db.begin().await?;
        crate::store::delete_copy(&mut tx, src_key, CopyState::Draining).await?;
        tx.commit().await?;
        self.engine.forget_readable(tenant, asset).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composite_etag_is_the_md5_of_part_md5s() {
        let part = |n: u32, data: &[u8]| PartRow {
            number: n,
            size: data.len() as u64,
            md5: md5_hex(data),
            etag: md5_hex(data),
        };
        let parts = [part(1, b"hello "), part(2, b"world")];
        let mut joined = Vec::new();
        joined.extend(Md5::digest(b"hello "));
        joined.extend(Md5::digest(b"world"));
        assert_eq!(
            composite_etag(&parts).unwrap(),
            format!("{}-2", md5_hex(&joined))
        );
        assert_eq!(unquote("\"abc\""), "abc");
        let bad = [PartRow {
            md5: "zz".into(),
            ..part(1, b"x")
        }];
        assert!(composite_etag(&bad).is_none());
    }
}
