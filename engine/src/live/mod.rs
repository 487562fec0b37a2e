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

mod end;
mod ingest;
pub mod vod;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde::Serialize;
use sluice_media::hls::{self, MediaHead, Playlist, Segment};
use sluice_storage::keys;
use tokio::io::AsyncWriteExt;

use crate::secrets::{constant_time_eq, hash_key};
use crate::store::{self, LivePlaylistRow, LiveRow};
use crate::{
    Engine, Error, IngestGrant, JobClass, PlaybackGrant, Principal, Result, random_token,
    rfc3339_ms,
};

pub use sluice_media::VodMode;

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
    hls::validate_uri(name).map_err(Error::InvalidInput)?;
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

impl Engine {
    pub(super) fn dvr_bounds(&self) -> (u64, u64) {
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
            Some(v) => VodMode::parse(v).map_err(Error::InvalidInput)?,
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

    pub(super) async fn live_view(&self, r: LiveRow) -> Result<LiveStream> {
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
        opts: crate::PlaybackOptions<'_>,
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
            opts,
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
