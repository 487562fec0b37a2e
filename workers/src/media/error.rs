//! The error type of the media core, and the mapping from GStreamer errors to it.
//!
//! Messages are written for the people who uploaded the file: they say what is wrong with
//! the input in plain words, with the technical detail (element, GStreamer message) kept
//! short and at the end.

use std::time::Duration;

use gstreamer as gst;

/// Why probing or transcoding failed.
///
/// [`MediaError::is_permanent`] tells a job runner whether retrying can help.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MediaError {
    /// The input is not audio/video at all (random bytes, a text file, an image...).
    #[error("not a media file: {0}")]
    NotMedia(String),
    /// The input looks like media but is damaged or cut short.
    #[error("truncated or corrupt file: {0}")]
    Corrupt(String),
    /// The input decoded cleanly but ended much earlier than its header announced: the
    /// typical upload that stopped half-way through a "faststart" MP4.
    #[error("truncated input: decoded {decoded_s:.1} s of {expected_s:.1} s")]
    Truncated {
        /// Seconds of video actually produced.
        decoded_s: f64,
        /// Seconds the container announced.
        expected_s: f64,
    },
    /// The input has no video stream (audio-only files, still images).
    #[error("no video stream: the file contains no video to transcode")]
    NoVideo,
    /// The container does not say how long the media is, so progress and completeness
    /// cannot be checked.
    #[error(
        "missing duration: the file does not say how long it is (live capture or damaged header)"
    )]
    MissingDuration,
    /// The input uses a format or codec this worker cannot decode.
    #[error("unsupported media: {0}")]
    Unsupported(String),
    /// The caller asked for something impossible (no renditions, bad names, unknown preset).
    #[error("invalid transcode settings: {0}")]
    InvalidSettings(String),
    /// Probing did not finish in time.
    #[error("probe timed out after {}s: the file could not be analysed in time", .0.as_secs())]
    ProbeTimeout(Duration),
    /// The pipeline made no progress for this long (a hang, or a badly starved machine).
    #[error("transcode stalled: no progress for {}s", .0.as_secs())]
    Stalled(Duration),
    /// The caller's cancel flag was set.
    #[error("transcode cancelled")]
    Cancelled,
    /// A failure inside the media framework that says nothing about the input.
    #[error("media pipeline failure: {0}")]
    Pipeline(String),
    /// Reading the input or writing the output failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl MediaError {
    /// `true` when retrying the same job cannot succeed: the input itself is bad, the
    /// request is invalid, or the job was cancelled on purpose. `false` for failures that
    /// may depend on the machine (I/O, stalls, timeouts, framework trouble).
    pub fn is_permanent(&self) -> bool {
        match self {
            MediaError::NotMedia(_)
            | MediaError::Corrupt(_)
            | MediaError::Truncated { .. }
            | MediaError::NoVideo
            | MediaError::MissingDuration
            | MediaError::Unsupported(_)
            | MediaError::InvalidSettings(_)
            | MediaError::Cancelled => true,
            MediaError::ProbeTimeout(_)
            | MediaError::Stalled(_)
            | MediaError::Pipeline(_)
            | MediaError::Io(_) => false,
        }
    }
}

/// Longest technical detail kept in a message; GStreamer debug strings can be very long.
const MAX_DETAIL_CHARS: usize = 240;

/// Shortens a GStreamer debug string to its useful tail.
///
/// Debug strings look like `../gst/isomp4/qtdemux.c(747): gst_qtdemux_pull_atom ():
/// /GstPipeline:pipeline0/GstQTDemux:qtdemux0:\nno 'moov' atom within the first 10 MB`; the
/// source location and element path mean nothing to a user, the last line often does.
pub(crate) fn summarize_debug(debug: &str) -> String {
    let last = debug
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    // Without a debug text the only line is the "file.c(123): function (): /path:" prefix,
    // which means nothing to a user.
    if last.contains(".c(") && last.contains("): ") {
        return String::new();
    }
    truncate_chars(last, MAX_DETAIL_CHARS)
}

fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// Maps a GStreamer `GError` (from the bus or the discoverer) to a [`MediaError`].
///
/// `origin` names the element that failed (may be empty), `debug` is the optional debug
/// string. The mapping follows what was measured on GStreamer 1.22: unrecognisable input is
/// `StreamError::TypeNotFound`, a cut or damaged container is `StreamError::Demux`, a damaged
/// bitstream is `StreamError::Decode`.
pub(crate) fn from_gst_error(
    origin: &str,
    err: &gst::glib::Error,
    debug: Option<&str>,
) -> MediaError {
    let detail = {
        let msg = err.message().trim().trim_end_matches('.');
        let dbg = debug
            .map(summarize_debug)
            .filter(|d| !d.is_empty() && !msg.contains(d.as_str()));
        let mut s = String::new();
        if !origin.is_empty() {
            s.push_str(origin);
            s.push_str(": ");
        }
        s.push_str(msg);
        if let Some(d) = dbg {
            s.push_str(" (");
            s.push_str(&d);
            s.push(')');
        }
        s
    };

    if let Some(kind) = err.kind::<gst::StreamError>() {
        return match kind {
            gst::StreamError::TypeNotFound | gst::StreamError::WrongType => {
                MediaError::NotMedia(format!("could not detect the container format ({detail})"))
            }
            gst::StreamError::Demux | gst::StreamError::Format => {
                MediaError::Corrupt(format!("the container could not be read ({detail})"))
            }
            gst::StreamError::Decode => {
                MediaError::Corrupt(format!("the audio or video data is damaged ({detail})"))
            }
            gst::StreamError::CodecNotFound | gst::StreamError::NotImplemented => {
                MediaError::Unsupported(format!(
                    "no decoder is available for this format ({detail})"
                ))
            }
            gst::StreamError::Decrypt | gst::StreamError::DecryptNokey => {
                MediaError::Unsupported(format!("the file is encrypted ({detail})"))
            }
            _ => MediaError::Pipeline(detail),
        };
    }
    if let Some(kind) = err.kind::<gst::CoreError>()
        && kind == gst::CoreError::MissingPlugin
    {
        return MediaError::Unsupported(format!(
            "no decoder is available for this format ({detail})"
        ));
    }
    if let Some(kind) = err.kind::<gst::ResourceError>() {
        use std::io::ErrorKind;
        let io_kind = match kind {
            gst::ResourceError::NotFound => ErrorKind::NotFound,
            gst::ResourceError::NoSpaceLeft => ErrorKind::StorageFull,
            gst::ResourceError::NotAuthorized => ErrorKind::PermissionDenied,
            gst::ResourceError::OpenRead
            | gst::ResourceError::OpenWrite
            | gst::ResourceError::OpenReadWrite
            | gst::ResourceError::Read
            | gst::ResourceError::Write
            | gst::ResourceError::Seek
            | gst::ResourceError::Close
            | gst::ResourceError::Sync => ErrorKind::Other,
            _ => return MediaError::Pipeline(detail),
        };
        return MediaError::Io(std::io::Error::new(io_kind, detail));
    }
    MediaError::Pipeline(detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permanence_follows_the_cause() {
        assert!(MediaError::NotMedia("x".into()).is_permanent());
        assert!(MediaError::Corrupt("x".into()).is_permanent());
        assert!(
            MediaError::Truncated {
                decoded_s: 1.0,
                expected_s: 2.0
            }
            .is_permanent()
        );
        assert!(MediaError::NoVideo.is_permanent());
        assert!(MediaError::MissingDuration.is_permanent());
        assert!(MediaError::Unsupported("x".into()).is_permanent());
        assert!(MediaError::InvalidSettings("x".into()).is_permanent());
        assert!(MediaError::Cancelled.is_permanent());
        assert!(!MediaError::Stalled(Duration::from_secs(30)).is_permanent());
        assert!(!MediaError::ProbeTimeout(Duration::from_secs(30)).is_permanent());
        assert!(!MediaError::Pipeline("x".into()).is_permanent());
        assert!(!MediaError::Io(std::io::Error::other("x")).is_permanent());
    }

    #[test]
    fn messages_are_sentences_for_users() {
        assert_eq!(
            MediaError::Stalled(Duration::from_secs(30)).to_string(),
            "transcode stalled: no progress for 30s"
        );
        assert_eq!(
            MediaError::Truncated {
                decoded_s: 3.04,
                expected_s: 6.0
            }
            .to_string(),
            "truncated input: decoded 3.0 s of 6.0 s"
        );
        assert_eq!(
            MediaError::NoVideo.to_string(),
            "no video stream: the file contains no video to transcode"
        );
    }

    #[test]
    fn debug_strings_are_reduced_to_their_last_useful_line() {
        assert_eq!(
            summarize_debug(
                "../gst/isomp4/qtdemux.c(747): gst_qtdemux_pull_atom (): \
                 /GstPipeline:pipeline0/GstQTDemux:qtdemux0:\nno 'moov' atom within the first 10 MB"
            ),
            "no 'moov' atom within the first 10 MB"
        );
        assert_eq!(
            summarize_debug(
                "../gst/typefind.c(1): gst_type_find (): /GstPipeline:p0/GstTypeFindElement:t0:\n"
            ),
            ""
        );
        assert_eq!(summarize_debug(""), "");
        assert_eq!(
            summarize_debug(&"x".repeat(300)).chars().count(),
            MAX_DETAIL_CHARS + 1
        );
    }

    #[test]
    fn gstreamer_error_kinds_map_to_causes() {
        let e = gst::glib::Error::new(
            gst::StreamError::TypeNotFound,
            "Could not determine type of stream.",
        );
        let m = from_gst_error("typefind", &e, None);
        assert!(matches!(m, MediaError::NotMedia(_)), "{m:?}");
        assert_eq!(
            m.to_string(),
            "not a media file: could not detect the container format (typefind: Could not determine type of stream)"
        );

        let e = gst::glib::Error::new(
            gst::StreamError::Demux,
            "This file is incomplete and cannot be played.",
        );
        let m = from_gst_error(
            "qtdemux0",
            &e,
            Some("qtdemux.c(1): f (): /p:\nmoov atom missing"),
        );
        assert_eq!(
            m.to_string(),
            "truncated or corrupt file: the container could not be read \
             (qtdemux0: This file is incomplete and cannot be played (moov atom missing))"
        );

        let e = gst::glib::Error::new(gst::StreamError::Decode, "bad slice");
        assert!(matches!(
            from_gst_error("", &e, None),
            MediaError::Corrupt(_)
        ));

        let e = gst::glib::Error::new(gst::StreamError::CodecNotFound, "no decoder");
        assert!(matches!(
            from_gst_error("", &e, None),
            MediaError::Unsupported(_)
        ));

        let e = gst::glib::Error::new(gst::ResourceError::NotFound, "No such file");
        match from_gst_error("filesrc0", &e, None) {
            MediaError::Io(io) => assert_eq!(io.kind(), std::io::ErrorKind::NotFound),
            other => panic!("unexpected {other:?}"),
        }

        let e = gst::glib::Error::new(gst::CoreError::Negotiation, "not negotiated");
        assert!(matches!(
            from_gst_error("", &e, None),
            MediaError::Pipeline(_)
        ));
    }
}
