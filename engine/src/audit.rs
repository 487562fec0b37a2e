//! The audit log of admin and ops actions: who (a key prefix, a JWT subject, or the admin
//! key), with which role, did what to what, how it ended, in which request. Appended by
//! [`Engine::audit`] (the gateway calls it for every audited endpoint; other code may call
//! it for actions of its own) and read by `GET /v1/audit`: the platform admin sees every
//! row, a tenant admin its tenant's.

use serde::Serialize;

use crate::{Engine, Error, Principal, Result, Role, rfc3339_ms, store};

/// Most rows one page of `GET /v1/audit` returns.
pub const MAX_AUDIT_PAGE: u32 = 500;
/// Rows a page returns when the caller does not say.
pub const DEFAULT_AUDIT_PAGE: u32 = 100;

/// Longest text kept in any audit field (anything longer is cut, on a char boundary).
const MAX_FIELD: usize = 200;

/// An action to record.
#[derive(Debug, Clone)]
pub struct AuditEntry<'a> {
    /// Who: `key:PREFIX`, `jwt:SUBJECT` or `admin_key`. Never a secret.
    pub actor: &'a str,
    pub role: Role,
    /// The tenant the action belongs to (`None`: platform-wide).
    pub tenant: Option<&'a str>,
    /// What: a fixed action name (`create_key`, `revoke_device`, `ops_migration` …).
    pub action: &'a str,
    /// What it was done to: an id, if there is one.
    pub target: Option<&'a str>,
    /// `ok`, `denied` (refused for the caller's rights) or `failed`.
    pub outcome: &'a str,
    /// The HTTP status answered, if the action came over HTTP.
    pub status: Option<u16>,
    pub request_id: Option<&'a str>,
}

/// An audit row as `GET /v1/audit` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRecord {
    pub id: String,
    pub at: String,
    pub tenant: Option<String>,
    pub actor: String,
    pub role: String,
    pub action: String,
    pub target: Option<String>,
    pub outcome: String,
    pub status: Option<i64>,
    pub request_id: Option<String>,
}

fn bounded(s: &str) -> String {
    match s.char_indices().nth(MAX_FIELD) {
        Some((i, _)) => s[..i].to_string(),
        None => s.to_string(),
    }
}

impl Engine {
    /// Append one entry to the audit log.
    pub async fn audit(&self, e: AuditEntry<'_>) -> Result<()> {
        let row = store::AuditRow {
            id: ulid::Ulid::new().to_string(),
            at: self.now_ms(),
            tenant_id: e.tenant.map(bounded),
            actor: bounded(e.actor),
            role: e.role.as_str().to_string(),
            action: bounded(e.action),
            target: e.target.map(bounded),
            outcome: bounded(e.outcome),
            status: e.status.map(i64::from),
            request_id: e.request_id.map(bounded),
        };
        store::insert_audit(&self.inner.db, &row).await?;
        // The tenant's webhooks that subscribed to its audit log get the row, with the
        // webhooks' own signing, outbox and retries.
        if let Some(tenant) = row.tenant_id.clone() {
            let record = serde_json::to_value(record_of(row)).unwrap_or_default();
            self.emit(&tenant, crate::webhooks::AUDIT_EVENT, record)
                .await;
        }
        Ok(())
    }

    /// `GET /v1/audit`: newest first, `limit` rows (bounded) older than `before` (a row
    /// id from an earlier page). The platform admin sees every row (or one tenant's);
    /// a tenant admin sees its tenant's.
    pub async fn list_audit(
        &self,
        who: &Principal,
        tenant: Option<&str>,
        before: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Vec<AuditRecord>> {
        let tenant = match who {
            Principal::Admin => tenant,
            Principal::Tenant { tenant_id } => match tenant {
                Some(t) if t != tenant_id => return Err(Error::not_found("tenant", t)),
                _ => Some(tenant_id.as_str()),
            },
            _ => {
                return Err(Error::Forbidden(
                    "the audit log needs the tenant_admin or platform_admin role",
                ));
            }
        };
        let limit = limit.unwrap_or(DEFAULT_AUDIT_PAGE);
        if limit == 0 || limit > MAX_AUDIT_PAGE {
            return Err(Error::InvalidInput(format!(
                "limit must be 1 to {MAX_AUDIT_PAGE}"
            )));
        }
        if before.is_some_and(|b| b.len() > 64) {
            return Err(Error::InvalidInput("before must be an audit row id".into()));
        }
        let rows = store::list_audit(&self.inner.db, tenant, before, i64::from(limit)).await?;
        Ok(rows.into_iter().map(record_of).collect())
    }
}

fn record_of(r: store::AuditRow) -> AuditRecord {
    AuditRecord {
        id: r.id,
        at: rfc3339_ms(r.at),
        tenant: r.tenant_id,
        actor: r.actor,
        role: r.role,
        action: r.action,
        target: r.target,
        outcome: r.outcome,
        status: r.status,
        request_id: r.request_id,
    }
}
