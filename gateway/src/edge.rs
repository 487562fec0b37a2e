//! What a caching edge in front of the gateway asks of it (the edge `sluice edge nginx`
//! writes; docs/delivery.md).
//!
//! The edge keys its cache on a playback path *without* its token, so that every viewer of
//! a segment shares one cache entry whatever token they hold. It must therefore check each
//! viewer's token itself before answering from its cache: it asks [`verify`] once per
//! token (and client address) and keeps the verdict — a grant no longer than the token
//! lives, a refusal briefly. The gateway stays the one implementation of the token rules
//! (keys, rotation, expiry), so the edge and the origin cannot disagree. Its purge path is
//! guarded by [`admin`] and refetches through [`object`].

use http::{HeaderValue, Request, Response, StatusCode, header};
use sluice_engine::Principal;

use crate::body::empty;
use crate::error::ApiError;
use crate::{ApiResult, App, paths, principal};

/// The header carrying the viewer's request URI on a verification subrequest.
pub const ORIGINAL_URI: &str = "x-original-uri";

/// The longest an edge keeps a grant, seconds: a revoked signing key stops working at the
/// edge within this, even for tokens that have not expired.
pub const GRANT_MAX_AGE_S: u64 = 60;

/// How long an edge keeps a refusal, seconds: long enough to absorb a flood of requests
/// with a bad token, short enough not to matter if the refusal came from a transient fault.
pub const REFUSAL_MAX_AGE_S: u64 = 10;

fn cache_for(res: &mut Response<crate::body::Body>, seconds: u64) {
    if let Ok(v) = HeaderValue::from_str(&format!("max-age={seconds}")) {
        res.headers_mut().insert(header::CACHE_CONTROL, v);
    }
}

/// `GET /v1/edge/verify`: 204 when the playback URL in `X-Original-URI` may be served,
/// cacheable until the token expires (at most [`GRANT_MAX_AGE_S`]); 403 otherwise,
/// cacheable for [`REFUSAL_MAX_AGE_S`].
pub async fn verify<B>(app: &App, req: &Request<B>) -> ApiResult {
    let uri = req
        .headers()
        .get(ORIGINAL_URI)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::bad_request("X-Original-URI is missing or not text"))?;
    let path = uri.split(['?', '#']).next().unwrap_or("");
    // The viewer's address, as the edge reports it in X-Forwarded-For (believed when the
    // edge is one of `gateway.trusted_proxies`), for URLs bound to a network.
    let client = crate::client_ip::client_ip(req, &app.engine.config().gateway.trusted_proxies);
    let checked = paths::parse_playback(path)
        .ok_or_else(|| ApiError::not_found("not a playback URL"))
        .and_then(|p| {
            // The entry must name an object of the asset (no climbing out of it).
            app.engine.playback_object(p.tenant, p.asset, p.entry)?;
            Ok(app
                .engine
                .verify_playback(p.tenant, p.asset, p.token, client)?)
        });
    match checked {
        Ok(claims) => {
            let mut res = crate::status_only(StatusCode::NO_CONTENT);
            let left = claims.expires.saturating_sub(app.engine.now_s());
            cache_for(&mut res, left.min(GRANT_MAX_AGE_S));
            Ok(res)
        }
        Err(e) => {
            // The edge only tells allowed from refused; the code says why to whoever
            // reads the origin's logs and metrics.
            let mut res = ApiError::new(StatusCode::FORBIDDEN, e.code, e.message).into_response();
            cache_for(&mut res, REFUSAL_MAX_AGE_S);
            Ok(res)
        }
    }
}

fn require_admin<B>(req: &Request<B>) -> Result<(), ApiError> {
    match principal(req)? {
        Principal::Admin | Principal::Ops => Ok(()),
        _ => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only the admin key or the ops role may do this",
        )),
    }
}

/// `GET /v1/edge/admin`: 204 for the admin key.
pub async fn admin<B>(_app: &App, req: &Request<B>) -> ApiResult {
    require_admin(req)?;
    let mut res = Response::new(empty());
    *res.status_mut() = StatusCode::NO_CONTENT;
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(res)
}

/// `GET /v1/edge/objects/{tenant}/{asset}/{entry…}` (admin): the object fresh from the
/// store (the gateway's own cache entry is dropped first), with the headers a viewer gets.
pub async fn object<B>(
    app: &App,
    tenant: &str,
    asset: &str,
    entry: &str,
    req: &Request<B>,
) -> ApiResult {
    require_admin(req)?;
    let key = app.engine.playback_object(tenant, asset, entry)?;
    app.cache.invalidate(&key).await;
    crate::playback::serve_object(app, tenant, asset, &key, entry, req).await
}
