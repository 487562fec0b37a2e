//! docs/roles.md is generated from the endpoint table: this test renders every endpoint's
//! role from [`Endpoint::access`] and fails when the page differs (run it with
//! `SLUICE_WRITE_DOCS=1` to rewrite the page).

use super::*;

/// One request per endpoint: method, the documented path, a concrete path.
const ROWS: &[(&str, &str, &str)] = &[
    ("GET", "/healthz", "/healthz"),
    ("GET", "/readyz", "/readyz"),
    ("GET", "/metrics", "/metrics"),
    ("POST", "/v1/tenants", "/v1/tenants"),
    ("PATCH", "/v1/tenants/{id}", "/v1/tenants/T"),
    ("GET", "/v1/usage", "/v1/usage"),
    ("POST", "/v1/assets/{id}/tier", "/v1/assets/A/tier"),
    ("POST", "/v1/assets/{id}/restore", "/v1/assets/A/restore"),
    ("PUT", "/v1/assets/{id}/tags", "/v1/assets/A/tags"),
    ("GET", "/v1/assets/{id}/lifecycle", "/v1/assets/A/lifecycle"),
    ("GET", "/v1/lifecycle", "/v1/lifecycle"),
    ("PUT", "/v1/lifecycle", "/v1/lifecycle"),
    ("POST", "/v1/ops/lifecycle/run", "/v1/ops/lifecycle/run"),
    ("POST", "/v1/ops/migrations", "/v1/ops/migrations"),
    ("POST", "/v1/ops/usage/check", "/v1/ops/usage/check"),
    ("POST", "/v1/keys", "/v1/keys"),
    ("GET", "/v1/keys", "/v1/keys"),
    ("DELETE", "/v1/keys/{id}", "/v1/keys/K"),
    ("GET", "/v1/audit", "/v1/audit"),
    ("GET", "/v1/admin/jwks", "/v1/admin/jwks"),
    ("POST/PATCH/HEAD/…", "/v1/uploads[/{id}]", "/v1/uploads"),
    ("POST", "/v1/assets", "/v1/assets"),
    ("GET", "/v1/assets/{id}", "/v1/assets/A"),
    ("GET", "/v1/assets/{id}/source", "/v1/assets/A/source"),
    ("POST", "/v1/assets/{id}/playback", "/v1/assets/A/playback"),
    (
        "POST",
        "/v1/assets/{id}/renditions/{name}/rerun",
        "/v1/assets/A/renditions/720p/rerun",
    ),
    ("POST", "/v1/devices", "/v1/devices"),
    ("GET", "/v1/devices", "/v1/devices"),
    ("GET", "/v1/devices/{id}", "/v1/devices/D"),
    ("DELETE", "/v1/devices/{id}", "/v1/devices/D"),
    ("POST", "/v1/devices/{id}/revoke", "/v1/devices/D/revoke"),
    ("POST", "/v1/webhooks", "/v1/webhooks"),
    ("GET", "/v1/webhooks", "/v1/webhooks"),
    ("DELETE", "/v1/webhooks/{id}", "/v1/webhooks/W"),
    ("GET", "/v1/jobs", "/v1/jobs"),
    ("GET", "/v1/jobs/{id}", "/v1/jobs/J"),
    ("POST", "/v1/jobs/{id}/cancel", "/v1/jobs/J/cancel"),
    ("POST", "/v1/jobs/{id}/retry", "/v1/jobs/J/retry"),
    ("POST", "/v1/live", "/v1/live"),
    ("GET", "/v1/live", "/v1/live"),
    ("GET", "/v1/live/{id}", "/v1/live/S"),
    ("POST", "/v1/live/{id}/end", "/v1/live/S/end"),
    ("POST", "/v1/live/{id}/playback", "/v1/live/S/playback"),
    (
        "any",
        "/v1/live/{id}/ingest/{token}/{file}",
        "/v1/live/S/ingest/T/index.m3u8",
    ),
    ("GET", "/v1/preset", "/v1/preset"),
    ("PUT", "/v1/preset", "/v1/preset"),
    ("DELETE", "/v1/preset", "/v1/preset"),
    (
        "GET/HEAD",
        "/v1/play/{tenant}/{asset}/{token}/{file}",
        "/v1/play/T/A/1700000000-sig/master.m3u8",
    ),
    (
        "GET/HEAD",
        "/v1/play/{tenant}/{asset}/{token}/{stem}.watch.html",
        "/v1/play/T/A/1700000000-sig/master.watch.html",
    ),
    (
        "GET/HEAD",
        "/v1/play/{tenant}/{asset}/{token}/{name}.js|css",
        "/v1/play/T/A/1700000000-sig/player.js",
    ),
    ("GET", "/v1/edge/verify", "/v1/edge/verify"),
    ("GET", "/v1/edge/admin", "/v1/edge/admin"),
    (
        "GET/HEAD",
        "/v1/edge/objects/{tenant}/{asset}/{file}",
        "/v1/edge/objects/T/A/master.m3u8",
    ),
];

/// Every endpoint variant, by an exhaustive match: a new variant does not compile until
/// it is named here, and the test then asks for its row in [`ROWS`].
fn variant(e: &Endpoint<'_>) -> &'static str {
    use Endpoint as E;
    match e {
        E::Healthz => "Healthz",
        E::Readyz => "Readyz",
        E::Metrics => "Metrics",
        E::CreateTenant => "CreateTenant",
        E::PatchTenant { .. } => "PatchTenant",
        E::GetUsage => "GetUsage",
        E::AssetTier { .. } => "AssetTier",
        E::AssetRestore { .. } => "AssetRestore",
        E::AssetTags { .. } => "AssetTags",
        E::AssetLifecycle { .. } => "AssetLifecycle",
        E::GetLifecycle => "GetLifecycle",
        E::PutLifecycle => "PutLifecycle",
        E::RunLifecycle => "RunLifecycle",
        E::CreateMigration => "CreateMigration",
        E::UsageCheck => "UsageCheck",
        E::Tus { .. } => "Tus",
        E::RawUpload => "RawUpload",
        E::GetAsset { .. } => "GetAsset",
        E::GetSource { .. } => "GetSource",
        E::CreatePlayback { .. } => "CreatePlayback",
        E::RerunRendition { .. } => "RerunRendition",
        E::CreateDevice => "CreateDevice",
        E::ListDevices => "ListDevices",
        E::GetDevice { .. } => "GetDevice",
        E::DeleteDevice { .. } => "DeleteDevice",
        E::RevokeDevice { .. } => "RevokeDevice",
        E::CreateWebhook => "CreateWebhook",
        E::ListWebhooks => "ListWebhooks",
        E::DeleteWebhook { .. } => "DeleteWebhook",
        E::ListJobs => "ListJobs",
        E::GetJob { .. } => "GetJob",
        E::CancelJob { .. } => "CancelJob",
        E::RetryJob { .. } => "RetryJob",
        E::CreateLive => "CreateLive",
        E::ListLive => "ListLive",
        E::GetLive { .. } => "GetLive",
        E::EndLive { .. } => "EndLive",
        E::LivePlayback { .. } => "LivePlayback",
        E::LiveIngest(_) => "LiveIngest",
        E::GetPreset => "GetPreset",
        E::PutPreset => "PutPreset",
        E::DeletePreset => "DeletePreset",
        E::Play(_) => "Play",
        E::EdgeVerify => "EdgeVerify",
        E::EdgeAdmin => "EdgeAdmin",
        E::EdgeObject { .. } => "EdgeObject",
        E::WatchPage { .. } => "WatchPage",
        E::PlayerFile { .. } => "PlayerFile",
        E::CreateKey => "CreateKey",
        E::ListKeys => "ListKeys",
        E::RevokeKey { .. } => "RevokeKey",
        E::ListAudit => "ListAudit",
        E::AdminJwks => "AdminJwks",
        E::NotFound(_) => "NotFound",
    }
}

/// How many variants [`variant`] names, `NotFound` included.
const VARIANTS: usize = 54;

fn who(access: Access) -> String {
    match access {
        Access::Public => "anyone".into(),
        Access::PublicButNotUploaders => "anyone but an uploader (device) key".into(),
        Access::Role(r) => {
            let also: Vec<&str> = Role::ALL
                .iter()
                .filter(|h| **h != r && h.satisfies(r))
                .map(|h| h.as_str())
                .collect();
            if also.is_empty() {
                format!("`{}`", r.as_str())
            } else {
                format!("`{}` (also: {})", r.as_str(), also.join(", "))
            }
        }
    }
}

fn render() -> String {
    let mut out = String::from(
        "# Routes and roles\n\n\
         Generated from the endpoint table (`gateway/src/endpoint.rs`, `Endpoint::access`) by\n\
         the test `endpoint::roles_doc`; do not edit by hand (`SLUICE_WRITE_DOCS=1 cargo test\n\
         -p sluice-gateway --lib roles_doc` rewrites it). The role rule and the roles are in\n\
         docs/auth.md. A request with no credentials to a route that needs a role gets 401; a\n\
         credential whose role falls short gets 403 (`device_not_allowed` for a device or\n\
         uploader key, else `forbidden`). A tenant-scoped role reaches its own tenant's things\n\
         only: another tenant's are 404. Audited: the action is written to the audit log.\n\n\
         | method | path | needs | audited |\n| --- | --- | --- | --- |\n",
    );
    for (method, doc_path, path) in ROWS {
        let m = method.split('/').next().unwrap_or("GET");
        let m = if *m == *"any" { "PUT" } else { m };
        let e = Endpoint::parse(&Method::from_bytes(m.as_bytes()).unwrap(), path);
        let audited = e.audit().map_or(String::new(), |(a, _)| format!("`{a}`"));
        out.push_str(&format!(
            "| {method} | `{doc_path}` | {} | {audited} |\n",
            who(e.access())
        ));
    }
    out
}

#[test]
fn docs_roles_md_is_the_endpoint_table() {
    let mut seen = std::collections::BTreeSet::new();
    for (method, _, path) in ROWS {
        let m = method.split('/').next().unwrap_or("GET");
        let m = if *m == *"any" { "PUT" } else { m };
        let e = Endpoint::parse(&Method::from_bytes(m.as_bytes()).unwrap(), path);
        assert_ne!(variant(&e), "NotFound", "{method} {path}");
        seen.insert(variant(&e));
    }
    assert_eq!(
        seen.len() + 1,
        VARIANTS,
        "every endpoint has a row in ROWS (seen: {seen:?})"
    );
    let page = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/roles.md");
    let want = render();
    if std::env::var_os("SLUICE_WRITE_DOCS").is_some() {
        std::fs::write(page, &want).unwrap();
    }
    let have = std::fs::read_to_string(page).unwrap_or_default();
    assert_eq!(
        have, want,
        "docs/roles.md is out of date: SLUICE_WRITE_DOCS=1 cargo test -p sluice-gateway --lib roles_doc"
    );
}

#[test]
fn the_roles_the_brief_names() {
    let access =
        |m: &str, p: &str| Endpoint::parse(&Method::from_bytes(m.as_bytes()).unwrap(), p).access();
    let may = |role: Role, m: &str, p: &str| match access(m, p) {
        Access::Role(r) => role.satisfies(r),
        Access::Public => true,
        Access::PublicButNotUploaders => role != Role::Uploader,
    };
    // Allowed first.
    assert!(may(Role::PlatformAdmin, "POST", "/v1/tenants"));
    assert!(may(Role::Uploader, "POST", "/v1/assets"));
    assert!(may(Role::TenantAdmin, "POST", "/v1/assets"));
    assert!(may(Role::Viewer, "GET", "/v1/assets/A"));
    assert!(may(Role::Ops, "GET", "/v1/edge/admin"));
    assert!(may(Role::TenantAdmin, "POST", "/v1/keys"));
    // Then refused.
    assert!(
        !may(Role::Ops, "POST", "/v1/tenants"),
        "ops cannot create tenants"
    );
    assert!(
        !may(Role::Viewer, "POST", "/v1/assets"),
        "a viewer cannot upload"
    );
    assert!(
        !may(Role::Viewer, "POST", "/v1/uploads"),
        "a viewer cannot upload"
    );
    assert!(
        !may(Role::Uploader, "GET", "/v1/assets/A"),
        "an uploader cannot read"
    );
    assert!(!may(Role::Uploader, "GET", "/v1/assets/A/source"));
    assert!(!may(Role::Uploader, "GET", "/metrics"));
    assert!(!may(Role::Viewer, "POST", "/v1/keys"));
    assert!(!may(Role::Viewer, "DELETE", "/v1/devices/D"));
    assert!(!may(Role::TenantAdmin, "GET", "/v1/admin/jwks"));
    assert!(!may(Role::Ops, "GET", "/v1/assets/A"));
}
