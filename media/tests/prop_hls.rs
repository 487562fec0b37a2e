//! Property tests of the HLS text module, the parser of playlists encoders push (untrusted
//! input): it never panics, and what the writers produce reads back as written.

use proptest::prelude::*;
use sluice_media::hls::{self, MediaHead, Playlist, Segment, Variant};

/// Lines an attacker would try: real tags with hostile values, URIs, junk.
fn hls_line() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("#EXTM3U".to_string()),
        Just("#EXT-X-ENDLIST".to_string()),
        Just("#EXT-X-DISCONTINUITY".to_string()),
        Just("#EXT-X-PLAYLIST-TYPE:EVENT".to_string()),
        Just("#EXT-X-INDEPENDENT-SEGMENTS".to_string()),
        any::<u64>().prop_map(|n| format!("#EXT-X-TARGETDURATION:{n}")),
        any::<u64>().prop_map(|n| format!("#EXT-X-MEDIA-SEQUENCE:{n}")),
        any::<u64>().prop_map(|n| format!("#EXT-X-VERSION:{n}")),
        any::<f64>().prop_map(|d| format!("#EXTINF:{d},")),
        "[-+0-9.eE]{0,30}".prop_map(|d| format!("#EXTINF:{d},title")),
        "[ -~]{0,60}".prop_map(|a| format!("#EXT-X-STREAM-INF:{a}")),
        "[ -~]{0,40}".prop_map(|u| format!("#EXT-X-MAP:URI=\"{u}\"")),
        "[a-z0-9_./%-]{0,40}",
        "[ -~]{0,80}",
        "\\PC{0,40}",
    ]
}

fn segment() -> impl Strategy<Value = Segment> {
    ("[a-z0-9_]{1,12}\\.(ts|m4s)", 1u32..20_000, any::<bool>()).prop_map(|(uri, ms, disc)| {
        let mut s = Segment::new(uri, f64::from(ms) / 1000.0);
        s.discontinuity = disc;
        s
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn parse_never_panics_on_any_text(text in "\\PC{0,400}") {
        let _ = hls::parse(&text);
        let _ = hls::parse_master(&text);
    }

    #[test]
    fn parse_never_panics_on_hostile_playlists(lines in prop::collection::vec(hls_line(), 0..40)) {
        let text = format!("#EXTM3U\n{}\n", lines.join("\n"));
        if let Ok(Playlist::Media(m)) = hls::parse(&text) {
            // What is accepted is bounded: finite, non-negative durations.
            for s in &m.segments {
                prop_assert!(s.duration.is_finite() && s.duration >= 0.0, "{:?}", s);
            }
        }
        let _ = hls::parse_master(&text);
    }

    #[test]
    fn a_written_media_playlist_reads_back(
        segments in prop::collection::vec(segment(), 1..30),
        seq in 0u64..1_000_000,
        ended in any::<bool>(),
    ) {
        let head = MediaHead { media_sequence: seq, ended, ..MediaHead::default() };
        let text = hls::write_media(&head, &segments);
        let Playlist::Media(m) = hls::parse(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))? else {
            return Err(TestCaseError::fail(format!("not a media playlist:\n{text}")));
        };
        prop_assert_eq!(m.media_sequence, seq);
        prop_assert_eq!(m.ended, ended);
        prop_assert_eq!(m.target_duration, hls::target_duration(&segments));
        prop_assert_eq!(m.segments.len(), segments.len());
        for (i, (got, want)) in m.segments.iter().zip(&segments).enumerate() {
            prop_assert_eq!(&got.uri, &want.uri);
            // A discontinuity is written between segments: never before the first.
            prop_assert_eq!(got.discontinuity, want.discontinuity && i > 0);
            prop_assert!((got.duration - want.duration).abs() < 1e-3, "{} vs {}", got.duration, want.duration);
        }
    }

    #[test]
    fn a_written_master_playlist_reads_back_byte_exact(
        variants in prop::collection::vec(
            ("[a-z0-9]{1,8}/index\\.m3u8", 1u64..50_000_000, 0u64..50_000_000, 0u32..4000, 0u32..4000, 0u32..120),
            1..6,
        )
    ) {
        let mut seen = std::collections::HashSet::new();
        let variants: Vec<Variant> = variants
            .into_iter()
            .filter(|v| seen.insert(v.0.clone()))
            .map(|(uri, bandwidth, average_bandwidth, w, h, fps)| {
                let video = w > 0 && h > 0;
                Variant {
                    uri,
                    bandwidth,
                    average_bandwidth,
                    width: if video { w } else { 0 },
                    height: if video { h } else { 0 },
                    codecs: if video { "avc1.64001f,mp4a.40.2".into() } else { "mp4a.40.2".into() },
                    frame_rate: if video { f64::from(fps) } else { 0.0 },
                }
            })
            .collect();
        let text = hls::master_playlist(&variants);
        prop_assert!(hls::parse_master(&text).is_some(), "{}", text);
    }
}
