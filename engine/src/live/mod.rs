//! Live HLS push: an encoder (`ffmpeg -f hls -method PUT`, GStreamer `hlssink2` with a PUT
//! sink) PUTs its playlists and segments under a stream's ingest URL; viewers get playlists
//! the engine writes itself; when the stream ends the recording becomes a VOD asset.
//!
//! Why the engine rewrites the playlists instead of serving the encoder's:
//! - the playlist may arrive before a segment it names: a viewer must never be sent to a
//!   segment that is not stored yet, so a viewer playlist stops at the first missing one;
//! - encoders reuse segment names after a restart (`index0.ts` again): segments are stored
//!   under our own sequence numbers, so a cached, "immutable" segment is never rewritten;
//! - the encoder's sliding window (and its DELETEs) must not shorten the DVR window or the
//!   recording: the engine keeps every segment and windows the viewer playlist itself.
//!
//! All state lives in the metadata database (any gateway can take any request); requests
//! of one stream are serialised per process, which is how encoders send them anyway.

pub mod m3u8;
pub mod vod;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde::Serialize;
use sluice_storage::keys;
use tokio::io::AsyncWriteExt;

use crate::store::{self, LivePlaylistRow, LiveRow};
use crate::{
    Engine, Error, IngestGrant, JobClass, PlaybackGrant, Principal, Result, hash_key, random_token,
    rfc3339_ms,
};

use m3u8::{OutSegment, Playlist};

/// How a stream's recording becomes a VOD asset when it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VodMode {
    /// Transcode the recording to the tenant's ladder (ahead of uploads in the queue).
    #[default]
    Transcode,
    /// Publish the renditions the encoder pushed as they are: no encode, ready in seconds,
    /// the quality is the encoder's.
    Copy,
}

impl VodMode {
    pub fn as_str(self) -> &'static str {
        match self {
            VodMode::Transcode => "transcode",
            VodMode::Copy => "copy",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "transcode" => Ok(VodMode::Transcode),
            "copy" => Ok(VodMode::Copy),
            other => Err(Error::InvalidInput(format!(
                "vod must be \"transcode\" or \"copy\", not {other:?}"
            ))),
        }
    }
}

/// A live stream as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct LiveStream {
    pub id: String,
    pub asset_id: String,
    pub name: Option<String>,
    /// `idle` (nothing received yet), `receiving`, `stalled` (no request for a while),
    /// `rejected` (the last request was refused: see `last_error`), `ending`, `ended`.
    pub state: String,
    pub end_reason: Option<String>,
    pub dvr_window_s: u64,
    /// How the recording becomes VOD: `transcode` or `copy`.
    pub vod: VodMode,
    pub segments_received: u64,
    pub bytes_received: u64,
    pub rejected_requests: u64,
    pub last_error: Option<serde_json::Value>,
    pub last_received_at: Option<String>,
    pub created_at: String,
    pub ended_at: Option<String>,
    pub playlists: Vec<LivePlaylistInfo>,
    /// Set at creation only: the ingest URL embeds the secret. Not serialized: the gateway
    /// renders it as `ingest_url`.
    #[serde(skip)]
    pub ingest: Option<IngestGrant>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LivePlaylistInfo {
    pub name: String,
    pub segments: u64,
    pub ended: bool,
}

/// What an ingest request names under the stream's ingest URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestKind {
    Playlist,
    Segment,
}

/// Segment extensions accepted from encoders.
const SEGMENT_EXTS: [&str; 6] = ["ts", "m4s", "mp4", "m4v", "m4a", "cmfv"];

/// Classify an ingest name, or refuse it.
pub fn ingest_kind(name: &str) -> Result<IngestKind> {
    m3u8::validate_uri(name).map_err(Error::InvalidInput)?;
    let ext = name.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    if ext == "m3u8" {
        Ok(IngestKind::Playlist)
    } else if SEGMENT_EXTS.contains(&ext) {
        Ok(IngestKind::Segment)
    } else {
        Err(Error::InvalidInput(format!(
            "{name:?}: only .m3u8 playlists and .ts/.m4s/.mp4 segments can be pushed"
        )))
    }
}

/// Recognise the start of a segment: MPEG-TS (sync byte every 188 bytes) or ISO-BMFF
/// (a known top-level box first).
pub fn sniff_segment(head: &[u8]) -> Result<()> {
    if head.first() == Some(&0x47) && (head.len() <= 188 || head[188] == 0x47) {
        return Ok(());
    }
    if head.len() >= 8 {
        let boxtype = &head[4..8];
        const BOXES: [&[u8; 4]; 8] = [
            b"ftyp", b"styp", b"moof", b"sidx", b"moov", b"emsg", b"prft", b"free",
        ];
        if BOXES.iter().any(|b| &b[..] == boxtype) {
            return Ok(());
        }
    }
    Err(Error::UnsupportedSegment(
        "the segment is neither MPEG-TS nor fragmented MP4".into(),
    ))
}

/// One engine's (one process's) locks of live streams' state changes. Held per engine,
/// not per program: two engines in one test process behave like two gateways.
#[derive(Default)]
pub(crate) struct StreamLocks(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl StreamLocks {
    fn get(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(id.to_string()).or_default().clone()
    }

    fn forget(&self, id: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
    }
}

/// The stable error code stored with a refused ingest request.
fn reject_code(e: &Error) -> &'static str {
    match e {
        Error::InvalidInput(_) => "invalid_request",
        Error::TooLarge { .. } => "too_large",
        Error::UnsupportedSegment(_) => "unsupported_media",
        Error::Conflict(_) => "stream_ended",
        Error::Body(_) => "body_error",
        _ => "internal",
    }
}

/// Sequence-named object of a stored segment, relative to the live prefix.
fn segment_rel(seq: i64, ext: &str) -> String {
    format!("seg/{seq:08}.{ext}")
}

/// The viewer-playlist position of media sequence number `msn` of the current run
/// (within a run, positions and media sequence numbers advance together).
fn position_of(state: &LivePlaylistRow, msn: i64) -> i64 {
    state.next_pos - 1 - (state.last_msn - msn)
}

/// An ending or ended stream takes no more pushes.
fn refuse_if_ended(row: &LiveRow) -> Result<()> {
    if matches!(row.state.as_str(), "ending" | "ended") {
        return Err(Error::Conflict(format!(
            "live stream {} has ended; create a new stream to push again",
            row.id
        )));
    }
    Ok(())
}

/// How often a process ending a stream refreshes it, and after how long without a refresh
/// another process takes the end over (the first one died half-way).
const ENDING_HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(5);
const ENDING_STALE: std::time::Duration = std::time::Duration::from_secs(20);

impl Engine {
    fn dvr_bounds(&self) -> (u64, u64) {
        let l = &self.inner.config.live;
        (l.dvr_window_s, l.max_dvr_window_s)
    }

    /// `POST /v1/live`: a stream, the asset it records into, and its ingest grant (which
    /// carries a secret: shown once).
    pub async fn create_live(
        &self,
        who: &Principal,
        name: Option<&str>,
        dvr_window_s: Option<u64>,
        vod: Option<&str>,
    ) -> Result<LiveStream> {
        let tenant = self.tenant_of(who)?.to_string();
        let (default_dvr, max_dvr) = self.dvr_bounds();
        let dvr = dvr_window_s.unwrap_or(default_dvr);
        if dvr == 0 || dvr > max_dvr {
            return Err(Error::InvalidInput(format!(
                "dvr_window_s must be between 1 and {max_dvr}"
            )));
        }
        if let Some(n) = name
            && (n.trim().is_empty() || n.len() > 200)
        {
            return Err(Error::InvalidInput(
                "name must be 1 to 200 characters".into(),
            ));
        }
        let vod = match vod {
            Some(v) => VodMode::parse(v)?,
            None => self.inner.config.live.vod,
        };
        let id = ulid::Ulid::new().to_string();
        let asset = ulid::Ulid::new().to_string();
        let token = random_token(24);
        let now = self.now_ms();
        store::insert_live(
            &self.inner.db,
            store::NewLive {
                id: &id,
                tenant: &tenant,
                asset: &asset,
                name,
                ingest_hash: &hex::encode(hash_key(&token)),
                dvr_window_s: dvr as i64,
                vod_mode: vod.as_str(),
                now,
            },
        )
        .await?;
        tracing::info!(stream = %id, asset = %asset, "live stream created");
        let row = store::get_live(&self.inner.db, Some(&tenant), &id)
            .await?
            .ok_or_else(|| Error::not_found("live stream", &id))?;
        let mut s = self.live_view(row).await?;
        s.ingest = Some(IngestGrant { stream: id, token });
        Ok(s)
    }

    pub async fn get_live(&self, who: &Principal, id: &str) -> Result<LiveStream> {
        let tenant = self.tenant_of(who)?;
        let row = store::get_live(&self.inner.db, Some(tenant), id)
            .await?
            .ok_or_else(|| Error::not_found("live stream", id))?;
        self.live_view(row).await
    }

    pub async fn list_live(&self, who: &Principal) -> Result<Vec<LiveStream>> {
        let tenant = self.tenant_of(who)?;
        let rows = store::list_live(&self.inner.db, tenant, 100).await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            out.push(self.live_view(r).await?);
        }
        Ok(out)
    }

    async fn live_view(&self, r: LiveRow) -> Result<LiveStream> {
        let now = self.now_ms();
        let stall_ms = (self.inner.config.live.stall_after_s * 1000) as i64;
        let rejected_last = match (r.last_error_at, r.last_ok_at) {
            (Some(e), Some(ok)) => e >= ok,
            (Some(_), None) => true,
            _ => false,
        };
        let state = match r.state.as_str() {
            "idle" | "live" if rejected_last => "rejected",
            "live" if r.last_ok_at.is_some_and(|t| now - t > stall_ms) => "stalled",
            "live" => "receiving",
            other => other,
        }
        .to_string();
        let mut playlists = vec![];
        for p in store::live_playlists(&self.inner.db, &r.id).await? {
            playlists.push(LivePlaylistInfo {
                segments: p.next_pos.max(0) as u64,
                name: p.name,
                ended: p.ended,
            });
        }
        Ok(LiveStream {
            id: r.id,
            asset_id: r.asset_id,
            name: r.name,
            state,
            end_reason: r.end_reason,
            dvr_window_s: r.dvr_window_s as u64,
            vod: r.vod_mode,
            segments_received: r.segments_received as u64,
            bytes_received: r.bytes_received as u64,
            rejected_requests: r.rejected_requests as u64,
            last_error: r.last_error.and_then(|e| serde_json::from_str(&e).ok()),
            last_received_at: r.last_ok_at.map(rfc3339_ms),
            created_at: rfc3339_ms(r.created_at),
            ended_at: r.ended_at.map(rfc3339_ms),
            playlists,
            ingest: None,
        })
    }

    /// A signed playback grant for a live stream: its master playlist if the encoder pushed
    /// one, else the media playlist it records (`index.m3u8` until one arrives).
    pub async fn live_playback_grant(
        &self,
        who: &Principal,
        id: &str,
        ttl_s: Option<u64>,
    ) -> Result<PlaybackGrant> {
        let tenant = self.tenant_of(who)?;
        let row = store::get_live(&self.inner.db, Some(tenant), id)
            .await?
            .ok_or_else(|| Error::not_found("live stream", id))?;
        let entry = row
            .master
            .or(row.primary_playlist)
            .unwrap_or_else(|| "index.m3u8".to_string());
        self.sign_playback(
            &row.tenant_id,
            &row.asset_id,
            &format!("live/{entry}"),
            ttl_s,
        )
    }

    /// `POST /v1/live/{id}/end`: end a stream now (as the idle timeout would). Answers at
    /// once, with the stream `ending` (or already `ended`).
    pub async fn end_live(&self, who: &Principal, id: &str) -> Result<LiveStream> {
        let tenant = self.tenant_of(who)?;
        store::get_live(&self.inner.db, Some(tenant), id)
            .await?
            .ok_or_else(|| Error::not_found("live stream", id))?;
        // Claimed now, finished in the background (assembling a long recording may take
        // longer than an API deadline): the answer says `ending`; the stream turns `ended`
        // when its recording is queued, and a crash half-way is finished by the sweeper.
        if self.claim_live_end(id, "api").await? {
            let (engine, id) = (self.clone(), id.to_string());
            tokio::spawn(async move {
                if let Err(e) = engine.complete_live_end(&id).await {
                    tracing::warn!(stream = %id, "ending the live stream failed (retried by the sweeper): {e}");
                }
            });
        }
        self.get_live(who, id).await
    }

    /// The stream an ingest request names, if its token is right (404 otherwise: an
    /// ingest URL reveals nothing about other streams).
    async fn ingest_stream(&self, id: &str, token: &str) -> Result<LiveRow> {
        let row = store::get_live(&self.inner.db, None, id)
            .await?
            .ok_or_else(|| Error::not_found("live stream", id))?;
        let expected: [u8; 32] = hex::decode(&row.ingest_hash)
            .ok()
            .and_then(|v| v.try_into().ok())
            .unwrap_or([0; 32]);
        if !crate::constant_time_eq(&hash_key(token), &expected) {
            return Err(Error::not_found("live stream", id));
        }
        refuse_if_ended(&row)?;
        Ok(row)
    }

    async fn record_reject(&self, id: &str, kind: &'static str, e: &Error) {
        let code = reject_code(e);
        metrics::counter!("sluice_live_requests_total", "kind" => kind, "result" => code)
            .increment(1);
        let now = self.now_ms();
        let json = serde_json::json!({
            "code": code, "message": e.to_string(), "at": rfc3339_ms(now)
        })
        .to_string();
        tracing::warn!(stream = id, code, "live ingest request refused: {e}");
        if let Err(err) = store::live_rejected(&self.inner.db, id, &json, now).await {
            tracing::warn!(stream = id, "cannot record a refused live request: {err}");
        }
    }

    /// Check an ingest URL (stream and token) before the gateway reads a request body:
    /// an unauthenticated client never makes the server buffer anything.
    pub async fn live_check_ingest(&self, id: &str, token: &str) -> Result<()> {
        self.ingest_stream(id, token).await.map(|_| ())
    }

    /// A request the gateway refused before the engine saw it (e.g. an oversized
    /// playlist body): recorded on the stream if the ingest URL is genuine.
    pub async fn live_refused(&self, id: &str, token: &str, kind: &'static str, e: Error) -> Error {
        if self.ingest_stream(id, token).await.is_ok() {
            self.record_reject(id, kind, &e).await;
        }
        e
    }

    /// PUT of a playlist under the ingest URL.
    pub async fn live_put_playlist(
        &self,
        id: &str,
        token: &str,
        name: &str,
        body: Bytes,
    ) -> Result<()> {
        let row = self.ingest_stream(id, token).await?;
        let res = self.live_playlist_inner(&row, name, body).await;
        match &res {
            Ok(()) => {
                metrics::counter!("sluice_live_requests_total", "kind" => "playlist", "result" => "ok")
                    .increment(1);
            }
            Err(e) if !e.is_retryable() => self.record_reject(id, "playlist", e).await,
            Err(_) => {}
        }
        res
    }

    async fn live_playlist_inner(&self, row: &LiveRow, name: &str, body: Bytes) -> Result<()> {
        if ingest_kind(name)? != IngestKind::Playlist {
            return Err(Error::InvalidInput(format!("{name:?} is not a playlist")));
        }
        let max = self.inner.config.live.max_playlist_bytes;
        if body.len() as u64 > max {
            return Err(Error::TooLarge {
                size: body.len() as u64,
                max,
            });
        }
        let text = std::str::from_utf8(&body)
            .map_err(|_| Error::InvalidInput("the playlist is not UTF-8 text".into()))?;
        let parsed = m3u8::parse(text)
            .map_err(|e| Error::InvalidInput(format!("malformed playlist {name}: {e}")))?;
        let db = &self.inner.db;
        let lock = self.inner.live_locks.get(&row.id);
        let _guard = lock.lock().await;
        // Re-checked under the lock: a stream that began ending while this request
        // waited takes nothing more (its final playlists and recording are being made).
        self.still_open(&row.id).await?;
        match parsed {
            Playlist::Master(m) => {
                let primary = m
                    .variants
                    .iter()
                    .max_by_key(|v| v.bandwidth)
                    .map(|v| v.uri.as_str());
                let key = format!("{}{name}", keys::live_prefix(&row.tenant_id, &row.asset_id));
                // Never the pushed text: the regenerated master (no off-site entries).
                self.inner
                    .storage
                    .put(&key, Bytes::from(m.rendered.clone()))
                    .await?;
                store::live_set_master(db, &row.id, name, primary).await?;
            }
            Playlist::Media(m) => {
                self.record_media_playlist(row, name, &m).await?;
                store::live_default_primary(db, &row.id, name).await?;
                self.render_live_playlist(row, name, false).await?;
            }
        }
        store::live_ok(db, &row.id, body.len() as i64, 0, self.now_ms()).await?;
        drop(_guard);
        self.end_if_complete(&row.id).await?;
        Ok(())
    }

    /// Refuse when the stream is ending or ended (read now, not when the request began).
    async fn still_open(&self, id: &str) -> Result<()> {
        let row = store::get_live(&self.inner.db, None, id)
            .await?
            .ok_or_else(|| Error::not_found("live stream", id))?;
        refuse_if_ended(&row)
    }

    /// The encoder said it is done with every playlist it pushed (`EXT-X-ENDLIST`) and
    /// every segment those playlists name is stored: end the stream. Checked after each
    /// playlist and each segment, because the last segment's PUT may still be in flight
    /// when the final playlist arrives (ffmpeg does not wait for answers); a segment that
    /// never comes is skipped when the idle timeout ends the stream.
    async fn end_if_complete(&self, id: &str) -> Result<()> {
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

    /// Bind the new entries of a pushed media playlist to segment rows.
    async fn record_media_playlist(
        &self,
        row: &LiveRow,
        name: &str,
        m: &m3u8::MediaPlaylist,
    ) -> Result<()> {
        let db = &self.inner.db;
        let mut state = store::live_playlists(db, &row.id)
            .await?
            .into_iter()
            .find(|p| p.name == name)
            .unwrap_or(LivePlaylistRow {
                name: name.to_string(),
                target_duration: m.target_duration as i64,
                epoch: 0,
                first_msn: -1,
                last_msn: -1,
                next_pos: 0,
                ended: false,
            });
        let first = m.media_sequence as i64;
        // The media sequence went backwards: the encoder restarted (what follows is new, after
        // a discontinuity), unless this is a late copy of an earlier version of the playlist
        // that an encoder uploading in parallel let the newer one overtake.
        let mut restart = false;
        if state.first_msn >= 0 && first < state.first_msn {
            if self.is_late_copy(&row.id, &state, m).await? {
                tracing::debug!(stream = %row.id, playlist = name, "late copy of a playlist ignored");
                return Ok(());
            }
            restart = true;
        } else if self.restarted_in_place(&row.id, &state, m).await? {
            // A restart whose media sequence does not go backwards (an event playlist
            // starts at 0 again; a restart at the same number): the new run names, at a
            // number already recorded, another segment. Segments at one number never
            // change otherwise.
            restart = true;
        }
        if restart {
            state.epoch += 1;
            state.last_msn = -1;
        }
        let restart_run = restart;
        state.first_msn = first;
        state.target_duration = state.target_duration.max(m.target_duration as i64);
        for (i, seg) in m.segments.iter().enumerate() {
            let msn = first + i as i64;
            if msn <= state.last_msn {
                continue; // recorded by an earlier push of this playlist
            }
            let map_seq = match &seg.map {
                Some(uri) => Some(self.bind_init(&row.id, uri).await?),
                None => None,
            };
            let seq = match store::live_latest_by_name(db, &row.id, &seg.uri).await? {
                Some(r) if r.playlist.is_none() && !r.is_init => r.seq,
                _ => {
                    let seq = store::live_next_seq(db, &row.id).await?;
                    store::live_insert_segment(db, &row.id, seq, &seg.uri, ext_of(&seg.uri), None)
                        .await?;
                    seq
                }
            };
            let discontinuity = seg.discontinuity || std::mem::take(&mut restart);
            store::live_list_segment(
                db,
                &row.id,
                seq,
                name,
                state.next_pos,
                seg.duration,
                discontinuity,
                map_seq,
            )
            .await?;
            state.next_pos += 1;
            state.last_msn = msn;
        }
        // Sticky within a run: a late copy of an earlier version (without the tag) arriving
        // after the final playlist must not reopen it.
        state.ended = m.ended || (state.ended && !restart_run);
        store::live_save_playlist(db, &row.id, &state).await
    }

    /// Does `m`, which starts inside the recorded window, name at its first media
    /// sequence number another segment than the one recorded there? A different name, or
    /// the same name whose bytes were sent again with another size since (a retried PUT
    /// of the same segment has the same bytes and is not a restart).
    async fn restarted_in_place(
        &self,
        stream: &str,
        state: &LivePlaylistRow,
        m: &m3u8::MediaPlaylist,
    ) -> Result<bool> {
        let first = m.media_sequence as i64;
        let Some(entry) = m.segments.first() else {
            return Ok(false);
        };
        if state.first_msn < 0 || first < state.first_msn || first > state.last_msn {
            return Ok(false);
        }
        let pos = position_of(state, first);
        let db = &self.inner.db;
        let Some(at) = store::live_segment_at(db, stream, &state.name, pos).await? else {
            return Ok(false);
        };
        if at.name != entry.uri {
            return Ok(true);
        }
        Ok(matches!(
            store::live_latest_by_name(db, stream, &entry.uri).await?,
            Some(r) if r.seq > at.seq && r.playlist.is_none() && !r.is_init && r.received
                && r.size != at.size
        ))
    }

    /// Is `m`, whose media sequence is below the recorded window, an older version of the
    /// playlist recorded in `state`? It is if it ends inside the window (a restarted encoder
    /// starts over with a short playlist far below it) and every entry it shares with the
    /// window names the segment, with the duration, recorded at that media sequence number.
    async fn is_late_copy(
        &self,
        stream: &str,
        state: &LivePlaylistRow,
        m: &m3u8::MediaPlaylist,
    ) -> Result<bool> {
        let first = m.media_sequence as i64;
        let last = first + m.segments.len() as i64 - 1;
        if m.segments.is_empty() || last < state.first_msn || last > state.last_msn {
            return Ok(false);
        }
        let recorded = store::live_playlist_segments(&self.inner.db, stream, &state.name).await?;
        let by_pos: HashMap<i64, &store::LiveSegmentRow> = recorded
            .iter()
            .filter_map(|s| s.pos.map(|p| (p, s)))
            .collect();
        for msn in state.first_msn.max(first)..=last {
            let pos = position_of(state, msn);
            let entry = &m.segments[(msn - first) as usize];
            let same = by_pos.get(&pos).is_some_and(|r| {
                r.name == entry.uri
                    && r.duration
                        .is_some_and(|d| (d - entry.duration).abs() < 1e-6)
            });
            if !same {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The row of an init segment a playlist maps (the newest with that name), created
    /// empty if its bytes have not come yet.
    async fn bind_init(&self, stream: &str, uri: &str) -> Result<i64> {
        let db = &self.inner.db;
        let seq = match store::live_latest_by_name(db, stream, uri).await? {
            Some(r) => r.seq,
            None => {
                let seq = store::live_next_seq(db, stream).await?;
                store::live_insert_segment(db, stream, seq, uri, ext_of(uri), None).await?;
                seq
            }
        };
        store::live_mark_init(db, stream, seq).await?;
        Ok(seq)
    }

    /// Write the viewer playlist of one media playlist: the stored segments, in order, up
    /// to the first one whose bytes (or init segment) are missing, windowed to the DVR.
    async fn render_live_playlist(&self, row: &LiveRow, name: &str, ended: bool) -> Result<()> {
        let db = &self.inner.db;
        let Some(state) = store::live_playlists(db, &row.id)
            .await?
            .into_iter()
            .find(|p| p.name == name)
        else {
            return Ok(());
        };
        let segs = store::live_playlist_segments(db, &row.id, name).await?;
        let inits: HashMap<i64, String> = store::live_received_inits(db, &row.id)
            .await?
            .into_iter()
            .collect();
        let ready = segs
            .iter()
            .take_while(|s| s.received && s.map_seq.is_none_or(|m| inits.contains_key(&m)))
            .count();
        let ready = &segs[..ready];
        // The DVR window, counted back from the live edge.
        let window = row.dvr_window_s as f64;
        let mut start = ready.len();
        let mut total = 0.0;
        while start > 0 {
            let d = ready[start - 1].duration.unwrap_or(0.0);
            if total + d > window && start < ready.len() {
                break;
            }
            total += d;
            start -= 1;
        }
        let shown = &ready[start..];
        let depth = name.matches('/').count();
        let up = "../".repeat(depth);
        let out: Vec<OutSegment> = shown
            .iter()
            .map(|s| OutSegment {
                uri: format!("{up}{}", segment_rel(s.seq, &s.ext)),
                duration: s.duration.unwrap_or(0.0),
                discontinuity: s.discontinuity,
                map: s.map_seq.and_then(|m| {
                    inits
                        .get(&m)
                        .map(|ext| format!("{up}{}", segment_rel(m, ext)))
                }),
            })
            .collect();
        // Discontinuities that left the window (and one on the first shown segment, whose
        // tag the writer drops) advance the discontinuity sequence.
        let disc_seq = ready[..start].iter().filter(|s| s.discontinuity).count() as u64
            + u64::from(shown.first().is_some_and(|s| s.discontinuity));
        let media_seq = shown.first().and_then(|s| s.pos).unwrap_or(state.next_pos) as u64;
        let text = m3u8::write_media(
            state.target_duration.max(1) as u64,
            media_seq,
            disc_seq,
            &out,
            ended || (state.ended && ready.len() == segs.len()),
        );
        let key = format!("{}{name}", keys::live_prefix(&row.tenant_id, &row.asset_id));
        self.inner.storage.put(&key, Bytes::from(text)).await?;
        Ok(())
    }

    /// PUT of a segment under the ingest URL. The body is streamed to a scratch file (at
    /// most `live.max_segment_bytes`), checked, and only then becomes visible.
    pub async fn live_put_segment<S, E>(
        &self,
        id: &str,
        token: &str,
        name: &str,
        body: S,
    ) -> Result<()>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let row = self.ingest_stream(id, token).await?;
        let res = self.live_segment_inner(&row, name, body).await;
        match &res {
            Ok(size) => {
                metrics::counter!("sluice_live_requests_total", "kind" => "segment", "result" => "ok")
                    .increment(1);
                metrics::counter!("sluice_live_bytes_total").increment(*size);
            }
            Err(e) if !e.is_retryable() => self.record_reject(id, "segment", e).await,
            Err(_) => {}
        }
        res.map(|_| ())
    }

    async fn live_segment_inner<S, E>(&self, row: &LiveRow, name: &str, mut body: S) -> Result<u64>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        if ingest_kind(name)? != IngestKind::Segment {
            return Err(Error::InvalidInput(format!("{name:?} is not a segment")));
        }
        let max = self.inner.config.live.max_segment_bytes;
        let dir = self.inner.work_dir.join("live");
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| Error::io(&dir, e))?;
        let path = dir.join(format!("{}-{}", row.id, ulid::Ulid::new()));
        let result = async {
            let io = |e| Error::io(&path, e);
            let mut file = tokio::fs::File::create(&path).await.map_err(io)?;
            let mut size = 0u64;
            let mut head: Vec<u8> = Vec::with_capacity(200);
            let mut sniffed = false;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| Error::Body(e.to_string()))?;
                size += chunk.len() as u64;
                if size > max {
                    return Err(Error::TooLarge { size, max });
                }
                if !sniffed {
                    let take = (189 - head.len()).min(chunk.len());
                    head.extend_from_slice(&chunk[..take]);
                    if head.len() >= 189 {
                        sniff_segment(&head)?;
                        sniffed = true;
                    }
                }
                file.write_all(&chunk).await.map_err(io)?;
            }
            if !sniffed {
                if head.is_empty() {
                    return Err(Error::InvalidInput("the segment is empty".into()));
                }
                sniff_segment(&head)?;
            }
            file.flush().await.map_err(io)?;
            Ok(size)
        }
        .await;
        let size = match result {
            Ok(s) => s,
            Err(e) => {
                let _ = tokio::fs::remove_file(&path).await;
                return Err(e);
            }
        };
        let stored = self.store_segment(row, name, &path, size).await;
        let _ = tokio::fs::remove_file(&path).await;
        stored?;
        Ok(size)
    }

    async fn store_segment(
        &self,
        row: &LiveRow,
        name: &str,
        path: &std::path::Path,
        size: u64,
    ) -> Result<()> {
        let db = &self.inner.db;
        let lock = self.inner.live_locks.get(&row.id);
        let _guard = lock.lock().await;
        // Re-checked under the lock: a stream that began ending while this request
        // waited takes nothing more (its final playlists and recording are being made).
        self.still_open(&row.id).await?;
        let now = self.now_ms();
        // Which row do these bytes belong to? One listed and waiting for them; the same
        // unlisted name sent again (a retry: not visible yet, so replaceable); otherwise a
        // new row — a listed, stored name is never overwritten.
        let existing = store::live_latest_by_name(db, &row.id, name).await?;
        let (seq, listed, is_init, fresh) = match &existing {
            Some(r) if !r.received || r.playlist.is_none() && !r.is_init => {
                (r.seq, r.playlist.clone(), r.is_init, false)
            }
            _ => (store::live_next_seq(db, &row.id).await?, None, false, true),
        };
        // Charged to the tenant's storage quota as it arrives (the recording's final size
        // replaces the running total when the stream ends); a retried, replaceable segment
        // is charged again only for what it adds.
        let before = existing
            .as_ref()
            .filter(|r| !fresh && r.received)
            .and_then(|r| r.size)
            .unwrap_or(0);
        store::charge_live_bytes(
            db,
            &row.tenant_id,
            &row.asset_id,
            (size as i64).saturating_sub(before),
        )
        .await?;
        let ext = ext_of(name);
        let key = format!(
            "{}{}",
            keys::live_prefix(&row.tenant_id, &row.asset_id),
            segment_rel(seq, ext)
        );
        self.inner.storage.put_file_move(&key, path).await?;
        if fresh {
            store::live_insert_segment(db, &row.id, seq, name, ext, Some((size as i64, now)))
                .await?;
        } else {
            store::live_segment_received(db, &row.id, seq, size as i64, now).await?;
        }
        store::live_ok(db, &row.id, size as i64, 1, now).await?;
        if is_init {
            for p in store::live_playlists(db, &row.id).await? {
                self.render_live_playlist(row, &p.name, false).await?;
            }
        } else if let Some(p) = listed {
            self.render_live_playlist(row, &p, false).await?;
        }
        drop(_guard);
        self.end_if_complete(&row.id).await
    }

    /// DELETE under the ingest URL (`-hls_flags delete_segments`): acknowledged, but the
    /// bytes stay for the DVR window and the recording.
    pub async fn live_delete(&self, id: &str, token: &str, name: &str) -> Result<()> {
        self.ingest_stream(id, token).await?;
        ingest_kind(name)?;
        store::live_ok(&self.inner.db, id, 0, 0, self.now_ms()).await?;
        metrics::counter!("sluice_live_requests_total", "kind" => "delete", "result" => "ok")
            .increment(1);
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
    async fn claim_live_end(&self, id: &str, reason: &str) -> Result<bool> {
        let now = self.now_ms();
        let stale_before = now - ENDING_STALE.as_millis() as i64;
        store::live_begin_end(&self.inner.db, id, reason, now, stale_before).await
    }

    /// The work of ending a claimed stream: final playlists, the recording, the job.
    async fn complete_live_end(&self, id: &str) -> Result<()> {
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
                asset,
                "the live stream ended without any recorded segment",
                self.now_ms(),
            )
            .await?;
        } else {
            store::live_asset_recorded(db, asset, recorded as i64, self.now_ms()).await?;
            // An earlier attempt that died after queueing the job: never a second one.
            let queued = store::asset_job(db, &row.tenant_id, asset).await?;
            let job_id = match (queued, row.vod_mode) {
                (Some(job), _) => job,
                (None, VodMode::Transcode) => {
                    self.enqueue_transcode(&row.tenant_id, asset, JobClass::LiveToVod)
                        .await?
                }
                (None, VodMode::Copy) => self.enqueue_live_copy(&row.tenant_id, asset).await?,
            };
            store::complete_upload(db, asset, &job_id, self.now_ms()).await?;
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
    async fn assemble_recording(&self, row: &LiveRow, playlist: &str) -> Result<u64> {
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

fn ext_of(name: &str) -> &str {
    name.rsplit_once('.').map(|(_, e)| e).unwrap_or("ts")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingest_names() {
        assert_eq!(ingest_kind("index.m3u8").unwrap(), IngestKind::Playlist);
        assert_eq!(ingest_kind("index12.ts").unwrap(), IngestKind::Segment);
        assert_eq!(ingest_kind("v0/init.mp4").unwrap(), IngestKind::Segment);
        assert_eq!(ingest_kind("seg-3.m4s").unwrap(), IngestKind::Segment);
        assert!(ingest_kind("../x.ts").is_err());
        assert!(ingest_kind("notes.txt").is_err());
        assert!(ingest_kind("x").is_err());
    }

    #[test]
    fn sniffing() {
        let mut ts = vec![0u8; 376];
        ts[0] = 0x47;
        ts[188] = 0x47;
        sniff_segment(&ts[..189]).unwrap();
        sniff_segment(&ts[..100]).unwrap();
        ts[188] = 0;
        assert!(sniff_segment(&ts[..189]).is_err());
        sniff_segment(b"\0\0\0\x18ftypiso6").unwrap();
        sniff_segment(b"\0\0\0\x18moof\0\0\0\0").unwrap();
        assert!(sniff_segment(b"<html><body>").is_err());
        assert!(sniff_segment(b"#EXTM3U\n").is_err());
    }
}
