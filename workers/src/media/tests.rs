//! End-to-end tests of probe + transcode on media generated at test time with ffmpeg, and
//! checked with ffprobe. ffmpeg/ffprobe are required: without them these tests fail.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::*;

/// A unique scratch directory removed on drop.
struct TestDir(PathBuf);

impl TestDir {
    fn new(label: &str) -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "sluice-media-{label}-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create test dir");
        TestDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn ffmpeg(args: &[&str]) {
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .status()
        .expect("ffmpeg is required for the media tests (apt-get install ffmpeg)");
    assert!(status.success(), "ffmpeg {args:?} failed");
}

fn ffprobe_json(args: &[&str], file: &Path) -> Value {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-of", "json"])
        .args(args)
        .arg(file)
        .output()
        .expect("ffprobe is required for the media tests (apt-get install ffmpeg)");
    assert!(
        out.status.success(),
        "ffprobe {args:?} {} failed: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("ffprobe JSON")
}

const AUDIO_SRC: &str = "sine=frequency=440:sample_rate=48000";
const FRAME: f64 = 1.0 / 30.0;
const NTSC_FPS: f64 = 30_000.0 / 1001.0;

/// The lavfi test pattern at 640×360 and `rate` frames per second.
fn video_src(rate: &str) -> String {
    format!("testsrc2=size=640x360:rate={rate}")
}

/// An H.264/AAC MP4 of `secs` seconds at 30 fps; `extra` goes before the output name.
fn make_av(path: &Path, secs: &str, extra: &[&str]) {
    let src = video_src("30");
    let mut args = vec![
        "-f", "lavfi", "-i", &src, "-f", "lavfi", "-i", AUDIO_SRC, "-t", secs,
    ];
    args.extend([
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
    ]);
    args.extend(extra);
    args.push(path.to_str().expect("utf-8 temp path"));
    ffmpeg(&args);
}

/// An H.264 MP4 without audio of `secs` seconds at `rate` fps.
fn make_video_only(path: &Path, secs: &str, rate: &str, extra: &[&str]) {
    let src = video_src(rate);
    let mut args = vec!["-f", "lavfi", "-i", &src, "-t", secs];
    args.extend([
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
    ]);
    args.extend(extra);
    args.push(path.to_str().expect("utf-8 temp path"));
    ffmpeg(&args);
}

/// Keeps the first half of a file, like an interrupted upload.
fn cut_in_half(from: &Path, to: &Path) {
    let bytes = std::fs::read(from).expect("read source");
    std::fs::write(to, &bytes[..bytes.len() / 2]).expect("write truncated copy");
}

fn spec(name: &str, height: u32, video_bitrate: u32) -> RungConfig {
    RungConfig {
        name: name.into(),
        height,
        video_bitrate,
    }
}

fn opts() -> TranscodeOptions {
    // Generous stall timeout: tests run in parallel on a 2-core machine.
    TranscodeOptions {
        stall_timeout: Duration::from_secs(20),
        ..TranscodeOptions::default()
    }
}

fn run_transcode(
    input: &Path,
    out: &Path,
    info: &ProbeInfo,
    rungs: &[Rung],
    opts: &TranscodeOptions,
) -> (Result<TranscodeOutput, MediaError>, Vec<f64>) {
    let mut reports = Vec::new();
    let cancel = AtomicBool::new(false);
    let result = transcode(
        input,
        out,
        info,
        rungs,
        opts,
        &mut |p| reports.push(p),
        &cancel,
    );
    (result, reports)
}

/// What ffprobe sees in one segment.
struct SegmentFacts {
    first_is_keyframe: bool,
    first_pts: f64,
    frames: usize,
    width: u64,
    height: u64,
    has_aac: bool,
}

fn segment_facts(path: &Path) -> SegmentFacts {
    let frames = ffprobe_json(
        &[
            "-select_streams",
            "v:0",
            "-show_entries",
            "frame=key_frame,pict_type,pts_time,width,height",
        ],
        path,
    );
    let frames = frames["frames"].as_array().expect("frames").clone();
    let first = frames.first().expect("segment has video frames");
    let streams = ffprobe_json(&["-show_entries", "stream=codec_type,codec_name"], path);
    let has_aac = streams["streams"]
        .as_array()
        .expect("streams")
        .iter()
        .any(|s| s["codec_type"] == "audio" && s["codec_name"] == "aac");
    SegmentFacts {
        first_is_keyframe: first["key_frame"] == 1 && first["pict_type"] == "I",
        first_pts: first["pts_time"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("pts_time"),
        frames: frames.len(),
        width: first["width"].as_u64().expect("width"),
        height: first["height"].as_u64().expect("height"),
        has_aac,
    }
}

fn playlist_duration(path: &Path) -> f64 {
    let v = ffprobe_json(&["-show_entries", "format=duration"], path);
    v["format"]["duration"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("playlist duration")
}

fn assert_close(actual: f64, expected: f64, tolerance: f64, what: &str) {
    assert!(
        (actual - expected).abs() <= tolerance,
        "{what}: {actual} is not within {tolerance} of {expected}"
    );
}

/// Checks every rendition against the media on disk and returns the segment start times
/// per rendition.
fn verify_output(
    out_dir: &Path,
    output: &TranscodeOutput,
    expect_audio: bool,
    fps: f64,
    expected_durations: &[f64],
) -> Vec<Vec<f64>> {
    let frame = 1.0 / fps;
    let mut starts = Vec::new();
    for v in &output.variants {
        let durations: Vec<f64> = v.segments.iter().map(|s| s.duration).collect();
        assert_eq!(
            durations.len(),
            expected_durations.len(),
            "{}: segments {durations:?}",
            v.rung.name
        );
        for (d, e) in durations.iter().zip(expected_durations) {
            assert_close(
                *d,
                *e,
                frame + 1e-6,
                &format!("{} segment duration", v.rung.name),
            );
        }
        assert!(v.codecs.starts_with("avc1.6400"), "{}", v.codecs);
        assert_eq!(
            v.codecs.ends_with(",mp4a.40.2"),
            expect_audio,
            "{}",
            v.codecs
        );
        assert_eq!(
            v.codecs.len(),
            if expect_audio { 21 } else { 11 },
            "{}",
            v.codecs
        );
        assert!(
            v.average_bandwidth > 0 && v.bandwidth >= v.average_bandwidth,
            "{v:?}"
        );
        assert_close(v.frame_rate, fps, 1e-9, "frame rate");

        let dir = out_dir.join(&v.rung.name);
        let index = std::fs::read_to_string(dir.join("index.m3u8")).expect("index.m3u8");
        assert_eq!(index, sluice_media::hls::vod_media(&v.segments, None));
        assert_close(
            playlist_duration(&dir.join("index.m3u8")),
            output.duration_s,
            0.1,
            "ffprobe playlist duration",
        );

        let mut rendition_starts = Vec::new();
        for seg in &v.segments {
            let facts = segment_facts(&dir.join(&seg.uri));
            assert!(
                facts.first_is_keyframe,
                "{}/{} does not start with an I-frame",
                v.rung.name, seg.uri
            );
            assert_eq!(
                (facts.width, facts.height),
                (u64::from(v.rung.width), u64::from(v.rung.height))
            );
            assert_eq!(
                facts.has_aac, expect_audio,
                "{}/{} audio",
                v.rung.name, seg.uri
            );
            // The playlist duration must match the frames actually in the segment.
            assert_close(
                facts.frames as f64 * frame,
                seg.duration,
                frame + 1e-6,
                &format!("{}/{} frames", v.rung.name, seg.uri),
            );
            rendition_starts.push(facts.first_pts);
        }
        starts.push(rendition_starts);
    }

    let master = std::fs::read_to_string(out_dir.join("master.m3u8")).expect("master.m3u8");
    let variants: Vec<Variant> = output
        .variants
        .iter()
        .chain(&output.audio_only)
        .map(Variant::from)
        .collect();
    assert_eq!(master, master_playlist(&variants));
    starts
}

/// Width and height of an image or video as ffprobe sees it, with its codec.
fn picture_facts(path: &Path) -> (String, u64, u64) {
    let v = ffprobe_json(&["-show_entries", "stream=codec_name,width,height"], path);
    let s = &v["streams"][0];
    (
        s["codec_name"].as_str().expect("codec_name").to_owned(),
        s["width"].as_u64().expect("width"),
        s["height"].as_u64().expect("height"),
    )
}

/// Parses `HH:MM:SS.mmm` into milliseconds.
fn vtt_ms(ts: &str) -> u64 {
    let (hms, ms) = ts.split_once('.').expect("milliseconds");
    let parts: Vec<u64> = hms.split(':').map(|p| p.parse().expect("number")).collect();
    assert_eq!(parts.len(), 3, "{ts}");
    assert_eq!(ms.len(), 3, "{ts}");
    ((parts[0] * 60 + parts[1]) * 60 + parts[2]) * 1000 + ms.parse::<u64>().expect("ms")
}

/// One storyboard cue: start and end in ms, and the tile rectangle.
#[derive(Debug)]
struct Cue {
    start: u64,
    end: u64,
    rect: [u64; 4],
}

fn parse_storyboard_vtt(text: &str, image: &str) -> Vec<Cue> {
    let mut blocks = text.split("\n\n");
    assert_eq!(blocks.next(), Some("WEBVTT"), "{text}");
    blocks
        .map(|block| {
            let mut lines = block.lines();
            let times = lines.next().expect("timing line");
            let (start, end) = times.split_once(" --> ").expect("cue timing");
            let payload = lines.next().expect("payload");
            assert!(lines.next().is_none(), "extra line in {block:?}");
            let xywh = payload
                .strip_prefix(&format!("{image}#xywh="))
                .unwrap_or_else(|| panic!("payload {payload:?}"));
            let rect: Vec<u64> = xywh
                .split(',')
                .map(|v| v.parse().expect("integer"))
                .collect();
            Cue {
                start: vtt_ms(start),
                end: vtt_ms(end),
                rect: rect.try_into().expect("four numbers"),
            }
        })
        .collect()
}

/// Mean absolute difference of two pictures of the same size and format.
fn mean_abs_diff(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| f64::from(x.abs_diff(*y)))
        .sum::<f64>()
        / a.len() as f64
}

/// The frame of `path` at `at_s` seconds, through `filter`, as packed RGB decoded by ffmpeg.
/// RGB, not grey: both sides then go through the same YCbCr → RGB step whatever their
/// range (video is limited range, JPEG full range).
fn frame_rgb_at(path: &Path, at_s: f64, filter: &str, pixels: usize) -> Vec<u8> {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-i"])
        .arg(path)
        .args([
            "-vf",
            &format!("select='gte(t,{at_s})',{filter}"),
            "-frames:v",
            "1",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-",
        ])
        .output()
        .expect("ffmpeg is required for the media tests");
    assert!(
        out.status.success(),
        "ffmpeg decode of {} failed",
        path.display()
    );
    assert_eq!(out.stdout.len(), pixels * 3, "{} at {at_s}", path.display());
    out.stdout
}

/// Checks the thumbnails against the files: JPEGs of the announced sizes, one cue per tile
/// from 0 to the end of the video without gaps, every tile inside the sheet. Returns the
/// thumbnails and the cues.
fn verify_thumbnails(
    out_dir: &Path,
    output: &TranscodeOutput,
    poster_size: (u64, u64),
    tile_size: (u32, u32),
    tiles: u32,
) -> (Thumbnails, Vec<Cue>) {
    let t = output.thumbnails.clone().expect("thumbnails were made");
    assert_eq!(
        (
            t.poster.as_str(),
            t.storyboard.as_str(),
            t.storyboard_vtt.as_str()
        ),
        ("poster.jpg", "storyboard.jpg", "storyboard.vtt")
    );
    assert_eq!(
        (t.tile_width, t.tile_height, t.tiles),
        (tile_size.0, tile_size.1, tiles)
    );

    let (codec, w, h) = picture_facts(&out_dir.join(&t.poster));
    assert_eq!(codec, "mjpeg");
    assert_eq!((w, h), poster_size, "poster size");

    let columns = tiles.min(10);
    let rows = tiles.div_ceil(columns);
    let (codec, sheet_w, sheet_h) = picture_facts(&out_dir.join(&t.storyboard));
    assert_eq!(codec, "mjpeg");
    assert_eq!(
        (sheet_w, sheet_h),
        (
            u64::from(columns * tile_size.0),
            u64::from(rows * tile_size.1)
        ),
        "sprite size"
    );

    let vtt = std::fs::read_to_string(out_dir.join(&t.storyboard_vtt)).expect("storyboard.vtt");
    let cues = parse_storyboard_vtt(&vtt, &t.storyboard);
    assert_eq!(cues.len(), tiles as usize, "{vtt}");
    assert_eq!(cues[0].start, 0);
    for pair in cues.windows(2) {
        assert_eq!(pair[0].end, pair[1].start, "gap or overlap in {vtt}");
    }
    for (i, cue) in cues.iter().enumerate() {
        assert!(cue.end > cue.start, "{cue:?}");
        if i + 1 < cues.len() {
            assert_eq!(
                cue.end - cue.start,
                (t.interval_s * 1000.0).round() as u64,
                "{cue:?}"
            );
        }
        let [x, y, w, h] = cue.rect;
        assert_eq!((w, h), (u64::from(tile_size.0), u64::from(tile_size.1)));
        assert!(
            x + w <= sheet_w && y + h <= sheet_h,
            "{cue:?} outside {sheet_w}x{sheet_h}"
        );
    }
    let last_end = cues.last().map_or(0, |c| c.end);
    assert_close(
        last_end as f64 / 1000.0,
        output.duration_s,
        0.001,
        "end of the last cue",
    );
    (t, cues)
}

#[test]
fn transcodes_audio_and_video_into_an_aligned_ladder() {
    let dir = TestDir::new("av");
    let src = dir.path().join("src.mp4");
    make_av(&src, "5", &[]);

    let info = probe(&src, Duration::from_secs(10)).expect("probe");
    assert_close(info.duration_s, 5.0, 0.1, "probed duration");
    assert_eq!(info.container.as_deref(), Some("mp4"));
    let video = info.video.clone().expect("video stream");
    assert_eq!(
        (video.width, video.height, video.fps_num, video.fps_den),
        (640, 360, 30, 1)
    );
    assert_eq!(video.codec, "h264");
    let audio = info.audio.clone().expect("audio stream");
    assert_eq!(
        (audio.channels, audio.sample_rate, audio.codec.as_str()),
        (1, 48_000, "aac")
    );

    let rungs = plan_ladder(
        &[
            spec("360p", 360, 800_000),
            spec("180p", 180, 300_000),
            spec("720p", 720, 2_800_000),
        ],
        640,
        360,
    );
    assert_eq!(
        rungs,
        vec![
            Rung {
                name: "360p".into(),
                width: 640,
                height: 360,
                video_bitrate: 800_000
            },
            Rung {
                name: "180p".into(),
                width: 320,
                height: 180,
                video_bitrate: 300_000
            },
        ]
    );

    let out_dir = dir.path().join("out");
    let started = Instant::now();
    let (result, reports) = run_transcode(&src, &out_dir, &info, &rungs, &opts());
    let elapsed = started.elapsed();
    let output = result.expect("transcode");
    eprintln!(
        "transcode of a 5 s 640x360@30 clip to 360p+180p: {elapsed:?}, real-time factor {:.2}",
        elapsed.as_secs_f64() / info.duration_s
    );

    assert_eq!(output.variants.len(), 2);
    assert_close(output.duration_s, 5.0, FRAME + 1e-6, "output duration");
    // 5 s in 2 s segments: the last one is shorter.
    let starts = verify_output(&out_dir, &output, true, 30.0, &[2.0, 2.0, 1.0]);
    // Aligned keyframes: every segment starts at the same presentation time in both renditions.
    for (a, b) in starts[0].iter().zip(&starts[1]) {
        assert_close(*a, *b, 0.001, "segment start across renditions");
    }
    assert!(output.variants[0].bandwidth > output.variants[1].bandwidth);

    // Thumbnails from the same pipeline: 5 s every 2 s is three tiles on one row.
    let (thumbs, cues) = verify_thumbnails(&out_dir, &output, (640, 360), (160, 90), 3);
    assert_eq!(thumbs.interval_s, 2.0);
    assert_eq!(
        cues.iter().map(|c| (c.start, c.end)).collect::<Vec<_>>(),
        vec![(0, 2000), (2000, 4000), (4000, 5000)]
    );
    // The poster is the frame at 10% (0.5 s), not the first one: the test pattern moves.
    let poster = frame_rgb_at(&out_dir.join("poster.jpg"), 0.0, "null", 640 * 360);
    let at_half = frame_rgb_at(&src, 0.5, "null", 640 * 360);
    let first = frame_rgb_at(&src, 0.0, "null", 640 * 360);
    let (d_half, d_first) = (
        mean_abs_diff(&poster, &at_half),
        mean_abs_diff(&poster, &first),
    );
    eprintln!("poster vs source at 0.5 s: {d_half:.2}, at 0 s: {d_first:.2}");
    assert!(
        d_half < 4.0 && d_half < d_first,
        "poster is not the 0.5 s frame"
    );
    // Each tile shows its own moment: tile 1 is the frame at 2 s.
    let tile = frame_rgb_at(
        &out_dir.join("storyboard.jpg"),
        0.0,
        "crop=160:90:160:0",
        160 * 90,
    );
    let at_two = frame_rgb_at(&src, 2.0, "scale=160:90", 160 * 90);
    let at_four = frame_rgb_at(&src, 4.0, "scale=160:90", 160 * 90);
    let (d_two, d_four) = (
        mean_abs_diff(&tile, &at_two),
        mean_abs_diff(&tile, &at_four),
    );
    eprintln!("tile 1 vs source at 2 s: {d_two:.2}, at 4 s: {d_four:.2}");
    assert!(d_two < 8.0 && d_two < d_four, "tile 1 is not the 2 s frame");

    eprintln!("progress reports: {reports:?}");
    assert!(!reports.is_empty());
    assert!(
        reports.windows(2).all(|w| w[0] <= w[1]),
        "progress went backwards: {reports:?}"
    );
    assert!(
        reports.iter().all(|p| (0.0..=1.0).contains(p)),
        "{reports:?}"
    );
    assert_eq!(reports.last(), Some(&1.0));
}

/// A live segment as an encoder pushes it: the sample probe names its codecs for a master
/// playlist's `CODECS` (what a `vod: "copy"` publication advertises).
#[test]
fn a_pushed_segment_probes_with_its_hls_codecs() {
    let dir = TestDir::new("sample");
    let seg = dir.path().join("seg.ts");
    make_av(
        &seg,
        "1",
        &["-profile:v", "high", "-level:v", "3.1", "-f", "mpegts"],
    );
    let info = crate::media::probe_sample(&seg, Duration::from_secs(10)).expect("probe");
    let video = info.video.expect("video");
    assert_eq!((video.width, video.height), (640, 360));
    // `-preset ultrafast` turns off CABAC and 8x8 transforms: x264 writes Constrained
    // Baseline whatever the profile ceiling; the level is the one asked for (3.1).
    assert_eq!(video.hls_codec.as_deref(), Some("avc1.42e01f"));
    assert_eq!(
        info.audio.expect("audio").hls_codec.as_deref(),
        Some("mp4a.40.2")
    );
}

#[test]
fn video_only_input_transcodes_without_an_audio_branch() {
    let dir = TestDir::new("video-only");
    let src = dir.path().join("src.mp4");
    make_video_only(&src, "3", "30", &[]);
    let info = probe(&src, Duration::from_secs(10)).expect("probe");
    assert!(info.audio.is_none());
    let rungs = plan_ladder(&[spec("180p", 180, 300_000)], 640, 360);

    let out_dir = dir.path().join("out");
    // A shorter storyboard interval than the default: one tile per second.
    // An audio-only rendition is asked for, but there is no audio to make it from.
    let opts = TranscodeOptions {
        storyboard_interval: Duration::from_secs(1),
        audio_only: true,
        ..opts()
    };
    let (result, _) = run_transcode(&src, &out_dir, &info, &rungs, &opts);
    let output = result.expect("transcode");
    assert!(output.audio_only.is_none());
    assert!(!out_dir.join("audio").exists());
    verify_output(&out_dir, &output, false, 30.0, &[2.0, 1.0]);
    let (thumbs, _) = verify_thumbnails(&out_dir, &output, (640, 360), (160, 90), 3);
    assert_eq!(thumbs.interval_s, 1.0);
}

/// `(pts_time, size)` of every audio packet of a playlist, in order.
fn audio_packets(playlist: &Path) -> Vec<(String, String)> {
    let v = ffprobe_json(
        &[
            "-select_streams",
            "a:0",
            "-show_entries",
            "packet=pts_time,size",
        ],
        playlist,
    );
    v["packets"]
        .as_array()
        .expect("packets")
        .iter()
        .map(|p| {
            (
                p["pts_time"].as_str().unwrap_or_default().to_owned(),
                p["size"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[test]
fn audio_only_rendition_is_cut_with_the_video_from_the_same_aac_encode() {
    let dir = TestDir::new("audio-only");
    let src = dir.path().join("src.mp4");
    make_av(&src, "5", &[]);
    let info = probe(&src, Duration::from_secs(10)).expect("probe");
    let rungs = plan_ladder(&[spec("180p", 180, 300_000)], 640, 360);
    let out_dir = dir.path().join("out");
    let opts = TranscodeOptions {
        audio_only: true,
        thumbnails: false,
        audio_bitrate: 96_000,
        ..opts()
    };
    let (result, _) = run_transcode(&src, &out_dir, &info, &rungs, &opts);
    let output = result.expect("transcode");
    assert!(output.thumbnails.is_none() && !out_dir.join("poster.jpg").exists());
    verify_output(&out_dir, &output, true, 30.0, &[2.0, 2.0, 1.0]);

    let audio = output.audio_only.clone().expect("audio-only rendition");
    assert_eq!(
        (
            audio.rung.name.as_str(),
            audio.rung.width,
            audio.rung.height
        ),
        ("audio", 0, 0)
    );
    assert_eq!(audio.codecs, "mp4a.40.2");
    // Cut where the video is cut: at the first AAC frame (21.3 ms) at or after each
    // video segment start.
    let aac_frame = 1024.0 / 48_000.0;
    let video = &output.variants[0];
    assert_eq!(audio.segments.len(), video.segments.len(), "{audio:?}");
    let (mut v_at, mut a_at) = (0.0, 0.0);
    for (i, (a, v)) in audio.segments.iter().zip(&video.segments).enumerate() {
        assert!(
            a_at - v_at >= -0.001 && a_at - v_at <= aac_frame + 0.001,
            "segment {i} starts at {a_at} (audio) vs {v_at} (video)"
        );
        v_at += v.duration;
        a_at += a.duration;
    }
    assert_close(a_at, output.duration_s, 0.05, "audio-only duration");
    // BANDWIDTH follows the audio bit rate (plus MPEG-TS overhead), far below the video.
    assert!(
        audio.average_bandwidth > 50_000 && audio.bandwidth < 200_000,
        "{audio:?}"
    );
    assert!(audio.bandwidth >= audio.average_bandwidth);

    // The playlist plays (ffprobe reads it through) and lasts as long as the video.
    let index = out_dir.join("audio/index.m3u8");
    assert_eq!(
        std::fs::read_to_string(&index).expect("audio index"),
        sluice_media::hls::vod_media(&audio.segments, None)
    );
    assert_close(
        playlist_duration(&index),
        output.duration_s,
        0.1,
        "ffprobe audio-only playlist duration",
    );
    for seg in &audio.segments {
        let streams = ffprobe_json(
            &["-show_entries", "stream=codec_type,codec_name"],
            &out_dir.join("audio").join(&seg.uri),
        );
        let kinds: Vec<(&str, &str)> = streams["streams"]
            .as_array()
            .expect("streams")
            .iter()
            .map(|s| {
                (
                    s["codec_type"].as_str().unwrap_or_default(),
                    s["codec_name"].as_str().unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(kinds, vec![("audio", "aac")], "{}", seg.uri);
    }
    // One AAC encode: the audio-only packets are exactly the video rendition's audio.
    let ours = audio_packets(&index);
    assert!(ours.len() > 200, "{} packets", ours.len());
    assert_eq!(ours, audio_packets(&out_dir.join("180p/index.m3u8")));

    // The master lists it last, without RESOLUTION.
    let master = std::fs::read_to_string(out_dir.join("master.m3u8")).expect("master");
    let mut variants: Vec<Variant> = output.variants.iter().map(Variant::from).collect();
    variants.push(Variant::from(&audio));
    assert_eq!(master, master_playlist(&variants));
    assert!(master.ends_with(&format!(
        "#EXT-X-STREAM-INF:BANDWIDTH={},AVERAGE-BANDWIDTH={},CODECS=\"mp4a.40.2\"\naudio/index.m3u8\n",
        audio.bandwidth, audio.average_bandwidth
    )));
}

#[test]
fn one_rendition_can_be_remade_with_the_same_cuts() {
    // What a re-run does: the same source, one rung of the plan, no thumbnails.
    let dir = TestDir::new("rerun");
    let src = dir.path().join("src.mp4");
    make_av(&src, "4", &[]);
    let info = probe(&src, Duration::from_secs(10)).expect("probe");
    let rungs = plan_ladder(
        &[spec("360p", 360, 600_000), spec("180p", 180, 300_000)],
        640,
        360,
    );
    let opts = TranscodeOptions {
        thumbnails: false,
        ..opts()
    };
    let full_dir = dir.path().join("full");
    let (full, _) = run_transcode(&src, &full_dir, &info, &rungs, &opts);
    let full = full.expect("full ladder");
    let one_dir = dir.path().join("one");
    let (one, _) = run_transcode(&src, &one_dir, &info, &rungs[1..], &opts);
    let one = one.expect("one rung");
    assert_eq!(one.variants.len(), 1);
    let (a, b) = (&full.variants[1], &one.variants[0]);
    assert_eq!(a.rung, b.rung);
    assert_eq!(
        a.segments.iter().map(|s| &s.uri).collect::<Vec<_>>(),
        b.segments.iter().map(|s| &s.uri).collect::<Vec<_>>()
    );
    for (x, y) in a.segments.iter().zip(&b.segments) {
        assert_close(x.duration, y.duration, 1e-6, "re-made segment duration");
        let (fx, fy) = (
            segment_facts(&full_dir.join("180p").join(&x.uri)),
            segment_facts(&one_dir.join("180p").join(&y.uri)),
        );
        assert!(fy.first_is_keyframe);
        assert_close(fx.first_pts, fy.first_pts, 0.001, "keyframe position");
    }
}

#[test]
fn one_second_clip_gets_its_first_frame_as_poster_and_one_tile() {
    let dir = TestDir::new("one-second");
    let src = dir.path().join("src.mp4");
    make_av(&src, "1", &[]);
    let info = probe(&src, Duration::from_secs(10)).expect("probe");
    let rungs = plan_ladder(&[spec("180p", 180, 300_000)], 640, 360);
    let out_dir = dir.path().join("out");
    let (result, _) = run_transcode(&src, &out_dir, &info, &rungs, &opts());
    let output = result.expect("transcode");
    verify_output(&out_dir, &output, true, 30.0, &[1.0]);
    let (_, cues) = verify_thumbnails(&out_dir, &output, (640, 360), (160, 90), 1);
    assert_eq!((cues[0].start, cues[0].end), (0, 1000));
    let poster = frame_rgb_at(&out_dir.join("poster.jpg"), 0.0, "null", 640 * 360);
    let first = frame_rgb_at(&src, 0.0, "null", 640 * 360);
    assert!(
        mean_abs_diff(&poster, &first) < 4.0,
        "poster is not the first frame"
    );
}

#[test]
fn long_video_gets_a_capped_storyboard_that_covers_it_all() {
    // 4 minutes at 5 fps (cheap to make and transcode): 2 s tiles would be 120, so the
    // interval widens to 2.4 s and exactly 100 tiles fill a 10 x 10 sheet.
    let dir = TestDir::new("long");
    let src = dir.path().join("src.mp4");
    // Brightness rises with time, so frames far apart are easy to tell apart.
    make_video_only(
        &src,
        "240",
        "5",
        &["-vf", "eq=brightness='(t-120)/240':eval=frame"],
    );
    let info = probe(&src, Duration::from_secs(10)).expect("probe");
    let rungs = plan_ladder(&[spec("180p", 180, 300_000)], 640, 360);
    let out_dir = dir.path().join("out");
    let (result, _) = run_transcode(&src, &out_dir, &info, &rungs, &opts());
    let output = result.expect("transcode");
    assert_close(output.duration_s, 240.0, 0.2 + 1e-6, "output duration");
    let (thumbs, cues) = verify_thumbnails(&out_dir, &output, (640, 360), (160, 90), 100);
    assert_eq!(thumbs.interval_s, 2.4);
    assert_eq!(cues[99].rect, [1440, 810, 160, 90]);
    assert_eq!(cues[99].start, 237_600);
    // The poster is the frame 10% in (24 s).
    let poster = frame_rgb_at(&out_dir.join("poster.jpg"), 0.0, "null", 640 * 360);
    let at_24 = frame_rgb_at(&src, 24.0, "null", 640 * 360);
    let at_0 = frame_rgb_at(&src, 0.0, "null", 640 * 360);
    let (d_24, d_0) = (
        mean_abs_diff(&poster, &at_24),
        mean_abs_diff(&poster, &at_0),
    );
    eprintln!("long poster vs source at 24 s: {d_24:.2}, at 0 s: {d_0:.2}");
    assert!(d_24 < 4.0 && d_24 < d_0, "poster is not the 24 s frame");
}

#[test]
fn long_segments_do_not_hold_up_the_thumbnail_branch() {
    // splitmuxsink holds a whole GOP (6 s here, twice the thumbnail queue's 3 s) before it
    // writes anything: the thumbnail branch must keep up on its own and never make the tee
    // wait for it.
    let dir = TestDir::new("long-gop");
    let src = dir.path().join("src.mp4");
    make_video_only(&src, "8", "30", &[]);
    let info = probe(&src, Duration::from_secs(10)).expect("probe");
    let rungs = plan_ladder(&[spec("180p", 180, 300_000)], 640, 360);
    let out_dir = dir.path().join("out");
    let opts = TranscodeOptions {
        segment_duration: Duration::from_secs(6),
        stall_timeout: Duration::from_secs(10),
        ..opts()
    };
    let (result, _) = run_transcode(&src, &out_dir, &info, &rungs, &opts);
    let output = result.expect("transcode");
    verify_output(&out_dir, &output, false, 30.0, &[6.0, 2.0]);
    verify_thumbnails(&out_dir, &output, (640, 360), (160, 90), 4);
}

#[test]
fn thumbnail_failure_does_not_fail_the_transcode() {
    let dir = TestDir::new("thumbs-fail");
    let src = dir.path().join("src.mp4");
    make_video_only(&src, "2", "30", &[]);
    let info = probe(&src, Duration::from_secs(10)).expect("probe");
    let rungs = plan_ladder(&[spec("180p", 180, 300_000)], 640, 360);
    let out_dir = dir.path().join("out");
    // A directory where the sprite's temporary file goes: the sheet cannot be written.
    std::fs::create_dir_all(out_dir.join("storyboard.jpg.tmp")).expect("mkdir");
    // Files of an earlier attempt must not survive next to the new ladder.
    std::fs::write(out_dir.join("storyboard.vtt"), "WEBVTT\n").expect("stale vtt");
    let (result, _) = run_transcode(&src, &out_dir, &info, &rungs, &opts());
    let output = result.expect("transcode");
    verify_output(&out_dir, &output, false, 30.0, &[2.0]);
    assert_eq!(output.thumbnails, None);
    for name in ["poster.jpg", "storyboard.jpg", "storyboard.vtt"] {
        assert!(!out_dir.join(name).exists(), "{name} left behind");
    }
}

#[test]
fn ntsc_frame_rate_keeps_whole_gops_per_segment() {
    // 29.97 fps: a 2 s segment is 60 frames = 2.002 s, and the playlist must say so.
    let dir = TestDir::new("ntsc");
    let src = dir.path().join("src.mp4");
    make_video_only(&src, "5", "30000/1001", &[]);
    let info = probe(&src, Duration::from_secs(10)).expect("probe");
    let video = info.require_video().expect("video");
    assert_eq!((video.fps_num, video.fps_den), (30_000, 1001));
    let rungs = plan_ladder(
        &[spec("360p", 360, 800_000), spec("180p", 180, 300_000)],
        640,
        360,
    );

    let out_dir = dir.path().join("out");
    let (result, _) = run_transcode(&src, &out_dir, &info, &rungs, &opts());
    let output = result.expect("transcode");
    let starts = verify_output(&out_dir, &output, false, NTSC_FPS, &[2.002, 2.002, 1.001]);
    // The storyboard follows the video's own clock: the last cue ends at 5.005 s.
    verify_thumbnails(&out_dir, &output, (640, 360), (160, 90), 3);
    assert_eq!(starts[0].len(), starts[1].len());
    for (a, b) in starts[0].iter().zip(&starts[1]) {
        assert_close(*a, *b, 0.001, "segment start across renditions");
    }
    let index = std::fs::read_to_string(out_dir.join("180p").join("index.m3u8")).expect("index");
    assert!(index.contains("#EXT-X-TARGETDURATION:2\n"), "{index}");
    assert!(index.contains("#EXTINF:2.002,\nseg_00000.ts\n"), "{index}");
}

#[test]
fn rotated_video_is_planned_and_encoded_upright() {
    let dir = TestDir::new("rotated");
    // Left half white, right half black: a quarter turn moves the white half to the top or
    // the bottom, which a plain squash to portrait would not.
    let plain = dir.path().join("plain.mp4");
    let plain_str = plain.to_str().expect("utf-8");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "color=black:size=640x360:rate=30",
        "-t",
        "1",
        "-vf",
        "drawbox=x=0:y=0:w=320:h=360:color=white:t=fill",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
        plain_str,
    ]);
    // ffmpeg 5 only writes the display matrix when remuxing, not when encoding.
    let src = dir.path().join("src.mp4");
    let src_str = src.to_str().expect("utf-8");
    ffmpeg(&[
        "-i",
        plain_str,
        "-c",
        "copy",
        "-metadata:s:v:0",
        "rotate=90",
        src_str,
    ]);
    let info = probe(&src, Duration::from_secs(10)).expect("probe");
    let video = info.require_video().expect("video");
    assert_eq!((video.width, video.height), (360, 640));
    let rungs = plan_ladder(&[spec("320p", 320, 300_000)], video.width, video.height);
    assert_eq!(
        rungs,
        vec![Rung {
            name: "320p".into(),
            width: 180,
            height: 320,
            video_bitrate: 300_000
        }]
    );

    let out_dir = dir.path().join("out");
    let (result, _) = run_transcode(&src, &out_dir, &info, &rungs, &opts());
    let output = result.expect("transcode");
    verify_output(&out_dir, &output, false, 30.0, &[1.0]);
    // Thumbnails are upright too: portrait poster and tiles.
    verify_thumbnails(&out_dir, &output, (360, 640), (160, 284), 1);

    // Same picture as ffmpeg's own auto-rotated decode of the source.
    let ours = first_frame_gray(
        &out_dir
            .join("320p")
            .join(&output.variants[0].segments[0].uri),
        180,
        320,
    );
    let reference = first_frame_gray(&src, 180, 320);
    let mean_diff = ours
        .iter()
        .zip(&reference)
        .map(|(a, b)| f64::from(a.abs_diff(*b)))
        .sum::<f64>()
        / ours.len() as f64;
    assert!(
        mean_diff < 10.0,
        "rotated output differs from the reference: mean |diff| {mean_diff:.1}"
    );
    // And the picture is not symmetric, so a wrong turn would have shown.
    let flipped: Vec<u8> = reference.iter().rev().copied().collect();
    let flipped_diff = ours
        .iter()
        .zip(&flipped)
        .map(|(a, b)| f64::from(a.abs_diff(*b)))
        .sum::<f64>()
        / ours.len() as f64;
    assert!(
        flipped_diff > 60.0,
        "test picture is too symmetric: {flipped_diff:.1}"
    );
}

/// The first video frame of `path` as 8-bit grey at `width`×`height`, decoded by ffmpeg
/// (which applies the rotation metadata itself).
fn first_frame_gray(path: &Path, width: u32, height: u32) -> Vec<u8> {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-i"])
        .arg(path)
        .args([
            "-frames:v",
            "1",
            "-vf",
            &format!("scale={width}:{height}"),
            "-f",
            "rawvideo",
            "-pix_fmt",
            "gray",
            "-",
        ])
        .output()
        .expect("ffmpeg is required for the media tests");
    assert!(
        out.status.success(),
        "ffmpeg decode of {} failed",
        path.display()
    );
    assert_eq!(out.stdout.len(), (width * height) as usize);
    out.stdout
}

#[test]
fn garbage_and_text_are_not_media() {
    let dir = TestDir::new("garbage");
    let garbage = dir.path().join("upload.mp4");
    // Deterministic pseudo-random bytes (xorshift), no container signature.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let bytes: Vec<u8> = (0..256 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    std::fs::write(&garbage, &bytes).expect("write garbage");
    let text = dir.path().join("notes.mp4");
    std::fs::write(
        &text,
        "These are my meeting notes, not a video.\n".repeat(200),
    )
    .expect("write text");
    let empty = dir.path().join("empty.mp4");
    std::fs::write(&empty, b"").expect("write empty");

    for file in [&garbage, &text, &empty] {
        let started = Instant::now();
        let err = probe(file, Duration::from_secs(10)).expect_err("not media");
        eprintln!("probe of {}: {err}", file.display());
        assert!(
            matches!(err, MediaError::NotMedia(_)),
            "{}: {err:?}",
            file.display()
        );
        assert!(err.to_string().starts_with("not a media file: "), "{err}");
        assert!(err.is_permanent());
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "probe took {:?}",
            started.elapsed()
        );
    }

    // The pipeline reaches the same verdict when handed such a file directly.
    let fake = ProbeInfo {
        duration_s: 5.0,
        container: None,
        video: Some(VideoInfo {
            width: 640,
            height: 360,
            fps_num: 30,
            fps_den: 1,
            codec: "h264".into(),
            hls_codec: None,
        }),
        audio: None,
    };
    let rungs = plan_ladder(&[spec("180p", 180, 300_000)], 640, 360);
    let started = Instant::now();
    let (result, _) = run_transcode(&garbage, &dir.path().join("out"), &fake, &rungs, &opts());
    let err = result.expect_err("garbage transcoded");
    assert!(matches!(err, MediaError::NotMedia(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn missing_input_is_an_io_error() {
    let dir = TestDir::new("missing");
    let err =
        probe(&dir.path().join("nope.mp4"), Duration::from_secs(5)).expect_err("missing file");
    match err {
        MediaError::Io(e) => assert_eq!(e.kind(), std::io::ErrorKind::NotFound),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn truncated_mp4_with_index_at_the_end_is_corrupt() {
    let dir = TestDir::new("trunc-moov");
    let full = dir.path().join("full.mp4");
    make_av(&full, "4", &[]);
    let cut = dir.path().join("cut.mp4");
    cut_in_half(&full, &cut);

    let started = Instant::now();
    let err = probe(&cut, Duration::from_secs(10)).expect_err("truncated file probed");
    eprintln!("probe of a cut MP4: {err}");
    assert!(matches!(err, MediaError::Corrupt(_)), "{err:?}");
    let message = err.to_string();
    assert!(
        message.starts_with("truncated or corrupt file: the file ends "),
        "{message}"
    );
    assert!(
        message.contains("before the end of its 'mdat' box"),
        "{message}"
    );
    assert!(started.elapsed() < Duration::from_secs(1));

    // The file was complete when probed and cut afterwards: the transcode must refuse too.
    let info = probe(&full, Duration::from_secs(10)).expect("probe full");
    let rungs = plan_ladder(&[spec("180p", 180, 300_000)], 640, 360);
    let (result, _) = run_transcode(&cut, &dir.path().join("out"), &info, &rungs, &opts());
    let err = result.expect_err("truncated file transcoded");
    assert!(matches!(err, MediaError::Corrupt(_)), "{err:?}");
    assert!(err.is_permanent());
}

#[test]
fn truncated_faststart_mp4_is_corrupt() {
    // The index is intact and GStreamer would decode the first half to a normal EOS; the
    // box structure shows the cut before any decoding.
    let dir = TestDir::new("trunc-faststart");
    let full = dir.path().join("full.mp4");
    make_av(&full, "4", &["-movflags", "+faststart"]);
    let cut = dir.path().join("cut.mp4");
    cut_in_half(&full, &cut);

    let err = probe(&cut, Duration::from_secs(10)).expect_err("truncated file probed");
    eprintln!("probe of a cut faststart MP4: {err}");
    assert!(matches!(err, MediaError::Corrupt(_)), "{err:?}");
    assert!(err.to_string().contains("'mdat' box"), "{err}");

    let info = probe(&full, Duration::from_secs(10)).expect("probe full");
    let rungs = plan_ladder(&[spec("180p", 180, 300_000)], 640, 360);
    let out_dir = dir.path().join("out");
    let (result, _) = run_transcode(&cut, &out_dir, &info, &rungs, &opts());
    assert!(matches!(result, Err(MediaError::Corrupt(_))), "{result:?}");
    assert!(!out_dir.join("master.m3u8").exists());
}

#[test]
fn truncated_input_that_decodes_cleanly_is_caught_by_its_length() {
    // A Matroska file cut in half: its header still announces 4 s and the demuxer simply
    // reaches a normal end of stream after ~2 s. Only the output length tells.
    let dir = TestDir::new("trunc-mkv");
    let full = dir.path().join("full.mkv");
    make_av(&full, "4", &[]);
    let cut = dir.path().join("cut.mkv");
    cut_in_half(&full, &cut);

    let info = probe(&cut, Duration::from_secs(10)).expect("probe");
    assert_eq!(info.container.as_deref(), Some("matroska"));
    assert_close(info.duration_s, 4.0, 0.1, "probed duration");
    let rungs = plan_ladder(&[spec("180p", 180, 300_000)], 640, 360);
    let out_dir = dir.path().join("out");
    let (result, _) = run_transcode(&cut, &out_dir, &info, &rungs, &opts());
    match result {
        Err(
            err @ MediaError::Truncated {
                decoded_s,
                expected_s,
            },
        ) => {
            eprintln!("transcode of a cut MKV: {err}");
            assert!(decoded_s > 0.5 && decoded_s < 3.0, "decoded {decoded_s}");
            assert_close(expected_s, 4.0, 0.1, "expected duration");
            assert!(err.is_permanent());
        }
        other => panic!("expected a truncation error, got {other:?}"),
    }
    assert!(
        !out_dir.join("master.m3u8").exists(),
        "a playlist was published for a truncated input"
    );
}

#[test]
fn audio_only_input_has_no_video() {
    let dir = TestDir::new("audio-only");
    let src = dir.path().join("song.m4a");
    let src_str = src.to_str().expect("utf-8");
    ffmpeg(&[
        "-f", "lavfi", "-i", AUDIO_SRC, "-t", "2", "-c:a", "aac", src_str,
    ]);

    let info = probe(&src, Duration::from_secs(10)).expect("probe");
    assert!(info.video.is_none());
    assert_eq!(info.audio.as_ref().map(|a| a.codec.as_str()), Some("aac"));
    let rungs = plan_ladder(&[spec("180p", 180, 300_000)], 640, 360);
    let (result, _) = run_transcode(&src, &dir.path().join("out"), &info, &rungs, &opts());
    let err = result.expect_err("audio-only transcoded");
    assert!(matches!(err, MediaError::NoVideo), "{err:?}");
    assert_eq!(
        err.to_string(),
        "no video stream: the file contains no video to transcode"
    );
}

#[test]
fn cancellation_stops_the_transcode() {
    let dir = TestDir::new("cancel");
    let src = dir.path().join("src.mp4");
    make_video_only(&src, "3", "30", &[]);
    let info = probe(&src, Duration::from_secs(10)).expect("probe");
    let rungs = plan_ladder(&[spec("180p", 180, 300_000)], 640, 360);
    let cancel = AtomicBool::new(true);
    let started = Instant::now();
    let result = transcode(
        &src,
        &dir.path().join("out"),
        &info,
        &rungs,
        &opts(),
        &mut |_| {},
        &cancel,
    );
    assert!(matches!(result, Err(MediaError::Cancelled)), "{result:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn a_branch_that_never_gets_data_trips_the_watchdog() {
    // Claiming audio for a video-only file builds an audio branch that never receives data:
    // splitmuxsink waits for it forever. The watchdog must turn that into an error.
    let dir = TestDir::new("stall");
    let src = dir.path().join("src.mp4");
    make_video_only(&src, "3", "30", &[]);
    let mut info = probe(&src, Duration::from_secs(10)).expect("probe");
    info.audio = Some(AudioInfo {
        channels: 2,
        sample_rate: 48_000,
        codec: "aac".into(),
        hls_codec: None,
    });
    let rungs = plan_ladder(&[spec("180p", 180, 300_000)], 640, 360);
    let stall = TranscodeOptions {
        stall_timeout: Duration::from_secs(2),
        ..opts()
    };
    let started = Instant::now();
    let (result, _) = run_transcode(&src, &dir.path().join("out"), &info, &rungs, &stall);
    let err = result.expect_err("hung pipeline finished");
    assert!(
        matches!(err, MediaError::Stalled(d) if d == Duration::from_secs(2)),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "transcode stalled: no progress for 2s");
    assert!(!err.is_permanent());
    assert!(started.elapsed() < Duration::from_secs(15));
}

#[test]
fn corruption_in_the_middle_of_the_file_fails_the_transcode() {
    // Decoders conceal a damaged region by default and the transcode "succeeds" with
    // garbage frames; with max-errors=0 the damage must surface as an error.
    let dir = TestDir::new("corrupt");
    let src = dir.path().join("src.mp4");
    make_av(&src, "4", &["-movflags", "+faststart"]);
    let info = probe(&src, Duration::from_secs(10)).expect("probe");
    let mut bytes = std::fs::read(&src).expect("read");
    let start = bytes.len() * 2 / 5;
    let mut x: u64 = 12_345;
    for b in &mut bytes[start..start + 30_000] {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = (x >> 24) as u8;
    }
    let damaged = dir.path().join("damaged.mp4");
    std::fs::write(&damaged, &bytes).expect("write");

    let rungs = plan_ladder(&[spec("180p", 180, 300_000)], 640, 360);
    let (result, _) = run_transcode(&damaged, &dir.path().join("out"), &info, &rungs, &opts());
    let err = result.expect_err("damaged file transcoded");
    eprintln!("transcode of a damaged MP4: {err}");
    assert!(matches!(err, MediaError::Corrupt(_)), "{err:?}");
    assert!(err.is_permanent());
}

#[test]
fn interlaced_input_is_deinterlaced() {
    let dir = TestDir::new("interlaced");
    let src = dir.path().join("src.mp4");
    let src_str = src.to_str().expect("utf-8");
    // 60p woven into 30 interlaced frames (top field first), coded as interlaced H.264.
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=640x360:rate=60",
        "-t",
        "2",
        "-vf",
        "tinterlace=interleave_top,fieldorder=tff",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
        "-flags",
        "+ilme+ildct",
        "-x264-params",
        "interlaced=1:tff=1",
        src_str,
    ]);
    let info = probe(&src, Duration::from_secs(10)).expect("probe");
    let rungs = plan_ladder(&[spec("360p", 360, 800_000)], 640, 360);
    let out_dir = dir.path().join("out");
    let (result, _) = run_transcode(&src, &out_dir, &info, &rungs, &opts());
    let output = result.expect("transcode");
    let segment = out_dir
        .join("360p")
        .join(&output.variants[0].segments[0].uri);
    let v = ffprobe_json(
        &[
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=field_order",
        ],
        &segment,
    );
    assert_eq!(v["streams"][0]["field_order"], "progressive", "{v}");
}

#[test]
fn fmp4_output_has_one_init_and_aligned_bare_fragments() {
    use crate::media::fmp4::INIT_NAME;
    use crate::media::transcode::SegmentFormat;
    let dir = TestDir::new("fmp4");
    let src = dir.path().join("src.mp4");
    make_av(&src, "5", &[]);
    let info = probe(&src, Duration::from_secs(10)).expect("probe");
    let rungs = plan_ladder(
        &[spec("360p", 360, 800_000), spec("180p", 180, 300_000)],
        640,
        360,
    );
    let out_dir = dir.path().join("out");
    let o = TranscodeOptions {
        segment_format: SegmentFormat::Fmp4,
        audio_only: true,
        thumbnails: false,
        ..opts()
    };
    let (result, _) = run_transcode(&src, &out_dir, &info, &rungs, &o);
    let output = result.expect("fMP4 transcode");
    assert_close(output.duration_s, 5.0, FRAME + 1e-6, "output duration");
    let audio = output.audio_only.clone().expect("audio-only rendition");

    let mut starts: Vec<Vec<f64>> = vec![];
    for v in output.variants.iter().chain(std::iter::once(&audio)) {
        let rdir = out_dir.join(&v.rung.name);
        let index = std::fs::read_to_string(rdir.join("index.m3u8")).expect("index.m3u8");
        assert_eq!(
            index,
            sluice_media::hls::vod_media(&v.segments, Some(INIT_NAME))
        );
        assert!(index.contains("#EXT-X-VERSION:6\n#EXT-X-PLAYLIST-TYPE:VOD\n"));
        let init = std::fs::read(rdir.join(INIT_NAME)).expect("init.mp4");
        assert_eq!(&init[4..8], b"ftyp");
        // ffprobe reads the playlist (init + fragments) to the full duration.
        assert_close(
            playlist_duration(&rdir.join("index.m3u8")),
            5.0,
            0.1,
            &format!("{} playlist duration", v.rung.name),
        );
        let mut rendition_starts = vec![];
        for seg in &v.segments {
            assert!(seg.uri.ends_with(".m4s"), "{}", seg.uri);
            let bytes = std::fs::read(rdir.join(&seg.uri)).expect("segment");
            assert!(
                matches!(&bytes[4..8], b"styp" | b"moof"),
                "{}: not a bare fragment",
                seg.uri
            );
            assert!(bytes.windows(4).any(|w| w == b"moof"), "{}", seg.uri);
            assert!(!bytes.windows(4).any(|w| w == b"moov"), "{}", seg.uri);
            if v.rung.height == 0 {
                continue;
            }
            // A fragment after the init section decodes on its own, from a keyframe, at its
            // place on the timeline (decode times continue across segment files).
            let joined = dir.path().join(format!("{}-{}.mp4", v.rung.name, seg.uri));
            std::fs::write(&joined, [init.clone(), bytes].concat()).expect("write");
            let facts = segment_facts(&joined);
            assert!(facts.first_is_keyframe, "{}/{}", v.rung.name, seg.uri);
            assert!(facts.has_aac, "{}/{} has no audio", v.rung.name, seg.uri);
            assert_close(
                facts.frames as f64 * FRAME,
                seg.duration,
                FRAME + 1e-6,
                &format!("{}/{} frames", v.rung.name, seg.uri),
            );
            rendition_starts.push(facts.first_pts);
        }
        if v.rung.height > 0 {
            starts.push(rendition_starts);
        }
    }
    assert_eq!(starts[0].len(), 3);
    for (a, b) in starts[0].iter().zip(&starts[1]) {
        assert_close(*a, *b, 0.001, "segment start across renditions");
    }
    assert!(
        starts[0].windows(2).all(|w| w[1] > w[0] + 1.5),
        "{starts:?}"
    );
    let master = std::fs::read_to_string(out_dir.join("master.m3u8")).expect("master");
    assert!(master.contains("360p/index.m3u8") && master.contains("audio/index.m3u8"));
}
