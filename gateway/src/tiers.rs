//! Storage tiers and lifecycle over HTTP: tier moves, archive and restore (202 + job JSON),
//! usage, lifecycle rules, a lifecycle run (admin) and one asset's lifecycle explanation.

use http::{Request, StatusCode};
use serde::Deserialize;

use crate::admin::{json_response, read_json};
use crate::body::ReqBody;
use crate::error::ApiError;
use crate::{ApiResult, App, principal};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TierReq {
    tier: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RestoreReq {
    days: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TagsReq {
    tags: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RunReq {
    #[serde(default)]
    dry_run: bool,
}

/// `POST /v1/assets/{id}/tier` `{"tier": "hot"|"warm"|"cold"}` → 202 job JSON.
pub async fn tier(app: &App, id: &str, req: Request<ReqBody>) -> ApiResult {
    let who = principal(&req)?.clone();
    let body: TierReq = read_json(req, false)
        .await?
        .ok_or_else(|| ApiError::bad_request("a JSON body is required"))?;
    let job = app.engine.request_tier(&who, id, &body.tier).await?;
    Ok(json_response(StatusCode::ACCEPTED, &job))
}

/// `POST /v1/assets/{id}/restore` `{"days": N}` → 202 job JSON.
pub async fn restore(app: &App, id: &str, req: Request<ReqBody>) -> ApiResult {
    let who = principal(&req)?.clone();
    let body: RestoreReq = read_json(req, false)
        .await?
        .ok_or_else(|| ApiError::bad_request("a JSON body is required"))?;
    let job = app.engine.request_restore(&who, id, body.days).await?;
    Ok(json_response(StatusCode::ACCEPTED, &job))
}

/// `PUT /v1/assets/{id}/tags` `{"tags": [...]}`.
pub async fn put_tags(app: &App, id: &str, req: Request<ReqBody>) -> ApiResult {
    let who = principal(&req)?.clone();
    let body: TagsReq = read_json(req, false)
        .await?
        .ok_or_else(|| ApiError::bad_request("a JSON body is required"))?;
    let view = app.engine.set_tags(&who, id, body.tags).await?;
    Ok(json_response(StatusCode::OK, &view))
}

/// `GET /v1/assets/{id}/lifecycle`: which rule applies, why, and the bytes at stake.
pub async fn explain<B>(app: &App, id: &str, req: &Request<B>) -> ApiResult {
    let view = app.engine.explain_lifecycle(principal(req)?, id).await?;
    Ok(json_response(StatusCode::OK, &view))
}

/// `GET /v1/usage`.
pub async fn usage<B>(app: &App, req: &Request<B>) -> ApiResult {
    let view = app.engine.usage(principal(req)?).await?;
    Ok(json_response(StatusCode::OK, &view))
}

/// `GET /v1/lifecycle`.
pub async fn get_lifecycle<B>(app: &App, req: &Request<B>) -> ApiResult {
    let view = app.engine.get_lifecycle(principal(req)?).await?;
    Ok(json_response(StatusCode::OK, &view))
}

/// `PUT /v1/lifecycle` `{"rules": [...]}`.
pub async fn put_lifecycle(app: &App, req: Request<ReqBody>) -> ApiResult {
    let who = principal(&req)?.clone();
    let rules: sluice_engine::lifecycle::Rules = read_json(req, false)
        .await?
        .ok_or_else(|| ApiError::bad_request("a JSON body is required"))?;
    let view = app.engine.put_lifecycle(&who, rules).await?;
    Ok(json_response(StatusCode::OK, &view))
}

/// `POST /v1/ops/lifecycle/run` `{"dry_run"?: bool}` (admin) → `{"plan": [...]}`; a run
/// (not dry) carries each action's `job`.
pub async fn run_lifecycle(app: &App, req: Request<ReqBody>) -> ApiResult {
    let who = principal(&req)?.clone();
    let body: RunReq = read_json(req, true).await?.unwrap_or_default();
    let plan = app.engine.run_lifecycle(&who, body.dry_run).await?;
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({"dry_run": body.dry_run, "plan": plan}),
    ))
}
