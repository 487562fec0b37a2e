//! Per-tenant transcode presets: what a tenant may override of the configured ladder, the
//! strict validation of those overrides, and the effective preset a job is snapshotted
//! with at enqueue time (so changing the preset later never changes a queued or running
//! job). Pure logic; storage is in `store/presets.rs`.

use serde::{Deserialize, Serialize};

use crate::{RungConfig, SegmentFormat, TranscodeConfig, check_rung_name};

/// x264 speed presets, fastest first.
pub const X264_PRESETS: [&str; 10] = [
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
];

/// Most rungs a tenant ladder may have.
pub const MAX_RUNGS: usize = 8;
/// Bounds of a rung's height, pixels.
pub const HEIGHT_RANGE: (u32, u32) = (16, 4320);
/// Bounds of a rung's video bit rate, bits/s.
pub const VIDEO_BITRATE_RANGE: (u32, u32) = (50_000, 50_000_000);
/// Bounds of the AAC bit rate, bits/s.
pub const AUDIO_BITRATE_RANGE: (u32, u32) = (32_000, 320_000);
/// Bounds of the segment duration, seconds.
pub const SEGMENT_RANGE: (f64, f64) = (1.0, 10.0);

/// What a tenant sets with `PUT /v1/preset`: every field optional; an absent field keeps
/// the server's configured default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresetOverrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ladder: Option<Vec<RungConfig>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x264_preset: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment_duration_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_bitrate: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_only: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment_format: Option<SegmentFormat>,
    /// The tenant's own limit on source duration, seconds (the server's
    /// `transcode.max_duration_s` still applies above it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_duration_s: Option<f64>,
}

/// The complete preset a job runs with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TranscodePreset {
    pub ladder: Vec<RungConfig>,
    pub x264_preset: String,
    pub segment_duration_s: f64,
    pub audio_bitrate: u32,
    /// Add an audio-only (AAC) variant to the master playlist.
    pub audio_only: bool,
    /// Jobs snapshotted before this field existed made MPEG-TS.
    #[serde(default)]
    pub segment_format: SegmentFormat,
    /// The tenant's source-duration limit, if it set one.
    #[serde(default)]
    pub max_duration_s: Option<f64>,
}

impl TranscodePreset {
    /// The configured defaults.
    pub fn from_config(t: &TranscodeConfig) -> Self {
        Self {
            ladder: t.ladder.clone(),
            x264_preset: t.x264_preset.clone(),
            segment_duration_s: t.segment_duration_s,
            audio_bitrate: t.audio_bitrate,
            audio_only: t.audio_only,
            segment_format: t.segment_format,
            max_duration_s: None,
        }
    }

    /// These values with a tenant's overrides applied.
    pub fn with(mut self, o: &PresetOverrides) -> Self {
        if let Some(l) = &o.ladder {
            self.ladder = l.clone();
        }
        if let Some(p) = &o.x264_preset {
            self.x264_preset = p.clone();
        }
        if let Some(s) = o.segment_duration_s {
            self.segment_duration_s = s;
        }
        if let Some(a) = o.audio_bitrate {
            self.audio_bitrate = a;
        }
        if let Some(a) = o.audio_only {
            self.audio_only = a;
        }
        if let Some(f) = o.segment_format {
            self.segment_format = f;
        }
        if let Some(d) = o.max_duration_s {
            self.max_duration_s = Some(d);
        }
        self
    }
}

/// Check a tenant's overrides; the error is a sentence for a 400 response.
pub fn validate(o: &PresetOverrides) -> Result<(), String> {
    if let Some(ladder) = &o.ladder {
        if ladder.is_empty() || ladder.len() > MAX_RUNGS {
            return Err(format!(
                "ladder must have 1 to {MAX_RUNGS} rungs, got {}",
                ladder.len()
            ));
        }
        for (i, r) in ladder.iter().enumerate() {
            check_rung_name(&r.name)?;
            let (lo, hi) = HEIGHT_RANGE;
            if !(lo..=hi).contains(&r.height) {
                return Err(format!(
                    "rung {}: height must be between {lo} and {hi} pixels, got {}",
                    r.name, r.height
                ));
            }
            let (lo, hi) = VIDEO_BITRATE_RANGE;
            if !(lo..=hi).contains(&r.video_bitrate) {
                return Err(format!(
                    "rung {}: video_bitrate must be between {lo} and {hi} bits/s, got {}",
                    r.name, r.video_bitrate
                ));
            }
            if let Some(prev) = ladder[..i].iter().find(|p| p.name == r.name) {
                return Err(format!("rung name {:?} is used twice", prev.name));
            }
            if let Some(prev) = ladder[..i].iter().find(|p| p.height == r.height) {
                return Err(format!(
                    "rungs {} and {} have the same height {}: keep one",
                    prev.name, r.name, r.height
                ));
            }
        }
    }
    if let Some(p) = &o.x264_preset
        && !X264_PRESETS.contains(&p.as_str())
    {
        return Err(format!(
            "unknown x264_preset {p:?}; use one of {}",
            X264_PRESETS.join(", ")
        ));
    }
    if let Some(s) = o.segment_duration_s {
        let (lo, hi) = SEGMENT_RANGE;
        if !(s.is_finite() && (lo..=hi).contains(&s)) {
            return Err(format!(
                "segment_duration_s must be between {lo} and {hi} seconds, got {s}"
            ));
        }
    }
    if let Some(d) = o.max_duration_s
        && !(d.is_finite() && d >= 1.0)
    {
        return Err(format!("max_duration_s must be at least 1 second, got {d}"));
    }
    if let Some(a) = o.audio_bitrate {
        let (lo, hi) = AUDIO_BITRATE_RANGE;
        if !(lo..=hi).contains(&a) {
            return Err(format!(
                "audio_bitrate must be between {lo} and {hi} bits/s, got {a}"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rung(name: &str, height: u32, video_bitrate: u32) -> RungConfig {
        RungConfig {
            name: name.into(),
            height,
            video_bitrate,
        }
    }

    fn ladder(rungs: Vec<RungConfig>) -> PresetOverrides {
        PresetOverrides {
            ladder: Some(rungs),
            ..Default::default()
        }
    }

    #[test]
    fn empty_and_full_overrides_are_valid() {
        assert_eq!(validate(&PresetOverrides::default()), Ok(()));
        let full = PresetOverrides {
            ladder: Some(vec![
                rung("480p", 480, 1_400_000),
                rung("240p", 240, 400_000),
            ]),
            x264_preset: Some("fast".into()),
            segment_duration_s: Some(4.0),
            audio_bitrate: Some(96_000),
            audio_only: Some(true),
            segment_format: Some(SegmentFormat::Fmp4),
            max_duration_s: Some(600.0),
        };
        assert_eq!(validate(&full), Ok(()));
        // The bounds themselves are allowed.
        let edges = PresetOverrides {
            ladder: Some(vec![rung("a", 16, 50_000), rung("b", 4320, 50_000_000)]),
            segment_duration_s: Some(1.0),
            audio_bitrate: Some(320_000),
            ..Default::default()
        };
        assert_eq!(validate(&edges), Ok(()));
        let ten = PresetOverrides {
            segment_duration_s: Some(10.0),
            audio_bitrate: Some(32_000),
            ..Default::default()
        };
        assert_eq!(validate(&ten), Ok(()));
    }

    #[test]
    fn ladder_errors_are_exact() {
        assert_eq!(
            validate(&ladder(vec![])),
            Err("ladder must have 1 to 8 rungs, got 0".into())
        );
        let nine = (0..9)
            .map(|i| rung(&format!("r{i}"), 100 + i * 10, 500_000))
            .collect();
        assert_eq!(
            validate(&ladder(nine)),
            Err("ladder must have 1 to 8 rungs, got 9".into())
        );
        assert_eq!(
            validate(&ladder(vec![rung("480p", 0, 1_000_000)])),
            Err("rung 480p: height must be between 16 and 4320 pixels, got 0".into())
        );
        assert_eq!(
            validate(&ladder(vec![rung("big", 4322, 1_000_000)])),
            Err("rung big: height must be between 16 and 4320 pixels, got 4322".into())
        );
        assert_eq!(
            validate(&ladder(vec![rung("480p", 480, 49_999)])),
            Err(
                "rung 480p: video_bitrate must be between 50000 and 50000000 bits/s, got 49999"
                    .into()
            )
        );
        assert_eq!(
            validate(&ladder(vec![rung("480p", 480, 50_000_001)])),
            Err(
                "rung 480p: video_bitrate must be between 50000 and 50000000 bits/s, got 50000001"
                    .into()
            )
        );
        assert_eq!(
            validate(&ladder(vec![
                rung("480p", 480, 1_000_000),
                rung("480p", 360, 800_000)
            ])),
            Err("rung name \"480p\" is used twice".into())
        );
        assert_eq!(
            validate(&ladder(vec![
                rung("a", 480, 1_000_000),
                rung("b", 480, 800_000)
            ])),
            Err("rungs a and b have the same height 480: keep one".into())
        );
        assert_eq!(
            validate(&ladder(vec![rung("audio", 480, 1_000_000)])),
            Err("rung name \"audio\" is reserved for the audio-only rendition".into())
        );
        // A rung named `live` would be shadowed by the live playback paths (`live/…`).
        assert_eq!(
            validate(&ladder(vec![rung("live", 480, 1_000_000)])),
            Err("rung name \"live\" is reserved for live playback paths".into())
        );
        for name in ["", "../x", "a/b", ".hidden", "a b", "x%y", &"n".repeat(33)] {
            assert_eq!(
                validate(&ladder(vec![rung(name, 480, 1_000_000)])),
                Err(format!(
                    "rung name {name:?} must be 1 to 32 letters, digits, '-', '_' or '.', not \
                     starting with '.'"
                )),
                "{name:?}"
            );
        }
    }

    #[test]
    fn scalar_errors_are_exact() {
        let o = PresetOverrides {
            x264_preset: Some("warp".into()),
            ..Default::default()
        };
        assert_eq!(
            validate(&o),
            Err(
                "unknown x264_preset \"warp\"; use one of ultrafast, superfast, veryfast, \
                 faster, fast, medium, slow, slower, veryslow, placebo"
                    .into()
            )
        );
        for s in [0.0, 0.5, 10.5, f64::NAN, -1.0] {
            let o = PresetOverrides {
                segment_duration_s: Some(s),
                ..Default::default()
            };
            assert_eq!(
                validate(&o),
                Err(format!(
                    "segment_duration_s must be between 1 and 10 seconds, got {s}"
                ))
            );
        }
        for a in [0, 31_999, 320_001] {
            let o = PresetOverrides {
                audio_bitrate: Some(a),
                ..Default::default()
            };
            assert_eq!(
                validate(&o),
                Err(format!(
                    "audio_bitrate must be between 32000 and 320000 bits/s, got {a}"
                ))
            );
        }
    }

    #[test]
    fn unknown_fields_are_refused_and_overrides_merge_over_the_config() {
        assert!(serde_json::from_str::<PresetOverrides>(r#"{"segment_secs": 2}"#).is_err());
        assert!(
            serde_json::from_str::<PresetOverrides>(
                r#"{"ladder": [{"name": "a", "height": 240, "video_bitrate": 1, "fps": 5}]}"#
            )
            .is_err()
        );
        let o: PresetOverrides =
            serde_json::from_str(r#"{"segment_duration_s": 4, "audio_only": true}"#).unwrap();
        let base = TranscodePreset::from_config(&TranscodeConfig::default());
        assert!(!base.audio_only);
        let eff = base.clone().with(&o);
        assert_eq!(eff.segment_duration_s, 4.0);
        assert!(eff.audio_only);
        assert_eq!(eff.ladder, base.ladder);
        assert_eq!(eff.x264_preset, "veryfast");
        // Absent fields are not serialised: the stored overrides stay minimal.
        assert_eq!(
            serde_json::to_string(&o).unwrap(),
            r#"{"segment_duration_s":4.0,"audio_only":true}"#
        );
    }
}
