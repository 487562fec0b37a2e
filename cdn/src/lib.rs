//! What the CDN edge and the gateway must agree on: signed playback tokens, CloudFront
//! signing, and the cache policy of each kind of object.
//!
//! A playback URL is `/v1/play/{tenant}/{asset}/{token}/{entry…}`, where the token signs
//! the resource `{tenant}/{asset}` and an expiry ([`token`]) and the entry is a file under
//! the asset's HLS root (`master.m3u8`, `720p/seg_00001.ts`, `live/index.m3u8`). The token
//! is a path segment, so every relative URI inside the playlists inherits it: a player
//! needs no headers and no query strings, and a caching edge keys on the plain path. The
//! gateway's `paths` module is the one place that writes and reads this path.
//!
//! # The playback token, for edges that verify it
//!
//! This is the whole format; an edge (nginx with njs, a CDN function) that follows it
//! agrees with the origin, and the origin's tests pin it with exact strings.
//!
//! ```text
//! token    = kid "." expires "." scope "." sig
//! kid      = 1*16( ALPHA / DIGIT / "_" / "-" )     ; the signing key's id
//! expires  = 1*20DIGIT                             ; unix seconds
//! scope    = "_"                                   ; not bound to a client
//!          / base64url-nopad( cidr )               ; bound: the client must be inside
//! sig      = base64url-nopad( HMAC-SHA256( secret, signed )[0..16] )   ; 22 characters
//! signed   = "play2:" kid ":" tenant "/" asset ":" expires ":" scope
//! ```
//!
//! - `secret` is the key's secret text as configured, used as its bytes (not decoded).
//! - `scope` enters `signed` exactly as written in the token; `cidr` is the network with
//!   its host bits cleared, as `203.0.113.7/32` or `2001:db8::/48` (a bare address is a
//!   /32 or /128). [`token::signed_string`] builds `signed`.
//! - Verify in this order: split into exactly four fields, each of its alphabet (else
//!   refuse); an unknown `kid`, or one past its verify-until time, is refused; compare the
//!   MAC in constant time; `now >= expires` is expired; a bound scope needs the client's
//!   address inside the network (an unknown client is refused). Answer 403 to all.
//!
//! Why this shape: the key id lets keys rotate with an overlap (one key signs; the
//! previous ones verify until a configured time, so URLs already handed out keep playing);
//! the scope binds a URL to a viewer's network when a tenant asks, and it is signed, so it
//! cannot be widened; every field is URL-safe and none holds a `.`, so the token stays one
//! path segment and relative URIs keep working.
//!
//! # CloudFront
//!
//! [`cloudfront`] signs URLs and cookies the way CloudFront verifies them, for deployments
//! where CloudFront, not Sluice's own edge, admits viewers.

pub mod cloudfront;
mod error;
pub mod nginx;
pub mod token;

pub use error::Error;
pub use token::{Claims, ClientNet, PlaybackKey, PlaybackSigner};

/// Cache policy per kind of object. A typed enum so that an immutable segment and a
/// playlist can never share a policy by accident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CachePolicy {
    /// Media segments: content-addressed by their path, never rewritten once published.
    ImmutableSegment,
    /// VOD playlists: published once (master last), immutable like segments.
    VodPlaylist,
    /// Live playlists change every segment: see [`live_playlist_header`].
    LivePlaylist,
    /// The watch page: the same for every viewer of a playlist, but it names the player's
    /// files by their current fingerprints, so a new release must reach viewers soon.
    WatchPage,
    /// The player's own files (hls.js, the page's script and style), served under names that
    /// carry a fingerprint of their bytes: a changed file gets a new name.
    FingerprintedAsset,
    /// API responses and anything per-user.
    NoStore,
}

impl CachePolicy {
    /// The `Cache-Control` header value.
    pub fn header_value(self) -> &'static str {
        match self {
            // A VOD playlist is published once (the master last) and never changes but
            // through a rendition re-run, after which the edge is purged (see the docs).
            CachePolicy::ImmutableSegment | CachePolicy::VodPlaylist => {
                "public, max-age=31536000, immutable"
            }
            // Without a known target duration: the shortest useful lifetime.
            CachePolicy::LivePlaylist => "public, max-age=1, stale-while-revalidate=2",
            CachePolicy::WatchPage => "public, max-age=300",
            CachePolicy::FingerprintedAsset => "public, max-age=31536000, immutable",
            CachePolicy::NoStore => "no-store",
        }
    }

    /// The policy for the entry of a playback URL (the part after the token, as
    /// `live/index.m3u8`): `live/…` playlists change with every segment;
    /// other playlists are VOD; everything else is an immutable segment (live segments
    /// are named by a sequence the engine never reuses).
    pub fn for_playback_path(rel: &str) -> Self {
        if rel.starts_with("live/") && rel.ends_with(".m3u8") {
            CachePolicy::LivePlaylist
        } else {
            Self::for_vod_path(rel)
        }
    }

    /// The policy for a file of a published VOD rendition, from its name.
    pub fn for_vod_path(rel: &str) -> Self {
        if rel.ends_with(".m3u8") {
            CachePolicy::VodPlaylist
        } else {
            CachePolicy::ImmutableSegment
        }
    }
}

/// `Cache-Control` of a live media playlist whose `#EXT-X-TARGETDURATION` is `target_s`:
/// fresh for at most half the target duration (a player polls about once per target
/// duration, so an edge never hands out a playlist more than half a segment behind), then
/// served stale for one more target duration while the edge revalidates it in the
/// background, so a flood of players never waits on the origin.
pub fn live_playlist_header(target_s: Option<u64>) -> String {
    match target_s {
        Some(t) if t > 0 => format!("public, max-age={}, stale-while-revalidate={t}", t / 2),
        _ => CachePolicy::LivePlaylist.header_value().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_per_kind() {
        assert_eq!(
            CachePolicy::for_vod_path("720p/seg_00001.ts"),
            CachePolicy::ImmutableSegment
        );
        assert_eq!(
            CachePolicy::for_vod_path("master.m3u8"),
            CachePolicy::VodPlaylist
        );
        assert_eq!(
            CachePolicy::for_playback_path("live/index.m3u8"),
            CachePolicy::LivePlaylist
        );
        assert_eq!(
            CachePolicy::for_playback_path("live/seg/00000007.ts"),
            CachePolicy::ImmutableSegment
        );
        assert_eq!(
            CachePolicy::for_playback_path("master.m3u8"),
            CachePolicy::VodPlaylist
        );
        assert_eq!(
            CachePolicy::ImmutableSegment.header_value(),
            "public, max-age=31536000, immutable"
        );
        assert_eq!(
            CachePolicy::VodPlaylist.header_value(),
            "public, max-age=31536000, immutable"
        );
        assert_eq!(CachePolicy::NoStore.header_value(), "no-store");
        assert_eq!(
            live_playlist_header(Some(6)),
            "public, max-age=3, stale-while-revalidate=6"
        );
        assert_eq!(
            live_playlist_header(Some(1)),
            "public, max-age=0, stale-while-revalidate=1"
        );
        assert_eq!(
            live_playlist_header(None),
            "public, max-age=1, stale-while-revalidate=2"
        );
        assert_eq!(CachePolicy::WatchPage.header_value(), "public, max-age=300");
        assert_eq!(
            CachePolicy::FingerprintedAsset.header_value(),
            "public, max-age=31536000, immutable"
        );
    }
}
