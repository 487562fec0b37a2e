//! HLS for viewers on playback URLs (their shape: [`crate::paths`]). No headers needed; the
//! token in the path is checked without touching the database, then the object is
//! streamed from the hot tier with the cache policy of its kind, an ETag and Range support.

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use sluice_cdn::CachePolicy;

use crate::body::{Body, empty, stream};
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
    let storage = &app.storage;
    let head = req.method() == Method::HEAD;
    let range_header = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok());
    // The common case — a whole-object GET — opens the object once: the stream carries its
    // metadata. HEAD and ranged requests need the size first.
    let (info, whole) = if head || range_header.is_some() {
        (storage.head(&key).await?, None)
    } else {
        let (info, s) = storage.get_stream(&key, None).await?;
        (info, Some(s))
    };
    let etag = info
        .etag
        .as_ref()
        .map(|e| format!("\"{}\"", e.trim_matches('"')));

    let mut res = Response::new(empty());
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(rel)),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(CachePolicy::for_playback_path(rel).header_value()),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some(e) = etag.as_ref().and_then(|e| HeaderValue::from_str(e).ok()) {
        h.insert(header::ETAG, e);
    }

    if let (Some(tag), Some(inm)) = (&etag, req.headers().get(header::IF_NONE_MATCH)) {
        let inm = inm.to_str().unwrap_or("");
        if inm.trim() == "*" || inm.split(',').any(|t| t.trim() == tag) {
            *res.status_mut() = StatusCode::NOT_MODIFIED;
            return Ok(res);
        }
    }

    let (status, span) = match parse_range(range_header, info.size) {
        RangeReq::Full => (StatusCode::OK, None),
        RangeReq::Partial(s, e) => (StatusCode::PARTIAL_CONTENT, Some((s, e))),
        RangeReq::Unsatisfiable => {
            let mut r = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range_not_satisfiable",
                format!("the object has {} bytes", info.size),
            )
            .into_response();
            r.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{}", info.size))
                    .unwrap_or(HeaderValue::from_static("bytes */0")),
            );
            return Ok(r);
        }
    };
    *res.status_mut() = status;
    let len = span.map(|(s, e)| e - s).unwrap_or(info.size);
    res.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if let Some((s, e)) = span
        && let Ok(v) = HeaderValue::from_str(&format!("bytes {s}-{}/{}", e - 1, info.size))
    {
        res.headers_mut().insert(header::CONTENT_RANGE, v);
    }
    if head {
        return Ok(res);
    }
    let body: Body = match (whole, span) {
        (Some(s), None) => stream(s),
        (_, span) => stream(storage.get_stream(&key, span.map(|(s, e)| s..e)).await?.1),
    };
    let (parts, _) = res.into_parts();
    Ok(Response::from_parts(parts, body))
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
    fn content_types() {
        assert_eq!(content_type("master.m3u8"), "application/vnd.apple.mpegurl");
        assert_eq!(content_type("720p/seg_00000.ts"), "video/mp2t");
        assert_eq!(content_type("noext"), "application/octet-stream");
    }
}
