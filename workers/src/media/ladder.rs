//! The rendition ladder: which sizes and bit rates to encode for a given source, and the
//! RFC 6381 codec strings the master playlist advertises for them. Pure logic, no media.

use serde::{Deserialize, Serialize};
pub use sluice_media::{RungConfig, default_ladder};

/// One rendition planned for a specific source: concrete, even dimensions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rung {
    /// Rendition name (directory and playlist URI component).
    pub name: String,
    /// Output width in pixels (even, square pixels).
    pub width: u32,
    /// Output height in pixels (even).
    pub height: u32,
    /// Target video bit rate in bits per second.
    pub video_bitrate: u32,
}

/// RFC 6381 codec string of AAC-LC, the only audio codec the transcoder produces.
pub const AAC_LC_CODEC: &str = "mp4a.40.2";

/// Floor for the bit rate of a rendition made at a tiny source's own size: below this x264
/// produces mush at any resolution players would show.
const MIN_FALLBACK_BITRATE: u32 = 100_000;

/// Rounds to the nearest even number (x264 needs even dimensions for 4:2:0), stepping down
/// by 2 while the result exceeds `limit`, so rounding never upscales; never below 2.
fn even_within(x: f64, limit: u32) -> u32 {
    let mut v = ((x / 2.0).round() * 2.0).max(2.0) as u32;
    while v > limit && v > 2 {
        v -= 2;
    }
    v
}

/// Plans the renditions for a source of `src_width`×`src_height` *display* pixels (after
/// rotation and pixel-aspect correction).
///
/// * Rungs taller than the source are dropped: upscaling costs bits and adds nothing.
/// * Widths follow the source aspect ratio; both dimensions are rounded to the nearest even
///   number without exceeding the source.
/// * Equal heights are kept once (the higher bit rate wins), output is sorted by height,
///   tallest first.
/// * If the source is smaller than every rung, one rendition is made at the source size,
///   named `{height}p`, with the smallest rung's bit rate scaled by pixel count (at least
///   100 kbit/s, at most the smallest rung's rate), so small uploads still play.
///
/// Returns an empty ladder when there is nothing to plan from (no specs, or a zero-sized
/// source).
pub fn plan_ladder(specs: &[RungConfig], src_width: u32, src_height: u32) -> Vec<Rung> {
    if src_width == 0 || src_height == 0 {
        return Vec::new();
    }
    let aspect = f64::from(src_width) / f64::from(src_height);
    let mut sorted: Vec<&RungConfig> = specs.iter().filter(|s| s.height > 0).collect();
    sorted.sort_by(|a, b| {
        b.height
            .cmp(&a.height)
            .then(b.video_bitrate.cmp(&a.video_bitrate))
    });

    let mut rungs: Vec<Rung> = Vec::new();
    for spec in sorted.iter().filter(|s| s.height <= src_height) {
        let height = even_within(f64::from(spec.height), src_height);
        if rungs.last().is_some_and(|r| r.height == height) {
            continue;
        }
        rungs.push(Rung {
            name: spec.name.clone(),
            width: even_within(f64::from(height) * aspect, src_width),
            height,
            video_bitrate: spec.video_bitrate,
        });
    }

    if rungs.is_empty()
        && let Some(smallest) = sorted.last()
    {
        let height = even_within(f64::from(src_height), src_height);
        let width = even_within(f64::from(src_width), src_width);
        let ref_height = f64::from(smallest.height);
        let ref_pixels = ref_height * ref_height * aspect;
        let scaled =
            f64::from(smallest.video_bitrate) * f64::from(width) * f64::from(height) / ref_pixels;
        let video_bitrate = (scaled.round() as u32)
            .min(smallest.video_bitrate)
            .max(MIN_FALLBACK_BITRATE);
        rungs.push(Rung {
            name: format!("{height}p"),
            width,
            height,
            video_bitrate,
        });
    }
    rungs
}

/// Builds the RFC 6381 `avc1.PPCCLL` string from the `profile` and `level` fields that
/// `h264parse` puts in its caps (e.g. `("high", "3.1")` → `"avc1.64001f"`).
///
/// `PP` is `profile_idc`, `CC` the constraint flags byte, `LL` `level_idc`. Level `1b` is
/// coded as level 11 with `constraint_set3` for Baseline/Main/Extended and as 9 otherwise.
/// Unknown profiles are written as High and unparseable levels as 4.0: the transcoder only
/// produces High/Main 8-bit 4:2:0 at sizes that fit level 4.0, so this fallback is only hit
/// if the caps lack the fields.
pub fn h264_codec_string(profile: &str, level: &str) -> String {
    let (profile_idc, mut constraints): (u8, u8) = match profile {
        "baseline" => (0x42, 0x00),
        "constrained-baseline" => (0x42, 0xe0),
        "main" => (0x4d, 0x00),
        "extended" => (0x58, 0x00),
        "high" => (0x64, 0x00),
        "progressive-high" => (0x64, 0x08),
        "constrained-high" => (0x64, 0x0c),
        "high-10" => (0x6e, 0x00),
        "high-10-intra" => (0x6e, 0x10),
        "high-4:2:2" => (0x7a, 0x00),
        "high-4:2:2-intra" => (0x7a, 0x10),
        "high-4:4:4" => (0xf4, 0x00),
        "high-4:4:4-intra" => (0xf4, 0x10),
        "cavlc-4:4:4-intra" => (0x2c, 0x10),
        _ => (0x64, 0x00),
    };
    let level_idc: u8 = if level == "1b" {
        if matches!(profile_idc, 0x42 | 0x4d | 0x58) {
            constraints |= 0x10;
            11
        } else {
            9
        }
    } else {
        parse_level(level).unwrap_or(40)
    };
    format!("avc1.{profile_idc:02x}{constraints:02x}{level_idc:02x}")
}

/// `"3.1"` → 31, `"4"` → 40; `None` for anything else.
fn parse_level(level: &str) -> Option<u8> {
    let (major, minor) = match level.split_once('.') {
        Some((a, b)) => (a, b),
        None => (level, "0"),
    };
    if major.len() != 1 || minor.len() != 1 {
        return None;
    }
    let major: u8 = major.parse().ok()?;
    let minor: u8 = minor.parse().ok()?;
    Some(major * 10 + minor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rung(name: &str, width: u32, height: u32, video_bitrate: u32) -> Rung {
        Rung {
            name: name.into(),
            width,
            height,
            video_bitrate,
        }
    }

    fn spec(name: &str, height: u32, video_bitrate: u32) -> RungConfig {
        RungConfig {
            name: name.into(),
            height,
            video_bitrate,
        }
    }

    #[test]
    fn full_hd_source_gets_every_rung_with_even_widths() {
        assert_eq!(
            plan_ladder(&default_ladder(), 1920, 1080),
            vec![
                rung("1080p", 1920, 1080, 5_000_000),
                rung("720p", 1280, 720, 2_800_000),
                // 480 × 16/9 = 853.33 → nearest even 854.
                rung("480p", 854, 480, 1_400_000),
                rung("360p", 640, 360, 800_000),
            ]
        );
    }

    #[test]
    fn never_upscales() {
        assert_eq!(
            plan_ladder(&default_ladder(), 1280, 720),
            vec![
                rung("720p", 1280, 720, 2_800_000),
                rung("480p", 854, 480, 1_400_000),
                rung("360p", 640, 360, 800_000)
            ]
        );
        // A rung exactly at the source height is kept.
        assert_eq!(
            plan_ladder(&default_ladder(), 640, 360),
            vec![rung("360p", 640, 360, 800_000)]
        );
    }

    #[test]
    fn odd_source_dimensions_round_down_rather_than_upscale() {
        // 641 wide at full height would round to 642: stepped down to 640.
        assert_eq!(
            plan_ladder(&[spec("360p", 360, 800_000)], 641, 360),
            vec![rung("360p", 640, 360, 800_000)]
        );
        // An odd spec height at an odd source height: 361 → 362 > 361 → 360.
        assert_eq!(
            plan_ladder(&[spec("odd", 361, 800_000)], 642, 361),
            vec![rung("odd", 640, 360, 800_000)]
        );
    }

    #[test]
    fn portrait_sources_keep_their_aspect() {
        assert_eq!(
            plan_ladder(&default_ladder(), 1080, 1920),
            vec![
                rung("1080p", 608, 1080, 5_000_000), // 607.5 → 608
                rung("720p", 406, 720, 2_800_000),   // 405 → 406 (half rounds away from zero)
                rung("480p", 270, 480, 1_400_000),
                rung("360p", 202, 360, 800_000), // 202.5 / 2 = 101.25 → 101 → 202
            ]
        );
    }

    #[test]
    fn tiny_source_gets_one_rung_at_its_own_size() {
        // 76 800 px vs the 360p rung at 4:3 (480×360 = 172 800 px): 800k × 0.444… = 355 556.
        assert_eq!(
            plan_ladder(&default_ladder(), 320, 240),
            vec![rung("240p", 320, 240, 355_556)]
        );
        // Odd sizes are rounded to even without exceeding the source.
        assert_eq!(
            plan_ladder(&default_ladder(), 175, 143),
            vec![rung("142p", 174, 142, 124_629)]
        );
        // The bit rate never goes below the floor.
        assert_eq!(
            plan_ladder(&default_ladder(), 64, 48),
            vec![rung("48p", 64, 48, 100_000)]
        );
    }

    #[test]
    fn unsorted_specs_with_duplicate_heights_are_sorted_and_deduplicated() {
        let specs = [
            spec("low", 360, 600_000),
            spec("hd", 720, 3_000_000),
            spec("360hi", 360, 900_000),
        ];
        assert_eq!(
            plan_ladder(&specs, 1280, 720),
            vec![
                rung("hd", 1280, 720, 3_000_000),
                rung("360hi", 640, 360, 900_000)
            ]
        );
    }

    #[test]
    fn nothing_to_plan_from_gives_an_empty_ladder() {
        assert_eq!(plan_ladder(&[], 1920, 1080), vec![]);
        assert_eq!(plan_ladder(&default_ladder(), 0, 1080), vec![]);
        assert_eq!(plan_ladder(&default_ladder(), 1920, 0), vec![]);
    }

    #[test]
    fn codec_strings_follow_rfc6381() {
        assert_eq!(h264_codec_string("high", "3.1"), "avc1.64001f");
        assert_eq!(h264_codec_string("high", "4.2"), "avc1.64002a");
        assert_eq!(h264_codec_string("main", "4"), "avc1.4d0028");
        assert_eq!(h264_codec_string("main", "3"), "avc1.4d001e");
        assert_eq!(
            h264_codec_string("constrained-baseline", "3"),
            "avc1.42e01e"
        );
        assert_eq!(h264_codec_string("baseline", "2.1"), "avc1.420015");
        assert_eq!(h264_codec_string("baseline", "1b"), "avc1.42100b");
        assert_eq!(h264_codec_string("high", "1b"), "avc1.640009");
        assert_eq!(h264_codec_string("progressive-high", "5.1"), "avc1.640833");
        assert_eq!(h264_codec_string("constrained-high", "4"), "avc1.640c28");
        assert_eq!(h264_codec_string("high-10", "5"), "avc1.6e0032");
        assert_eq!(h264_codec_string("mystery", "junk"), "avc1.640028");
        assert_eq!(h264_codec_string("high", "10"), "avc1.640028");
        assert_eq!(AAC_LC_CODEC, "mp4a.40.2");
    }
}
