//! Live-to-VOD without a transcode (`vod: "copy"`): the renditions the encoder pushed are
//! published as the asset's HLS, segment for segment.
//!
//! Why a job and not a step of ending the stream: the master playlist must advertise each
//! rendition's resolution and codecs, which only a media probe of its first segment tells,
//! and probing is the workers' business (GStreamer lives there). The job is cheap: one
//! short probe per rendition, then server-side copies (hard links on a local hot tier).
//!
//! Layout: `{rendition}/index.m3u8` and `{rendition}/{seq}.{ext}` (our sequence numbers,
//! init segments included) under the asset's published prefix, `master.m3u8` written last.
//! A pushed master is kept with its URIs rewritten (so alternative audio, names and
//! attributes stay the encoder's); without one, a master is written from the probe.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use sluice_storage::{Source, keys};

use super::segment_rel;
use crate::model::{Rendition, TranscodeJob};
use crate::store::{self, LiveRow};
use crate::{Engine, Error, Result};
use sluice_media::hls::{self, MediaHead, Playlist, Segment};

/// What publishing a live recording as pushed takes.
#[derive(Debug)]
pub struct LiveCopyPlan {
    /// The pushed master playlist (name, text), if the encoder sent one.
    master: Option<(String, String)>,
    pub renditions: Vec<LiveCopyRendition>,
}

/// One pushed media playlist, to become one rendition.
#[derive(Debug, Clone)]
pub struct LiveCopyRendition {
    /// Its name in the asset (the directory it is published under).
    pub name: String,
    /// The pushed playlist it comes from.
    pub playlist: String,
    /// Objects whose concatenation is a short playable sample (the init segment for fMP4,
    /// then the first segment): what the worker probes for resolution and codecs.
    pub sample_keys: Vec<String>,
    /// A variant (`EXT-X-STREAM-INF`), as opposed to an alternative media playlist.
    pub variant: bool,
    pub duration_s: f64,
    /// Peak segment bit rate, bits/s (`BANDWIDTH`).
    pub bandwidth: u64,
    /// Whole-playlist bit rate, bits/s (`AVERAGE-BANDWIDTH`).
    pub average_bandwidth: u64,
    target_duration: u64,
    segments: Vec<CopySegment>,
}

#[derive(Debug, Clone)]
struct CopySegment {
    /// Stored object under the live prefix.
    from: String,
    /// File name in the rendition's directory.
    file: String,
    duration: f64,
    discontinuity: bool,
    /// The init segment's (object, file name), fMP4.
    map: Option<(String, String)>,
}

/// What the worker learnt from a rendition's sample.
#[derive(Debug, Clone)]
pub struct RenditionProbe {
    pub width: u32,
    pub height: u32,
    /// `CODECS` value (`avc1.64001f,mp4a.40.2`); empty when the codecs have no HLS name.
    pub codecs: String,
}

/// A rendition name from a pushed playlist path: `stream_0.m3u8` → `stream_0`,
/// `v1/index.m3u8` → `v1`, `index.m3u8` → `index`; `[A-Za-z0-9_-]` only.
fn rendition_name(playlist: &str) -> String {
    let stem = playlist.strip_suffix(".m3u8").unwrap_or(playlist);
    let stem = match stem.rsplit_once('/') {
        Some((dir, "index" | "playlist" | "prog_index")) => dir,
        _ => stem,
    };
    let name: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if name.is_empty() { "live".into() } else { name }
}

/// Resolve a URI of a playlist named `base` (relative to its directory).
fn resolve(base: &str, uri: &str) -> String {
    match base.rsplit_once('/') {
        Some((dir, _)) => format!("{dir}/{uri}"),
        None => uri.to_string(),
    }
}

impl Engine {
    /// Plan the `live_copy` job of `job`'s asset: which pushed playlists become renditions,
    /// with which segments. `InvalidInput` when nothing playable was recorded.
    pub async fn live_copy_plan(&self, job: &TranscodeJob) -> Result<LiveCopyPlan> {
        let db = &self.inner.db;
        let row = store::live_by_asset(db, &job.asset_id)
            .await?
            .ok_or_else(|| Error::not_found("live stream of asset", &job.asset_id))?;
        let prefix = keys::live_prefix(&row.tenant_id, &row.asset_id);
        // Recorded media playlists and their target durations.
        let recorded: HashMap<String, u64> = store::live_playlists(db, &row.id)
            .await?
            .into_iter()
            .map(|p| (p.name, p.target_duration.max(1) as u64))
            .collect();
        let master = match &row.master {
            Some(name) => {
                let body = self
                    .inner
                    .storage
                    .get_bytes(&format!("{prefix}{name}"))
                    .await?;
                let text = String::from_utf8(body.to_vec()).map_err(|_| {
                    Error::InvalidInput("the pushed master playlist is not UTF-8".into())
                })?;
                Some((name.clone(), text))
            }
            None => None,
        };
        // The master's order (variants, then alternative media); else every playlist,
        // the recorded primary first.
        let mut order: Vec<(String, bool)> = vec![];
        match &master {
            Some((name, text)) => {
                if let Ok(Playlist::Master(m)) = hls::parse(text) {
                    for v in &m.variants {
                        order.push((resolve(name, &v.uri), true));
                    }
                    for u in &m.media_uris {
                        order.push((resolve(name, u), false));
                    }
                }
            }
            None => {
                let mut names: Vec<&String> = recorded.keys().collect();
                names.sort_by_key(|n| (Some(*n) != row.primary_playlist.as_ref(), *n));
                order.extend(names.into_iter().map(|n| (n.clone(), true)));
            }
        }
        let inits: HashMap<i64, String> = store::live_received_inits(db, &row.id)
            .await?
            .into_iter()
            .collect();
        let mut used = HashSet::new();
        let mut renditions = vec![];
        for (playlist, variant) in order {
            let Some(&target_duration) = recorded.get(&playlist) else {
                continue;
            };
            if renditions
                .iter()
                .any(|r: &LiveCopyRendition| r.playlist == playlist)
            {
                continue;
            }
            let Some(mut r) = self
                .copy_rendition(&row, &prefix, &playlist, variant, target_duration, &inits)
                .await?
            else {
                continue;
            };
            let base = r.name.clone();
            let mut n = 2;
            while !used.insert(r.name.clone()) {
                r.name = format!("{base}-{n}");
                n += 1;
            }
            renditions.push(r);
        }
        if !renditions.iter().any(|r| r.variant) {
            return Err(Error::InvalidInput(
                "the live stream recorded no complete segment to publish".into(),
            ));
        }
        Ok(LiveCopyPlan { master, renditions })
    }

    /// The received segments of one pushed playlist, in order. A segment listed but never
    /// received (or whose init segment never came) is left out, and the next one starts
    /// with a discontinuity so players do not expect continuous timestamps over the gap.
    async fn copy_rendition(
        &self,
        row: &LiveRow,
        prefix: &str,
        playlist: &str,
        variant: bool,
        target_duration: u64,
        inits: &HashMap<i64, String>,
    ) -> Result<Option<LiveCopyRendition>> {
        let db = &self.inner.db;
        let rows = store::live_playlist_segments(db, &row.id, playlist).await?;
        let mut segments = vec![];
        let (mut bits, mut total, mut peak) = (0u64, 0.0f64, 0u64);
        let mut gap = false;
        for s in &rows {
            let map = match s.map_seq {
                Some(m) => match inits.get(&m) {
                    Some(ext) => Some((
                        format!("{prefix}{}", segment_rel(m, ext)),
                        format!("{m:08}.{ext}"),
                    )),
                    None => {
                        gap = true;
                        continue;
                    }
                },
                None => None,
            };
            let (Some(size), true) = (s.size, s.received) else {
                gap = true;
                continue;
            };
            let duration = s.duration.unwrap_or(0.0);
            let size_bits = size.max(0) as u64 * 8;
            bits += size_bits;
            total += duration;
            if duration > 0.0 {
                peak = peak.max((size_bits as f64 / duration).ceil() as u64);
            }
            segments.push(CopySegment {
                from: format!("{prefix}{}", segment_rel(s.seq, &s.ext)),
                file: format!("{:08}.{}", s.seq, s.ext),
                duration,
                discontinuity: s.discontinuity || (gap && !segments.is_empty()),
                map,
            });
            gap = false;
        }
        let Some(first) = segments.first() else {
            return Ok(None);
        };
        let mut sample_keys: Vec<String> = first.map.iter().map(|(k, _)| k.clone()).collect();
        sample_keys.push(first.from.clone());
        Ok(Some(LiveCopyRendition {
            name: rendition_name(playlist),
            playlist: playlist.to_string(),
            sample_keys,
            variant,
            duration_s: (total * 1000.0).round() / 1000.0,
            bandwidth: peak.max(1),
            average_bandwidth: if total > 0.0 {
                (bits as f64 / total).ceil() as u64
            } else {
                peak.max(1)
            },
            target_duration,
            segments,
        }))
    }

    /// Publish a planned live copy: segments (server-side copies), media playlists, and
    /// the master playlist last, so a reader never sees a master naming missing files.
    /// `probes` has one entry per rendition of `plan`, in order. Returns the renditions
    /// the asset lists and its duration (the first variant's). Safe to repeat.
    pub async fn publish_live_copy(
        &self,
        job: &TranscodeJob,
        plan: &LiveCopyPlan,
        probes: &[RenditionProbe],
    ) -> Result<(Vec<Rendition>, f64)> {
        if probes.len() != plan.renditions.len() {
            return Err(Error::InvalidInput(format!(
                "{} probes for {} renditions",
                probes.len(),
                plan.renditions.len()
            )));
        }
        let published = keys::hls_prefix(&job.tenant_id, &job.asset_id);
        // Every object once (init segments are shared by many segments), by server-side
        // copies; then each rendition's playlist; the master last.
        let mut objects: Vec<(String, Source)> = vec![];
        let mut copied = HashSet::new();
        for r in &plan.renditions {
            for s in &r.segments {
                if let Some((from, file)) = &s.map {
                    let rel = format!("{}/{file}", r.name);
                    if copied.insert(rel.clone()) {
                        objects.push((rel, Source::Object(from.clone())));
                    }
                }
                objects.push((
                    format!("{}/{}", r.name, s.file),
                    Source::Object(s.from.clone()),
                ));
            }
            let out: Vec<Segment> = r
                .segments
                .iter()
                .map(|s| Segment {
                    uri: s.file.clone(),
                    duration: s.duration,
                    discontinuity: s.discontinuity,
                    map: s.map.as_ref().map(|(_, f)| f.clone()),
                })
                .collect();
            let head = MediaHead {
                vod: true,
                target_duration: r.target_duration,
                ..MediaHead::default()
            };
            objects.push((
                format!("{}/index.m3u8", r.name),
                Source::Bytes(Bytes::from(hls::write_media(&head, &out))),
            ));
        }
        let master = match &plan.master {
            // The contract promises RESOLUTION and CODECS on every variant: the probe fills
            // in what the encoder left out.
            Some((name, text)) => hls::rewrite_master(text, |uri| {
                let full = resolve(name, uri);
                let (r, p) = plan
                    .renditions
                    .iter()
                    .zip(probes)
                    .find(|(r, _)| r.playlist == full)?;
                let mut fill = vec![];
                if p.width > 0 && p.height > 0 {
                    fill.push(("RESOLUTION", format!("{}x{}", p.width, p.height)));
                }
                if !p.codecs.is_empty() {
                    fill.push(("CODECS", format!("\"{}\"", p.codecs)));
                }
                Some(hls::MasterEntry {
                    uri: format!("{}/index.m3u8", r.name),
                    fill,
                })
            }),
            None => write_master(plan, probes),
        };
        objects.push(("master.m3u8".into(), Source::Bytes(Bytes::from(master))));
        self.inner.storage.publish(&published, objects).await?;
        let renditions: Vec<Rendition> = plan
            .renditions
            .iter()
            .zip(probes)
            .map(|(r, p)| Rendition {
                name: r.name.clone(),
                width: p.width,
                height: p.height,
                bandwidth: r.bandwidth,
                codecs: p.codecs.clone(),
            })
            .collect();
        let duration = plan
            .renditions
            .iter()
            .find(|r| r.variant)
            .map_or(0.0, |r| r.duration_s);
        Ok((renditions, duration))
    }
}

/// A master playlist for pushed renditions when the encoder sent none.
fn write_master(plan: &LiveCopyPlan, probes: &[RenditionProbe]) -> String {
    use std::fmt::Write as _;
    let mut out = String::from("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    for (r, p) in plan
        .renditions
        .iter()
        .zip(probes)
        .filter(|(r, _)| r.variant)
    {
        let _ = write!(
            out,
            "#EXT-X-STREAM-INF:BANDWIDTH={},AVERAGE-BANDWIDTH={}",
            r.bandwidth, r.average_bandwidth
        );
        if p.width > 0 && p.height > 0 {
            let _ = write!(out, ",RESOLUTION={}x{}", p.width, p.height);
        }
        if !p.codecs.is_empty() {
            let _ = write!(out, ",CODECS=\"{}\"", p.codecs);
        }
        let _ = writeln!(out, "\n{}/index.m3u8", r.name);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendition_names_come_from_playlist_paths() {
        assert_eq!(rendition_name("index.m3u8"), "index");
        assert_eq!(rendition_name("stream_0.m3u8"), "stream_0");
        assert_eq!(rendition_name("v1/index.m3u8"), "v1");
        assert_eq!(rendition_name("hd/live.m3u8"), "hd-live");
        assert_eq!(rendition_name("a.b.m3u8"), "a-b");
    }

    #[test]
    fn uris_resolve_against_the_playlist_directory() {
        assert_eq!(resolve("master.m3u8", "v0.m3u8"), "v0.m3u8");
        assert_eq!(
            resolve("out/master.m3u8", "v0/index.m3u8"),
            "out/v0/index.m3u8"
        );
    }
}
