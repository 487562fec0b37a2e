//! Ops routes (`/v1/ops/…`, admin only: the engine refuses any other key).

use http::{Request, StatusCode};
use serde::Deserialize;
use sluice_engine::ops::{MigrationRequest, Submitted};

use crate::admin::{json_response, read_json};
use crate::body::ReqBody;
use crate::error::ApiError;
use crate::{ApiResult, App, principal};

/// `POST /v1/ops/migrations` → 202 with the job, or 200 with the plan of a dry run.
pub async fn create_migration(app: &App, req: Request<ReqBody>) -> ApiResult {
    let who = principal(&req)?.clone();
    let body: MigrationRequest = read_json(req, false)
        .await?
        .ok_or_else(|| ApiError::bad_request("a JSON body is required"))?;
    match app.engine.submit_migration(&who, body).await? {
        Submitted::Job(job) => Ok(json_response(StatusCode::ACCEPTED, &*job)),
        Submitted::Plan(plan) => Ok(json_response(StatusCode::OK, &plan)),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct UsageCheckReq {
    #[serde(default)]
    repair: bool,
}

/// `POST /v1/ops/usage/check` `{"repair"?: bool}` → the drift found (and repaired).
pub async fn usage_check(app: &App, req: Request<ReqBody>) -> ApiResult {
    let who = principal(&req)?.clone();
    let body: UsageCheckReq = read_json(req, true).await?.unwrap_or_default();
    let report = app.engine.usage_check(&who, body.repair).await?;
    Ok(json_response(StatusCode::OK, &report))
}
