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

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use serde::{Deserialize, Serialize};

use super::MediaError;
use super::elements::{make, set, set_enum, set_int, time_queue};
use super::error::from_gst_error;
use super::files::write_atomically;
use super::fmp4;
use super::ladder::{AAC_LC_CODEC, Rung, h264_codec_string};
use super::probe::{ProbeInfo, check_structure};
use super::thumbs::{self, DEFAULT_STORYBOARD_INTERVAL, Thumbnails};
use sluice_media::hls::{
    Segment, Variant, average_bit_rate, master_playlist, peak_bit_rate, target_duration, vod_media,
};
use sluice_media::preset::X264_PRESETS;
pub use sluice_media::{AUDIO_ONLY_NAME, SegmentFormat};

/// The muxer `splitmuxsink` restarts for every segment: MPEG-TS, or gst-plugins-rs'
/// `isofmp4mux` (one ftyp+moov+moof+mdat file per segment, split into `init.mp4` and bare
/// fragments afterwards by [`fmp4::split_init`](super::fmp4::split_init)). Decode times are
/// the stream's running time, so the fragments of consecutive files follow each other.
fn make_segment_muxer(format: SegmentFormat, name: &str) -> Result<gst::Element, MediaError> {
    match format {
        SegmentFormat::Ts => make("mpegtsmux", name),
        SegmentFormat::Fmp4 => {
            let m = make("isofmp4mux", name)?;
            // One fragment per segment file: the segment is closed (EOS) long before this.
            set(&m, "fragment-duration", 3_600_000_000_000u64)?;
            Ok(m)
        }
    }
}

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

/// `splitmuxsink` finds a muxer's pads by template name (`video`, `audio_%u`, or
/// mpegtsmux's `sink_%d`); `isofmp4mux` names them `sink_%u`, so map them explicitly.
fn set_pad_map(
    sink: &gst::Element,
    format: SegmentFormat,
    pads: &[&str],
) -> Result<(), MediaError> {
    if format != SegmentFormat::Fmp4 {
        return Ok(());
    }
    let mut map = gst::Structure::builder("x-pad-map");
    for (i, pad) in pads.iter().enumerate() {
        map = map.field(*pad, format!("sink_{i}"));
    }
    sink.set_property("muxer-pad-map", map.build());
    Ok(())
}

/// fMP4 output: move each segment file's header into the rendition's `init.mp4`.
fn split_fmp4(
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

fn gcd(mut a: u32, mut b: u32) -> u32 {
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

fn link(elements: &[&gst::Element]) -> Result<(), MediaError> {
    gst::Element::link_many(elements.iter().copied())
        .map_err(|e| MediaError::Pipeline(format!("could not link the pipeline: {e}")))
}

fn link_pads(src: &gst::Pad, sink: &gst::Pad) -> Result<(), MediaError> {
    src.link(sink).map(|_| ()).map_err(|e| {
        MediaError::Pipeline(format!(
            "could not link {} to {}: {e:?}",
            src.name(),
            sink.name()
        ))
    })
}

fn request_pad(el: &gst::Element, template: &str) -> Result<gst::Pad, MediaError> {
    el.request_pad_simple(template)
        .ok_or_else(|| MediaError::Pipeline(format!("{} refused a {template} pad", el.name())))
}

fn static_pad(el: &gst::Element, name: &str) -> Result<gst::Pad, MediaError> {
    el.static_pad(name)
        .ok_or_else(|| MediaError::Pipeline(format!("{} has no {name} pad", el.name())))
}

/// x264's own `rc_lookahead` for each speed preset (x264's preset table).
fn preset_lookahead(preset: &str) -> i32 {
    match preset {
        "ultrafast" | "superfast" => 0,
        "veryfast" => 10,
        "faster" => 20,
        "fast" => 30,
        "medium" => 40,
        "slow" => 50,
        _ => 60, // slower, veryslow, placebo
    }
}

/// Frames a rendition's raw-video queue holds: the encoder's lookahead plus slack for
/// B-frames, frame threads and the muxer.
fn video_queue_frames(preset: &str) -> u32 {
    preset_lookahead(preset).max(0) as u32 + VIDEO_QUEUE_SLACK_FRAMES
}

/// A queue bounded by a number of buffers only.
fn frame_queue(name: &str, frames: u32) -> Result<gst::Element, MediaError> {
    let q = make("queue", name)?;
    set(&q, "max-size-time", 0u64)?;
    set(&q, "max-size-bytes", 0u32)?;
    set(&q, "max-size-buffers", frames)?;
    Ok(q)
}

/// Prefer FFmpeg's AAC encoder (better quality than voaacenc at the same rate).
fn make_aac_encoder(bitrate: u32) -> Result<gst::Element, MediaError> {
    for factory in ["avenc_aac", "voaacenc"] {
        if gst::ElementFactory::find(factory).is_some() {
            let enc = make(factory, "aac-encoder")?;
            if !set_int(&enc, "bitrate", i64::from(bitrate))? {
                return Err(MediaError::Pipeline(format!(
                    "{factory} has no bitrate property"
                )));
            }
            return Ok(enc);
        }
    }
    Err(MediaError::Pipeline(
        "no AAC encoder (avenc_aac or voaacenc) is installed".into(),
    ))
}

fn build_pipeline(plan: &PipelinePlan<'_>) -> Result<BuiltPipeline, MediaError> {
    let pipeline = gst::Pipeline::with_name("sluice-transcode");

    // Decoders tolerate a few broken frames by default and paper over mid-file corruption;
    // we want damaged uploads to fail. Decoders are created inside decodebin3 later, hence
    // the deep-element-added hook.
    pipeline.connect_deep_element_added(|_, _, element| {
        if element.find_property("max-errors").is_some()
            && let Err(e) = set_int(element, "max-errors", 0)
        {
            tracing::warn!("cannot make {} strict: {e}", element.name());
        }
    });

    let src = make("filesrc", "source")?;
    set(&src, "location", plan.input)?;
    let decodebin = make("decodebin3", "decoder")?;

    // Shared video chain: convert once, deinterlace if the caps say interlaced (a
    // passthrough otherwise), apply the rotation tag, fix the frame rate, pick I420
    // (anything else and x264 may produce High 4:4:4, which browsers reject).
    let vconvert = make("videoconvert", "video-convert")?;
    let deinterlace = make("deinterlace", "deinterlace")?;
    let vflip = make("videoflip", "video-flip")?;
    set_enum(&vflip, "video-direction", "auto")?;
    let vrate = make("videorate", "video-rate")?;
    let vcaps = make("capsfilter", "video-rate-caps")?;
    set(
        &vcaps,
        "caps",
        gst::Caps::builder("video/x-raw")
            .field("format", "I420")
            .field("framerate", gst::Fraction::new(plan.fps.0, plan.fps.1))
            .build(),
    )?;
    let vtee = make("tee", "video-tee")?;
    pipeline
        .add_many([
            &src,
            &decodebin,
            &vconvert,
            &deinterlace,
            &vflip,
            &vrate,
            &vcaps,
            &vtee,
        ])
        .map_err(|e| MediaError::Pipeline(e.to_string()))?;
    link(&[&src, &decodebin])?;
    link(&[&vconvert, &deinterlace, &vflip, &vrate, &vcaps, &vtee])?;

    // Shared audio chain, only when there is audio.
    let audio = match plan.audio_channels {
        Some(channels) => {
            let aconvert = make("audioconvert", "audio-convert")?;
            let aresample = make("audioresample", "audio-resample")?;
            let acaps = make("capsfilter", "audio-caps")?;
            set(
                &acaps,
                "caps",
                gst::Caps::builder("audio/x-raw")
                    .field("rate", AUDIO_RATE)
                    .field("channels", channels)
                    .build(),
            )?;
            let aenc = make_aac_encoder(plan.opts.audio_bitrate)?;
            let aparse = make("aacparse", "aac-parse")?;
            let atee = make("tee", "audio-tee")?;
            pipeline
                .add_many([&aconvert, &aresample, &acaps, &aenc, &aparse, &atee])
                .map_err(|e| MediaError::Pipeline(e.to_string()))?;
            link(&[&aconvert, &aresample, &acaps, &aenc, &aparse, &atee])?;
            Some((static_pad(&aconvert, "sink")?, atee))
        }
        None => None,
    };

    let mut branches = Vec::with_capacity(plan.rungs.len());
    for (i, rung) in plan.rungs.iter().enumerate() {
        let queue = frame_queue(
            &format!("video-queue-{i}"),
            video_queue_frames(&plan.opts.x264_preset),
        )?;
        let scale = make("videoscale", &format!("scale-{i}"))?;
        let scaled_caps = make("capsfilter", &format!("scale-caps-{i}"))?;
        set(
            &scaled_caps,
            "caps",
            gst::Caps::builder("video/x-raw")
                .field("format", "I420")
                .field("width", rung.width as i32)
                .field("height", rung.height as i32)
                .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
                .build(),
        )?;
        let enc = make("x264enc", &format!("x264-{i}"))?;
        // Rate control: GStreamer's "cbr" pass is x264 ABR with the VBV max rate set to
        // the bit rate, so segment sizes stay bounded.
        set_enum(&enc, "pass", "cbr")?;
        set(&enc, "bitrate", (rung.video_bitrate / 1000).max(1))?;
        set_enum(&enc, "speed-preset", &plan.opts.x264_preset)?;
        set(&enc, "key-int-max", plan.gop)?;
        // x264enc applies its own rc-lookahead (40) over the preset's; use the preset's value
        // as libx264 does, or a 1080p encoder holds ~30 extra raw frames for no gain at
        // fast presets.
        set(
            &enc,
            "rc-lookahead",
            preset_lookahead(&plan.opts.x264_preset),
        )?;
        set(&enc, "bframes", BFRAMES)?;
        set(&enc, "vbv-buf-capacity", VBV_BUFFER_MS)?;
        // Fixed, closed GOPs: with scene-cut detection off, keyframes fall exactly every
        // key-int-max frames (x264's default GOPs are closed), so every rendition has them
        // at the same frames. min-keyint is belt and braces (x264 clamps it to keyint/2+1).
        set(
            &enc,
            "option-string",
            format!("scenecut=0:min-keyint={}", plan.gop),
        )?;
        let h264_caps = make("capsfilter", &format!("h264-caps-{i}"))?;
        set(
            &h264_caps,
            "caps",
            gst::Caps::builder("video/x-h264")
                .field("profile", "high")
                .build(),
        )?;
        let parser = make("h264parse", &format!("h264parse-{i}"))?;
        // SPS/PPS before every IDR: each segment must decode on its own.
        set(&parser, "config-interval", -1i32)?;

        let sink = make("splitmuxsink", &format!("mux-{i}"))?;
        let muxer = make_segment_muxer(plan.opts.segment_format, &format!("segmux-{i}"))?;
        set(&sink, "muxer", &muxer)?;
        set_pad_map(&sink, plan.opts.segment_format, &["video", "audio_0"])?;
        set(
            &sink,
            "location",
            format!(
                "{}/{}/seg_%05d.{}",
                escape_location(plan.out_dir),
                rung.name,
                plan.opts.segment_format.segment_ext()
            ),
        )?;
        set(
            &sink,
            "max-size-time",
            plan.opts.segment_duration.as_nanos() as u64,
        )?;
        set(&sink, "max-size-bytes", 0u64)?;
        set(&sink, "async-finalize", false)?;
        // Keyframe requests would reach each encoder at a slightly different frame and
        // break alignment; the fixed GOP already puts keyframes where we split.
        set(&sink, "send-keyframe-requests", false)?;

        pipeline
            .add_many([
                &queue,
                &scale,
                &scaled_caps,
                &enc,
                &h264_caps,
                &parser,
                &sink,
            ])
            .map_err(|e| MediaError::Pipeline(e.to_string()))?;
        link(&[&queue, &scale, &scaled_caps, &enc, &h264_caps, &parser])?;
        link_pads(&request_pad(&vtee, "src_%u")?, &static_pad(&queue, "sink")?)?;
        link_pads(&static_pad(&parser, "src")?, &request_pad(&sink, "video")?)?;

        if let Some((_, atee)) = &audio {
            let aqueue = time_queue(&format!("audio-queue-{i}"), AUDIO_QUEUE_TIME)?;
            pipeline
                .add(&aqueue)
                .map_err(|e| MediaError::Pipeline(e.to_string()))?;
            link_pads(&request_pad(atee, "src_%u")?, &static_pad(&aqueue, "sink")?)?;
            link_pads(
                &static_pad(&aqueue, "src")?,
                &request_pad(&sink, "audio_0")?,
            )?;
        }

        let end_ns = Arc::new(AtomicU64::new(0));
        track_end_time(&static_pad(&parser, "src")?, end_ns.clone(), plan.frame_ns);
        branches.push(Branch {
            sink,
            parser,
            end_ns,
        });
    }

    let audio_only = match (&audio, plan.opts.audio_only) {
        (Some((_, atee)), true) => Some(attach_audio_only(&pipeline, atee, plan)?),
        _ => None,
    };

    // Off the same tee, after the fixed-rate videorate: regular timestamps, no second
    // decode. Its queue is bounded by time like the renditions' and is nearly always empty:
    // the appsink releases every frame at once except one per storyboard interval, which
    // it scales down in a few milliseconds.
    let thumbs = if !plan.opts.thumbnails {
        None
    } else {
        match thumbs::attach(
            &pipeline,
            &vtee,
            plan.duration_s,
            plan.opts.storyboard_interval,
            VIDEO_QUEUE_TIME,
        ) {
            Ok(branch) => Some(branch),
            Err(e) => {
                tracing::warn!("transcode continues without thumbnails: {e}");
                None
            }
        }
    };

    connect_decoder_pads(
        &decodebin,
        &pipeline,
        static_pad(&vconvert, "sink")?,
        audio.map(|(pad, _)| pad),
    );
    Ok(BuiltPipeline {
        pipeline,
        branches,
        audio_only,
        thumbs,
    })
}

/// The audio-only rendition: one more branch off the AAC tee (no second encode) into its
/// own audio-only `splitmuxsink`. Every AAC frame can start a segment, so instead of a
/// size-based split (which would drift from the video's by up to a frame per segment), the
/// sink is told to split at the running times of the video keyframes, `k × GOP`: each
/// audio segment starts at the first AAC frame at or after its video segment's start.
fn attach_audio_only(
    pipeline: &gst::Pipeline,
    atee: &gst::Element,
    plan: &PipelinePlan<'_>,
) -> Result<AudioOnlyBranch, MediaError> {
    let queue = time_queue("audio-only-queue", AUDIO_QUEUE_TIME)?;
    let sink = make("splitmuxsink", "mux-audio-only")?;
    let muxer = make_segment_muxer(plan.opts.segment_format, "segmux-audio-only")?;
    set(&sink, "muxer", &muxer)?;
    set_pad_map(&sink, plan.opts.segment_format, &["audio_0"])?;
    set(
        &sink,
        "location",
        format!(
            "{}/{AUDIO_ONLY_NAME}/seg_%05d.{}",
            escape_location(plan.out_dir),
            plan.opts.segment_format.segment_ext()
        ),
    )?;
    set(&sink, "max-size-time", 0u64)?;
    set(&sink, "max-size-bytes", 0u64)?;
    set(&sink, "async-finalize", false)?;
    set(&sink, "send-keyframe-requests", false)?;
    pipeline
        .add_many([&queue, &sink])
        .map_err(|e| MediaError::Pipeline(e.to_string()))?;
    link_pads(&request_pad(atee, "src_%u")?, &static_pad(&queue, "sink")?)?;
    let src = static_pad(&queue, "src")?;
    link_pads(&src, &request_pad(&sink, "audio_0")?)?;

    let end_ns = Arc::new(AtomicU64::new(0));
    track_end_time(&src, end_ns.clone(), AAC_FRAME_NS);
    // Queue the split times when the first buffer arrives (the sink forgets them on state
    // changes), from its streaming thread, before the buffer reaches the sink.
    let times = std::sync::Mutex::new(Some(split_times(plan.fps, plan.gop, plan.duration_s)));
    let weak = sink.downgrade();
    src.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
        let pending = times.lock().map(|mut t| t.take()).unwrap_or(None);
        if let (Some(times), Some(sink)) = (pending, weak.upgrade()) {
            for t in times {
                sink.emit_by_name::<()>("split-at-running-time", &[&t]);
            }
        }
        gst::PadProbeReturn::Remove
    });
    Ok(AudioOnlyBranch { sink, end_ns })
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
fn check_audio_alignment(video: &[Fragment], audio: &[Fragment]) -> Result<(), MediaError> {
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

/// Records the running time at which the last encoded frame ends.
fn track_end_time(pad: &gst::Pad, end_ns: Arc<AtomicU64>, frame_ns: u64) {
    pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        if let Some(buffer) = info.buffer()
            && let Some(pts) = buffer.pts()
        {
            let end = pts
                + buffer
                    .duration()
                    .unwrap_or(gst::ClockTime::from_nseconds(frame_ns));
            let running = pad.sticky_event::<gst::event::Segment>(0).and_then(|ev| {
                ev.segment()
                    .downcast_ref::<gst::format::Time>()
                    .and_then(|s| s.to_running_time(end))
            });
            if let Some(rt) = running {
                end_ns.fetch_max(rt.nseconds(), Ordering::Relaxed);
            }
        }
        gst::PadProbeReturn::Ok
    });
}

/// Links decodebin3's output pads as they appear: the first video stream to the video
/// chain, the first audio stream to the audio chain (if any), everything else (subtitles,
/// extra streams, audio when no audio branch exists) to a fakesink so it cannot block.
fn connect_decoder_pads(
    decodebin: &gst::Element,
    pipeline: &gst::Pipeline,
    video: gst::Pad,
    audio: Option<gst::Pad>,
) {
    let pipeline = pipeline.downgrade();
    decodebin.connect_pad_added(move |dbin, pad| {
        let stream_type = pad.stream().map(|s| s.stream_type());
        let name = pad.name();
        let is_video = stream_type.map_or(name.starts_with("video"), |t| {
            t.contains(gst::StreamType::VIDEO)
        });
        let is_audio = stream_type.map_or(name.starts_with("audio"), |t| {
            t.contains(gst::StreamType::AUDIO)
        });
        let target = if is_video {
            Some(&video)
        } else if is_audio {
            audio.as_ref()
        } else {
            None
        };
        // A second pad of the same kind loses the race to an already linked target.
        if let Some(target) = target
            && !target.is_linked()
            && pad.link(target).is_ok()
        {
            return;
        }
        tracing::debug!(pad = %name, "discarding an unused decoded stream");
        let Some(pipeline) = pipeline.upgrade() else {
            return;
        };
        let discard = || -> Result<(), MediaError> {
            let sink = gst::ElementFactory::make("fakesink")
                .build()
                .map_err(|e| MediaError::Pipeline(e.to_string()))?;
            set(&sink, "sync", false)?;
            set(&sink, "async", false)?;
            pipeline
                .add(&sink)
                .map_err(|e| MediaError::Pipeline(e.to_string()))?;
            sink.sync_state_with_parent()
                .map_err(|e| MediaError::Pipeline(e.to_string()))?;
            link_pads(pad, &static_pad(&sink, "sink")?)
        };
        if let Err(e) = discard() {
            gst::element_error!(
                dbin,
                gst::CoreError::Pad,
                ("could not discard stream {name}: {e}")
            );
        }
    });
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

/// Runs the pipeline to EOS, collecting each sink's fragments, reporting progress and
/// watching for errors, stalls and cancellation.
fn run(
    built: &BuiltPipeline,
    duration_s: f64,
    stall_timeout: Duration,
    progress: &mut dyn FnMut(f64),
    cancel: &AtomicBool,
) -> Result<(Vec<Vec<Fragment>>, Vec<Fragment>), MediaError> {
    let pipeline = &built.pipeline;
    let bus = pipeline
        .bus()
        .ok_or_else(|| MediaError::Pipeline("the pipeline has no bus".into()))?;
    // One list per rendition, and a last one for the audio-only rendition.
    let mut fragments: Vec<Vec<Fragment>> = vec![Vec::new(); built.branches.len() + 1];

    if pipeline.set_state(gst::State::Playing).is_err() {
        // The reason (e.g. an unreadable file) is on the bus.
        while let Some(msg) = bus.timed_pop(gst::ClockTime::ZERO) {
            if let gst::MessageView::Error(err) = msg.view() {
                return Err(bus_error(err));
            }
        }
        return Err(MediaError::Pipeline(
            "the transcode pipeline refused to start".into(),
        ));
    }

    let started = Instant::now();
    let mut last_position = 0u64;
    let mut last_advance = started;
    let mut last_report: Option<Instant> = None;
    let mut reported = 0.0f64;
    let mut last_tick = started;
    let mut eos = false;

    while !eos {
        if cancel.load(Ordering::Relaxed) {
            return Err(MediaError::Cancelled);
        }
        if let Some(msg) = bus.timed_pop(gst::ClockTime::from_nseconds(TICK.as_nanos() as u64)) {
            eos = handle_message(&msg, built, &mut fragments)?;
        }
        if last_tick.elapsed() < TICK {
            continue;
        }
        last_tick = Instant::now();

        let position = min_position(built);
        if position > last_position {
            last_position = position;
            last_advance = Instant::now();
        } else if last_advance.elapsed() >= stall_timeout {
            return Err(MediaError::Stalled(stall_timeout));
        }
        if last_report.is_none_or(|t| t.elapsed() >= PROGRESS_INTERVAL) && duration_s > 0.0 {
            let fraction = (position as f64 / 1e9 / duration_s)
                .clamp(0.0, 1.0)
                .max(reported);
            reported = fraction;
            last_report = Some(Instant::now());
            progress(fraction);
        }
    }
    // Late element messages (the last fragment-closed) may still be queued.
    while let Some(msg) = bus.timed_pop(gst::ClockTime::ZERO) {
        handle_message(&msg, built, &mut fragments)?;
    }
    tracing::debug!(elapsed = ?started.elapsed(), "transcode pipeline reached EOS");
    let audio = fragments.pop().unwrap_or_default();
    Ok((fragments, audio))
}

/// Handles one bus message; `Ok(true)` at EOS.
fn handle_message(
    msg: &gst::Message,
    built: &BuiltPipeline,
    fragments: &mut [Vec<Fragment>],
) -> Result<bool, MediaError> {
    match msg.view() {
        gst::MessageView::Eos(_) => return Ok(true),
        gst::MessageView::Error(err) => return Err(bus_error(err)),
        gst::MessageView::Warning(w) => {
            let src = w
                .src()
                .map(|s| s.path_string().to_string())
                .unwrap_or_default();
            tracing::warn!(element = %src, "GStreamer warning: {} ({:?})", w.error(), w.debug());
        }
        gst::MessageView::Element(el) => {
            let Some(s) = el.structure() else {
                return Ok(false);
            };
            let opened = s.name() == "splitmuxsink-fragment-opened";
            let closed = s.name() == "splitmuxsink-fragment-closed";
            if !opened && !closed {
                return Ok(false);
            }
            let is_audio_only = built
                .audio_only
                .as_ref()
                .is_some_and(|a| msg.src() == Some(a.sink.upcast_ref()));
            let Some(index) = built
                .branches
                .iter()
                .position(|b| msg.src() == Some(b.sink.upcast_ref()))
                .or(is_audio_only.then_some(built.branches.len()))
            else {
                return Ok(false);
            };
            let (Ok(location), Ok(rt)) =
                (s.get::<String>("location"), s.get::<u64>("running-time"))
            else {
                return Err(MediaError::Pipeline(format!(
                    "malformed {} message",
                    s.name()
                )));
            };
            let list = &mut fragments[index];
            if opened {
                list.push(Fragment {
                    location,
                    start_ns: rt,
                    closed_ns: None,
                });
            } else if let Some(f) = list.iter_mut().rev().find(|f| f.location == location) {
                f.closed_ns = Some(rt);
            }
        }
        _ => {}
    }
    Ok(false)
}

fn bus_error(err: &gst::message::Error) -> MediaError {
    let origin = err.src().map(|s| s.name().to_string()).unwrap_or_default();
    let details = err.debug().map(|d| d.to_string());
    tracing::debug!(element = %origin, "GStreamer error: {} ({:?})", err.error(), details);
    from_gst_error(&origin, &err.error(), details.as_deref())
}

/// How far the slowest rendition has got, in ns of running time.
///
/// Measured with the encoded-output tracker of each rendition (what enters its
/// `splitmuxsink`), and the minimum is taken: the pipeline's own position is the *maximum*
/// over its sinks, i.e. the fastest rendition. Querying the `splitmuxsink`s does not work
/// either: on GStreamer 1.22 they answer with the position inside the current fragment,
/// which falls back to ~0 at every new segment.
fn min_position(built: &BuiltPipeline) -> u64 {
    built
        .branches
        .iter()
        .map(|b| b.end_ns.load(Ordering::Relaxed))
        .min()
        .unwrap_or(0)
}

/// The `profile` and `level` that h264parse negotiated, read before the pipeline stops.
fn h264_profile_level(parser: &gst::Element) -> Option<(String, String)> {
    let caps = parser.static_pad("src")?.current_caps()?;
    let s = caps.structure(0)?;
    Some((
        s.get::<String>("profile").ok()?,
        s.get::<String>("level").ok()?,
    ))
}

/// Every rendition must have been cut at the same times, or switching renditions would
/// glitch.
fn check_alignment(variants: &[VariantOutput], frame_ns: u64) -> Result<(), MediaError> {
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
