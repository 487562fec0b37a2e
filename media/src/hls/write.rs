//! The writers of every playlist Sluice serves: media playlists (live, live-recording VOD,
//! transcoded VOD), the master playlist of a transcode, and the rewrite of a pushed master.
//! One media-playlist writer serves all three kinds; they differ only in their head.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::Segment;
use super::parse::{Playlist, attribute, parse};
use super::rate::{format_duration, target_duration};

/// The head of a media playlist: what comes before its segments.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MediaHead<'a> {
    /// `EXT-X-PLAYLIST-TYPE:VOD`: every segment from the start, and the list is final.
    pub vod: bool,
    /// At least this `EXT-X-TARGETDURATION`; raised to fit every segment as printed.
    pub target_duration: u64,
    /// `EXT-X-MEDIA-SEQUENCE`.
    pub media_sequence: u64,
    /// `EXT-X-DISCONTINUITY-SEQUENCE` (written when not 0).
    pub discontinuity_sequence: u64,
    /// `EXT-X-INDEPENDENT-SEGMENTS`: every segment starts with a keyframe (true of what the
    /// transcoder makes; not promised for what an encoder pushed).
    pub independent_segments: bool,
    /// The `EXT-X-MAP` (fMP4 initialisation section) of segments that name none themselves.
    pub map: Option<&'a str>,
    /// `EXT-X-ENDLIST`: no segment will be added.
    pub ended: bool,
}

/// A media playlist: `head`, then `segments` in order, with `EXT-X-DISCONTINUITY` where a
/// segment follows one and `EXT-X-MAP` wherever the initialisation section changes.
/// Protocol version 6 when any segment needs a map (`EXT-X-MAP` in a media playlist), else 3.
pub fn write_media(head: &MediaHead<'_>, segments: &[Segment]) -> String {
    let uses_map = head.map.is_some() || segments.iter().any(|s| s.map.is_some());
    let target = head.target_duration.max(target_duration(segments));
    let mut out = String::with_capacity(128 + segments.len() * 48);
    // Writing to a String cannot fail.
    out.push_str("#EXTM3U\n");
    let _ = writeln!(out, "#EXT-X-VERSION:{}", if uses_map { 6 } else { 3 });
    if head.vod {
        out.push_str("#EXT-X-PLAYLIST-TYPE:VOD\n");
    }
    let _ = writeln!(out, "#EXT-X-TARGETDURATION:{target}");
    let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{}", head.media_sequence);
    if head.discontinuity_sequence > 0 {
        let _ = writeln!(
            out,
            "#EXT-X-DISCONTINUITY-SEQUENCE:{}",
            head.discontinuity_sequence
        );
    }
    if head.independent_segments {
        out.push_str("#EXT-X-INDEPENDENT-SEGMENTS\n");
    }
    let mut current_map: Option<&str> = None;
    if let Some(m) = head.map {
        let _ = writeln!(out, "#EXT-X-MAP:URI=\"{m}\"");
        current_map = Some(m);
    }
    for (i, s) in segments.iter().enumerate() {
        if s.discontinuity && i > 0 {
            out.push_str("#EXT-X-DISCONTINUITY\n");
        }
        if let Some(m) = s.map.as_deref().or(head.map)
            && current_map != Some(m)
        {
            let _ = writeln!(out, "#EXT-X-MAP:URI=\"{m}\"");
            current_map = Some(m);
        }
        let _ = writeln!(out, "#EXTINF:{},", format_duration(s.duration));
        out.push_str(&s.uri);
        out.push('\n');
    }
    if head.ended || head.vod {
        out.push_str("#EXT-X-ENDLIST\n");
    }
    out
}

/// The VOD media playlist of a transcoded rendition: its segments, in order, each starting
/// with a keyframe, after the initialisation section `map` when there is one (fMP4).
pub fn vod_media(segments: &[Segment], map: Option<&str>) -> String {
    write_media(
        &MediaHead {
            vod: true,
            independent_segments: true,
            map,
            ..MediaHead::default()
        },
        segments,
    )
}

/// One entry of the master playlist. An audio-only variant has `width`, `height` and
/// `frame_rate` 0: its entry carries no `RESOLUTION` or `FRAME-RATE`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Variant {
    /// URI of the variant's media playlist, relative to the master playlist.
    pub uri: String,
    /// Peak segment bit rate in bits/s (RFC 8216 §4.3.4.2, `BANDWIDTH`).
    pub bandwidth: u64,
    /// Average segment bit rate in bits/s (`AVERAGE-BANDWIDTH`).
    pub average_bandwidth: u64,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// RFC 6381 codec list, e.g. `avc1.64001f,mp4a.40.2`.
    pub codecs: String,
    /// Frames per second.
    pub frame_rate: f64,
}

impl Variant {
    fn has_video(&self) -> bool {
        self.width > 0 && self.height > 0
    }
}

/// The master playlist listing `variants`, highest `BANDWIDTH` first (players start with the
/// first entry, and a stable order keeps the output deterministic; an audio-only variant,
/// the cheapest, comes last, where players that want video never pick it first).
pub fn master_playlist(variants: &[Variant]) -> String {
    let mut sorted: Vec<&Variant> = variants.iter().collect();
    sorted.sort_by_key(|v| {
        (
            std::cmp::Reverse(v.has_video()),
            std::cmp::Reverse(v.bandwidth),
        )
    });
    let mut out = String::from("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    for v in sorted {
        let _ = write!(
            out,
            "#EXT-X-STREAM-INF:BANDWIDTH={},AVERAGE-BANDWIDTH={}",
            v.bandwidth, v.average_bandwidth
        );
        if v.has_video() {
            let _ = write!(
                out,
                ",RESOLUTION={}x{},FRAME-RATE={:.3}",
                v.width, v.height, v.frame_rate
            );
        }
        let _ = writeln!(out, ",CODECS=\"{}\"\n{}", v.codecs, v.uri);
    }
    out
}

/// Reads back a master playlist written by [`master_playlist`] (and only that dialect:
/// `None` for anything else), so that one variant can be replaced while every other entry
/// stays byte-identical: `master_playlist(&parse_master(m)?) == m`. Read with the strict
/// parser, then checked by writing it again.
pub fn parse_master(text: &str) -> Option<Vec<Variant>> {
    let Ok(Playlist::Master(master)) = parse(text) else {
        return None;
    };
    let mut variants = Vec::with_capacity(master.variants.len());
    for inf in master.variants {
        let number = |name| attribute(&inf.attributes, name).map(str::parse::<u64>);
        let (width, height) = match attribute(&inf.attributes, "RESOLUTION") {
            Some(r) => {
                let (w, h) = r.split_once('x')?;
                (w.parse().ok()?, h.parse().ok()?)
            }
            None => (0, 0),
        };
        variants.push(Variant {
            uri: inf.uri,
            bandwidth: inf.bandwidth,
            average_bandwidth: number("AVERAGE-BANDWIDTH").unwrap_or(Ok(0)).ok()?,
            width,
            height,
            codecs: attribute(&inf.attributes, "CODECS")
                .unwrap_or("")
                .to_owned(),
            frame_rate: match attribute(&inf.attributes, "FRAME-RATE") {
                Some(f) => f.parse().ok()?,
                None => 0.0,
            },
        });
    }
    (master_playlist(&variants) == text).then_some(variants)
}

/// `master` with the entry whose URI is `new.uri` replaced by `new`; `None` when `master`
/// is not ours or has no such entry.
pub fn replace_variant(master: &str, new: &Variant) -> Option<String> {
    let mut variants = parse_master(master)?;
    let slot = variants.iter_mut().find(|v| v.uri == new.uri)?;
    *slot = new.clone();
    Some(master_playlist(&variants))
}

/// What [`rewrite_master`] does with one URI: its new value, and attributes a variant
/// (`EXT-X-STREAM-INF`) gets when the encoder left them out (`RESOLUTION`, `CODECS`, as
/// `(name, value as written)`).
pub struct MasterEntry {
    pub uri: String,
    pub fill: Vec<(&'static str, String)>,
}

/// Rewrite the URIs of a master playlist (variant lines and `URI="…"` attributes of
/// `EXT-X-MEDIA` / `EXT-X-I-FRAME-STREAM-INF`) through `map`; an entry whose URI maps to
/// `None` is dropped with its tag. Everything else is kept as the encoder wrote it, except
/// that variants get the `fill` attributes they lack.
pub fn rewrite_master(text: &str, map: impl Fn(&str) -> Option<MasterEntry>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut pending_inf: Option<&str> = None;
    for raw in text.lines() {
        let line = raw.trim_end();
        if line.is_empty() {
            continue;
        }
        if line.starts_with("#EXT-X-STREAM-INF:") {
            pending_inf = Some(line);
            continue;
        }
        if !line.starts_with('#') {
            if let (Some(inf), Some(entry)) = (pending_inf.take(), map(line)) {
                out.push_str(inf);
                let attrs = &inf["#EXT-X-STREAM-INF:".len()..];
                for (name, value) in &entry.fill {
                    if attribute(attrs, name).is_none() {
                        let _ = write!(out, ",{name}={value}");
                    }
                }
                let _ = writeln!(out, "\n{}", entry.uri);
            }
            continue;
        }
        match line
            .split_once(':')
            .and_then(|(_, attrs)| attribute(attrs, "URI"))
        {
            Some(uri) => {
                if let Some(new) = map(uri) {
                    out.push_str(&line.replacen(
                        &format!("URI=\"{uri}\""),
                        &format!("URI=\"{}\"", new.uri),
                        1,
                    ));
                    out.push('\n');
                }
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(uri: &str, duration: f64) -> Segment {
        Segment::new(uri, duration)
    }

    fn media_playlist(segments: &[Segment]) -> String {
        vod_media(segments, None)
    }

    fn vod_copy(target_duration: u64, segments: &[Segment]) -> String {
        write_media(
            &MediaHead {
                vod: true,
                target_duration,
                ..MediaHead::default()
            },
            segments,
        )
    }

    fn live(
        target_duration: u64,
        media_sequence: u64,
        discontinuity_sequence: u64,
        segments: &[Segment],
        ended: bool,
    ) -> String {
        write_media(
            &MediaHead {
                target_duration,
                media_sequence,
                discontinuity_sequence,
                ended,
                ..MediaHead::default()
            },
            segments,
        )
    }

    #[test]
    fn media_playlist_is_exact() {
        let playlist = media_playlist(&[
            seg("seg_00000.ts", 2.0),
            seg("seg_00001.ts", 2.0),
            seg("seg_00002.ts", 1.0333),
        ]);
        assert_eq!(
            playlist,
            "#EXTM3U\n\
             #EXT-X-VERSION:3\n\
             #EXT-X-PLAYLIST-TYPE:VOD\n\
             #EXT-X-TARGETDURATION:2\n\
             #EXT-X-MEDIA-SEQUENCE:0\n\
             #EXT-X-INDEPENDENT-SEGMENTS\n\
             #EXTINF:2.000,\nseg_00000.ts\n\
             #EXTINF:2.000,\nseg_00001.ts\n\
             #EXTINF:1.033,\nseg_00002.ts\n\
             #EXT-X-ENDLIST\n"
        );
    }

    #[test]
    fn empty_media_playlist_is_still_valid() {
        assert_eq!(
            media_playlist(&[]),
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-TARGETDURATION:1\n\
             #EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-ENDLIST\n"
        );
    }

    #[test]
    fn negative_and_nan_durations_print_as_zero() {
        assert!(media_playlist(&[seg("x.ts", -1.0)]).contains("#EXTINF:0.000,\nx.ts\n"));
        assert!(media_playlist(&[seg("x.ts", f64::NAN)]).contains("#EXTINF:0.000,\nx.ts\n"));
    }

    #[test]
    fn master_playlist_is_exact_and_sorted_by_bandwidth() {
        let low = Variant {
            uri: "360p/index.m3u8".into(),
            bandwidth: 950_000,
            average_bandwidth: 900_000,
            width: 640,
            height: 360,
            codecs: "avc1.64001e,mp4a.40.2".into(),
            frame_rate: 30.0,
        };
        let high = Variant {
            uri: "720p/index.m3u8".into(),
            bandwidth: 3_100_000,
            average_bandwidth: 2_900_000,
            width: 1280,
            height: 720,
            codecs: "avc1.64001f,mp4a.40.2".into(),
            frame_rate: 29.97002997,
        };
        assert_eq!(
            master_playlist(&[low, high]),
            "#EXTM3U\n\
             #EXT-X-VERSION:3\n\
             #EXT-X-INDEPENDENT-SEGMENTS\n\
             #EXT-X-STREAM-INF:BANDWIDTH=3100000,AVERAGE-BANDWIDTH=2900000,RESOLUTION=1280x720,FRAME-RATE=29.970,CODECS=\"avc1.64001f,mp4a.40.2\"\n\
             720p/index.m3u8\n\
             #EXT-X-STREAM-INF:BANDWIDTH=950000,AVERAGE-BANDWIDTH=900000,RESOLUTION=640x360,FRAME-RATE=30.000,CODECS=\"avc1.64001e,mp4a.40.2\"\n\
             360p/index.m3u8\n"
        );
    }

    fn audio_only() -> Variant {
        Variant {
            uri: "audio/index.m3u8".into(),
            bandwidth: 141_000,
            average_bandwidth: 139_500,
            width: 0,
            height: 0,
            codecs: "mp4a.40.2".into(),
            frame_rate: 0.0,
        }
    }

    fn video(name: &str, width: u32, height: u32, bandwidth: u64) -> Variant {
        Variant {
            uri: format!("{name}/index.m3u8"),
            bandwidth,
            average_bandwidth: bandwidth.saturating_sub(50_000),
            width,
            height,
            codecs: "avc1.64001e,mp4a.40.2".into(),
            frame_rate: 30.0,
        }
    }

    const WITH_AUDIO_ONLY: &str = "#EXTM3U\n\
         #EXT-X-VERSION:3\n\
         #EXT-X-INDEPENDENT-SEGMENTS\n\
         #EXT-X-STREAM-INF:BANDWIDTH=950000,AVERAGE-BANDWIDTH=900000,RESOLUTION=640x360,FRAME-RATE=30.000,CODECS=\"avc1.64001e,mp4a.40.2\"\n\
         360p/index.m3u8\n\
         #EXT-X-STREAM-INF:BANDWIDTH=120000,AVERAGE-BANDWIDTH=70000,RESOLUTION=160x90,FRAME-RATE=30.000,CODECS=\"avc1.64001e,mp4a.40.2\"\n\
         90p/index.m3u8\n\
         #EXT-X-STREAM-INF:BANDWIDTH=141000,AVERAGE-BANDWIDTH=139500,CODECS=\"mp4a.40.2\"\n\
         audio/index.m3u8\n";

    #[test]
    fn master_playlist_with_an_audio_only_variant_is_exact() {
        // The audio-only entry has no RESOLUTION or FRAME-RATE and comes after every video
        // variant, even one with a lower BANDWIDTH.
        let variants = [
            audio_only(),
            video("90p", 160, 90, 120_000),
            video("360p", 640, 360, 950_000),
        ];
        assert_eq!(master_playlist(&variants), WITH_AUDIO_ONLY);
    }

    #[test]
    fn a_master_playlist_reads_back_exactly() {
        let parsed = parse_master(WITH_AUDIO_ONLY).expect("parses");
        assert_eq!(
            parsed,
            vec![
                video("360p", 640, 360, 950_000),
                video("90p", 160, 90, 120_000),
                audio_only()
            ]
        );
        assert_eq!(master_playlist(&parsed), WITH_AUDIO_ONLY);
        let ntsc = master_playlist(&[Variant {
            frame_rate: 30_000.0 / 1001.0,
            ..video("720p", 1280, 720, 3_000_000)
        }]);
        assert_eq!(master_playlist(&parse_master(&ntsc).unwrap()), ntsc);
        assert_eq!(parse_master("not a playlist"), None);
        assert_eq!(parse_master("#EXTM3U\nstray.m3u8\n"), None);
        assert_eq!(
            parse_master("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1,COLOR=red\nx.m3u8\n"),
            None
        );
    }

    #[test]
    fn replacing_one_variant_keeps_the_others_byte_identical() {
        let new = Variant {
            average_bandwidth: 880_000,
            ..video("360p", 640, 360, 990_000)
        };
        let out = replace_variant(WITH_AUDIO_ONLY, &new).expect("replaced");
        assert_eq!(
            out,
            WITH_AUDIO_ONLY.replace(
                "BANDWIDTH=950000,AVERAGE-BANDWIDTH=900000",
                "BANDWIDTH=990000,AVERAGE-BANDWIDTH=880000"
            )
        );
        // A new figure can reorder the ladder: still sorted by BANDWIDTH.
        let out = replace_variant(WITH_AUDIO_ONLY, &video("90p", 160, 90, 2_000_000)).unwrap();
        assert!(out.find("90p/index").unwrap() < out.find("360p/index").unwrap());
        assert_eq!(
            replace_variant(WITH_AUDIO_ONLY, &video("720p", 1280, 720, 1)),
            None
        );
    }

    #[test]
    fn vod_media_playlist_has_every_segment_and_its_type() {
        let segs = vec![
            Segment {
                uri: "00000001.ts".into(),
                duration: 2.0,
                discontinuity: false,
                map: None,
            },
            Segment {
                uri: "00000003.ts".into(),
                duration: 1.5,
                discontinuity: true,
                map: None,
            },
        ];
        assert_eq!(
            vod_copy(2, &segs),
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-TARGETDURATION:2\n\
             #EXT-X-MEDIA-SEQUENCE:0\n#EXTINF:2.000,\n00000001.ts\n#EXT-X-DISCONTINUITY\n\
             #EXTINF:1.500,\n00000003.ts\n#EXT-X-ENDLIST\n"
        );
    }

    #[test]
    fn master_rewrite_maps_uris_and_drops_unknown_entries() {
        let master = "#EXTM3U\n#EXT-X-VERSION:3\n\
            #EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"a\",NAME=\"en\",URI=\"audio.m3u8\"\n\
            #EXT-X-STREAM-INF:BANDWIDTH=800000,RESOLUTION=640x360,AUDIO=\"a\"\nlow.m3u8\n\
            #EXT-X-STREAM-INF:BANDWIDTH=3000000\nhigh.m3u8\n\
            #EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=1,URI=\"iframes.m3u8\"\n";
        let entry = |uri: &str| MasterEntry {
            uri: uri.into(),
            fill: vec![
                ("RESOLUTION", "320x180".into()),
                ("CODECS", "\"avc1.42e01e,mp4a.40.2\"".into()),
            ],
        };
        let out = rewrite_master(master, |u| match u {
            "audio.m3u8" => Some(entry("audio/index.m3u8")),
            "low.m3u8" => Some(entry("low/index.m3u8")),
            _ => None,
        });
        assert_eq!(
            out,
            "#EXTM3U\n#EXT-X-VERSION:3\n\
             #EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"a\",NAME=\"en\",URI=\"audio/index.m3u8\"\n\
             #EXT-X-STREAM-INF:BANDWIDTH=800000,RESOLUTION=640x360,AUDIO=\"a\",\
             CODECS=\"avc1.42e01e,mp4a.40.2\"\nlow/index.m3u8\n"
        );
    }

    #[test]
    fn writes_a_viewer_playlist() {
        let segs = vec![
            Segment {
                uri: "seg/00000004.m4s".into(),
                duration: 2.0,
                discontinuity: true,
                map: Some("seg/00000001.mp4".into()),
            },
            Segment {
                uri: "seg/00000005.m4s".into(),
                duration: 2.5,
                discontinuity: true,
                map: Some("seg/00000003.mp4".into()),
            },
        ];
        assert_eq!(
            live(2, 10, 1, &segs, true),
            "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:3\n#EXT-X-MEDIA-SEQUENCE:10\n\
             #EXT-X-DISCONTINUITY-SEQUENCE:1\n#EXT-X-MAP:URI=\"seg/00000001.mp4\"\n\
             #EXTINF:2.000,\nseg/00000004.m4s\n#EXT-X-DISCONTINUITY\n\
             #EXT-X-MAP:URI=\"seg/00000003.mp4\"\n#EXTINF:2.500,\nseg/00000005.m4s\n\
             #EXT-X-ENDLIST\n"
        );
        assert_eq!(
            live(2, 0, 0, &[], false),
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n"
        );
    }
}
