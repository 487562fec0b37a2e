//! HLS for viewers on playback URLs (their shape: [`crate::paths`]). No headers needed; the
//! token in the path is checked without touching the database, then the object comes from
//! the playback cache ([`crate::cache`]; loaded from the store once) or, when too large to
//! keep, is streamed from the store. Every answer carries what players and CDNs rely on:
//! the content type, the cache policy of its kind, a strong ETag per representation,
//! `Last-Modified`, single byte ranges (206/416), conditional requests (304), and gzip or
//! brotli for playlists when the client accepts them (`Vary: Accept-Encoding`).

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use sluice_cdn::CachePolicy;

use sluice_storage::ObjectInfo;

use crate::body::{Body, empty, full, stream};
use crate::cache::{Found, Object};
use crate::error::ApiError;
use crate::{ApiResult, App};

/// Content type from the file name.
pub fn content_type(rel: &str) -> &'static str {
    match rel.rsplit_once('.').map(|(_, e)| e) {
        Some("m3u8") => "application/vnd.apple.mpegurl",
        Some("ts") => "video/mp2t",
        Some("m4s") => "video/iso.segment",
        Some("mp4") => "video/mp4",
        Some("aac") => "audio/aac",
        Some("jpg") | Some("jpeg") => "image/jpeg",
        Some("vtt") => "text/vtt",
        Some("html") => "text/html; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// A parsed single byte range, resolved against the object size.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeReq {
    Full,
    Partial(u64, u64), // inclusive start, exclusive end
    Unsatisfiable,
}

/// Parse a `Range` header (one range; several ranges are answered with the whole object,
/// which RFC 9110 allows).
pub fn parse_range(value: Option<&str>, size: u64) -> RangeReq {
    let Some(v) = value else {
        return RangeReq::Full;
    };
    let Some(spec) = v.trim().strip_prefix("bytes=") else {
        return RangeReq::Full;
    };
    if spec.contains(',') {
        return RangeReq::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeReq::Unsatisfiable;
    };
    // Digits only; a number past u64 (a client asking for "everything") saturates, so
    // that no arithmetic below can overflow either.
    let num = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse().unwrap_or(u64::MAX))
    };
    match (a.trim(), b.trim()) {
        ("", suffix) => match num(suffix) {
            Some(0) | None => RangeReq::Unsatisfiable,
            Some(n) => RangeReq::Partial(size.saturating_sub(n), size),
        },
        (start, "") => match num(start) {
            Some(s) if s < size => RangeReq::Partial(s, size),
            _ => RangeReq::Unsatisfiable,
        },
        (start, end) => match (num(start), num(end)) {
            (Some(s), Some(e)) if s <= e && s < size => {
                RangeReq::Partial(s, e.saturating_add(1).min(size))
            }
            _ => RangeReq::Unsatisfiable,
        },
    }
}

/// The representation a client asked for through `Accept-Encoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Identity,
    Gzip,
    Br,
}

/// Pick a content coding from `Accept-Encoding` among the variants that exist: brotli
/// over gzip over identity; a coding with `q=0` is refused (RFC 9110 §12.5.3).
pub fn negotiate(accept: Option<&str>, has_gzip: bool, has_br: bool) -> Coding {
    let Some(accept) = accept else {
        return Coding::Identity;
    };
    let (mut gzip, mut br) = (false, false);
    for item in accept.split(',').take(16) {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or("").trim();
        let refused = parts.any(|p| {
            let p = p.trim();
            p.strip_prefix("q=")
                .or_else(|| p.strip_prefix("Q="))
                .is_some_and(|q| q.trim().parse::<f32>().map_or(true, |q| q <= 0.0))
        });
        if refused {
            continue;
        }
        if name.eq_ignore_ascii_case("br") {
            br = true;
        } else if name.eq_ignore_ascii_case("gzip") || name.eq_ignore_ascii_case("x-gzip") {
            gzip = true;
        }
    }
    if br && has_br {
        Coding::Br
    } else if gzip && has_gzip {
        Coding::Gzip
    } else {
        Coding::Identity
    }
}

/// The strong ETag of a representation: each coding is its own representation.
pub fn representation_etag(etag: &str, coding: Coding) -> String {
    match coding {
        Coding::Identity => etag.to_string(),
        Coding::Gzip => format!("{}-gz\"", etag.trim_end_matches('"')),
        Coding::Br => format!("{}-br\"", etag.trim_end_matches('"')),
    }
}

/// Whether the request's validators say the client's copy is current: `If-None-Match`
/// (weak comparison, as RFC 9110 §13.1.2 says) or, only without it, `If-Modified-Since`.
pub fn not_modified(
    headers: &http::HeaderMap,
    etag: Option<&str>,
    last_modified: std::time::SystemTime,
) -> bool {
    if let Some(inm) = headers.get(header::IF_NONE_MATCH) {
        let inm = inm.to_str().unwrap_or("");
        let Some(tag) = etag else {
            return false;
        };
        let opaque = |t: &str| t.trim().trim_start_matches("W/").to_string();
        return inm.trim() == "*" || inm.split(',').take(64).any(|t| opaque(t) == opaque(tag));
    }
    let Some(since) = headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
    else {
        return false;
    };
    // HTTP dates have whole seconds.
    let secs = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    };
    secs(last_modified) <= secs(since)
}

/// Headers every playback answer carries, 200, 206 and 304 alike.
fn describe(
    res: &mut Response<Body>,
    rel: &str,
    cache_control: HeaderValue,
    etag: Option<HeaderValue>,
    last_modified: Option<HeaderValue>,
) {
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(rel)),
    );
    h.insert(header::CACHE_CONTROL, cache_control);
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some(e) = etag {
        h.insert(header::ETAG, e);
    }
    if let Some(lm) = last_modified {
        h.insert(header::LAST_MODIFIED, lm);
    }
    if crate::cache::compressible(rel) {
        h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
}

/// 416 with the object's size, as RFC 9110 §15.5.17 asks.
fn unsatisfiable(size: u64) -> Response<Body> {
    let mut r = ApiError::new(
        StatusCode::RANGE_NOT_SATISFIABLE,
        "range_not_satisfiable",
        format!("the object has {size} bytes"),
    )
    .into_response();
    r.headers_mut().insert(
        header::CONTENT_RANGE,
        HeaderValue::from_str(&format!("bytes */{size}"))
            .unwrap_or(HeaderValue::from_static("bytes */0")),
    );
    r
}

/// The range a request asks for, or None when it has no `Range` or an `If-Range` that no
/// longer matches (then the whole object is the answer).
fn requested_range<'a>(headers: &'a http::HeaderMap, etag: Option<&str>) -> Option<&'a str> {
    let range = headers.get(header::RANGE)?.to_str().ok()?;
    if let Some(if_range) = headers.get(header::IF_RANGE) {
        let current = if_range
            .to_str()
            .ok()
            .zip(etag)
            .is_some_and(|(a, b)| a.trim() == b);
        if !current {
            return None;
        }
    }
    Some(range)
}

pub async fn serve<B>(
    app: &App,
    tenant: &str,
    asset: &str,
    token: &str,
    rel: &str,
    req: &Request<B>,
) -> ApiResult {
    let client = crate::client_ip::client_ip(req, &app.engine.config().gateway.trusted_proxies);
    let key = app
        .engine
        .resolve_playback(tenant, asset, token, rel, client)?;
    if rel.ends_with(".m3u8") {
        // Lifecycle's "since last view": at most one write per asset per minute.
        app.engine.note_view(tenant, asset);
    }
    serve_object(app, tenant, asset, &key, rel, req).await
}

/// Serve the playback object at storage `key` of the tenant's asset, whose entry name is
/// `rel`, from the asset's readable copy (restored → active → draining; an archived asset
/// answers 409 `archived`). Copies are byte-identical, so the cache is keyed by `key`.
pub async fn serve_object<B>(
    app: &App,
    tenant: &str,
    asset: &str,
    key: &str,
    rel: &str,
    req: &Request<B>,
) -> ApiResult {
    let readable = app.engine.readable(tenant, asset).await?;
    // Viewers wait seconds at most for a store that is down (its breaker answers 503).
    let storage = &readable.storage.interactive();
    let policy = CachePolicy::for_playback_path(rel);
    match app.cache.get(storage, key, policy).await? {
        Found::Memory(obj) => Ok(from_memory(&obj, rel, req)),
        Found::Stream(info) => from_store(app, storage, key, rel, &info, policy, req).await,
    }
}

/// Answer from a cached object: no storage access, the body shared without a copy.
fn from_memory<B>(obj: &Object, rel: &str, req: &Request<B>) -> Response<Body> {
    let headers = req.headers();
    let head = req.method() == Method::HEAD;
    let range = requested_range(headers, obj.etag.as_deref());
    // Ranges address the identity representation only.
    let coding = if range.is_some() {
        Coding::Identity
    } else {
        negotiate(
            headers
                .get(header::ACCEPT_ENCODING)
                .and_then(|v| v.to_str().ok()),
            obj.gzip.is_some(),
            obj.br.is_some(),
        )
    };
    // The identity representation's header was made when the object was cached.
    let etag: Option<std::borrow::Cow<'_, str>> = match coding {
        Coding::Identity => obj.etag.as_deref().map(Into::into),
        other => obj
            .etag
            .as_deref()
            .map(|e| representation_etag(e, other).into()),
    };
    let etag_header = match coding {
        Coding::Identity => obj.etag_header.clone(),
        _ => etag.as_deref().and_then(|t| HeaderValue::from_str(t).ok()),
    };
    let etag = etag.as_deref();
    let mut res = Response::new(empty());
    describe(
        &mut res,
        rel,
        obj.cache_control.clone(),
        etag_header,
        obj.last_modified_header.clone(),
    );
    if not_modified(headers, etag, obj.info.last_modified) {
        *res.status_mut() = StatusCode::NOT_MODIFIED;
        return res;
    }
    let body = match coding {
        Coding::Identity => obj.body.clone(),
        Coding::Gzip => obj.gzip.clone().unwrap_or_default(),
        Coding::Br => obj.br.clone().unwrap_or_default(),
    };
    if coding != Coding::Identity {
        res.headers_mut().insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_static(if coding == Coding::Br { "br" } else { "gzip" }),
        );
    }
    let size = body.len() as u64;
    let body = match parse_range(range, size) {
        RangeReq::Full => body,
        RangeReq::Partial(s, e) => {
            *res.status_mut() = StatusCode::PARTIAL_CONTENT;
            content_range(&mut res, s, e, size);
            // s < e <= size, all within the body.
            body.slice(s as usize..e as usize)
        }
        RangeReq::Unsatisfiable => return unsatisfiable(size),
    };
    res.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len() as u64));
    if !head {
        *res.body_mut() = full(body);
    }
    res
}

fn content_range(res: &mut Response<Body>, start: u64, end: u64, size: u64) {
    if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{size}", end - 1)) {
        res.headers_mut().insert(header::CONTENT_RANGE, v);
    }
}

/// Answer an object too large to keep in memory by streaming it from the store.
async fn from_store<B>(
    app: &App,
    storage: &sluice_storage::Storage,
    key: &str,
    rel: &str,
    known: &ObjectInfo,
    policy: CachePolicy,
    req: &Request<B>,
) -> ApiResult {
    let headers = req.headers();
    let head = req.method() == Method::HEAD;
    let known_etag = known
        .etag
        .as_ref()
        .map(|e| format!("\"{}\"", e.trim_matches('"')));
    let range = requested_range(headers, known_etag.as_deref());
    let cache_control = HeaderValue::from_static(policy.header_value());
    let mut res = Response::new(empty());
    describe(
        &mut res,
        rel,
        cache_control,
        known_etag
            .as_deref()
            .and_then(|t| HeaderValue::from_str(t).ok()),
        crate::cache::http_date(known.last_modified),
    );
    if not_modified(headers, known_etag.as_deref(), known.last_modified) {
        *res.status_mut() = StatusCode::NOT_MODIFIED;
        return Ok(res);
    }
    let span = match parse_range(range, known.size) {
        RangeReq::Full => None,
        RangeReq::Partial(s, e) => Some((s, e)),
        RangeReq::Unsatisfiable => return Ok(unsatisfiable(known.size)),
    };
    let len = span.map_or(known.size, |(s, e)| e - s);
    if let Some((s, e)) = span {
        *res.status_mut() = StatusCode::PARTIAL_CONTENT;
        content_range(&mut res, s, e, known.size);
    }
    res.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if head {
        return Ok(res);
    }
    let (info, body) = storage.get_stream(key, span.map(|(s, e)| s..e)).await?;
    if info.size != known.size {
        // Replaced since its metadata was cached: the headers above would lie.
        app.cache.invalidate(key).await;
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "object_changed",
            "the object changed while it was being served; try again",
        ));
    }
    *res.body_mut() = stream(body);
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range(None, 10), RangeReq::Full);
        assert_eq!(parse_range(Some("bytes=0-4"), 10), RangeReq::Partial(0, 5));
        assert_eq!(parse_range(Some("bytes=5-"), 10), RangeReq::Partial(5, 10));
        assert_eq!(parse_range(Some("bytes=-3"), 10), RangeReq::Partial(7, 10));
        assert_eq!(parse_range(Some("bytes=-30"), 10), RangeReq::Partial(0, 10));
        assert_eq!(
            parse_range(Some("bytes=8-100"), 10),
            RangeReq::Partial(8, 10)
        );
        assert_eq!(parse_range(Some("bytes=10-"), 10), RangeReq::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=5-2"), 10), RangeReq::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=x-2"), 10), RangeReq::Unsatisfiable);
        // Huge last positions (u64::MAX and past it) mean "to the end", never an overflow.
        assert_eq!(
            parse_range(Some("bytes=0-18446744073709551615"), 10),
            RangeReq::Partial(0, 10)
        );
        assert_eq!(
            parse_range(Some("bytes=3-99999999999999999999999"), 10),
            RangeReq::Partial(3, 10)
        );
        assert_eq!(
            parse_range(Some("bytes=-99999999999999999999999"), 10),
            RangeReq::Partial(0, 10)
        );
        assert_eq!(
            parse_range(Some("bytes=99999999999999999999999-"), 10),
            RangeReq::Unsatisfiable
        );
        assert_eq!(parse_range(Some("bytes=-0"), 10), RangeReq::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-1,4-5"), 10), RangeReq::Full);
        assert_eq!(parse_range(Some("items=0-1"), 10), RangeReq::Full);
    }

    #[test]
    fn content_coding_negotiation() {
        use Coding::*;
        assert_eq!(negotiate(None, true, true), Identity);
        assert_eq!(negotiate(Some("gzip, deflate, br"), true, true), Br);
        assert_eq!(negotiate(Some("gzip, deflate, br"), true, false), Gzip);
        assert_eq!(negotiate(Some("br;q=0, gzip"), true, true), Gzip);
        assert_eq!(negotiate(Some("BR;Q=0.5"), true, true), Br);
        assert_eq!(negotiate(Some("gzip;q=0"), true, true), Identity);
        assert_eq!(negotiate(Some("gzip;q=nonsense"), true, true), Identity);
        assert_eq!(negotiate(Some("identity"), true, true), Identity);
        assert_eq!(negotiate(Some("*"), true, true), Identity);
        assert_eq!(negotiate(Some("x-gzip"), true, true), Gzip);
        assert_eq!(negotiate(Some(""), true, true), Identity);
    }

    #[test]
    fn each_coding_has_its_own_etag() {
        assert_eq!(representation_etag("\"abc\"", Coding::Identity), "\"abc\"");
        assert_eq!(representation_etag("\"abc\"", Coding::Gzip), "\"abc-gz\"");
        assert_eq!(representation_etag("\"abc\"", Coding::Br), "\"abc-br\"");
    }

    #[test]
    fn conditional_requests() {
        use std::time::{Duration, UNIX_EPOCH};
        let lm = UNIX_EPOCH + Duration::from_millis(1_700_000_000_500);
        let with = |pairs: &[(header::HeaderName, &str)]| {
            let mut h = http::HeaderMap::new();
            for (k, v) in pairs {
                h.insert(k.clone(), HeaderValue::from_str(v).unwrap());
            }
            h
        };
        let tag = Some("\"abc\"");
        assert!(!not_modified(&with(&[]), tag, lm));
        assert!(not_modified(
            &with(&[(header::IF_NONE_MATCH, "\"abc\"")]),
            tag,
            lm
        ));
        assert!(not_modified(
            &with(&[(header::IF_NONE_MATCH, "W/\"abc\"")]),
            tag,
            lm
        ));
        assert!(not_modified(
            &with(&[(header::IF_NONE_MATCH, "\"x\", \"abc\"")]),
            tag,
            lm
        ));
        assert!(not_modified(
            &with(&[(header::IF_NONE_MATCH, "*")]),
            tag,
            lm
        ));
        assert!(!not_modified(
            &with(&[(header::IF_NONE_MATCH, "\"abd\"")]),
            tag,
            lm
        ));
        assert!(!not_modified(
            &with(&[(header::IF_NONE_MATCH, "\"abc\"")]),
            None,
            lm
        ));
        // If-Modified-Since, at second resolution, only without If-None-Match.
        let date = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        assert!(not_modified(
            &with(&[(header::IF_MODIFIED_SINCE, &date)]),
            tag,
            lm
        ));
        let before = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(1_699_999_999));
        assert!(!not_modified(
            &with(&[(header::IF_MODIFIED_SINCE, &before)]),
            tag,
            lm
        ));
        assert!(!not_modified(
            &with(&[(header::IF_MODIFIED_SINCE, "yesterday")]),
            tag,
            lm
        ));
        assert!(!not_modified(
            &with(&[
                (header::IF_NONE_MATCH, "\"other\""),
                (header::IF_MODIFIED_SINCE, &date)
            ]),
            tag,
            lm
        ));
    }

    #[test]
    fn if_range_that_no_longer_matches_asks_for_everything() {
        let mut h = http::HeaderMap::new();
        h.insert(header::RANGE, HeaderValue::from_static("bytes=0-1"));
        assert_eq!(requested_range(&h, Some("\"a\"")), Some("bytes=0-1"));
        h.insert(header::IF_RANGE, HeaderValue::from_static("\"a\""));
        assert_eq!(requested_range(&h, Some("\"a\"")), Some("bytes=0-1"));
        h.insert(header::IF_RANGE, HeaderValue::from_static("\"b\""));
        assert_eq!(requested_range(&h, Some("\"a\"")), None);
    }

    #[test]
    fn content_types() {
        assert_eq!(content_type("master.m3u8"), "application/vnd.apple.mpegurl");
        assert_eq!(content_type("720p/seg_00000.ts"), "video/mp2t");
        assert_eq!(content_type("noext"), "application/octet-stream");
        assert_eq!(content_type("720p/seg_00001.m4s"), "video/iso.segment");
        assert_eq!(content_type("init.mp4"), "video/mp4");
        assert_eq!(content_type("poster.jpg"), "image/jpeg");
        assert_eq!(content_type("storyboard.vtt"), "text/vtt");
        assert_eq!(content_type("watch.html"), "text/html; charset=utf-8");
    }
}
