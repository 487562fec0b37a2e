//! The media vocabulary the engine and the workers share, and pure HLS text.
//!
//! Both sides of a job speak these words: the engine validates configuration and tenant
//! presets with them and snapshots a job's preset; the workers encode and publish with
//! them. Keeping them in one leaf crate (no I/O, no GStreamer, no database) means there is
//! one list of x264 presets, one set of reserved rendition names and one HLS writer.
//!
//! * this file: segment containers, ladder rungs, the transcode configuration, how a live
//!   recording becomes VOD, and the rendition names that are reserved;
//! * [`preset`]: per-tenant overrides of the transcode settings and their validation;
//! * [`hls`]: RFC 8216 playlists: the strict parser for pushed playlists, the writers of
//!   every playlist Sluice serves, and the bit-rate rules they advertise.

pub mod hls;
pub mod preset;

use serde::{Deserialize, Serialize};

pub use preset::{PresetOverrides, TranscodePreset};

/// Name of the audio-only rendition: its directory, and its playlist at `audio/index.m3u8`.
pub const AUDIO_ONLY_NAME: &str = "audio";

/// The first path component of a live stream's playback entries (`live/index.m3u8`, …):
/// playback paths under it resolve to the stream's live objects, not to a rendition.
pub const LIVE_ENTRY: &str = "live";

/// Rendition names no ladder rung may use, and why.
pub const RESERVED_RENDITION_NAMES: [(&str, &str); 2] = [
    (AUDIO_ONLY_NAME, "the audio-only rendition"),
    (LIVE_ENTRY, "live playback paths"),
];

/// Check a ladder rung's name: it becomes a directory and a playlist URI, so 1 to 32
/// letters, digits, `-`, `_` or `.`, not starting with `.`, and not a reserved name. The
/// error is a sentence for the operator or the tenant.
pub fn check_rung_name(name: &str) -> Result<(), String> {
    let charset = (1..=32).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !charset {
        return Err(format!(
            "rung name {name:?} must be 1 to 32 letters, digits, '-', '_' or '.', not \
             starting with '.'"
        ));
    }
    match RESERVED_RENDITION_NAMES.iter().find(|(n, _)| *n == name) {
        Some((n, what)) => Err(format!("rung name {n:?} is reserved for {what}")),
        None => Ok(()),
    }
}

/// One rung of the ABR ladder as configured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RungConfig {
    /// Rendition name, used in paths (`720p/index.m3u8`).
    pub name: String,
    /// Output height in pixels; width follows the source aspect ratio.
    pub height: u32,
    /// Target video bitrate, bits per second.
    pub video_bitrate: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TranscodeConfig {
    /// Segment duration, seconds. Default 2.
    pub segment_duration_s: f64,
    /// x264 speed preset. Default `veryfast`.
    pub x264_preset: String,
    /// AAC bitrate, bits per second. Default 128000.
    pub audio_bitrate: u32,
    /// Fail a transcode whose output makes no progress for this long, seconds. Default 30.
    pub stall_timeout_s: u64,
    /// The ladder; rungs above the source resolution are skipped. Default
    /// 1080p/720p/480p/360p.
    pub ladder: Vec<RungConfig>,
    /// Longest source accepted, seconds. Default 21600 (6 h).
    pub max_duration_s: f64,
    /// Largest source frame accepted, pixels (width × height). Default 8192 × 4320.
    pub max_pixels: u64,
    /// Add an audio-only (AAC) variant, named `audio`, to the master playlist of sources
    /// with sound. Tenants can switch it per preset. Default false.
    pub audio_only: bool,
    /// Segment container: `ts` (MPEG-TS, the default) or `fmp4` (fragmented MP4 / CMAF-style
    /// segments with an `init.mp4` per rendition, `EXT-X-MAP`). Tenants can switch it per
    /// preset.
    pub segment_format: SegmentFormat,
}

/// The container of HLS media segments.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SegmentFormat {
    /// MPEG-TS segments (`.ts`): every HLS player, the widest reach.
    #[default]
    Ts,
    /// Fragmented MP4 segments (`.m4s`) after an `init.mp4`.
    Fmp4,
}

impl Default for TranscodeConfig {
    fn default() -> Self {
        Self {
            segment_duration_s: 2.0,
            x264_preset: "veryfast".to_string(),
            audio_bitrate: 128_000,
            stall_timeout_s: 30,
            ladder: default_ladder(),
            max_duration_s: 6.0 * 3600.0,
            max_pixels: 8192 * 4320,
            audio_only: false,
            segment_format: SegmentFormat::Ts,
        }
    }
}
/// The default ladder: 1080p, 720p, 480p and 360p at common H.264 bit rates.
pub fn default_ladder() -> Vec<RungConfig> {
    [
        ("1080p", 1080, 5_000_000),
        ("720p", 720, 2_800_000),
        ("480p", 480, 1_400_000),
        ("360p", 360, 800_000),
    ]
    .into_iter()
    .map(|(name, height, video_bitrate)| RungConfig {
        name: name.to_owned(),
        height,
        video_bitrate,
    })
    .collect()
}

impl SegmentFormat {
    /// The file extension of its media segments.
    pub fn segment_ext(self) -> &'static str {
        match self {
            SegmentFormat::Ts => "ts",
            SegmentFormat::Fmp4 => "m4s",
        }
    }
}

/// How a stream's recording becomes a VOD asset when it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
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

    /// Parse the API's and the database's spelling; the error is a sentence for a 400.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "transcode" => Ok(VodMode::Transcode),
            "copy" => Ok(VodMode::Copy),
            other => Err(format!(
                "vod must be \"transcode\" or \"copy\", not {other:?}"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rung_names_are_checked_by_one_rule() {
        assert_eq!(check_rung_name("720p"), Ok(()));
        assert_eq!(check_rung_name("a.b-c_d"), Ok(()));
        assert_eq!(
            check_rung_name("audio"),
            Err("rung name \"audio\" is reserved for the audio-only rendition".into())
        );
        // `live/…` playback paths are the live stream's: a rung named so would be unreachable.
        assert_eq!(
            check_rung_name("live"),
            Err("rung name \"live\" is reserved for live playback paths".into())
        );
        for bad in ["", ".x", "../x", "a/b", "a b", &"x".repeat(33)] {
            assert!(
                check_rung_name(bad)
                    .unwrap_err()
                    .contains("must be 1 to 32"),
                "{bad}"
            );
        }
    }

    fn rung(name: &str, height: u32, video_bitrate: u32) -> RungConfig {
        RungConfig {
            name: name.into(),
            height,
            video_bitrate,
        }
    }

    #[test]
    fn default_ladder_is_the_documented_one() {
        assert_eq!(
            default_ladder(),
            vec![
                rung("1080p", 1080, 5_000_000),
                rung("720p", 720, 2_800_000),
                rung("480p", 480, 1_400_000),
                rung("360p", 360, 800_000),
            ]
        );
    }

    #[test]
    fn segment_extensions_and_vod_modes() {
        assert_eq!(SegmentFormat::Ts.segment_ext(), "ts");
        assert_eq!(SegmentFormat::Fmp4.segment_ext(), "m4s");
        assert_eq!(VodMode::parse("copy"), Ok(VodMode::Copy));
        assert_eq!(
            VodMode::parse(VodMode::Transcode.as_str()),
            Ok(VodMode::Transcode)
        );
        assert!(VodMode::parse("x").is_err());
    }
}
