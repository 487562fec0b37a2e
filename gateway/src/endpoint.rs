//! The endpoint table: every request the gateway answers, parsed once from method and path.
//!
//! [`Endpoint::parse`] turns a request into a variant that carries its path parameters, and
//! the router dispatches on it. What a request is *allowed* and *counted as* — its metric
//! label, whether it runs under the request deadline, the credentials it takes, its
//! rate-limit class — belongs to its [`Route`], the named group a request counts under, and
//! each of those is one exhaustive `match` below, so a new route cannot be added without
//! deciding all of them. Requests that reach no handler keep a route too
//! ([`Endpoint::NotFound`]): `PUT /v1/jobs` is a 404, counted under `jobs`, and refused to a
//! device key like every other jobs request. Why an enum and not axum's `Router`:
//! docs/design/0002-endpoint-table.md.

use http::Method;

use sluice_engine::Role;

use crate::paths::{self, IngestPath, PlayEntry, PlaybackPath};

/// What a request asks for, with its path parameters (borrowed from the path, never
/// percent-decoded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint<'a> {
    /// `GET /healthz`
    Healthz,
    /// `GET /readyz`
    Readyz,
    /// `GET /metrics`
    Metrics,
    /// `POST /v1/tenants`
    CreateTenant,
    /// `PATCH /v1/tenants/{id}` (admin): quotas and rate limit.
    PatchTenant { id: &'a str },
    /// Any method on `/v1/uploads…`: tus routes its own methods (and answers its own 405s).
    Tus { op: TusOp, target: TusTarget<'a> },
    /// `POST /v1/assets`
    RawUpload,
    /// `GET /v1/assets/{id}`
    GetAsset { id: &'a str },
    /// `GET /v1/assets/{id}/source`
    GetSource { id: &'a str },
    /// `POST /v1/assets/{id}/playback`
    CreatePlayback { id: &'a str },
    /// `POST /v1/assets/{id}/renditions/{name}/rerun`
    RerunRendition { id: &'a str, name: &'a str },
    /// `POST /v1/devices`
    CreateDevice,
    /// `GET /v1/devices`
    ListDevices,
    /// `GET /v1/devices/{id}`
    GetDevice { id: &'a str },
    /// `DELETE /v1/devices/{id}`
    DeleteDevice { id: &'a str },
    /// `POST /v1/devices/{id}/revoke`
    RevokeDevice { id: &'a str },
    /// `POST /v1/webhooks`
    CreateWebhook,
    /// `GET /v1/webhooks`
    ListWebhooks,
    /// `DELETE /v1/webhooks/{id}`
    DeleteWebhook { id: &'a str },
    /// `GET /v1/jobs`
    ListJobs,
    /// `GET /v1/jobs/{id}`
    GetJob { id: &'a str },
    /// `POST /v1/jobs/{id}/cancel`
    CancelJob { id: &'a str },
    /// `POST /v1/jobs/{id}/retry`
    RetryJob { id: &'a str },
    /// `POST /v1/live`
    CreateLive,
    /// `GET /v1/live`
    ListLive,
    /// `GET /v1/live/{id}`
    GetLive { id: &'a str },
    /// `POST /v1/live/{id}/end`
    EndLive { id: &'a str },
    /// `POST /v1/live/{id}/playback`
    LivePlayback { id: &'a str },
    /// Any method on `/v1/live/{id}/ingest/{token}/{file…}`: the handler answers 405 itself.
    LiveIngest(IngestPath<'a>),
    /// `GET /v1/preset`
    GetPreset,
    /// `PUT /v1/preset`
    PutPreset,
    /// `DELETE /v1/preset`
    DeletePreset,
    /// `GET` or `HEAD` on `/v1/play/{tenant}/{asset}/{token}/{entry…}`: a published object.
    Play(PlaybackPath<'a>),
    /// `GET /v1/edge/verify`: a caching edge asks whether the playback URL in its
    /// `X-Original-URI` header may be served (the edge caches the verdict).
    EdgeVerify,
    /// `GET /v1/edge/admin`: 204 for the admin key, so an edge can guard its purge path.
    EdgeAdmin,
    /// `GET` or `HEAD` on `/v1/edge/objects/{tenant}/{asset}/{entry…}` (admin): a playback
    /// object without a token and fresh from the store, what an edge purge refetches.
    EdgeObject {
        tenant: &'a str,
        asset: &'a str,
        entry: &'a str,
    },
    /// `GET` or `HEAD` on `/v1/play/{tenant}/{asset}/{token}/{stem}.watch.html`: the watch
    /// page of the playlist `{stem}.m3u8`.
    WatchPage {
        path: PlaybackPath<'a>,
        playlist_stem: &'a str,
    },
    /// `GET` or `HEAD` on `/v1/play/{tenant}/{asset}/{token}/{name}.js|css`: one of the
    /// watch page's own files.
    PlayerFile {
        path: PlaybackPath<'a>,
        name: &'a str,
    },
    /// `POST /v1/keys`: a tenant-scoped key of a role.
    CreateKey,
    /// `GET /v1/keys`
    ListKeys,
    /// `DELETE /v1/keys/{id}`
    RevokeKey { id: &'a str },
    /// `GET /v1/audit`
    ListAudit,
    /// `GET /v1/admin/jwks`: the cached JWT signing keys.
    AdminJwks,
    /// `POST /v1/assets/{id}/tier`
    AssetTier { id: &'a str },
    /// `POST /v1/assets/{id}/restore`
    AssetRestore { id: &'a str },
    /// `PUT /v1/assets/{id}/tags`
    AssetTags { id: &'a str },
    /// `GET /v1/assets/{id}/lifecycle`
    AssetLifecycle { id: &'a str },
    /// `GET /v1/usage`
    GetUsage,
    /// `GET /v1/lifecycle`
    GetLifecycle,
    /// `PUT /v1/lifecycle`
    PutLifecycle,
    /// `POST /v1/ops/lifecycle/run` (admin)
    RunLifecycle,
    /// `POST /v1/ops/migrations` (admin): move every object of one store to another.
    CreateMigration,
    /// `POST /v1/ops/usage/check` (admin): recompute the tier counters, report drift.
    UsageCheck,
    /// No handler for this method and path: 404, counted and gated under the route its path
    /// belongs to (`Route::Other` for a path Sluice does not know at all).
    NotFound(Route),
}

/// A tus request's method, as far as labels and deadlines tell methods apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TusOp {
    /// `POST`: creation (may carry the first chunk).
    Create,
    /// `PATCH`: a chunk.
    Patch,
    /// `HEAD`: the offset.
    Head,
    /// `OPTIONS`, `DELETE` and whatever tus refuses.
    Other,
}

/// Where under `/v1/uploads` a tus request points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TusTarget<'a> {
    /// `/v1/uploads` itself.
    Collection,
    /// `/v1/uploads/{id}`
    Upload(&'a str),
    /// Anything deeper: tus answers OPTIONS there and 405 to everything else.
    Deeper,
}

impl<'a> Endpoint<'a> {
    /// Parse a request. Slashes at both ends of the path are ignored; the path is split on
    /// every `/` (so `//` makes an empty segment, which is an id like any other).
    pub fn parse(method: &Method, path: &'a str) -> Self {
        use Endpoint as E;
        use Method as M;
        let path = path.trim_matches('/');
        // Playback first, and without collecting segments: viewers make this request for
        // every segment. No other route starts with `v1/play`.
        if path == "v1/play" || path.starts_with("v1/play/") {
            let read = matches!(*method, M::GET | M::HEAD);
            return match paths::parse_playback(path) {
                Some(p) => match (paths::play_entry(p.entry), read) {
                    (PlayEntry::Object, true) => E::Play(p),
                    (PlayEntry::WatchPage { playlist_stem }, true) => E::WatchPage {
                        path: p,
                        playlist_stem,
                    },
                    (PlayEntry::PlayerFile(name), true) => E::PlayerFile { path: p, name },
                    (PlayEntry::WatchPage { .. }, false) => E::NotFound(Route::WatchPage),
                    (PlayEntry::PlayerFile(_), false) => E::NotFound(Route::PlayerFile),
                    (PlayEntry::Object, false) if path.ends_with(".m3u8") => {
                        E::NotFound(Route::PlayPlaylist)
                    }
                    (PlayEntry::Object, false) => E::NotFound(Route::PlaySegment),
                },
                None if path.ends_with(".m3u8") => E::NotFound(Route::PlayPlaylist),
                None => E::NotFound(Route::PlaySegment),
            };
        }
        let only = |wanted: M, e: Endpoint<'a>, r: Route| {
            if *method == wanted { e } else { E::NotFound(r) }
        };
        let segs: Vec<&'a str> = path.split('/').collect();
        match segs.as_slice() {
            ["healthz"] => only(M::GET, E::Healthz, Route::Healthz),
            ["readyz"] => only(M::GET, E::Readyz, Route::Readyz),
            ["metrics"] => only(M::GET, E::Metrics, Route::Metrics),
            ["v1", "tenants"] => only(M::POST, E::CreateTenant, Route::Tenants),
            ["v1", "tenants", id] => only(M::PATCH, E::PatchTenant { id }, Route::Tenants),
            ["v1", "uploads", rest @ ..] => E::Tus {
                op: match *method {
                    M::POST => TusOp::Create,
                    M::PATCH => TusOp::Patch,
                    M::HEAD => TusOp::Head,
                    _ => TusOp::Other,
                },
                target: match rest {
                    [] => TusTarget::Collection,
                    &[id] => TusTarget::Upload(id),
                    _ => TusTarget::Deeper,
                },
            },
            ["v1", "assets", rest @ ..] => match (method, rest) {
                (&M::POST, []) => E::RawUpload,
                (&M::GET, &[id]) => E::GetAsset { id },
                (&M::GET, &[id, "source"]) => E::GetSource { id },
                (&M::POST, &[id, "playback"]) => E::CreatePlayback { id },
                (&M::POST, &[id, "renditions", name, "rerun"]) => E::RerunRendition { id, name },
                (&M::POST, &[id, "tier"]) => E::AssetTier { id },
                (&M::POST, &[id, "restore"]) => E::AssetRestore { id },
                (&M::PUT, &[id, "tags"]) => E::AssetTags { id },
                (&M::GET, &[id, "lifecycle"]) => E::AssetLifecycle { id },
                (_, [_, "tier" | "restore" | "tags" | "lifecycle"]) => E::NotFound(Route::Tiers),
                (_, [_, "source"]) => E::NotFound(Route::AssetSource),
                (_, [_, "playback"]) => E::NotFound(Route::AssetPlayback),
                _ => E::NotFound(Route::Assets),
            },
            ["v1", "devices", rest @ ..] => match (method, rest) {
                (&M::POST, []) => E::CreateDevice,
                (&M::GET, []) => E::ListDevices,
                (&M::GET, &[id]) => E::GetDevice { id },
                (&M::DELETE, &[id]) => E::DeleteDevice { id },
                (&M::POST, &[id, "revoke"]) => E::RevokeDevice { id },
                _ => E::NotFound(Route::Devices),
            },
            ["v1", "webhooks", rest @ ..] => match (method, rest) {
                (&M::POST, []) => E::CreateWebhook,
                (&M::GET, []) => E::ListWebhooks,
                (&M::DELETE, &[id]) => E::DeleteWebhook { id },
                _ => E::NotFound(Route::Webhooks),
            },
            ["v1", "jobs", rest @ ..] => match (method, rest) {
                (&M::GET, []) => E::ListJobs,
                (&M::GET, &[id]) => E::GetJob { id },
                (&M::POST, &[id, "cancel"]) => E::CancelJob { id },
                (&M::POST, &[id, "retry"]) => E::RetryJob { id },
                _ => E::NotFound(Route::Jobs),
            },
            ["v1", "live", rest @ ..] => match (method, rest) {
                (_, [_, "ingest", ..]) => {
                    paths::parse_ingest(path).map_or(E::NotFound(Route::LiveIngest), E::LiveIngest)
                }
                (&M::POST, []) => E::CreateLive,
                (&M::GET, []) => E::ListLive,
                (&M::GET, &[id]) => E::GetLive { id },
                (&M::POST, &[id, "end"]) => E::EndLive { id },
                (&M::POST, &[id, "playback"]) => E::LivePlayback { id },
                _ => E::NotFound(Route::Live),
            },
            ["v1", "edge", "verify"] => only(M::GET, E::EdgeVerify, Route::EdgeVerify),
            ["v1", "edge", "admin"] => only(M::GET, E::EdgeAdmin, Route::Edge),
            ["v1", "edge", "objects", ..] => {
                let mut parts = path.splitn(6, '/').skip(3);
                match (parts.next(), parts.next(), parts.next()) {
                    (Some(tenant), Some(asset), Some(entry))
                        if matches!(*method, M::GET | M::HEAD) && !entry.is_empty() =>
                    {
                        E::EdgeObject {
                            tenant,
                            asset,
                            entry,
                        }
                    }
                    _ => E::NotFound(Route::Edge),
                }
            }
            ["v1", "keys", rest @ ..] => match (method, rest) {
                (&M::POST, []) => E::CreateKey,
                (&M::GET, []) => E::ListKeys,
                (&M::DELETE, &[id]) => E::RevokeKey { id },
                _ => E::NotFound(Route::Keys),
            },
            ["v1", "audit"] => only(M::GET, E::ListAudit, Route::Audit),
            ["v1", "admin", "jwks"] => only(M::GET, E::AdminJwks, Route::AdminJwks),
            ["v1", "usage"] => only(M::GET, E::GetUsage, Route::Usage),
            ["v1", "lifecycle"] => match *method {
                M::GET => E::GetLifecycle,
                M::PUT => E::PutLifecycle,
                _ => E::NotFound(Route::Lifecycle),
            },
            ["v1", "ops", "lifecycle", "run"] => {
                only(M::POST, E::RunLifecycle, Route::OpsLifecycle)
            }
            ["v1", "preset"] => match *method {
                M::GET => E::GetPreset,
                M::PUT => E::PutPreset,
                M::DELETE => E::DeletePreset,
                _ => E::NotFound(Route::Preset),
            },
            ["v1", "ops", "migrations"] => only(M::POST, E::CreateMigration, Route::Ops),
            ["v1", "ops", "usage", "check"] => only(M::POST, E::UsageCheck, Route::Ops),
            ["v1", "ops", ..] => E::NotFound(Route::Ops),
            _ => E::NotFound(Route::Other),
        }
    }

    /// The route this request counts under.
    pub fn route(&self) -> Route {
        use Endpoint as E;
        match self {
            E::Healthz => Route::Healthz,
            E::Readyz => Route::Readyz,
            E::Metrics => Route::Metrics,
            E::CreateTenant | E::PatchTenant { .. } => Route::Tenants,
            E::Tus { op, .. } => match op {
                TusOp::Create => Route::TusCreate,
                TusOp::Patch => Route::TusPatch,
                TusOp::Head => Route::TusHead,
                TusOp::Other => Route::TusOther,
            },
            E::RawUpload => Route::RawUpload,
            E::GetAsset { .. } | E::RerunRendition { .. } => Route::Assets,
            E::GetSource { .. } => Route::AssetSource,
            E::CreatePlayback { .. } => Route::AssetPlayback,
            E::CreateDevice
            | E::ListDevices
            | E::GetDevice { .. }
            | E::DeleteDevice { .. }
            | E::RevokeDevice { .. } => Route::Devices,
            E::CreateWebhook | E::ListWebhooks | E::DeleteWebhook { .. } => Route::Webhooks,
            E::ListJobs | E::GetJob { .. } | E::CancelJob { .. } | E::RetryJob { .. } => {
                Route::Jobs
            }
            E::CreateLive
            | E::ListLive
            | E::GetLive { .. }
            | E::EndLive { .. }
            | E::LivePlayback { .. } => Route::Live,
            E::LiveIngest(_) => Route::LiveIngest,
            E::GetPreset | E::PutPreset | E::DeletePreset => Route::Preset,
            E::Play(p) if p.entry.ends_with(".m3u8") => Route::PlayPlaylist,
            E::Play(_) => Route::PlaySegment,
            E::EdgeVerify => Route::EdgeVerify,
            E::EdgeAdmin | E::EdgeObject { .. } => Route::Edge,
            E::WatchPage { .. } => Route::WatchPage,
            E::PlayerFile { .. } => Route::PlayerFile,
            E::CreateKey | E::ListKeys | E::RevokeKey { .. } => Route::Keys,
            E::ListAudit => Route::Audit,
            E::AdminJwks => Route::AdminJwks,
            E::AssetTier { .. }
            | E::AssetRestore { .. }
            | E::AssetTags { .. }
            | E::AssetLifecycle { .. } => Route::Tiers,
            E::GetUsage => Route::Usage,
            E::GetLifecycle | E::PutLifecycle => Route::Lifecycle,
            E::RunLifecycle => Route::OpsLifecycle,
            E::CreateMigration | E::UsageCheck => Route::Ops,
            E::NotFound(r) => *r,
        }
    }

    /// Who may make this request: the one declaration of each endpoint's role
    /// (docs/roles.md is generated from it). [`Role::satisfies`] relates the roles.
    pub fn access(&self) -> Access {
        use Endpoint as E;
        use Role as R;
        match self {
            E::Healthz
            | E::Readyz
            | E::LiveIngest(_)
            | E::Play(_)
            | E::EdgeVerify
            | E::WatchPage { .. }
            | E::PlayerFile { .. } => Access::Public,
            E::Metrics => Access::PublicButNotUploaders,
            E::CreateTenant | E::PatchTenant { .. } | E::AdminJwks => {
                Access::Role(R::PlatformAdmin)
            }
            E::EdgeAdmin | E::EdgeObject { .. } => Access::Role(R::Ops),
            E::Tus { .. } | E::RawUpload => Access::Role(R::Uploader),
            E::GetAsset { .. }
            | E::GetSource { .. }
            | E::CreatePlayback { .. }
            | E::ListJobs
            | E::GetJob { .. }
            | E::ListLive
            | E::GetLive { .. }
            | E::LivePlayback { .. }
            | E::GetPreset => Access::Role(R::Viewer),
            E::RerunRendition { .. }
            | E::CreateDevice
            | E::ListDevices
            | E::GetDevice { .. }
            | E::DeleteDevice { .. }
            | E::RevokeDevice { .. }
            | E::CreateWebhook
            | E::ListWebhooks
            | E::DeleteWebhook { .. }
            | E::CancelJob { .. }
            | E::RetryJob { .. }
            | E::CreateLive
            | E::EndLive { .. }
            | E::PutPreset
            | E::DeletePreset
            | E::CreateKey
            | E::ListKeys
            | E::RevokeKey { .. }
            | E::ListAudit
            | E::GetUsage
            | E::AssetTier { .. }
            | E::AssetRestore { .. }
            | E::AssetTags { .. }
            | E::PutLifecycle => Access::Role(R::TenantAdmin),
            E::AssetLifecycle { .. } | E::GetLifecycle => Access::Role(R::Viewer),
            E::RunLifecycle | E::CreateMigration | E::UsageCheck => Access::Role(R::Ops),
            // No handler: whoever may reach the route's paths at all gets the 404.
            E::NotFound(r) => match r.credentials() {
                Credentials::None => Access::Public,
                Credentials::NoneButNoDevice => Access::PublicButNotUploaders,
                Credentials::Uploader => Access::Role(R::Uploader),
                Credentials::Key => Access::Role(R::Viewer),
            },
        }
    }

    /// The audit log's name for this request and its target, for the admin and ops
    /// actions that are audited (`None`: not audited).
    pub fn audit(&self) -> Option<(&'static str, Option<&'a str>)> {
        use Endpoint as E;
        Some(match *self {
            E::CreateTenant => ("create_tenant", None),
            E::PatchTenant { id } => ("patch_tenant", Some(id)),
            E::AssetTier { id } => ("tier_asset", Some(id)),
            E::AssetRestore { id } => ("restore_asset", Some(id)),
            E::PutLifecycle => ("put_lifecycle", None),
            E::RunLifecycle => ("ops_lifecycle_run", None),
            E::CreateMigration => ("ops_migration", None),
            E::UsageCheck => ("ops_usage_check", None),
            E::CreateKey => ("create_key", None),
            E::RevokeKey { id } => ("revoke_key", Some(id)),
            E::CreateDevice => ("create_device", None),
            E::DeleteDevice { id } => ("delete_device", Some(id)),
            E::RevokeDevice { id } => ("revoke_device", Some(id)),
            E::CreateWebhook => ("create_webhook", None),
            E::DeleteWebhook { id } => ("delete_webhook", Some(id)),
            E::PutPreset => ("put_preset", None),
            E::DeletePreset => ("delete_preset", None),
            E::EdgeObject { asset, .. } => ("edge_refetch", Some(asset)),
            _ => return None,
        })
    }
}

/// Who may make a request ([`Endpoint::access`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: public, or the path carries its own secret (a playback or ingest token).
    /// A key sent anyway is accepted, whatever its role.
    Public,
    /// Anyone but an upload-only key (device or uploader): `/metrics`.
    PublicButNotUploaders,
    /// A caller whose role satisfies this one. Without credentials the handler answers
    /// 401 itself (tus answers `OPTIONS` first; an unknown path is a 404 either way).
    Role(Role),
}

/// The named group a request counts under: the unit of every per-route decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    Healthz,
    Readyz,
    Metrics,
    Tenants,
    TusCreate,
    TusPatch,
    TusHead,
    TusOther,
    RawUpload,
    AssetSource,
    AssetPlayback,
    Assets,
    Jobs,
    Webhooks,
    Devices,
    LiveIngest,
    Live,
    Preset,
    PlayPlaylist,
    PlaySegment,
    /// A caching edge's token check.
    EdgeVerify,
    /// A caching edge's admin check and purge refetch.
    Edge,
    /// The watch page of a playlist.
    WatchPage,
    /// The watch page's scripts and style sheet.
    PlayerFile,
    /// Tier moves, restores, tags and lifecycle explanations of one asset.
    Tiers,
    /// A tenant's usage per tier and quotas.
    Usage,
    /// A tenant's lifecycle rules.
    Lifecycle,
    /// An admin's lifecycle run.
    OpsLifecycle,
    /// A path Sluice does not know.
    Other,
    /// Tenant-scoped keys per role.
    Keys,
    /// The audit log.
    Audit,
    /// The JWT key cache.
    AdminJwks,
    /// Ops jobs (`/v1/ops/…`): admin only, checked by the engine.
    Ops,
}

/// What a route asks of the caller, coarsely (the role each endpoint needs is
/// [`Endpoint::access`]; this decides the role of requests that reach no handler).
///
/// A missing key is answered by the handlers, which ask for the principal
/// themselves (401): tus answers `OPTIONS` and a wrong `Tus-Resumable` before that, and an
/// unknown path is a 404 with or without a key; which error comes first is part of what
/// clients see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credentials {
    /// Nothing: a public route, or one whose path carries its own secret (a playback or
    /// ingest token). A key sent anyway is accepted, a device's included.
    None,
    /// Nothing, but a device key is refused: `/metrics`, which is open today (the contract's
    /// separate metrics listener is not built) and is no upload.
    NoneButNoDevice,
    /// A tenant, admin or device key: the upload routes.
    Uploader,
    /// A tenant or admin key (the engine checks which); a device key is refused.
    Key,
}

impl Credentials {
    /// Whether a request authenticated with a device key may go on to its handler.
    pub fn device_may(self) -> bool {
        matches!(self, Credentials::None | Credentials::Uploader)
    }
}

/// The coarse class of a route, for rate limits that treat a class alike (a viewer's
/// segment requests and an admin's job listing should not drain one bucket): the rate
/// limiter ([`crate::ratelimit`]) keeps separate buckets and defaults per class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteClass {
    /// Uploads (tus, raw) and live pushes: long bodies from devices and encoders.
    Ingest,
    /// Playlists and segments for viewers, usually behind a CDN.
    Playback,
    /// The tenant and admin API, and paths Sluice does not know.
    Admin,
    /// Health, readiness and metrics: probes and scrapers.
    Ops,
}

impl Route {
    /// Every route, for tests and documentation.
    pub const ALL: [Route; 33] = [
        Route::Healthz,
        Route::Readyz,
        Route::Metrics,
        Route::Tenants,
        Route::TusCreate,
        Route::TusPatch,
        Route::TusHead,
        Route::TusOther,
        Route::RawUpload,
        Route::AssetSource,
        Route::AssetPlayback,
        Route::Assets,
        Route::Jobs,
        Route::Webhooks,
        Route::Devices,
        Route::LiveIngest,
        Route::Live,
        Route::Preset,
        Route::PlayPlaylist,
        Route::PlaySegment,
        Route::EdgeVerify,
        Route::Edge,
        Route::WatchPage,
        Route::PlayerFile,
        Route::Tiers,
        Route::Usage,
        Route::Lifecycle,
        Route::OpsLifecycle,
        Route::Other,
        Route::Keys,
        Route::Audit,
        Route::AdminJwks,
        Route::Ops,
    ];

    /// The `route` label of the HTTP metrics: a fixed set (never a raw path, whose ids
    /// would make the label unbounded). Dashboards and tests use these names.
    pub fn label(self) -> &'static str {
        match self {
            Route::Healthz => "healthz",
            Route::Readyz => "readyz",
            Route::Metrics => "metrics",
            Route::Tenants => "tenants",
            Route::TusCreate => "tus_create",
            Route::TusPatch => "tus_patch",
            Route::TusHead => "tus_head",
            Route::TusOther => "tus_other",
            Route::RawUpload => "raw_upload",
            Route::AssetSource => "asset_source",
            Route::AssetPlayback => "asset_playback",
            Route::Assets => "assets",
            Route::Jobs => "jobs",
            Route::Webhooks => "webhooks",
            Route::Devices => "devices",
            Route::LiveIngest => "live_ingest",
            Route::Live => "live",
            Route::Preset => "preset",
            Route::PlayPlaylist => "play_playlist",
            Route::PlaySegment => "play_segment",
            Route::EdgeVerify => "edge_verify",
            Route::Edge => "edge",
            Route::WatchPage => "watch_page",
            Route::PlayerFile => "player_file",
            Route::Tiers => "tiers",
            Route::Usage => "usage",
            Route::Lifecycle => "lifecycle",
            Route::OpsLifecycle => "ops_lifecycle",
            Route::Other => "other",
            Route::Keys => "keys",
            Route::Audit => "audit",
            Route::AdminJwks => "admin_jwks",
            Route::Ops => "ops",
        }
    }

    /// Whether the request must complete within the configured request timeout. Uploads
    /// and media streams run as long as their bodies take (their bodies have an idle
    /// deadline instead).
    pub fn has_deadline(self) -> bool {
        !matches!(
            self,
            Route::TusCreate
                | Route::TusPatch
                | Route::RawUpload
                | Route::AssetSource
                | Route::LiveIngest
                | Route::PlaySegment
        )
    }

    pub fn credentials(self) -> Credentials {
        match self {
            Route::Healthz
            | Route::Readyz
            | Route::LiveIngest
            | Route::PlayPlaylist
            | Route::PlaySegment
            | Route::EdgeVerify
            | Route::WatchPage
            | Route::PlayerFile => Credentials::None,
            Route::Metrics => Credentials::NoneButNoDevice,
            Route::TusCreate
            | Route::TusPatch
            | Route::TusHead
            | Route::TusOther
            | Route::RawUpload => Credentials::Uploader,
            Route::Tenants
            | Route::AssetSource
            | Route::AssetPlayback
            | Route::Assets
            | Route::Jobs
            | Route::Webhooks
            | Route::Devices
            | Route::Live
            | Route::Preset
            | Route::Edge
            | Route::Other
            | Route::Keys
            | Route::Audit
            | Route::AdminJwks
            | Route::Usage
            | Route::Tiers
            | Route::Lifecycle
            | Route::OpsLifecycle
            | Route::Ops => Credentials::Key,
        }
    }

    pub fn class(self) -> RouteClass {
        match self {
            Route::TusCreate
            | Route::TusPatch
            | Route::TusHead
            | Route::TusOther
            | Route::RawUpload
            | Route::LiveIngest => RouteClass::Ingest,
            Route::PlayPlaylist
            | Route::PlaySegment
            | Route::EdgeVerify
            | Route::WatchPage
            | Route::PlayerFile => RouteClass::Playback,
            Route::Healthz | Route::Readyz | Route::Metrics => RouteClass::Ops,
            Route::Tenants
            | Route::AssetSource
            | Route::AssetPlayback
            | Route::Assets
            | Route::Jobs
            | Route::Webhooks
            | Route::Devices
            | Route::Live
            | Route::Preset
            | Route::Edge
            | Route::Other
            | Route::Keys
            | Route::Audit
            | Route::AdminJwks
            | Route::Usage
            | Route::Tiers
            | Route::Lifecycle
            | Route::OpsLifecycle
            | Route::Ops => RouteClass::Admin,
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod roles_doc;
