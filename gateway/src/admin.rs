//! Tenant-facing and admin API: tenants, assets, playback URLs, jobs.

use crate::body::ReqBody;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use serde::Deserialize;

use crate::body::{json, stream};
use crate::error::ApiError;
use crate::{ApiResult, App, base_url, principal};

/// Largest JSON request body accepted by the API.
const MAX_JSON: usize = 64 * 1024;

pub(crate) async fn read_json<T: serde::de::DeserializeOwned>(
    req: Request<ReqBody>,
    allow_empty: bool,
) -> Result<Option<T>, ApiError> {
    let body: Bytes = Limited::new(req.into_body(), MAX_JSON)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    format!("JSON bodies are limited to {MAX_JSON} bytes"),
                )
            } else {
                ApiError::bad_request(format!("could not read the request body: {e}"))
            }
        })?
        .to_bytes();
    if body.iter().all(u8::is_ascii_whitespace) {
        return if allow_empty {
            Ok(None)
        } else {
            Err(ApiError::bad_request("a JSON body is required"))
        };
    }
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

pub(crate) fn json_response(
    status: StatusCode,
    value: &impl serde::Serialize,
) -> Response<crate::Body> {
    let mut res = Response::new(json(value));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTenantReq {
    name: String,
    #[serde(default)]
    quotas: sluice_engine::TenantQuotas,
    #[serde(default)]
    rate_limit: Option<sluice_engine::limits::RateLimit>,
}

pub async fn create_tenant(app: &App, req: Request<ReqBody>) -> ApiResult {
    let who = principal(&req)?.clone();
    let body: NewTenantReq = read_json(req, false)
        .await?
        .ok_or_else(|| ApiError::bad_request("a JSON body is required"))?;
    let t = app
        .engine
        .create_tenant_limited(&who, &body.name, body.quotas, body.rate_limit)
        .await?;
    let mut res = json_response(StatusCode::CREATED, &t);
    res.extensions_mut()
        .insert(crate::access::AuditTarget(t.id.clone()));
    Ok(res)
}

/// `PATCH /v1/tenants/{id}` (admin): change quotas and the rate limit.
pub async fn patch_tenant(app: &App, id: &str, req: Request<ReqBody>) -> ApiResult {
    let who = principal(&req)?.clone();
    let patch: sluice_engine::quotas::TenantPatch = read_json(req, false)
        .await?
        .ok_or_else(|| ApiError::bad_request("a JSON body is required"))?;
    let t = app.engine.patch_tenant(&who, id, patch).await?;
    Ok(json_response(StatusCode::OK, &t))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewDeviceReq {
    name: String,
}

/// `POST /v1/devices` → 201 with the device key (shown once).
pub async fn create_device(app: &App, req: Request<ReqBody>) -> ApiResult {
    let who = principal(&req)?.clone();
    let body: NewDeviceReq = read_json(req, false)
        .await?
        .ok_or_else(|| ApiError::bad_request("a JSON body is required"))?;
    let d = app.engine.create_device(&who, &body.name).await?;
    let mut res = json_response(StatusCode::CREATED, &d);
    res.extensions_mut()
        .insert(crate::access::AuditTarget(d.id.clone()));
    Ok(res)
}

pub async fn list_devices<B>(app: &App, req: &Request<B>) -> ApiResult {
    let devices = app.engine.list_devices(principal(req)?).await?;
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "devices": devices }),
    ))
}

pub async fn get_device<B>(app: &App, id: &str, req: &Request<B>) -> ApiResult {
    let d = app.engine.get_device(principal(req)?, id).await?;
    Ok(json_response(StatusCode::OK, &d))
}

/// `DELETE /v1/devices/{id}` (204) or `POST /v1/devices/{id}/revoke` (200, the device).
pub async fn revoke_device<B>(app: &App, id: &str, req: &Request<B>, show: bool) -> ApiResult {
    let d = app.engine.revoke_device(principal(req)?, id).await?;
    if show {
        Ok(json_response(StatusCode::OK, &d))
    } else {
        Ok(crate::status_only(StatusCode::NO_CONTENT))
    }
}

pub async fn get_asset<B>(app: &App, id: &str, req: &Request<B>) -> ApiResult {
    let asset = app.engine.get_asset(principal(req)?, id).await?;
    Ok(json_response(StatusCode::OK, &asset))
}

pub async fn get_source<B>(app: &App, id: &str, req: &Request<B>) -> ApiResult {
    let (asset, info, s) = app.engine.asset_source(principal(req)?, id).await?;
    let mut res = Response::new(stream(s));
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(info.size));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    let name: String = asset
        .filename
        .unwrap_or_else(|| format!("{}.bin", asset.id))
        .chars()
        .filter(|c| c.is_ascii_graphic() && *c != '"' && *c != '\\' || *c == ' ')
        .collect();
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(res)
}

/// The body of `POST /v1/assets/{id}/playback` and `POST /v1/live/{id}/playback`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct PlaybackReq {
    ttl_s: Option<u64>,
    /// Bind the URL to a viewer's IP address or CIDR network.
    client_ip: Option<String>,
}

impl PlaybackReq {
    pub(crate) fn options(&self) -> sluice_engine::PlaybackOptions<'_> {
        sluice_engine::PlaybackOptions {
            ttl_s: self.ttl_s,
            client_ip: self.client_ip.as_deref(),
        }
    }
}

pub async fn create_playback(app: &App, id: &str, req: Request<ReqBody>) -> ApiResult {
    let who = principal(&req)?.clone();
    let base = base_url(app, &req);
    let body: PlaybackReq = read_json(req, true).await?.unwrap_or_default();
    let grant = app.engine.playback_grant(&who, id, body.options()).await?;
    playback_response(app, &base, &grant)
}

/// The answer to a playback request (asset or live): the URL a player opens, the watch page
/// that plays it, and until when both work; with CloudFront configured, also the
/// CloudFront-signed URL and cookies.
pub(crate) fn playback_response(
    app: &App,
    base: &str,
    grant: &sluice_engine::PlaybackGrant,
) -> ApiResult {
    let path = crate::paths::playback(grant);
    let mut v = serde_json::json!({
        "url": format!("{base}{path}"),
        "watch_url": format!("{base}{}", crate::paths::watch(grant)),
        "expires_at": sluice_engine::rfc3339_s(grant.expires),
    });
    if let Some(bound) = &grant.client {
        v["client_ip"] = serde_json::Value::String(bound.to_string());
    }
    if let Some((signer, domain)) = app.engine.cloudfront() {
        v["cloudfront"] = cloudfront_grant(signer, domain, grant)?;
    }
    Ok(json_response(StatusCode::OK, &v))
}

/// CloudFront's half of a playback answer. One custom policy whose resource is the asset's
/// prefix with `*` signs both the URL and the cookies, so it covers every playlist and
/// segment; a player needs the cookies, since relative URIs in a playlist do not inherit
/// the master URL's query string. A bound grant binds the policy to the same network.
fn cloudfront_grant(
    signer: &sluice_cdn::cloudfront::CloudFrontSigner,
    domain: &str,
    grant: &sluice_engine::PlaybackGrant,
) -> Result<serde_json::Value, ApiError> {
    use sluice_cdn::cloudfront::Policy;
    let prefix = crate::paths::playback_prefix(&grant.tenant, &grant.asset);
    let mut policy = Policy::custom(&format!("{domain}{prefix}*"), grant.expires)?;
    if let Some(net) = grant.client {
        policy = policy.from_network(net);
    }
    let url = signer.signed_url(
        &format!("{domain}{}", crate::paths::playback(grant)),
        &policy,
    )?;
    let cookies = signer.cookies(&policy)?;
    let mut c = serde_json::Map::new();
    for (name, value) in cookies.pairs() {
        c.insert(
            name.to_string(),
            serde_json::Value::String(value.to_string()),
        );
    }
    Ok(serde_json::json!({
        "url": url,
        "cookies": c,
        "cookie_path": prefix,
    }))
}

pub async fn get_job<B>(app: &App, id: &str, req: &Request<B>) -> ApiResult {
    let who = principal(req)?;
    match app.engine.get_job(who, id).await {
        Ok(job) => Ok(json_response(StatusCode::OK, &job)),
        // Not a transcode job: an ops job (migration) of that id, for the admin.
        Err(sluice_engine::Error::NotFound { .. })
            if let Some(m) = app.engine.get_migration_job(who, id).await? =>
        {
            Ok(json_response(StatusCode::OK, &m))
        }
        Err(e) => Err(e.into()),
    }
}

/// `GET /v1/jobs?status=…&limit=…`
pub async fn list_jobs<B>(app: &App, req: &Request<B>) -> ApiResult {
    let who = principal(req)?;
    let mut status = None;
    let mut limit = None;
    for (k, v) in form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "status" => status = Some(v.into_owned()),
            "limit" => {
                limit = Some(
                    v.parse::<u32>()
                        .map_err(|_| ApiError::bad_request("limit must be a positive integer"))?,
                )
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {other:?}"
                )));
            }
        }
    }
    let jobs = app.engine.list_jobs(who, status.as_deref(), limit).await?;
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "jobs": jobs }),
    ))
}

/// `POST /v1/jobs/{id}/cancel`
pub async fn cancel_job<B>(app: &App, id: &str, req: &Request<B>) -> ApiResult {
    let job = app.engine.cancel_job(principal(req)?, id).await?;
    Ok(json_response(StatusCode::ACCEPTED, &job))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RetryReq {
    rendition: Option<String>,
}

/// `POST /v1/jobs/{id}/retry`: re-run a failed/dead/cancelled job; with
/// `{"rendition": name}`, re-run that one rendition of the job's (ready) asset.
pub async fn rerun_job(app: &App, id: &str, req: Request<ReqBody>) -> ApiResult {
    let who = principal(&req)?.clone();
    let body: RetryReq = read_json(req, true).await?.unwrap_or_default();
    let job = match body.rendition {
        Some(name) => app.engine.rerun_job_rendition(&who, id, &name).await?,
        None => app.engine.rerun_job(&who, id).await?,
    };
    Ok(json_response(StatusCode::ACCEPTED, &job))
}

/// `POST /v1/assets/{id}/renditions/{name}/rerun` → 202 with the new job.
pub async fn rerun_rendition<B>(app: &App, id: &str, name: &str, req: &Request<B>) -> ApiResult {
    let job = app
        .engine
        .rerun_rendition(principal(req)?, id, name)
        .await?;
    Ok(json_response(StatusCode::ACCEPTED, &job))
}

/// `GET /v1/preset`: the tenant's overrides and the preset in effect.
pub async fn get_preset<B>(app: &App, req: &Request<B>) -> ApiResult {
    let view = app.engine.get_preset(principal(req)?).await?;
    Ok(json_response(StatusCode::OK, &view))
}

/// `PUT /v1/preset`: replace the tenant's overrides (unknown fields are refused).
pub async fn put_preset(app: &App, req: Request<ReqBody>) -> ApiResult {
    let who = principal(&req)?.clone();
    let body: sluice_engine::PresetOverrides = read_json(req, false)
        .await?
        .ok_or_else(|| ApiError::bad_request("a JSON body is required"))?;
    let view = app.engine.put_preset(&who, body).await?;
    Ok(json_response(StatusCode::OK, &view))
}

/// `DELETE /v1/preset`: back to the server's defaults.
pub async fn delete_preset<B>(app: &App, req: &Request<B>) -> ApiResult {
    app.engine.delete_preset(principal(req)?).await?;
    Ok(crate::status_only(StatusCode::NO_CONTENT))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewWebhookReq {
    url: String,
    events: Option<Vec<String>>,
}

/// `POST /v1/webhooks` → 201 with the signing secret (shown once).
pub async fn create_webhook(app: &App, req: Request<ReqBody>) -> ApiResult {
    let who = principal(&req)?.clone();
    let body: NewWebhookReq = read_json(req, false)
        .await?
        .ok_or_else(|| ApiError::bad_request("a JSON body is required"))?;
    let hook = app
        .engine
        .create_webhook(&who, &body.url, body.events)
        .await?;
    Ok(json_response(StatusCode::CREATED, &hook))
}

pub async fn list_webhooks<B>(app: &App, req: &Request<B>) -> ApiResult {
    let hooks = app.engine.list_webhooks(principal(req)?).await?;
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "webhooks": hooks }),
    ))
}

pub async fn delete_webhook<B>(app: &App, id: &str, req: &Request<B>) -> ApiResult {
    app.engine.delete_webhook(principal(req)?, id).await?;
    Ok(crate::status_only(StatusCode::NO_CONTENT))
}
