//! Security headers on every answer (applied by [`crate::observe`], so error answers, CORS
//! preflights and panics get them too). A header a handler already set is kept: the watch
//! page sends its own Content-Security-Policy (it loads its scripts and media from its own
//! origin), which must not be replaced by the strict default.
//!
//! - `X-Content-Type-Options: nosniff` everywhere.
//! - `Referrer-Policy: no-referrer` everywhere: playback URLs carry their token in the
//!   path, and a page must never hand it to another site.
//! - `Content-Security-Policy: default-src 'none'; frame-ancestors 'none'` on HTML answers
//!   that bring none of their own.
//! - `Strict-Transport-Security: max-age=N` on answers sent over TLS
//!   (`gateway.hsts_max_age_s`, 0 for none).

use http::{HeaderValue, Response, header};

/// The Content-Security-Policy of an HTML answer that sets none itself.
pub const DEFAULT_HTML_CSP: &str = "default-src 'none'; frame-ancestors 'none'";

pub fn apply<B>(res: &mut Response<B>, hsts: Option<HeaderValue>) {
    let h = res.headers_mut();
    h.entry(header::X_CONTENT_TYPE_OPTIONS)
        .or_insert(HeaderValue::from_static("nosniff"));
    h.entry(header::REFERRER_POLICY)
        .or_insert(HeaderValue::from_static("no-referrer"));
    let html = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("text/html"));
    if html {
        h.entry(header::CONTENT_SECURITY_POLICY)
            .or_insert(HeaderValue::from_static(DEFAULT_HTML_CSP));
    }
    if let Some(v) = hsts {
        h.insert(header::STRICT_TRANSPORT_SECURITY, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_gets_a_csp_unless_it_has_one_and_hsts_only_when_given() {
        let mut res = Response::new(());
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        apply(&mut res, None);
        assert_eq!(
            res.headers()[header::CONTENT_SECURITY_POLICY],
            DEFAULT_HTML_CSP
        );
        assert_eq!(res.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert!(
            !res.headers()
                .contains_key(header::STRICT_TRANSPORT_SECURITY)
        );

        let mut res = Response::new(());
        res.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
        res.headers_mut().insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("script-src 'self'"),
        );
        apply(&mut res, Some(HeaderValue::from_static("max-age=5")));
        assert_eq!(
            res.headers()[header::CONTENT_SECURITY_POLICY],
            "script-src 'self'"
        );
        assert_eq!(
            res.headers()[header::STRICT_TRANSPORT_SECURITY],
            "max-age=5"
        );

        let mut res = Response::new(());
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        apply(&mut res, None);
        assert!(!res.headers().contains_key(header::CONTENT_SECURITY_POLICY));
        assert_eq!(res.headers()[header::REFERRER_POLICY], "no-referrer");
    }
}
