//! Request body limits per route class, checked on the declared `Content-Length` before a
//! handler runs (413 with the contract's JSON error, the body never read).
//!
//! | class | limit |
//! | --- | --- |
//! | ingest (tus, raw, live push) | `uploads.max_size` here; the handlers also bound what they read (tus offsets and lengths, live segments) |
//! | admin (the API) | `gateway.max_api_body_bytes` (and every JSON body is read through a 64 KiB `Limited`) |
//! | ops (health, metrics) | `gateway.max_api_body_bytes` |
//! | playback | `gateway.max_playback_body_bytes` (playback reads no body) |
//!
//! A body sent without a length (chunked) is bounded where it is read: JSON through
//! `Limited`, uploads by their declared upload length and quota, live segments by the
//! stream's limit; the playback routes never read one.

use http::{HeaderMap, StatusCode, header};
use sluice_engine::Config;

use crate::endpoint::RouteClass;
use crate::error::ApiError;

/// The largest body a route of `class` accepts, bytes.
pub fn max_body(config: &Config, class: RouteClass) -> u64 {
    let g = &config.gateway;
    match class {
        RouteClass::Ingest => config.uploads.max_size,
        RouteClass::Admin | RouteClass::Ops => g.max_api_body_bytes,
        RouteClass::Playback => g.max_playback_body_bytes,
    }
}

/// 413 when the declared body is larger than the class allows; 400 for a `Content-Length`
/// that is not one decimal number.
pub fn check_body(config: &Config, class: RouteClass, headers: &HeaderMap) -> Result<(), ApiError> {
    let mut values = headers.get_all(header::CONTENT_LENGTH).iter();
    let Some(v) = values.next() else {
        return Ok(());
    };
    let declared = v
        .to_str()
        .ok()
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|_| values.next().is_none())
        .ok_or_else(|| ApiError::bad_request("Content-Length must be one decimal number"))?;
    let max = max_body(config, class);
    if declared > max {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("request bodies on this route are limited to {max} bytes"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn with_length(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn declared_lengths_are_bounded_per_class() {
        let c = Config::default();
        let api = c.gateway.max_api_body_bytes;
        assert!(check_body(&c, RouteClass::Admin, &HeaderMap::new()).is_ok());
        assert!(check_body(&c, RouteClass::Admin, &with_length(&api.to_string())).is_ok());
        let e =
            check_body(&c, RouteClass::Admin, &with_length(&(api + 1).to_string())).unwrap_err();
        assert_eq!(
            (e.status, e.code),
            (StatusCode::PAYLOAD_TOO_LARGE, "too_large")
        );
        assert!(check_body(&c, RouteClass::Ingest, &with_length(&(api + 1).to_string())).is_ok());
        let e = check_body(&c, RouteClass::Playback, &with_length("4097")).unwrap_err();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
        for bad in ["-1", "1e3", "", "99999999999999999999999"] {
            let e = check_body(&c, RouteClass::Admin, &with_length(bad)).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{bad}");
        }
    }
}
