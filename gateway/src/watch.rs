//! The watch page: a small player for any playlist a playback URL names, served beside it
//! under the same token (its path: [`crate::paths::watch`]).
//!
//! The page plays with hls.js, offers a quality menu and shows the storyboard over the seek
//! bar. Everything it loads is named relative to the page — the playlist, the poster and
//! storyboard at the asset's root, and the player's own files (hls.js, the page's script
//! and style sheet) at the root of the playback prefix — so it needs no configuration and
//! works unchanged through a caching edge that forwards paths as they are.
//!
//! The player's files are embedded in the binary by `build.rs` (hls.js from npm, installed
//! by `scripts/setup.sh`) and served under names that carry a fingerprint of their bytes,
//! with an immutable cache policy; the page itself names the current fingerprints and is
//! cached briefly. The page's Content-Security-Policy allows scripts from its own origin
//! only (no inline script or style), and media from `blob:` URLs (hls.js feeds the video
//! element through Media Source Extensions, transmuxing in a `blob:` worker).

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use sluice_cdn::CachePolicy;

use crate::body::{empty, full};
use crate::error::ApiError;
use crate::paths::{PlaybackPath, up_to_root};
use crate::{ApiResult, App};

/// The page's Content-Security-Policy.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self'; media-src 'self' blob:; connect-src 'self'; worker-src 'self' blob:; \
    base-uri 'none'; form-action 'none'";

/// The page template: `{{name}}` placeholders filled by [`render`].
const PAGE: &str = include_str!(env!("SLUICE_WATCH_PAGE_PATH"));

/// The poster and the storyboard's WebVTT index, at the root of a published asset (as the
/// transcode's thumbnail branch names them).
const POSTER: &str = "poster.jpg";
const STORYBOARD: &str = "storyboard.vtt";

/// One of the player's own files.
#[derive(Debug)]
pub struct PlayerFile {
    /// The name it is served under: `{stem}.{fingerprint}.{ext}`.
    pub name: &'static str,
    pub content_type: &'static str,
    pub bytes: &'static [u8],
}

/// hls.js, from `gateway/web/node_modules` (or `SLUICE_HLS_JS`).
pub const HLS_JS: PlayerFile = PlayerFile {
    name: env!("SLUICE_WATCH_HLS_NAME"),
    content_type: "text/javascript; charset=utf-8",
    bytes: include_bytes!(env!("SLUICE_WATCH_HLS_PATH")),
};

/// The page's script (`gateway/web/watch.js`).
pub const WATCH_JS: PlayerFile = PlayerFile {
    name: env!("SLUICE_WATCH_JS_NAME"),
    content_type: "text/javascript; charset=utf-8",
    bytes: include_bytes!(env!("SLUICE_WATCH_JS_PATH")),
};

/// The page's style sheet (`gateway/web/watch.css`).
pub const WATCH_CSS: PlayerFile = PlayerFile {
    name: env!("SLUICE_WATCH_CSS_NAME"),
    content_type: "text/css; charset=utf-8",
    bytes: include_bytes!(env!("SLUICE_WATCH_CSS_PATH")),
};

/// The player file served under `name`, if any.
pub fn player_file(name: &str) -> Option<&'static PlayerFile> {
    [&HLS_JS, &WATCH_JS, &WATCH_CSS]
        .into_iter()
        .find(|f| f.name == name)
}

/// The page for the playlist `{playlist_stem}.m3u8`, as seen from `entry` (the page's own
/// path under the token). Both were validated as object paths before this is called, so
/// they hold `[A-Za-z0-9._-/]` only; attribute values are escaped all the same.
pub fn render(entry: &str, playlist_stem: &str) -> String {
    let root = up_to_root(entry);
    let name = playlist_stem.rsplit('/').next().unwrap_or(playlist_stem);
    // A live stream has no pictures until its recording is published as VOD; a VOD page
    // shows the asset's poster and storyboard (absent ones only leave the preview empty).
    let live = entry.starts_with("live/");
    let (poster, storyboard) = if live {
        (String::new(), String::new())
    } else {
        (
            format!(r#" poster="{}""#, attr(&format!("{root}{POSTER}"))),
            format!(
                r#"<track kind="metadata" label="storyboard" src="{}" default>"#,
                attr(&format!("{root}{STORYBOARD}"))
            ),
        )
    };
    PAGE.replace("{{root}}", &attr(&root))
        .replace("{{css}}", WATCH_CSS.name)
        .replace("{{hls}}", HLS_JS.name)
        .replace("{{js}}", WATCH_JS.name)
        .replace("{{src}}", &attr(&format!("{name}.m3u8")))
        .replace("{{poster}}", &poster)
        .replace("{{storyboard}}", &storyboard)
}

/// Escape a value for a double-quoted HTML attribute.
fn attr(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// `GET`/`HEAD` of a watch page: the token and the playlist's path are checked like any
/// playback request's; the playlist itself is not read (a live stream's may not exist yet:
/// the player retries).
pub fn serve_page<B>(
    app: &App,
    path: &PlaybackPath<'_>,
    playlist_stem: &str,
    req: &Request<B>,
) -> ApiResult {
    let playlist = format!("{playlist_stem}.m3u8");
    let client = crate::client_ip::client_ip(req, &app.engine.config().gateway.trusted_proxies);
    app.engine
        .resolve_playback(path.tenant, path.asset, path.token, &playlist, client)?;
    let page = render(path.entry, playlist_stem);
    let mut res = Response::new(empty());
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(CachePolicy::WatchPage.header_value()),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    // The token is in the page's URL: never hand it to another site as a referrer.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(page.len()));
    if req.method() == Method::HEAD {
        return Ok(res);
    }
    let (parts, _) = res.into_parts();
    Ok(Response::from_parts(parts, full(page)))
}

/// `GET`/`HEAD` of a player file: the token is checked like any playback request's, so a
/// playback prefix serves nothing to a viewer without a valid token.
pub fn serve_file<B>(
    app: &App,
    path: &PlaybackPath<'_>,
    name: &str,
    req: &Request<B>,
) -> ApiResult {
    let client = crate::client_ip::client_ip(req, &app.engine.config().gateway.trusted_proxies);
    app.engine
        .verify_playback(path.tenant, path.asset, path.token, client)?;
    let file = player_file(name)
        .ok_or_else(|| ApiError::not_found(format!("no player file named {name}")))?;
    // The name carries the fingerprint, so it is a strong validator as it stands.
    let etag = format!("\"{}\"", file.name);
    let mut res = Response::new(empty());
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(file.content_type),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(CachePolicy::FingerprintedAsset.header_value()),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    let matches = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if matches {
        *res.status_mut() = StatusCode::NOT_MODIFIED;
        return Ok(res);
    }
    res.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(file.bytes.len()));
    if req.method() == Method::HEAD {
        return Ok(res);
    }
    let (parts, _) = res.into_parts();
    Ok(Response::from_parts(parts, full(file.bytes)))
}
