//! HLS playlists (RFC 8216) for video on demand, and the bit-rate figures they advertise.
//! Pure text generation: no I/O.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// One media segment of a variant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    /// URI relative to the media playlist (e.g. `seg_00000.ts`).
    pub uri: String,
    /// Duration in seconds, as measured from the media.
    pub duration: f64,
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

/// Formats a duration the way `#EXTINF` carries it: three decimals, negative or NaN as 0.
fn format_duration(seconds: f64) -> String {
    format!("{:.3}", seconds.max(0.0))
}

/// `#EXT-X-TARGETDURATION` for these segments.
///
/// RFC 8216 §4.3.3.1: every `#EXTINF` duration, *rounded to the nearest integer*, must be
/// <= the target duration. The check is made on the value as printed (three decimals), which
/// is what players parse: 2.4996 prints as `2.500` and rounds to 3, not 2. Never below 1.
pub fn target_duration(segments: &[Segment]) -> u64 {
    segments
        .iter()
        .map(|s| {
            let printed: f64 = format_duration(s.duration).parse().unwrap_or(0.0);
            printed.round() as u64
        })
        .max()
        .unwrap_or(0)
        .max(1)
}

/// A complete VOD media playlist for `segments`, in order.
pub fn media_playlist(segments: &[Segment]) -> String {
    media_playlist_with_map(segments, None)
}

/// A VOD media playlist whose segments need the initialisation section `map` first
/// (fragmented MP4: `EXT-X-MAP`, which needs protocol version 6 in a media playlist).
pub fn media_playlist_with_map(segments: &[Segment], map: Option<&str>) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        "#EXTM3U\n#EXT-X-VERSION:{}\n#EXT-X-PLAYLIST-TYPE:VOD\n",
        if map.is_some() { 6 } else { 3 }
    );
    let _ = writeln!(out, "#EXT-X-TARGETDURATION:{}", target_duration(segments));
    out.push_str("#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    if let Some(m) = map {
        let _ = writeln!(out, "#EXT-X-MAP:URI=\"{m}\"");
    }
    for segment in segments {
        let _ = writeln!(
            out,
            "#EXTINF:{},\n{}",
            format_duration(segment.duration),
            segment.uri
        );
    }
    out.push_str("#EXT-X-ENDLIST\n");
    out
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
/// stays byte-identical: `master_playlist(&parse_master(m)?) == m`.
pub fn parse_master(text: &str) -> Option<Vec<Variant>> {
    let mut lines = text.lines();
    if lines.next()? != "#EXTM3U" {
        return None;
    }
    let mut variants = Vec::new();
    while let Some(line) = lines.next() {
        let Some(attrs) = line.strip_prefix("#EXT-X-STREAM-INF:") else {
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            return None; // a URI without its STREAM-INF
        };
        let uri = lines.next()?.to_owned();
        let mut v = Variant {
            uri,
            bandwidth: 0,
            average_bandwidth: 0,
            width: 0,
            height: 0,
            codecs: String::new(),
            frame_rate: 0.0,
        };
        // CODECS is quoted and may contain commas: split it off first.
        let (plain, codecs) = match attrs.split_once(",CODECS=\"") {
            Some((p, c)) => (p, c.strip_suffix('"')?),
            None => (attrs, ""),
        };
        v.codecs = codecs.to_owned();
        for attr in plain.split(',') {
            let (k, val) = attr.split_once('=')?;
            match k {
                "BANDWIDTH" => v.bandwidth = val.parse().ok()?,
                "AVERAGE-BANDWIDTH" => v.average_bandwidth = val.parse().ok()?,
                "RESOLUTION" => {
                    let (w, h) = val.split_once('x')?;
                    v.width = w.parse().ok()?;
                    v.height = h.parse().ok()?;
                }
                "FRAME-RATE" => v.frame_rate = val.parse().ok()?,
                _ => return None,
            }
        }
        variants.push(v);
    }
    Some(variants)
}

/// `master` with the entry whose URI is `new.uri` replaced by `new`; `None` when `master`
/// is not ours or has no such entry.
pub fn replace_variant(master: &str, new: &Variant) -> Option<String> {
    let mut variants = parse_master(master)?;
    let slot = variants.iter_mut().find(|v| v.uri == new.uri)?;
    *slot = new.clone();
    Some(master_playlist(&variants))
}

/// Bits per second of `bytes` over `seconds`, rounded up (a ceiling keeps `BANDWIDTH` an
/// upper bound; the tiny epsilon keeps float noise such as 80000.00000000001 from adding a
/// bit); 0 for an empty or zero-length set.
fn rate(bytes: u64, seconds: f64) -> u64 {
    if seconds > 0.0 {
        (bytes as f64 * 8.0 / seconds - 1e-6).ceil().max(0.0) as u64
    } else {
        0
    }
}

/// Average bit rate over all segments, given as `(size in bytes, duration in seconds)`.
pub fn average_bit_rate(segments: &[(u64, f64)]) -> u64 {
    let bytes = segments.iter().map(|s| s.0).sum();
    let seconds = segments.iter().map(|s| s.1.max(0.0)).sum();
    rate(bytes, seconds)
}

/// Peak segment bit rate as RFC 8216 §4.3.4.2 defines it: the largest bit rate of any
/// contiguous run of segments whose total duration is between 0.5 and 1.5 times the target
/// duration. Taking runs rather than single segments keeps a very short last segment (a few
/// frames plus a keyframe and the PAT/PMT) from inflating `BANDWIDTH`.
///
/// Falls back to the average when no run qualifies (only possible when every segment is far
/// shorter than the target duration).
pub fn peak_bit_rate(segments: &[(u64, f64)], target_duration: u64) -> u64 {
    let target = target_duration as f64;
    let (lo, hi) = (0.5 * target, 1.5 * target);
    let mut peak: Option<u64> = None;
    for start in 0..segments.len() {
        let (mut bytes, mut seconds) = (0u64, 0.0f64);
        for &(b, d) in &segments[start..] {
            bytes += b;
            seconds += d.max(0.0);
            if seconds > hi {
                break;
            }
            if seconds >= lo {
                let r = rate(bytes, seconds);
                peak = Some(peak.map_or(r, |p| p.max(r)));
            }
        }
    }
    peak.unwrap_or_else(|| average_bit_rate(segments))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(uri: &str, duration: f64) -> Segment {
        Segment {
            uri: uri.into(),
            duration,
        }
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
    fn target_duration_rounds_the_printed_value() {
        assert_eq!(target_duration(&[seg("a", 2.002), seg("b", 2.002)]), 2);
        assert_eq!(target_duration(&[seg("a", 2.4)]), 2);
        assert_eq!(target_duration(&[seg("a", 2.5)]), 3);
        // Prints as 2.500, which a player rounds to 3.
        assert_eq!(target_duration(&[seg("a", 2.4996)]), 3);
        assert_eq!(target_duration(&[seg("a", 6.0), seg("b", 1.0)]), 6);
        assert_eq!(target_duration(&[seg("a", 0.2)]), 1);
        assert_eq!(target_duration(&[seg("a", f64::NAN)]), 1);
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
    fn average_bit_rate_is_total_bits_over_total_time() {
        assert_eq!(
            average_bit_rate(&[(250_000, 2.0), (125_000, 1.0)]),
            1_000_000
        );
        assert_eq!(average_bit_rate(&[(1, 3.0)]), 3); // 2.67 rounded up
        assert_eq!(average_bit_rate(&[]), 0);
    }

    #[test]
    fn peak_bit_rate_ignores_a_short_tail_segment() {
        // 2 s segments at 1 Mbit/s and 1.2 Mbit/s, then a 0.1 s tail at 4 Mbit/s.
        let segments = [(250_000, 2.0), (300_000, 2.0), (50_000, 0.1)];
        // Runs within [1, 3] s: seg0 (1.0M), seg1 (1.2M), seg1+tail (350 000 B / 2.1 s).
        assert_eq!(peak_bit_rate(&segments, 2), 1_333_334);
        // Target 6: runs must last 3..9 s, so only seg0+seg1 (1.1M) and all three
        // (600 000 B / 4.1 s) qualify.
        assert_eq!(peak_bit_rate(&segments, 6), 1_170_732);
    }

    #[test]
    fn peak_bit_rate_falls_back_to_the_average() {
        // Every run is shorter than half the target.
        assert_eq!(peak_bit_rate(&[(1_000, 0.1), (1_000, 0.1)], 1), 80_000);
        assert_eq!(peak_bit_rate(&[], 2), 0);
    }
}
