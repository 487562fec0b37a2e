//! The end of a stream (by request, by the last playlist's ENDLIST, or idle): claimed once
//! across gateways with a heartbeat, the recording assembled, and the VOD job queued.

use super::*;

const ENDING_STALE: std::time::Duration = std::time::Duration::from_secs(20);

/// How often a process ending a stream refreshes it, and after how long without a refresh
/// another process takes the end over (the first one died half-way).
const ENDING_HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(5);

impl Engine {
    /// The encoder said it is done with every playlist it pushed (`EXT-X-ENDLIST`) and
    /// every segment those playlists name is stored: end the stream. Checked after each
    /// playlist and each segment, because the last segment's PUT may still be in flight
    /// when the final playlist arrives (ffmpeg does not wait for answers); a segment that
    /// never comes is skipped when the idle timeout ends the stream.
    pub(super) async fn end_if_complete(&self, id: &str) -> Result<()> {
        let db = &self.inner.db;
        let playlists = store::live_playlists(db, id).await?;
        if playlists.is_empty()
            || !playlists.iter().all(|p| p.ended)
            || store::live_missing_segments(db, id).await? > 0
        {
            return Ok(());
        }
        let engine = self.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            if let Err(e) = engine.finalize_live(&id, "endlist").await {
                tracing::warn!(stream = %id, "ending the live stream failed (retried by the sweeper): {e}");
            }
        });
        Ok(())
    }

    /// End a stream: close its viewer playlists and turn the recording into the asset's
    /// source, queued for transcoding ahead of uploads. Idempotent; a crash half-way is
    /// finished by the sweeper.
    pub async fn finalize_live(&self, id: &str, reason: &str) -> Result<()> {
        if !self.claim_live_end(id, reason).await? {
            return Ok(()); // ended already, or another process is ending it
        }
        self.complete_live_end(id).await
    }

    /// Claim the end of a stream (`ending`): true for exactly one caller.
    pub(super) async fn claim_live_end(&self, id: &str, reason: &str) -> Result<bool> {
        let now = self.now_ms();
        let stale_before = now - ENDING_STALE.as_millis() as i64;
        store::live_begin_end(&self.inner.db, id, reason, now, stale_before).await
    }

    /// The work of ending a claimed stream: final playlists, the recording, the job.
    pub(super) async fn complete_live_end(&self, id: &str) -> Result<()> {
        let db = &self.inner.db;
        // While this process works on the end, it says so: an `ending` stream whose
        // heartbeat stops (the process died) is finished by the sweeper soon after.
        let _beat = crate::AbortOnDrop::every(ENDING_HEARTBEAT, "refresh an ending stream", {
            let (engine, id) = (self.clone(), id.to_string());
            move || {
                let (engine, id) = (engine.clone(), id.clone());
                async move { store::live_touch_ending(&engine.inner.db, &id, engine.now_ms()).await }
            }
        });
        let row = store::get_live(db, None, id)
            .await?
            .ok_or_else(|| Error::not_found("live stream", id))?;
        let lock = self.inner.live_locks.get(id);
        let guard = lock.lock().await;
        let playlists = store::live_playlists(db, id).await?;
        for p in &playlists {
            self.render_live_playlist(&row, &p.name, true).await?;
        }
        drop(guard);
        let primary = row
            .primary_playlist
            .clone()
            .or_else(|| playlists.first().map(|p| p.name.clone()));
        let recorded = match &primary {
            Some(p) => self.assemble_recording(&row, p).await?,
            None => 0,
        };
        let asset = &row.asset_id;
        if recorded == 0 {
            store::fail_asset(
                db,
                &row.tenant_id,
                asset,
                "the live stream ended without any recorded segment",
                self.now_ms(),
            )
            .await?;
        } else {
            store::live_asset_recorded(db, &row.tenant_id, asset, recorded as i64, self.now_ms())
                .await?;
            // An earlier attempt that died after queueing the job: never a second one.
            let kind = match row.vod_mode {
                VodMode::Transcode => "transcode",
                VodMode::Copy => crate::jobs::LIVE_COPY_KIND,
            };
            let job_id = self
                .queue_finished_upload(&row.tenant_id, asset, JobClass::LiveToVod, kind)
                .await?;
            tracing::info!(stream = id, asset = %asset, job = %job_id, bytes = recorded, vod = row.vod_mode.as_str(), "live stream recorded, VOD job queued");
        }
        store::live_ended(db, id, self.now_ms()).await?;
        self.inner.live_locks.forget(id);
        let reason = row.end_reason.clone().unwrap_or_default();
        metrics::counter!("sluice_live_streams_ended_total", "reason" => reason).increment(1);
        Ok(())
    }

    /// Concatenate the stored segments of `playlist` (after its first init segment, for
    /// fMP4) into the asset's source. Returns its size (0: nothing was recorded).
    pub(super) async fn assemble_recording(&self, row: &LiveRow, playlist: &str) -> Result<u64> {
        let db = &self.inner.db;
        let segs = store::live_playlist_segments(db, &row.id, playlist).await?;
        let inits: HashMap<i64, String> = store::live_received_inits(db, &row.id)
            .await?
            .into_iter()
            .collect();
        let prefix = keys::live_prefix(&row.tenant_id, &row.asset_id);
        let mut parts: Vec<String> = vec![];
        let mut first_init: Option<i64> = None;
        for s in segs.iter().filter(|s| s.received) {
            if let Some(m) = s.map_seq {
                match first_init {
                    None => match inits.get(&m) {
                        Some(ext) => {
                            first_init = Some(m);
                            parts.push(format!("{prefix}{}", segment_rel(m, ext)));
                        }
                        None => continue,
                    },
                    // A second init (an encoder restart with new parameters) cannot be
                    // spliced into one MP4: the recording keeps the first run.
                    Some(f) if f != m => break,
                    Some(_) => {}
                }
            }
            parts.push(format!("{prefix}{}", segment_rel(s.seq, &s.ext)));
        }
        if parts.is_empty() || (first_init.is_some() && parts.len() == 1) {
            return Ok(0);
        }
        let dir = self.inner.work_dir.join("live");
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| Error::io(&dir, e))?;
        let path = dir.join(format!("{}-recording", row.id));
        let total = self
            .inner
            .storage
            .get_concat_to_file(&parts, &path, true)
            .await?;
        let key = keys::source(&row.tenant_id, &row.asset_id);
        self.inner.storage.put_file_move(&key, &path).await?;
        Ok(total)
    }

    /// End streams idle past `live.idle_timeout_s` (and finish endings a crash
    /// interrupted); publish the per-state stream gauge. Returns how many ended.
    pub async fn sweep_live(&self) -> Result<usize> {
        let cfg = &self.inner.config.live;
        let now = self.now_ms();
        let idle_before = now - (cfg.idle_timeout_s * 1000) as i64;
        let stale_before = now - ENDING_STALE.as_millis() as i64;
        let ids = store::live_to_finalize(&self.inner.db, idle_before, stale_before).await?;
        let mut ended = 0;
        for id in ids {
            match self.finalize_live(&id, "idle").await {
                Ok(()) => ended += 1,
                Err(e) => tracing::warn!(stream = %id, "ending an idle live stream failed: {e}"),
            }
        }
        for state in ["idle", "live", "ending", "ended"] {
            metrics::gauge!("sluice_live_streams", "state" => state).set(0.0);
        }
        for (state, n) in store::count_live_by_state(&self.inner.db).await? {
            metrics::gauge!("sluice_live_streams", "state" => state).set(n as f64);
        }
        Ok(ended)
    }
}
