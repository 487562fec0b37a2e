//! Every URL path Sluice hands out, written and read back in one place.
//!
//! The engine grants rights ([`PlaybackGrant`], [`IngestGrant`]) and names uploads and
//! assets; only this module decides what their paths look like, and the router
//! ([`crate::endpoint`]) reads requests back with the parsers here. A path that is rendered
//! here therefore always routes, and changing a shape is one edit.
//!
//! - Playback: `/v1/play/{tenant}/{asset}/{token}/{entry…}`. The token is a path segment so
//!   that every relative URI inside a playlist (`720p/index.m3u8`, `seg_00001.ts`) inherits
//!   it: a player needs no headers and no query string, and a caching edge keys on the plain
//!   path. The entry may have several segments (`720p/seg_00001.ts`, `live/index.m3u8`).
//! - Watch page: beside the playlist it plays, under the same token:
//!   `/v1/play/{tenant}/{asset}/{token}/{dir/}{name}.watch.html` plays `{dir/}{name}.m3u8`
//!   (`master.watch.html`, `live/index.watch.html`). The page names everything it loads
//!   with relative URLs (the playlist, `poster.jpg`, the player's scripts at the root of the
//!   prefix), so it works unchanged through a proxy or edge that forwards paths as they are.
//!   The player's own files are `{name}.{hash}.js|css` at the root of the prefix
//!   ([`PlayEntry::PlayerFile`]); no published object ends in `.html`, `.js` or `.css`.
//! - Live ingest: `/v1/live/{stream}/ingest/{token}/{file…}`. Handed out as the directory
//!   (ending in `/`); the encoder appends its playlist and segment names.
//! - tus uploads: `/v1/uploads/{id}`; raw uploads answer `Location: /v1/assets/{id}`.
//!
//! Parsing follows the router's reading of a path: slashes at both ends are ignored and the
//! segments are not percent-decoded. Parsers borrow from the path: the playback parse runs
//! for every segment a viewer fetches and allocates nothing.

use sluice_engine::{IngestGrant, PlaybackGrant};

/// A playback request's path, as the router reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlaybackPath<'a> {
    pub tenant: &'a str,
    pub asset: &'a str,
    pub token: &'a str,
    /// The rest of the path, slashes included (`720p/seg_00001.ts`); never empty.
    pub entry: &'a str,
}

/// What the entry of a playback path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlayEntry<'a> {
    /// A published object: playlist, segment, picture, storyboard.
    Object,
    /// The watch page of the playlist `{playlist_stem}.m3u8` (the stem keeps its directory).
    WatchPage { playlist_stem: &'a str },
    /// One of the player's own files (script, style sheet), by its name at the root.
    PlayerFile(&'a str),
}

/// The suffix that turns a playlist's stem into its watch page.
const WATCH_SUFFIX: &str = ".watch.html";

/// Classify the entry of a playback path (already split off by [`parse_playback`]).
pub fn play_entry(entry: &str) -> PlayEntry<'_> {
    if let Some(stem) = entry.strip_suffix(WATCH_SUFFIX) {
        return PlayEntry::WatchPage {
            playlist_stem: stem,
        };
    }
    if !entry.contains('/') && (entry.ends_with(".js") || entry.ends_with(".css")) {
        return PlayEntry::PlayerFile(entry);
    }
    PlayEntry::Object
}

/// The path of the watch page that plays a grant's playlist.
pub fn watch(g: &PlaybackGrant) -> String {
    let stem = g.entry.strip_suffix(".m3u8").unwrap_or(&g.entry);
    format!(
        "/v1/play/{}/{}/{}/{stem}{WATCH_SUFFIX}",
        g.tenant, g.asset, g.token
    )
}

/// The relative URL from an entry's directory back to the root of the playback prefix
/// (`""` for `master.watch.html`, `"../"` for `live/index.watch.html`).
pub fn up_to_root(entry: &str) -> String {
    "../".repeat(entry.matches('/').count())
}

/// A live ingest request's path, as the router reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngestPath<'a> {
    pub stream: &'a str,
    pub token: &'a str,
    /// The rest of the path, slashes included; never empty. The engine judges the name.
    pub file: &'a str,
}

/// The path of a playback URL (no scheme or host: the caller knows its public base URL).
pub fn playback(g: &PlaybackGrant) -> String {
    format!("/v1/play/{}/{}/{}/{}", g.tenant, g.asset, g.token, g.entry)
}

/// The prefix every playback path of one asset starts with, whatever its token:
/// `/v1/play/{tenant}/{asset}/` (a CDN policy's resource, a cookie's path).
pub fn playback_prefix(tenant: &str, asset: &str) -> String {
    format!("/v1/play/{tenant}/{asset}/")
}

/// The path of a live stream's ingest URL: a directory, ending in `/`.
pub fn ingest(g: &IngestGrant) -> String {
    format!("/v1/live/{}/ingest/{}/", g.stream, g.token)
}

/// The path of a tus upload (its `Location`, and what `Upload-Concat: final;…` names).
pub fn upload(id: &str) -> String {
    format!("/v1/uploads/{id}")
}

/// The path of an asset (the `Location` of a raw upload).
pub fn asset(id: &str) -> String {
    format!("/v1/assets/{id}")
}

/// Read a playback path: `v1/play/` then tenant, asset, token and a non-empty entry.
pub fn parse_playback(path: &str) -> Option<PlaybackPath<'_>> {
    let rest = path.trim_matches('/').strip_prefix("v1/play/")?;
    let mut parts = rest.splitn(4, '/');
    let (tenant, asset, token) = (parts.next()?, parts.next()?, parts.next()?);
    let entry = parts.next().filter(|e| !e.is_empty())?;
    Some(PlaybackPath {
        tenant,
        asset,
        token,
        entry,
    })
}

/// Read a live ingest path: `v1/live/{stream}/ingest/{token}/` and a non-empty file name.
pub fn parse_ingest(path: &str) -> Option<IngestPath<'_>> {
    let rest = path.trim_matches('/').strip_prefix("v1/live/")?;
    let mut parts = rest.splitn(4, '/');
    let stream = parts.next()?;
    if parts.next()? != "ingest" {
        return None;
    }
    let token = parts.next()?;
    let file = parts.next().filter(|f| !f.is_empty())?;
    Some(IngestPath {
        stream,
        token,
        file,
    })
}

/// The upload id in an upload URL (absolute or a path), as a final upload names partials.
pub fn upload_id_of(url: &str) -> Option<&str> {
    let path = url.split(['?', '#']).next().unwrap_or("");
    let (_, id) = path.rsplit_once("/v1/uploads/")?;
    let id = id.strip_suffix('/').unwrap_or(id);
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric())).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(entry: &str) -> PlaybackGrant {
        PlaybackGrant {
            tenant: "01TEN".into(),
            asset: "01ASSET".into(),
            token: "k1.1700000000._.AbC_d-9".into(),
            entry: entry.into(),
            expires: 1_700_000_000,
            client: None,
        }
    }

    #[test]
    fn playback_renders_and_parses_back() {
        let g = grant("master.m3u8");
        let path = playback(&g);
        assert_eq!(
            path,
            "/v1/play/01TEN/01ASSET/k1.1700000000._.AbC_d-9/master.m3u8"
        );
        assert_eq!(
            parse_playback(&path),
            Some(PlaybackPath {
                tenant: "01TEN",
                asset: "01ASSET",
                token: "k1.1700000000._.AbC_d-9",
                entry: "master.m3u8",
            })
        );
        assert!(path.starts_with(&playback_prefix("01TEN", "01ASSET")));
        // Relative URIs inside the playlist resolve under the same token.
        let seg = "/v1/play/01TEN/01ASSET/k1.1700000000._.AbC_d-9/live/720p/seg_00001.ts";
        assert_eq!(parse_playback(seg).unwrap().entry, "live/720p/seg_00001.ts");
        assert_eq!(
            parse_playback(&playback(&grant("live/index.m3u8")))
                .unwrap()
                .entry,
            "live/index.m3u8"
        );
    }

    #[test]
    fn watch_pages_sit_beside_their_playlists() {
        let path = watch(&grant("master.m3u8"));
        assert_eq!(
            path,
            "/v1/play/01TEN/01ASSET/k1.1700000000._.AbC_d-9/master.watch.html"
        );
        let p = parse_playback(&path).unwrap();
        assert_eq!(p.token, "k1.1700000000._.AbC_d-9");
        assert_eq!(
            play_entry(p.entry),
            PlayEntry::WatchPage {
                playlist_stem: "master"
            }
        );
        assert_eq!(up_to_root(p.entry), "");
        let live = watch(&grant("live/index.m3u8"));
        assert!(live.ends_with("/k1.1700000000._.AbC_d-9/live/index.watch.html"));
        let entry = parse_playback(&live).unwrap().entry;
        assert_eq!(
            play_entry(entry),
            PlayEntry::WatchPage {
                playlist_stem: "live/index"
            }
        );
        assert_eq!(up_to_root(entry), "../");
        // The stem keeps its dots; only the suffix is taken off.
        assert_eq!(
            play_entry("live/cam.v2.watch.html"),
            PlayEntry::WatchPage {
                playlist_stem: "live/cam.v2"
            }
        );
    }

    #[test]
    fn player_files_and_objects() {
        assert_eq!(
            play_entry("hls.0123456789ab.js"),
            PlayEntry::PlayerFile("hls.0123456789ab.js")
        );
        assert_eq!(
            play_entry("watch.0123456789ab.css"),
            PlayEntry::PlayerFile("watch.0123456789ab.css")
        );
        // Player files live at the root only; deeper, a name is an object like any other.
        assert_eq!(play_entry("live/hls.0123456789ab.js"), PlayEntry::Object);
        for object in [
            "master.m3u8",
            "720p/seg_00001.ts",
            "poster.jpg",
            "storyboard.vtt",
            "live/index.m3u8",
            "watch.html.ts",
        ] {
            assert_eq!(play_entry(object), PlayEntry::Object, "{object}");
        }
    }

    #[test]
    fn playback_parse_reads_like_the_router() {
        // Slashes at the ends are ignored; empty segments inside are kept as they are.
        let p = parse_playback("//v1/play/t/a/k//x.ts/").unwrap();
        assert_eq!(
            (p.tenant, p.asset, p.token, p.entry),
            ("t", "a", "k", "/x.ts")
        );
        let p = parse_playback("/v1/play//a/k/x.ts").unwrap();
        assert_eq!((p.tenant, p.entry), ("", "x.ts"));
        // Not percent-decoded.
        assert_eq!(
            parse_playback("/v1/play/t/a/k/a%2Fb").unwrap().entry,
            "a%2Fb"
        );
        for no in [
            "/v1/play",
            "/v1/play/t/a/k",
            "/v1/play/t/a/k/",
            "/v1/play/t/a",
            "/v1/playx/t/a/k/e",
            "/v2/play/t/a/k/e",
            "/play/t/a/k/e",
        ] {
            assert_eq!(parse_playback(no), None, "{no}");
        }
    }

    #[test]
    fn ingest_renders_a_directory_and_parses_files_under_it() {
        let g = IngestGrant {
            stream: "01STREAM".into(),
            token: "s3cret".into(),
        };
        let dir = ingest(&g);
        assert_eq!(dir, "/v1/live/01STREAM/ingest/s3cret/");
        let file = format!("{dir}stream_0.m3u8");
        let p = parse_ingest(&file).unwrap();
        assert_eq!(
            p,
            IngestPath {
                stream: "01STREAM",
                token: "s3cret",
                file: "stream_0.m3u8",
            }
        );
        assert_eq!(
            parse_ingest(&format!("{dir}a/b.ts")).unwrap().file,
            "a/b.ts"
        );
        assert_eq!(parse_ingest(&dir), None);
        for no in [
            "/v1/live",
            "/v1/live/S",
            "/v1/live/S/ingest",
            "/v1/live/S/ingest/k",
            "/v1/live/S/end/k/f.ts",
            "/v1/lives/S/ingest/k/f.ts",
        ] {
            assert_eq!(parse_ingest(no), None, "{no}");
        }
    }

    #[test]
    fn upload_and_asset_paths() {
        assert_eq!(upload("01ABC"), "/v1/uploads/01ABC");
        assert_eq!(upload_id_of(&upload("01ABC")), Some("01ABC"));
        assert_eq!(asset("01ABC"), "/v1/assets/01ABC");
    }

    #[test]
    fn upload_ids_from_urls() {
        assert_eq!(upload_id_of("http://h:1/v1/uploads/01ABC"), Some("01ABC"));
        assert_eq!(upload_id_of("/v1/uploads/01ABC/"), Some("01ABC"));
        assert_eq!(upload_id_of("https://h/v1/uploads/X1?x=1#f"), Some("X1"));
        assert_eq!(upload_id_of("/v1/uploads/"), None);
        assert_eq!(upload_id_of("/v1/uploads/a/b"), None);
        assert_eq!(upload_id_of("/v1/uploads/../x"), None);
        assert_eq!(upload_id_of("/files/abc"), None);
    }
}
