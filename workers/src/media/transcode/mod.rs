//! Transcoding one input into an HLS ladder (H.264 + AAC in MPEG-TS segments) with a single
//! GStreamer pipeline:
//!
//! ```text
//! filesrc ─ decodebin3 ─┬─ videoconvert ─ deinterlace ─ videoflip(auto) ─ videorate ─ caps(I420, fixed fps) ─ tee
//!                       │      tee ─┬─ queue ─ videoscale ─ caps(W×H) ─ x264enc ─ caps(high) ─ h264parse ─ splitmuxsink[i].video
//!                       │           ├─ … one branch per rung
//!                       │           └─ queue ─ appsink (poster + storyboard, see [`thumbs`](super::thumbs))
//!                       └─ audioconvert ─ audioresample ─ caps(48 kHz, ≤2 ch) ─ AAC ─ aacparse ─ tee
//!                                   tee ─┬─ queue ─ splitmuxsink[i].audio_0
//!                                        ├─ … one branch per rung
//!                                        └─ queue ─ splitmuxsink(audio only, split at k × GOP)   [audio_only]
//! ```
//!
//! Decoding, frame-rate conversion and the AAC encode happen once; only scaling and the
//! H.264 encode are per rendition, and the thumbnails reuse the decoded frames. Keyframes
//! line up across renditions because every encoder sees the same frames and uses the same
//! fixed, closed GOP (`key-int-max` = `min-keyint` = fps × segment seconds, `scenecut=0`):
//! `splitmuxsink` then cuts each rendition at the same keyframes, without keyframe requests
//! that could hit the encoders at different frames.
//!
//! Here: the options, the outputs and the entry point; the pipeline's construction is in
//! `pipeline`, its run in `run`, frame-rate and alignment arithmetic in `timing`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use serde::{Deserialize, Serialize};
use sluice_media::hls::{
    Segment, Variant, average_bit_rate, master_playlist, peak_bit_rate, target_duration, vod_media,
};
use sluice_media::preset::X264_PRESETS;
pub use sluice_media::{AUDIO_ONLY_NAME, SegmentFormat};

use super::MediaError;
use super::elements::{make, set, set_enum, set_int, time_queue};
use super::error::from_gst_error;
use super::files::write_atomically;
use super::fmp4;
use super::ladder::{AAC_LC_CODEC, Rung, h264_codec_string};
use super::probe::{ProbeInfo, check_structure};
use super::thumbs::{self, DEFAULT_STORYBOARD_INTERVAL, Thumbnails};

mod pipeline;
mod run;
mod timing;

use pipeline::*;
use run::*;
use timing::*;

/// Tuning knobs of a transcode.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TranscodeOptions {
    /// Target segment length; also the GOP length, so every segment starts on a keyframe.
    pub segment_duration: Duration,
    /// x264 speed preset (`ultrafast` … `placebo`).
    pub x264_preset: String,
    /// AAC bit rate in bits/s.
    pub audio_bitrate: u32,
    /// Fail when the slowest rendition has not advanced for this long.
    pub stall_timeout: Duration,
    /// Time between two storyboard tiles (widened for long videos, so that at most
    /// [`thumbs::MAX_TILES`] tiles cover the whole video). Between 1 s and 10 min.
    #[serde(default = "default_storyboard_interval")]
    pub storyboard_interval: Duration,
    /// Also make an audio-only rendition ([`AUDIO_ONLY_NAME`]) from the same AAC encode,
    /// when the source has audio.
    #[serde(default)]
    pub audio_only: bool,
    /// Make the poster and storyboard (off when only one rendition is re-made).
    #[serde(default = "default_true")]
    pub thumbnails: bool,
    /// MPEG-TS segments, or fragmented MP4 ones after an `init.mp4` (see [`fmp4`](super::fmp4)).
    #[serde(default)]
    pub segment_format: SegmentFormat,
}

fn default_true() -> bool {
    true
}

/// Options serialised before the storyboard existed still deserialise.
fn default_storyboard_interval() -> Duration {
    DEFAULT_STORYBOARD_INTERVAL
}

impl Default for TranscodeOptions {
    fn default() -> Self {
        Self {
            segment_duration: Duration::from_secs(2),
            x264_preset: "veryfast".to_owned(),
            audio_bitrate: 128_000,
            stall_timeout: Duration::from_secs(30),
            storyboard_interval: DEFAULT_STORYBOARD_INTERVAL,
            audio_only: false,
            thumbnails: true,
            segment_format: SegmentFormat::Ts,
        }
    }
}

/// One finished rendition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VariantOutput {
    /// The rendition as planned.
    pub rung: Rung,
    /// RFC 6381 codec list, e.g. `avc1.64001e,mp4a.40.2`.
    pub codecs: String,
    /// Peak segment bit rate in bits/s (RFC 8216 definition).
    pub bandwidth: u64,
    /// Average bit rate over the whole rendition in bits/s.
    pub average_bandwidth: u64,
    /// Output frame rate.
    pub frame_rate: f64,
    /// Segments in order; URIs are relative to the rendition's `index.m3u8`.
    pub segments: Vec<Segment>,
}

/// The result of [`transcode`]; the files are in `out_dir`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TranscodeOutput {
    /// Renditions in the order of the `rungs` argument.
    pub variants: Vec<VariantOutput>,
    /// Seconds of video produced (sum of the first rendition's segment durations).
    pub duration_s: f64,
    /// Poster, storyboard sprite sheet and its WebVTT index, also in `out_dir`. `None` when
    /// they could not be made: thumbnails never fail an otherwise good transcode.
    pub thumbnails: Option<Thumbnails>,
    /// The audio-only rendition (`rung` named [`AUDIO_ONLY_NAME`], 0×0, `frame_rate` 0),
    /// when asked for and the source has audio.
    #[serde(default)]
    pub audio_only: Option<VariantOutput>,
}

/// Bus poll interval: how quickly cancellation and stalls are noticed.
const TICK: Duration = Duration::from_millis(200);

/// Minimum interval between two progress callbacks.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(500);

/// Raw-video queue after the tee, per rendition, bounded in *frames*. The slowest branch's
/// queue is the one that fills (tee'd buffers are shared), so memory is this many
/// source-resolution frames. What the queue must cover is the encoder's latency, which is
/// counted in frames (lookahead + B-frames + frame threads), not in seconds: a time bound
/// that is generous at 30 fps (3 s = 90 frames ≈ 280 MB at 1080p) starves a 5 fps source
/// (0.5–1 s = 2–5 frames stalled it). See [`video_queue_frames`].
const VIDEO_QUEUE_SLACK_FRAMES: u32 = 8;

/// The thumbnail branch's queue (nearly always empty, see below).
const VIDEO_QUEUE_TIME: Duration = Duration::from_secs(3);

/// Encoded-AAC queue before each `splitmuxsink`. AAC is ~16 kB/s, so this can be long; it
/// must be, because `splitmuxsink` holds audio back until its own video catches up, and a
/// short queue would let the slowest rendition block the audio tee and, through it, every
/// other rendition (a deadlock once the fast renditions wait for audio).
const AUDIO_QUEUE_TIME: Duration = Duration::from_secs(30);

/// Output sample rate: every player handles 48 kHz AAC-LC.
const AUDIO_RATE: i32 = 48_000;

/// VBV buffer of the encoders in milliseconds of the target rate. With GStreamer's `cbr`
/// pass the VBV max rate equals the target, so a 1 s buffer bounds a 2 s segment to at
/// most (2 s + 1 s) × rate, 1.5× the target (measured: ~1.1× on a test pattern).
const VBV_BUFFER_MS: u32 = 1000;

/// B-frames: a cheap compression win that every HLS player decodes (High profile).
const BFRAMES: u32 = 2;

/// Frame-rate cap and fallback.
const MAX_FPS: i32 = 60;

/// One AAC frame: 1024 samples at [`AUDIO_RATE`].
const AAC_FRAME_NS: u64 = 1024 * 1_000_000_000 / AUDIO_RATE as u64;

const DEFAULT_FPS: (i32, i32) = (30, 1);

/// Transcodes `input` into an HLS ladder under `out_dir`.
///
/// Blocking; run it on a blocking thread. Writes `{out_dir}/{rung}/seg_NNNNN.ts`,
/// `{out_dir}/{rung}/index.m3u8`, the thumbnails (`{out_dir}/poster.jpg`,
/// `storyboard.jpg`, `storyboard.vtt`) and `{out_dir}/master.m3u8` (playlists last, so a
/// playlist never names a missing segment). Stale files from an earlier attempt in the same
/// directories are removed first. On failure, partial segments may remain: the caller owns
/// `out_dir` and should discard it.
///
/// `progress` receives the fraction done (0..=1, non-decreasing) at most every 0.5 s, and
/// 1.0 on success. Setting `cancel` stops the pipeline within ~200 ms with
/// [`MediaError::Cancelled`].
pub fn transcode(
    input: &Path,
    out_dir: &Path,
    probe: &ProbeInfo,
    rungs: &[Rung],
    opts: &TranscodeOptions,
    progress: &mut dyn FnMut(f64),
    cancel: &AtomicBool,
) -> Result<TranscodeOutput, MediaError> {
    super::init()?;
    let video = probe.require_video()?;
    validate(rungs, opts)?;
    let input_str = input.to_str().ok_or_else(|| {
        MediaError::InvalidSettings(format!("input path {} is not valid UTF-8", input.display()))
    })?;
    let out_dir_str = out_dir.to_str().ok_or_else(|| {
        MediaError::InvalidSettings(format!(
            "output path {} is not valid UTF-8",
            out_dir.display()
        ))
    })?;
    if !input.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{}: the input file does not exist", input.display()),
        )
        .into());
    }
    // The file may have changed since it was probed; the check is a few header reads.
    check_structure(input)?;

    let (fps_num, fps_den) = output_framerate(video.fps_num, video.fps_den);
    let gop = gop_frames(fps_num, fps_den, opts.segment_duration);
    let frame_ns = (1_000_000_000u64 * fps_den as u64) / fps_num as u64;
    let want_audio_only = opts.audio_only && probe.audio.is_some();
    prepare_output_dirs(out_dir, rungs, want_audio_only)?;

    let plan = PipelinePlan {
        input: input_str,
        out_dir: out_dir_str,
        rungs,
        opts,
        fps: (fps_num, fps_den),
        gop,
        frame_ns,
        audio_channels: probe.audio.as_ref().map(|a| a.channels.clamp(1, 2) as i32),
        duration_s: probe.duration_s,
    };
    let built = build_pipeline(&plan)?;
    // From here on every return path sets the pipeline to NULL (the guard's Drop), after the
    // bus has been read: setting NULL first would lose the error message.
    let guard = NullOnDrop(built.pipeline.clone());
    let (fragments, audio_fragments) = run(
        &built,
        probe.duration_s,
        opts.stall_timeout,
        progress,
        cancel,
    )?;
    let parser_caps: Vec<Option<(String, String)>> = built
        .branches
        .iter()
        .map(|b| h264_profile_level(&b.parser))
        .collect();
    drop(guard);
    let first_video_fragments = fragments.first().cloned();

    let frame_rate = f64::from(fps_num) / f64::from(fps_den);
    let mut variants = Vec::with_capacity(rungs.len());
    for ((rung, branch), (frags, caps)) in rungs
        .iter()
        .zip(&built.branches)
        .zip(fragments.into_iter().zip(parser_caps))
    {
        let end_ns = branch.end_ns.load(Ordering::Relaxed);
        let segments = segments_from_fragments(&frags, end_ns, frame_ns);
        if segments.is_empty() {
            return Err(MediaError::Corrupt(
                "no video frame could be decoded".into(),
            ));
        }
        split_fmp4(plan.opts.segment_format, out_dir, &rung.name, &segments)?;
        let sizes = segments
            .iter()
            .map(|(path, duration)| Ok((std::fs::metadata(path)?.len(), *duration)))
            .collect::<Result<Vec<(u64, f64)>, std::io::Error>>()?;
        let segments: Vec<Segment> = segments
            .into_iter()
            .map(|(path, duration)| Segment::new(file_name(&path), duration))
            .collect();
        let (profile, level) = caps.unwrap_or_else(|| {
            tracing::warn!(rung = %rung.name, "h264parse caps carry no profile/level; advertising High 4.0");
            ("high".to_owned(), "4".to_owned())
        });
        let mut codecs = h264_codec_string(&profile, &level);
        if plan.audio_channels.is_some() {
            codecs.push(',');
            codecs.push_str(AAC_LC_CODEC);
        }
        variants.push(VariantOutput {
            rung: rung.clone(),
            codecs,
            bandwidth: peak_bit_rate(&sizes, target_duration(&segments)),
            average_bandwidth: average_bit_rate(&sizes),
            frame_rate,
            segments,
        });
    }

    check_alignment(&variants, frame_ns)?;
    let duration_s: f64 = variants
        .first()
        .map_or(0.0, |v| v.segments.iter().map(|s| s.duration).sum());
    check_complete(duration_s, probe.duration_s)?;

    let audio_only = match (&built.audio_only, first_video_fragments) {
        (Some(branch), Some(video_frags)) => {
            check_audio_alignment(&video_frags, &audio_fragments)?;
            let end_ns = branch.end_ns.load(Ordering::Relaxed);
            let segments = segments_from_fragments(&audio_fragments, end_ns, AAC_FRAME_NS);
            split_fmp4(
                plan.opts.segment_format,
                out_dir,
                AUDIO_ONLY_NAME,
                &segments,
            )?;
            let sizes = segments
                .iter()
                .map(|(path, duration)| Ok((std::fs::metadata(path)?.len(), *duration)))
                .collect::<Result<Vec<(u64, f64)>, std::io::Error>>()?;
            let segments: Vec<Segment> = segments
                .into_iter()
                .map(|(path, duration)| Segment::new(file_name(&path), duration))
                .collect();
            Some(VariantOutput {
                rung: Rung {
                    name: AUDIO_ONLY_NAME.to_owned(),
                    width: 0,
                    height: 0,
                    video_bitrate: 0,
                },
                codecs: AAC_LC_CODEC.to_owned(),
                bandwidth: peak_bit_rate(&sizes, target_duration(&segments)),
                average_bandwidth: average_bit_rate(&sizes),
                frame_rate: 0.0,
                segments,
            })
        }
        _ => None,
    };

    // Before the playlists: once master.m3u8 exists the asset may be published, and the
    // thumbnails should be there with it.
    let thumbnails = built
        .thumbs
        .and_then(|branch| match branch.finish(out_dir, duration_s) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!("transcode continues without thumbnails: {e}");
                if let Err(e) = thumbs::remove_files(out_dir) {
                    tracing::warn!("could not remove partial thumbnails: {e}");
                }
                None
            }
        });

    let map = (plan.opts.segment_format == SegmentFormat::Fmp4).then_some(fmp4::INIT_NAME);
    for v in variants.iter().chain(&audio_only) {
        write_atomically(
            &out_dir.join(&v.rung.name).join("index.m3u8"),
            vod_media(&v.segments, map),
        )?;
    }
    let master: Vec<Variant> = variants
        .iter()
        .chain(&audio_only)
        .map(Variant::from)
        .collect();
    write_atomically(&out_dir.join("master.m3u8"), master_playlist(&master))?;

    progress(1.0);
    Ok(TranscodeOutput {
        variants,
        duration_s,
        thumbnails,
        audio_only,
    })
}

/// Rejects requests that cannot produce a valid ladder, before any work is done.
fn validate(rungs: &[Rung], opts: &TranscodeOptions) -> Result<(), MediaError> {
    let bad = |m: String| Err(MediaError::InvalidSettings(m));
    if rungs.is_empty() {
        return bad("no renditions requested".into());
    }
    for (i, r) in rungs.iter().enumerate() {
        if !is_safe_name(&r.name) {
            return bad(format!(
                "rendition name {:?} must be 1-64 letters, digits, '-', '_' or '.', not starting with '.'",
                r.name
            ));
        }
        if rungs[..i].iter().any(|o| o.name == r.name) {
            return bad(format!("rendition name {:?} is used twice", r.name));
        }
        if opts.audio_only && r.name == AUDIO_ONLY_NAME {
            return bad(format!(
                "rendition name {AUDIO_ONLY_NAME:?} is taken by the audio-only rendition"
            ));
        }
        if r.width < 2 || r.height < 2 || r.width % 2 != 0 || r.height % 2 != 0 {
            return bad(format!(
                "rendition {} must have even dimensions, got {}x{}",
                r.name, r.width, r.height
            ));
        }
        if r.video_bitrate < 10_000 {
            return bad(format!(
                "rendition {} has a video bit rate below 10 kbit/s",
                r.name
            ));
        }
    }
    if opts.segment_duration < Duration::from_millis(500)
        || opts.segment_duration > Duration::from_secs(60)
    {
        return bad(format!(
            "segment duration must be between 0.5 s and 60 s, got {:?}",
            opts.segment_duration
        ));
    }
    if !X264_PRESETS.contains(&opts.x264_preset.as_str()) {
        return bad(format!(
            "unknown x264 preset {:?} (expected one of {})",
            opts.x264_preset,
            X264_PRESETS.join(", ")
        ));
    }
    if !(8_000..=512_000).contains(&opts.audio_bitrate) {
        return bad(format!(
            "audio bit rate must be between 8 and 512 kbit/s, got {}",
            opts.audio_bitrate
        ));
    }
    if opts.stall_timeout.is_zero() {
        return bad("the stall timeout must be positive".into());
    }
    if !(thumbs::MIN_STORYBOARD_INTERVAL..=thumbs::MAX_STORYBOARD_INTERVAL)
        .contains(&opts.storyboard_interval)
    {
        return bad(format!(
            "storyboard interval must be between 1 s and 10 min, got {:?}",
            opts.storyboard_interval
        ));
    }
    Ok(())
}

/// Rendition names become directory names and playlist URIs: keep them boring.
fn is_safe_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Creates the rendition directories and removes what an earlier attempt left there.
fn prepare_output_dirs(out_dir: &Path, rungs: &[Rung], audio_only: bool) -> Result<(), MediaError> {
    std::fs::create_dir_all(out_dir)?;
    remove_if_exists(&out_dir.join("master.m3u8"))?;
    thumbs::remove_files(out_dir)?;
    let names = rungs
        .iter()
        .map(|r| r.name.as_str())
        .chain(audio_only.then_some(AUDIO_ONLY_NAME));
    for name in names {
        let dir = out_dir.join(name);
        std::fs::create_dir_all(&dir)?;
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if (name.starts_with("seg_") && (name.ends_with(".ts") || name.ends_with(".m4s")))
                || name == "index.m3u8"
                || name == fmp4::INIT_NAME
            {
                remove_if_exists(&entry.path())?;
            }
        }
    }
    Ok(())
}

fn remove_if_exists(path: &Path) -> Result<(), std::io::Error> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn file_name(path: &str) -> String {
    Path::new(path)
        .file_name()
        .map_or_else(|| path.to_owned(), |n| n.to_string_lossy().into_owned())
}

/// `splitmuxsink` formats its location with printf: a literal `%` must be doubled.
pub(crate) fn escape_location(s: &str) -> String {
    s.replace('%', "%%")
}

/// Everything [`build_pipeline`] needs.
struct PipelinePlan<'a> {
    input: &'a str,
    out_dir: &'a str,
    rungs: &'a [Rung],
    opts: &'a TranscodeOptions,
    fps: (i32, i32),
    gop: u32,
    frame_ns: u64,
    /// Output channel count, `None` when the probe found no audio (no audio branch at all:
    /// a branch that never receives data makes every `splitmuxsink` wait forever).
    audio_channels: Option<i32>,
    /// Probed duration in seconds: places the poster and spreads the storyboard.
    duration_s: f64,
}

/// Per-rendition handles kept for the bus loop and the final report.
struct Branch {
    /// The rendition's `splitmuxsink`, to attribute its fragment messages.
    sink: gst::Element,
    parser: gst::Element,
    /// Running time (ns) of the end of the last encoded frame, updated by a pad probe on
    /// the parser: this rendition's progress, and the end of its last segment.
    end_ns: Arc<AtomicU64>,
}

/// The audio-only rendition's sink and how far its audio got.
struct AudioOnlyBranch {
    sink: gst::Element,
    end_ns: Arc<AtomicU64>,
}

struct BuiltPipeline {
    pipeline: gst::Pipeline,
    branches: Vec<Branch>,
    audio_only: Option<AudioOnlyBranch>,
    /// `None` when the thumbnail branch could not be set up (the transcode goes on).
    thumbs: Option<thumbs::ThumbnailBranch>,
}

/// Sets the pipeline to NULL when dropped, whatever the return path.
struct NullOnDrop(gst::Pipeline);

impl Drop for NullOnDrop {
    fn drop(&mut self) {
        if let Err(e) = self.0.set_state(gst::State::Null) {
            tracing::warn!("could not set the transcode pipeline to NULL: {e}");
        }
    }
}

/// One `splitmuxsink` fragment as reported on the bus.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Fragment {
    pub location: String,
    /// Running time (ns) of the fragment's first frame.
    pub start_ns: u64,
    /// Running time (ns) reported when it was closed (the next fragment's start, or the
    /// last frame's start for the final fragment).
    pub closed_ns: Option<u64>,
}

/// The master-playlist entry of a rendition: its playlist sits at `{name}/index.m3u8`.
impl From<&VariantOutput> for Variant {
    fn from(v: &VariantOutput) -> Self {
        Variant {
            uri: format!("{}/index.m3u8", v.rung.name),
            bandwidth: v.bandwidth,
            average_bandwidth: v.average_bandwidth,
            width: v.rung.width,
            height: v.rung.height,
            codecs: v.codecs.clone(),
            frame_rate: v.frame_rate,
        }
    }
}

#[cfg(test)]
mod lookahead_tests {
    #[test]
    fn lookahead_follows_x264_presets() {
        assert_eq!(super::preset_lookahead("veryfast"), 10);
        assert_eq!(super::preset_lookahead("ultrafast"), 0);
        assert_eq!(super::preset_lookahead("medium"), 40);
        assert_eq!(super::video_queue_frames("veryfast"), 18);
        assert_eq!(super::video_queue_frames("ultrafast"), 8);
        assert_eq!(super::preset_lookahead("veryslow"), 60);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_framerate_fixes_caps_and_defaults() {
        assert_eq!(output_framerate(30, 1), (30, 1));
        assert_eq!(output_framerate(30000, 1001), (30000, 1001));
        assert_eq!(output_framerate(50, 2), (25, 1));
        assert_eq!(output_framerate(120, 1), (60, 1));
        assert_eq!(output_framerate(90000, 1), (60, 1));
        assert_eq!(output_framerate(0, 1), (30, 1));
        assert_eq!(output_framerate(25, 0), (30, 1));
        assert_eq!(output_framerate(1, 2), (30, 1));
    }

    #[test]
    fn audio_splits_fall_on_the_video_keyframes() {
        // 5 s in 2 s segments: keyframes at 2, 4 s, plus spare times past the end.
        assert_eq!(
            split_times((30, 1), 60, 5.0),
            vec![
                2_000_000_000,
                4_000_000_000,
                6_000_000_000,
                8_000_000_000,
                10_000_000_000
            ]
        );
        // NTSC: frame 60 is at 60 × 1001 / 30000 s exactly, no accumulated rounding.
        let t = split_times((30_000, 1001), 60, 4.0);
        assert_eq!(&t[..2], &[2_002_000_000, 4_004_000_000]);
        assert_eq!(t.len(), 4);
        assert_eq!(
            split_times((25, 1), 50, f64::NAN),
            vec![2_000_000_000, 4_000_000_000]
        );
    }

    #[test]
    fn gop_is_the_segment_in_frames() {
        assert_eq!(gop_frames(30, 1, Duration::from_secs(2)), 60);
        assert_eq!(gop_frames(30000, 1001, Duration::from_secs(2)), 60);
        assert_eq!(gop_frames(24000, 1001, Duration::from_secs(4)), 96);
        assert_eq!(gop_frames(25, 1, Duration::from_millis(500)), 13);
        assert_eq!(gop_frames(1, 1, Duration::from_millis(500)), 1);
    }

    #[test]
    fn segment_durations_come_from_fragment_starts() {
        let frags = [
            Fragment {
                location: "/o/a/seg_00000.ts".into(),
                start_ns: 0,
                closed_ns: Some(2_000_000_000),
            },
            Fragment {
                location: "/o/a/seg_00001.ts".into(),
                start_ns: 2_000_000_000,
                closed_ns: Some(4_000_000_000),
            },
            Fragment {
                location: "/o/a/seg_00002.ts".into(),
                start_ns: 4_000_000_000,
                closed_ns: Some(4_966_666_666),
            },
        ];
        let frame = 33_333_333;
        assert_eq!(
            segments_from_fragments(&frags, 5_000_000_000, frame),
            vec![
                ("/o/a/seg_00000.ts".to_owned(), 2.0),
                ("/o/a/seg_00001.ts".to_owned(), 2.0),
                ("/o/a/seg_00002.ts".to_owned(), 1.0),
            ]
        );
        // Without the end tracker the last segment ends one frame after its closing time.
        let last = segments_from_fragments(&frags, 0, frame).pop().map(|s| s.1);
        assert_eq!(last, Some(0.999_999_999));
        assert_eq!(segments_from_fragments(&[], 0, frame), vec![]);
    }

    #[test]
    fn completeness_tolerates_small_shortfalls_only() {
        assert!(check_complete(5.9, 6.0).is_ok());
        assert!(check_complete(5.0, 6.0).is_ok()); // within 1 s
        let err = check_complete(3.0, 6.0).map_err(|e| e.to_string());
        assert_eq!(
            err,
            Err("truncated input: decoded 3.0 s of 6.0 s".to_owned())
        );
        assert!(check_complete(89.0, 100.0).is_err()); // 10% rule wins on long inputs
        assert!(check_complete(90.0, 100.0).is_ok());
        assert!(check_complete(0.2, 0.5).is_ok()); // a short clip cannot be "truncated" by 1 s
    }

    #[test]
    fn options_without_a_storyboard_interval_still_deserialise() {
        let mut json = serde_json::to_value(TranscodeOptions::default()).expect("serialise");
        json.as_object_mut()
            .expect("object")
            .remove("storyboard_interval");
        let back: TranscodeOptions = serde_json::from_value(json).expect("deserialise");
        assert_eq!(back, TranscodeOptions::default());
    }

    #[test]
    fn locations_escape_printf_percent() {
        assert_eq!(escape_location("/tmp/100%/x"), "/tmp/100%%/x");
        assert_eq!(escape_location("/tmp/plain"), "/tmp/plain");
    }

    #[test]
    fn settings_are_validated_before_any_work() {
        let rung = Rung {
            name: "360p".into(),
            width: 640,
            height: 360,
            video_bitrate: 800_000,
        };
        let ok = TranscodeOptions::default();
        assert!(validate(std::slice::from_ref(&rung), &ok).is_ok());
        assert!(validate(&[], &ok).is_err());
        let odd = Rung {
            width: 641,
            ..rung.clone()
        };
        assert!(validate(&[odd], &ok).is_err());
        for name in ["", "..", "../x", "a/b", ".hidden", "a%b"] {
            let r = Rung {
                name: name.into(),
                ..rung.clone()
            };
            assert!(validate(&[r], &ok).is_err(), "{name:?} accepted");
        }
        assert!(validate(&[rung.clone(), rung.clone()], &ok).is_err());
        let bad_preset = TranscodeOptions {
            x264_preset: "warp".into(),
            ..ok.clone()
        };
        assert!(matches!(
            validate(std::slice::from_ref(&rung), &bad_preset),
            Err(MediaError::InvalidSettings(_))
        ));
        let short = TranscodeOptions {
            segment_duration: Duration::from_millis(100),
            ..ok.clone()
        };
        assert!(validate(std::slice::from_ref(&rung), &short).is_err());
        for (interval, valid) in [
            (500, false),
            (1000, true),
            (600_000, true),
            (600_001, false),
        ] {
            let o = TranscodeOptions {
                storyboard_interval: Duration::from_millis(interval),
                ..ok.clone()
            };
            assert_eq!(
                validate(std::slice::from_ref(&rung), &o).is_ok(),
                valid,
                "storyboard interval {interval} ms"
            );
        }
    }
}
