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

fn spec(name: &str, height: u32, video_bitrate: u32) -> RungSpec {
    RungSpec {
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
        assert_eq!(index, media_playlist(&v.segments));
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
        .map(|v| Variant {
            uri: format!("{}/index.m3u8", v.rung.name),
            bandwidth: v.bandwidth,
            average_bandwidth: v.average_bandwidth,
            width: v.rung.width,
            height: v.rung.height,
            codecs: v.codecs.clone(),
            frame_rate: v.frame_rate,
        })
        .collect();
    assert_eq!(master, master_playlist(&variants));
    starts
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

#[test]
fn video_only_input_transcodes_without_an_audio_branch() {
    let dir = TestDir::new("video-only");
    let src = dir.path().join("src.mp4");
    make_video_only(&src, "3", "30", &[]);
    let info = probe(&src, Duration::from_secs(10)).expect("probe");
    assert!(info.audio.is_none());
    let rungs = plan_ladder(&[spec("180p", 180, 300_000)], 640, 360);

    let out_dir = dir.path().join("out");
    let (result, _) = run_transcode(&src, &out_dir, &info, &rungs, &opts());
    let output = result.expect("transcode");
    verify_output(&out_dir, &output, false, 30.0, &[2.0, 1.0]);
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
