//! The GStreamer media core: probing uploads, planning the rendition ladder, transcoding to
//! HLS (MPEG-TS segments) and writing the playlists.
//!
//! The module is split so that everything which can be decided without touching media is
//! pure and unit-tested with exact expectations:
//!
//! * [`ladder`]: which renditions to produce and the RFC 6381 `CODECS` strings (pure);
//! * playlists and their bit-rate rules are pure text, in `sluice_media::hls`;
//! * [`probe`](mod@probe): what is in a file, through `gstreamer_pbutils::Discoverer`,
//!   after a quick structural check of MP4/MOV files that catches interrupted uploads (I/O);
//! * [`transcode`](mod@transcode): one decode, a tee per rendition, one AAC encode (I/O,
//!   blocking);
//! * [`thumbs`]: poster, storyboard sprite sheet and its WebVTT index, from one more branch
//!   of the same pipeline (sizes, grid, cue text and frame choice are pure).
//!
//! Everything here is blocking: async callers run it on `spawn_blocking`.

mod elements;
mod error;
mod files;
pub mod fmp4;
mod isobmff;
pub mod ladder;
pub mod probe;
pub mod thumbs;
pub mod transcode;

#[cfg(test)]
mod tests;

use std::sync::OnceLock;

pub use error::MediaError;
pub use ladder::{AAC_LC_CODEC, Rung, RungConfig, default_ladder, h264_codec_string, plan_ladder};
pub use probe::{AudioInfo, ProbeInfo, VideoInfo, probe, probe_sample};
pub use sluice_media::hls::{Segment, Variant, master_playlist};
pub use thumbs::Thumbnails;
pub use transcode::{TranscodeOptions, TranscodeOutput, VariantOutput, transcode};

/// Initialises GStreamer once per process.
///
/// `gst::init()` is itself idempotent, but it is not free (it scans the plugin registry on
/// the first call) and its failure must be reported the same way to every caller, so the
/// outcome of the first attempt is cached. Every public entry point of this module calls it,
/// so callers only need it to fail fast at start-up (e.g. a worker refusing to start on a
/// machine without GStreamer).
pub fn init() -> Result<(), MediaError> {
    static INIT: OnceLock<Result<(), String>> = OnceLock::new();
    INIT.get_or_init(|| {
        gstreamer::init().map_err(|e| e.to_string())?;
        // fMP4 segments (isofmp4mux) come from gst-plugins-rs, linked in statically: Debian's
        // GStreamer 1.22 has no fMP4 muxer.
        gstfmp4::plugin_register_static().map_err(|e| e.to_string())
    })
    .clone()
    .map_err(|e| MediaError::Pipeline(format!("GStreamer could not be initialised: {e}")))
}
