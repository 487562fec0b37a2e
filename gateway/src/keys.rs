//! `/v1/keys` (tenant-scoped keys per role), `/v1/audit` and `/v1/admin/jwks`.

use http::{Request, StatusCode};
use serde::Deserialize;
use sluice_engine::Role;

use crate::access::AuditTarget;
use crate::admin::{json_response, read_json};
use crate::body::ReqBody;
use crate::error::ApiError;
use crate::{ApiResult, App, principal};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKeyReq {
    role: String,
    #[serde(default)]
    name: Option<String>,
    /// The platform admin names the tenant; a tenant admin may name its own.
    #[serde(default)]
    tenant: Option<String>,
}

/// The query parameters of a request, each allowed once and only if named in `known`.
fn query<B>(req: &Request<B>, known: &[&str]) -> Result<Vec<(String, String)>, ApiError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (k, v) in form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()) {
        if !known.contains(&k.as_ref()) {
            return Err(ApiError::bad_request(format!(
                "unknown query parameter {k:?}; known: {}",
                known.join(", ")
            )));
        }
        if out.iter().any(|(seen, _)| *seen == k) || v.len() > 200 {
            return Err(ApiError::bad_request(format!("bad query parameter {k:?}")));
        }
        out.push((k.into_owned(), v.into_owned()));
    }
    Ok(out)
}

fn param<'a>(q: &'a [(String, String)], name: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// `POST /v1/keys` → 201 with the key (shown once).
pub async fn create(app: &App, req: Request<ReqBody>) -> ApiResult {
    let who = principal(&req)?.clone();
    let body: NewKeyReq = read_json(req, false)
        .await?
        .ok_or_else(|| ApiError::bad_request("a JSON body is required"))?;
    let role = Role::parse(&body.role).ok_or_else(|| {
        ApiError::bad_request("role must be one of tenant_admin, uploader, viewer, ops")
    })?;
    let k = app
        .engine
        .create_key(&who, role, body.name.as_deref(), body.tenant.as_deref())
        .await?;
    let mut res = json_response(StatusCode::CREATED, &k);
    res.extensions_mut().insert(AuditTarget(k.id.clone()));
    Ok(res)
}

/// `GET /v1/keys[?tenant=ID]`
pub async fn list<B>(app: &App, req: &Request<B>) -> ApiResult {
    let q = query(req, &["tenant"])?;
    let keys = app
        .engine
        .list_keys(principal(req)?, param(&q, "tenant"))
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "keys": keys }),
    ))
}

/// `DELETE /v1/keys/{id}[?tenant=ID]` → 204.
pub async fn revoke<B>(app: &App, id: &str, req: &Request<B>) -> ApiResult {
    let q = query(req, &["tenant"])?;
    app.engine
        .revoke_key(principal(req)?, id, param(&q, "tenant"))
        .await?;
    Ok(crate::status_only(StatusCode::NO_CONTENT))
}

/// `GET /v1/audit[?limit=N][&before=ID][&tenant=ID]`: newest first; `next` is the
/// `before` of the next page (absent on the last).
pub async fn audit<B>(app: &App, req: &Request<B>) -> ApiResult {
    let q = query(req, &["limit", "before", "tenant"])?;
    let limit = param(&q, "limit")
        .map(|v| {
            v.parse::<u32>().map_err(|_| {
                ApiError::bad_request(format!(
                    "limit must be an integer from 1 to {}",
                    sluice_engine::MAX_AUDIT_PAGE
                ))
            })
        })
        .transpose()?;
    let rows = app
        .engine
        .list_audit(
            principal(req)?,
            param(&q, "tenant"),
            param(&q, "before"),
            limit,
        )
        .await?;
    let full = rows.len() as u32 == limit.unwrap_or(sluice_engine::DEFAULT_AUDIT_PAGE);
    let next = if full {
        rows.last().map(|r| r.id.clone())
    } else {
        None
    };
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "entries": rows, "next": next }),
    ))
}

/// `GET /v1/admin/jwks`: the cached JWT keys (kid, alg, fetched_at, expires).
pub async fn jwks<B>(app: &App, req: &Request<B>) -> ApiResult {
    let keys = app.engine.jwks_keys(principal(req)?).await?;
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "keys": keys }),
    ))
}
