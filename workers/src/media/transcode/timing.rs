//! Frame rates, GOPs and segment timing: the arithmetic that keeps renditions'
//! keyframes (and the audio-only rendition's cuts) aligned, and the checks that they were.

use super::*;

/// fMP4 output: move each segment file's header into the rendition's `init.mp4`.
pub(super) fn split_fmp4(
    format: SegmentFormat,
    out_dir: &Path,
    rendition: &str,
    segments: &[(String, f64)],
) -> Result<(), MediaError> {
    if format != SegmentFormat::Fmp4 {
        return Ok(());
    }
    let paths: Vec<PathBuf> = segments.iter().map(|(p, _)| PathBuf::from(p)).collect();
    fmp4::split_init(&out_dir.join(rendition), &paths)
}

/// The frame rate the ladder is encoded at: the source's, capped at 60, or 30 when the
/// source declares none (variable frame rate) or something implausible (< 1 fps). A fixed
/// rate is what makes "fps × segment seconds" frames a fixed duration.
pub(crate) fn output_framerate(num: u32, den: u32) -> (i32, i32) {
    if num == 0 || den == 0 {
        return DEFAULT_FPS;
    }
    let fps = f64::from(num) / f64::from(den);
    if fps < 1.0 {
        return DEFAULT_FPS;
    }
    if fps > f64::from(MAX_FPS) {
        return (MAX_FPS, 1);
    }
    let g = gcd(num, den);
    match (i32::try_from(num / g), i32::try_from(den / g)) {
        (Ok(n), Ok(d)) => (n, d),
        // Absurd fractions: a millisecond-precise approximation is plenty.
        _ => ((fps * 1000.0).round() as i32, 1000),
    }
}

pub(super) fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a.max(1)
}

/// Frames per GOP: the segment duration in frames, rounded, at least 1.
pub(crate) fn gop_frames(fps_num: i32, fps_den: i32, segment: Duration) -> u32 {
    let frames = segment.as_secs_f64() * f64::from(fps_num) / f64::from(fps_den);
    (frames.round() as u32).max(1)
}

/// Running times (ns) of the video keyframes that start segments 1, 2, …: frame `k × gop`
/// at `fps`, computed exactly as `videorate` stamps frames; enough to cover `duration_s`
/// with room to spare (a probed duration can be a little short).
pub(crate) fn split_times(fps: (i32, i32), gop: u32, duration_s: f64) -> Vec<u64> {
    let (num, den) = (fps.0.max(1) as u128, fps.1.max(1) as u128);
    let at = |k: u128| (k * u128::from(gop) * 1_000_000_000 * den / num) as u64;
    let segment_s = at(1) as f64 / 1e9;
    let count = if segment_s > 0.0 && duration_s.is_finite() {
        ((duration_s.max(0.0) / segment_s).ceil() as u64 + 2).min(100_000)
    } else {
        2
    };
    (1..=u128::from(count)).map(at).collect()
}

/// The audio-only rendition must switch with the video: from the second segment on, each
/// of its segments starts within one AAC frame after the video segment of the same index.
/// (The first starts with each stream; audio may end a segment earlier or later.)
pub(super) fn check_audio_alignment(
    video: &[Fragment],
    audio: &[Fragment],
) -> Result<(), MediaError> {
    if audio.is_empty() {
        return Err(MediaError::Pipeline(
            "the audio-only rendition received no audio".into(),
        ));
    }
    let slack = 1_000_000; // 1 ms of timestamp rounding
    for (i, (v, a)) in video.iter().zip(audio).enumerate().skip(1) {
        let d = i128::from(a.start_ns) - i128::from(v.start_ns);
        if d < -slack || d > i128::from(AAC_FRAME_NS) + slack {
            return Err(MediaError::Pipeline(format!(
                "the audio-only segment {i} starts {:.3} s away from its video segment",
                d as f64 / 1e9
            )));
        }
    }
    Ok(())
}

/// Turns fragments into `(path, seconds)`: each segment lasts until the next one starts;
/// the last one until `end_ns` (end of the last encoded frame), or one frame after its
/// closing time when that is unknown.
pub(crate) fn segments_from_fragments(
    frags: &[Fragment],
    end_ns: u64,
    frame_ns: u64,
) -> Vec<(String, f64)> {
    frags
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let end = match frags.get(i + 1) {
                Some(next) => next.start_ns,
                None => {
                    let fallback = f
                        .closed_ns
                        .map_or(f.start_ns + frame_ns, |c| c.max(f.start_ns) + frame_ns);
                    if end_ns > f.start_ns {
                        end_ns
                    } else {
                        fallback
                    }
                }
            };
            (
                f.location.clone(),
                end.saturating_sub(f.start_ns) as f64 / 1e9,
            )
        })
        .collect()
}

/// Every rendition must have been cut at the same times, or switching renditions would
/// glitch.
pub(super) fn check_alignment(variants: &[VariantOutput], frame_ns: u64) -> Result<(), MediaError> {
    let Some(first) = variants.first() else {
        return Ok(());
    };
    let tolerance = frame_ns as f64 / 2e9;
    for v in &variants[1..] {
        let same = v.segments.len() == first.segments.len()
            && v.segments
                .iter()
                .zip(&first.segments)
                .all(|(a, b)| (a.duration - b.duration).abs() <= tolerance);
        if !same {
            return Err(MediaError::Pipeline(format!(
                "renditions {} and {} were cut at different points",
                first.rung.name, v.rung.name
            )));
        }
    }
    Ok(())
}

/// Catches inputs that end early without an error, such as a faststart MP4 cut in half:
/// its index announces the full duration, the demuxer hits the end of the data and sends a
/// normal EOS.
pub(crate) fn check_complete(produced_s: f64, expected_s: f64) -> Result<(), MediaError> {
    let threshold = (expected_s * 0.9).min(expected_s - 1.0);
    if produced_s < threshold {
        return Err(MediaError::Truncated {
            decoded_s: produced_s,
            expected_s,
        });
    }
    Ok(())
}
