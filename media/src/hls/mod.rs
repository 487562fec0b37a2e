//! HLS playlists (RFC 8216) as text, with no I/O: the strict parser of what encoders push
//! ([`parse`]), the writers of what viewers get ([`write_media`], [`master_playlist`],
//! [`rewrite_master`]) and the numbers playlists advertise (target durations, bit rates).
//! Every rule is tested on exact text.

mod parse;
mod rate;
mod write;

use serde::{Deserialize, Serialize};

pub use parse::{
    MAX_MEDIA_SEQUENCE, MasterPlaylist, MediaPlaylist, ParseError, Playlist, StreamInf, attribute,
    parse, validate_uri,
};
pub use rate::{average_bit_rate, peak_bit_rate, target_duration};
pub use write::{
    MasterEntry, MediaHead, Variant, master_playlist, parse_master, replace_variant,
    rewrite_master, vod_media, write_media,
};

/// One media segment of a playlist, parsed or to be written.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    /// URI relative to the media playlist (e.g. `seg_00000.ts`).
    pub uri: String,
    /// Duration in seconds.
    pub duration: f64,
    /// An `EXT-X-DISCONTINUITY` precedes this segment.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub discontinuity: bool,
    /// The `EXT-X-MAP` URI (fMP4 initialisation section) in effect for this segment, when
    /// the playlist names one per segment rather than one for all (see [`MediaHead::map`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map: Option<String>,
}

impl Segment {
    /// A segment with no discontinuity and no map of its own.
    pub fn new(uri: impl Into<String>, duration: f64) -> Self {
        Self {
            uri: uri.into(),
            duration,
            ..Self::default()
        }
    }
}
