//! What is in an uploaded file: container, duration, the first video and audio streams.
//!
//! Uses `gstreamer_pbutils::Discoverer`, which runs the same demuxers and decoders the
//! transcoder will use, so a file that probes cleanly is one GStreamer can at least open.
//! Probing is fast (it stops after the first decoded frames) and bounded by a timeout.

use std::path::Path;
use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_pbutils as pbutils;
use gstreamer_pbutils::prelude::*;
use serde::{Deserialize, Serialize};

use super::MediaError;
use super::error::from_gst_error;
use super::isobmff::{self, BoxScan};

/// The video stream that will be transcoded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VideoInfo {
    /// Display width: after applying the rotation tag and the pixel aspect ratio, i.e. the
    /// width a viewer sees. This is what the ladder must be planned from.
    pub width: u32,
    /// Display height (after rotation).
    pub height: u32,
    /// Frame-rate numerator; 0 when the container declares none (variable frame rate).
    pub fps_num: u32,
    /// Frame-rate denominator; 1 when unknown.
    pub fps_den: u32,
    /// Short codec name (`h264`, `hevc`, `vp9`, ...) or GStreamer's description.
    pub codec: String,
    /// The codec as an HLS `CODECS` entry (`avc1.64001f`), when it has one we can name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hls_codec: Option<String>,
}

/// The audio stream that will be transcoded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AudioInfo {
    /// Channel count.
    pub channels: u32,
    /// Sample rate in Hz.
    pub sample_rate: u32,
    /// Short codec name (`aac`, `mp3`, `opus`, ...) or GStreamer's description.
    pub codec: String,
    /// The codec as an HLS `CODECS` entry (`mp4a.40.2`), when it has one we can name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hls_codec: Option<String>,
}

/// The result of [`probe`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbeInfo {
    /// Duration in seconds as the container declares it.
    pub duration_s: f64,
    /// Container format (`mp4`, `mov`, `matroska`, `webm`, `mpegts`, ...); `None` for an
    /// elementary stream without a container.
    pub container: Option<String>,
    /// First moving-picture stream; `None` for audio-only files (cover art does not count).
    pub video: Option<VideoInfo>,
    /// First audio stream, if any.
    pub audio: Option<AudioInfo>,
}

impl ProbeInfo {
    /// The video stream, or [`MediaError::NoVideo`].
    pub fn require_video(&self) -> Result<&VideoInfo, MediaError> {
        self.video.as_ref().ok_or(MediaError::NoVideo)
    }

    /// Frames per second as a float, `None` when unknown.
    pub fn frame_rate(&self) -> Option<f64> {
        let v = self.video.as_ref()?;
        (v.fps_num > 0 && v.fps_den > 0).then(|| f64::from(v.fps_num) / f64::from(v.fps_den))
    }
}

/// The discoverer refuses timeouts outside 1 s ..= 1 h.
const MIN_TIMEOUT: Duration = Duration::from_secs(1);
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// Probes `path` within `timeout`.
///
/// Errors:
/// * [`MediaError::Io`] when the file cannot be read (missing, permissions);
/// * [`MediaError::NotMedia`] for empty files and anything GStreamer cannot recognise;
/// * [`MediaError::Corrupt`] for recognised but damaged containers, including MP4/MOV files
///   cut short (checked from the box structure before GStreamer runs);
/// * [`MediaError::Unsupported`] when no decoder is installed for a stream;
/// * [`MediaError::MissingDuration`] when a video file does not declare its duration;
/// * [`MediaError::NoVideo`] when there is neither video nor a duration (a still image);
/// * [`MediaError::ProbeTimeout`] when analysis takes longer than `timeout`.
///
/// Audio-only files probe successfully with `video: None`; [`ProbeInfo::require_video`] or
/// the transcoder turn that into [`MediaError::NoVideo`].
pub fn probe(path: &Path, timeout: Duration) -> Result<ProbeInfo, MediaError> {
    probe_inner(path, timeout, true)
}

/// Like [`probe`], for a short sample of a stream (a live segment, with its init segment
/// for fMP4) whose container may not declare a duration: `duration_s` is then 0.
pub fn probe_sample(path: &Path, timeout: Duration) -> Result<ProbeInfo, MediaError> {
    probe_inner(path, timeout, false)
}

fn probe_inner(
    path: &Path,
    timeout: Duration,
    need_duration: bool,
) -> Result<ProbeInfo, MediaError> {
    super::init()?;
    let with_path =
        |e: std::io::Error| std::io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    let meta = std::fs::metadata(path).map_err(with_path)?;
    if !meta.is_file() {
        return Err(MediaError::NotMedia(
            "the upload is not a regular file".into(),
        ));
    }
    if meta.len() == 0 {
        return Err(MediaError::NotMedia("the file is empty".into()));
    }
    check_structure(path)?;
    let absolute = std::path::absolute(path).map_err(with_path)?;
    let uri = gst::glib::filename_to_uri(&absolute, None).map_err(|e| {
        MediaError::Pipeline(format!("cannot build a URI for {}: {e}", path.display()))
    })?;

    let timeout = timeout.clamp(MIN_TIMEOUT, MAX_TIMEOUT);
    let discoverer =
        pbutils::Discoverer::new(gst::ClockTime::from_nseconds(timeout.as_nanos() as u64))
            .map_err(|e| {
                MediaError::Pipeline(format!("cannot create the media discoverer: {e}"))
            })?;
    // The synchronous API returns the pipeline's GError when there was one (garbage input,
    // damaged container, missing decoder); a timeout carries no GError and shows up below
    // as the info's result.
    let info = discoverer
        .discover_uri(&uri)
        .map_err(|e| from_gst_error("", &e, None))?;

    match info.result() {
        pbutils::DiscovererResult::Ok => {}
        pbutils::DiscovererResult::Timeout => return Err(MediaError::ProbeTimeout(timeout)),
        pbutils::DiscovererResult::MissingPlugins => {
            let missing = missing_plugin_descriptions(&info);
            return Err(MediaError::Unsupported(format!(
                "no decoder is installed for {missing}"
            )));
        }
        pbutils::DiscovererResult::UriInvalid => {
            return Err(MediaError::Pipeline(format!(
                "the media framework rejected the path {}",
                path.display()
            )));
        }
        pbutils::DiscovererResult::Busy => {
            return Err(MediaError::Pipeline("the media discoverer was busy".into()));
        }
        _ => {
            return Err(MediaError::Corrupt("the file could not be analysed".into()));
        }
    }

    let video = info
        .video_streams()
        .into_iter()
        .find(|v| !v.is_image())
        .map(|v| video_info(&v));
    let audio = info.audio_streams().into_iter().next().map(|a| AudioInfo {
        channels: a.channels(),
        sample_rate: a.sample_rate(),
        codec: codec_name(a.caps().as_ref()),
        hls_codec: a.caps().as_ref().and_then(hls_codec),
    });
    let container = info
        .stream_info()
        .and_then(|s| s.downcast::<pbutils::DiscovererContainerInfo>().ok())
        .and_then(|c| c.caps())
        .map(|caps| container_name(&caps));

    let duration_s = info
        .duration()
        .map(|d| d.nseconds() as f64 / 1e9)
        .filter(|d| *d > 0.0);
    let duration_s = match (duration_s, &video) {
        (Some(d), _) => d,
        (None, _) if !need_duration && (video.is_some() || audio.is_some()) => 0.0,
        (None, Some(_)) => return Err(MediaError::MissingDuration),
        (None, None) => return Err(MediaError::NoVideo),
    };
    if video.is_none() && audio.is_none() {
        return Err(MediaError::NotMedia(
            "the file contains neither audio nor video".into(),
        ));
    }

    Ok(ProbeInfo {
        duration_s,
        container,
        video,
        audio,
    })
}

/// Rejects MP4/MOV files whose box structure shows they were cut short or lack their index;
/// other formats pass untouched. Cheap: reads a few box headers.
///
/// This runs before GStreamer sees the file because GStreamer 1.22 handles exactly this case
/// badly (see [`super::isobmff`]).
pub(crate) fn check_structure(path: &Path) -> Result<(), MediaError> {
    let with_path =
        |e: std::io::Error| std::io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    let mut file = std::fs::File::open(path).map_err(with_path)?;
    let len = file.metadata().map_err(with_path)?.len();
    // Unbuffered on purpose: each step reads one 8-16 byte header and seeks past a payload.
    match isobmff::scan_top_level_boxes(&mut file, len).map_err(with_path)? {
        BoxScan::NotIsoBmff | BoxScan::Complete => Ok(()),
        BoxScan::MissingMoov => Err(MediaError::Corrupt(
            "the MP4 index ('moov' box) is missing, the upload was probably interrupted".into(),
        )),
        BoxScan::Truncated {
            box_type,
            missing_bytes,
        } => Err(MediaError::Corrupt(format!(
            "the file ends {} before the end of its '{box_type}' box, the upload was probably interrupted",
            isobmff::human_bytes(missing_bytes)
        ))),
        BoxScan::Invalid(detail) => Err(MediaError::Corrupt(detail)),
    }
}

/// Human-readable list of what is missing (e.g. "H.265 (Main Profile) decoder").
fn missing_plugin_descriptions(info: &pbutils::DiscovererInfo) -> String {
    let details = info.missing_elements_installer_details();
    let names: Vec<String> = details
        .iter()
        // Installer details look like "gstreamer|1.0|discoverer|H.265 decoder|decoder-video/x-h265".
        .filter_map(|d| d.split('|').nth(3).map(str::to_owned))
        .collect();
    if names.is_empty() {
        "one of its streams".to_owned()
    } else {
        names.join(", ")
    }
}

fn video_info(v: &pbutils::DiscovererVideoInfo) -> VideoInfo {
    let (mut width, mut height) = (v.width(), v.height());
    // Anamorphic sources: scale the width to square pixels, which is what the output uses.
    let par = v.par();
    if par.numer() > 0 && par.denom() > 0 && par.numer() != par.denom() {
        width = (f64::from(width) * f64::from(par.numer()) / f64::from(par.denom())).round() as u32;
    }
    let orientation = v.tags().and_then(|t| {
        t.get::<gst::tags::ImageOrientation>()
            .map(|o| o.get().to_owned())
    });
    if orientation.as_deref().is_some_and(rotates_quarter_turn) {
        std::mem::swap(&mut width, &mut height);
    }
    let fps = v.framerate();
    let (fps_num, fps_den) = match (u32::try_from(fps.numer()), u32::try_from(fps.denom())) {
        (Ok(n), Ok(d)) if n > 0 && d > 0 => (n, d),
        _ => (0, 1),
    };
    VideoInfo {
        width,
        height,
        fps_num,
        fps_den,
        codec: codec_name(v.caps().as_ref()),
        hls_codec: v.caps().as_ref().and_then(hls_codec),
    }
}

/// The HLS `CODECS` entry (RFC 6381) of a stream's caps: H.264 from its profile and level
/// (as the parsers put them in the caps), AAC from its profile, MP3, AC-3 and E-AC-3.
/// `None` for anything else, or H.264 caps without profile and level.
pub(crate) fn hls_codec(caps: &gst::Caps) -> Option<String> {
    let s = caps.structure(0)?;
    let text = |f: &str| s.get::<&str>(f).ok();
    let int = |f: &str| s.get::<i32>(f).ok();
    Some(match s.name().as_str() {
        "video/x-h264" => super::h264_codec_string(text("profile")?, text("level")?),
        "audio/mpeg" => match (int("mpegversion"), int("layer")) {
            (Some(2 | 4), _) => format!(
                "mp4a.40.{}",
                match text("profile") {
                    Some("main") => 1,
                    Some("he-aac") => 5,
                    Some("he-aac-v2") => 29,
                    _ => 2,
                }
            ),
            (Some(1), Some(3)) => "mp4a.40.34".into(),
            _ => return None,
        },
        "audio/x-ac3" => "ac-3".into(),
        "audio/x-eac3" => "ec-3".into(),
        _ => return None,
    })
}

/// Whether a GStreamer `image-orientation` tag swaps width and height.
pub(crate) fn rotates_quarter_turn(orientation: &str) -> bool {
    matches!(
        orientation,
        "rotate-90" | "rotate-270" | "flip-rotate-90" | "flip-rotate-270"
    )
}

/// Short, stable codec names for the formats people upload; GStreamer's description for the
/// rest.
fn codec_name(caps: Option<&gst::Caps>) -> String {
    let Some(s) = caps.and_then(|c| c.structure(0)) else {
        return "unknown".to_owned();
    };
    let int = |f: &str| s.get::<i32>(f).ok();
    let short = short_codec_name(s.name().as_str(), int("mpegversion"), int("layer"));
    match (short, caps) {
        (Some(name), _) => name.to_owned(),
        (None, Some(caps)) => pbutils::pb_utils_get_codec_description(caps).to_string(),
        (None, None) => "unknown".to_owned(),
    }
}

/// Maps a caps media type (plus the MPEG version/layer fields) to a short codec name.
pub(crate) fn short_codec_name(
    media_type: &str,
    mpegversion: Option<i32>,
    layer: Option<i32>,
) -> Option<&'static str> {
    Some(match (media_type, mpegversion, layer) {
        ("video/x-h264", _, _) => "h264",
        ("video/x-h265", _, _) => "hevc",
        ("video/x-vp8", _, _) => "vp8",
        ("video/x-vp9", _, _) => "vp9",
        ("video/x-av1", _, _) => "av1",
        ("video/x-prores", _, _) => "prores",
        ("video/x-theora", _, _) => "theora",
        ("video/mpeg", Some(4), _) => "mpeg4",
        ("video/mpeg", Some(1 | 2), _) => "mpeg2",
        ("image/jpeg", _, _) => "mjpeg",
        ("audio/mpeg", Some(2 | 4), _) => "aac",
        ("audio/mpeg", Some(1), Some(3)) => "mp3",
        ("audio/mpeg", Some(1), _) => "mp2",
        ("audio/x-opus", _, _) => "opus",
        ("audio/x-vorbis", _, _) => "vorbis",
        ("audio/x-flac", _, _) => "flac",
        ("audio/x-ac3", _, _) => "ac3",
        ("audio/x-eac3", _, _) => "eac3",
        ("audio/x-alac", _, _) => "alac",
        ("audio/x-raw", _, _) => "pcm",
        _ => return None,
    })
}

fn container_name(caps: &gst::Caps) -> String {
    let Some(s) = caps.structure(0) else {
        return "unknown".to_owned();
    };
    let variant = s.get::<&str>("variant").ok();
    let systemstream = s.get::<bool>("systemstream").ok();
    match short_container_name(s.name().as_str(), variant, systemstream) {
        Some(name) => name.to_owned(),
        None => pbutils::pb_utils_get_codec_description(caps).to_string(),
    }
}

/// Maps a container caps media type (plus qtdemux's `variant`) to a short name.
pub(crate) fn short_container_name(
    media_type: &str,
    variant: Option<&str>,
    systemstream: Option<bool>,
) -> Option<&'static str> {
    Some(match (media_type, variant, systemstream) {
        ("video/quicktime", Some("iso" | "iso-fragmented"), _) => "mp4",
        ("video/quicktime", Some("3gpp"), _) => "3gp",
        ("video/quicktime", _, _) => "mov",
        ("audio/x-m4a", _, _) => "m4a",
        ("video/x-matroska", _, _) => "matroska",
        ("video/webm" | "audio/webm", _, _) => "webm",
        ("video/mpegts", _, _) => "mpegts",
        ("video/mpeg", _, Some(true)) => "mpeg-ps",
        ("video/x-msvideo", _, _) => "avi",
        ("application/ogg" | "video/ogg" | "audio/ogg", _, _) => "ogg",
        ("video/x-flv", _, _) => "flv",
        ("application/mxf", _, _) => "mxf",
        ("video/x-ms-asf", _, _) => "asf",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_names_are_short_and_stable() {
        assert_eq!(short_codec_name("video/x-h264", None, None), Some("h264"));
        assert_eq!(short_codec_name("video/x-h265", None, None), Some("hevc"));
        assert_eq!(short_codec_name("video/mpeg", Some(4), None), Some("mpeg4"));
        assert_eq!(short_codec_name("video/mpeg", Some(2), None), Some("mpeg2"));
        assert_eq!(short_codec_name("audio/mpeg", Some(4), None), Some("aac"));
        assert_eq!(
            short_codec_name("audio/mpeg", Some(1), Some(3)),
            Some("mp3")
        );
        assert_eq!(
            short_codec_name("audio/mpeg", Some(1), Some(2)),
            Some("mp2")
        );
        assert_eq!(short_codec_name("audio/x-opus", None, None), Some("opus"));
        assert_eq!(short_codec_name("video/x-wmv", None, None), None);
    }

    #[test]
    fn container_names_are_short_and_stable() {
        assert_eq!(
            short_container_name("video/quicktime", Some("iso"), None),
            Some("mp4")
        );
        assert_eq!(
            short_container_name("video/quicktime", Some("apple"), None),
            Some("mov")
        );
        assert_eq!(
            short_container_name("video/quicktime", None, None),
            Some("mov")
        );
        assert_eq!(
            short_container_name("video/x-matroska", None, None),
            Some("matroska")
        );
        assert_eq!(
            short_container_name("video/mpegts", None, Some(true)),
            Some("mpegts")
        );
        assert_eq!(
            short_container_name("video/mpeg", None, Some(true)),
            Some("mpeg-ps")
        );
        assert_eq!(short_container_name("video/mpeg", None, None), None);
    }

    #[test]
    fn quarter_turns_swap_dimensions() {
        assert!(rotates_quarter_turn("rotate-90"));
        assert!(rotates_quarter_turn("flip-rotate-270"));
        assert!(!rotates_quarter_turn("rotate-180"));
        assert!(!rotates_quarter_turn("rotate-0"));
    }

    #[test]
    fn frame_rate_is_none_when_unknown() {
        let mut info = ProbeInfo {
            duration_s: 1.0,
            container: None,
            video: Some(VideoInfo {
                width: 2,
                height: 2,
                fps_num: 30000,
                fps_den: 1001,
                codec: "h264".into(),
                hls_codec: None,
            }),
            audio: None,
        };
        assert_eq!(info.frame_rate(), Some(30000.0 / 1001.0));
        if let Some(v) = info.video.as_mut() {
            v.fps_num = 0;
        }
        assert_eq!(info.frame_rate(), None);
        info.video = None;
        assert!(matches!(info.require_video(), Err(MediaError::NoVideo)));
    }
}
