//! Roles and the audit log at the router: each request's [`Endpoint::access`] is checked
//! against the caller's role before its handler runs, and each audited admin or ops
//! action is written to the audit log once its response is known. Role rule:
//! [`sluice_engine::Role::satisfies`]; the table of routes and roles: docs/roles.md.

use http::{Request, Response, StatusCode};
use sluice_engine::{AuditEntry, Engine, Principal};

use crate::auth::Authenticated;
use crate::endpoint::{Access, Endpoint};
use crate::error::ApiError;

/// How logs and the audit log name the caller (request extension, set with
/// [`Authenticated`]): `admin_key`, `key:PREFIX` or `jwt:SUBJECT`, never a secret.
#[derive(Debug, Clone)]
pub struct Actor(pub String);

/// What a handler created (response extension), for the audit row of a creation.
#[derive(Debug, Clone)]
pub struct AuditTarget(pub String);

/// Why a request must not reach its handler, if it must not. Anonymous requests pass
/// (the handlers answer 401 themselves).
pub(crate) fn refusal<B>(endpoint: &Endpoint<'_>, req: &Request<B>) -> Option<ApiError> {
    let who = &req.extensions().get::<Authenticated>()?.0;
    let refused = match endpoint.access() {
        Access::Public => false,
        Access::PublicButNotUploaders => who.is_device(),
        Access::Role(required) => !who.role().satisfies(required),
    };
    if !refused {
        return None;
    }
    Some(if who.is_device() {
        ApiError::from(sluice_engine::Error::DeviceNotAllowed)
    } else {
        let needs = match endpoint.access() {
            Access::Role(r) => r.as_str(),
            _ => "another",
        };
        ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "this endpoint needs the {needs} role; this credential has the {} role",
                who.role()
            ),
        )
    })
}

/// An audited request, noted before its handler takes the request.
pub(crate) struct AuditNote {
    action: &'static str,
    target: Option<String>,
    actor: String,
    principal: Principal,
    request_id: Option<String>,
}

/// The note of an audited action by an authenticated caller (anonymous attempts are
/// answered 401 and not audited: nobody to name).
pub(crate) fn note<B>(endpoint: &Endpoint<'_>, req: &Request<B>) -> Option<AuditNote> {
    let (action, target) = endpoint.audit()?;
    let principal = req.extensions().get::<Authenticated>()?.0.clone();
    let actor = req
        .extensions()
        .get::<Actor>()
        .map_or_else(|| "unknown".to_string(), |a| a.0.clone());
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    Some(AuditNote {
        action,
        target: target.map(str::to_string),
        actor,
        principal,
        request_id,
    })
}

/// How a request ended, as its audit row tells it.
pub(crate) struct Ended {
    status: StatusCode,
    created: Option<String>,
}

pub(crate) fn ended<B>(res: &Response<B>) -> Ended {
    Ended {
        status: res.status(),
        created: res.extensions().get::<AuditTarget>().map(|t| t.0.clone()),
    }
}

/// Write the audit row of a noted action, with how it ended. A failed write is logged
/// (with the request id), not turned into a failed request: the action is done.
pub(crate) async fn record(engine: &Engine, note: Option<AuditNote>, ended: Ended) {
    let Some(n) = note else { return };
    let status = ended.status;
    let outcome = match status.as_u16() {
        200..=399 => "ok",
        401 | 403 => "denied",
        400..=499 => "rejected",
        _ => "failed",
    };
    let created = ended.created.as_deref();
    tracing::info!(
        actor = %n.actor,
        role = %n.principal.role(),
        action = n.action,
        target = n.target.as_deref().or(created).unwrap_or(""),
        outcome,
        status = status.as_u16(),
        "audit"
    );
    let entry = AuditEntry {
        actor: &n.actor,
        role: n.principal.role(),
        tenant: n.principal.tenant(),
        action: n.action,
        target: n.target.as_deref().or(created),
        outcome,
        status: Some(status.as_u16()),
        request_id: n.request_id.as_deref(),
    };
    if let Err(e) = engine.audit(entry).await {
        tracing::error!(
            action = n.action,
            request_id = n.request_id.as_deref().unwrap_or(""),
            "could not write the audit log: {e}"
        );
    }
}
