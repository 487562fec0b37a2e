//! The HTTP surface of Sluice on hyper 1 and one tower `ServiceBuilder` stack.
//!
//! Read the stack in [`service`] top to bottom: request id → observe ([`observe`]: span,
//! log line, metrics, security headers) → request id propagation → panic guard → CORS →
//! auth → rate limit ([`ratelimit`]) → router (roles: [`access`]; body limits: [`limits`];
//! quotas: [`quota`]). Connections are accepted in [`server`] (limits, idle close, TLS through
//! [`tls`]). The router parses each request once into an [`endpoint::Endpoint`] (the
//! one table of routes, with each route's label, deadline, credentials and class) and
//! dispatches on it. Handlers are grouped by surface: [`ingest`] (tus uploads),
//! [`playback`] (HLS for viewers) and [`watch`] (the watch page), [`admin`] (tenants, assets, jobs), [`live`] (live
//! push) and the operational endpoints (health, readiness, metrics) here. URL paths handed
//! to clients are written and read in [`paths`]; errors become responses only in [`error`].

pub mod access;
pub mod admin;
pub mod auth;
pub mod body;
pub mod cache;
pub mod client_ip;
pub mod edge;
pub mod endpoint;
pub mod error;
pub mod headers;
pub mod ingest;
pub mod keys;
pub mod limits;
pub mod live;
pub mod observe;
pub mod ops;
pub mod paths;
pub mod playback;
#[cfg(test)]
mod prop_tests;
pub mod quota;
pub mod ratelimit;
pub mod ratelimit_redis;
pub mod server;
pub mod tiers;
pub mod tls;
mod tus;
pub mod watch;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::body::ReqBody;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use metrics_exporter_prometheus::PrometheusHandle;
use sluice_engine::{Engine, Principal};
use tokio::net::TcpListener;
use tower::{Service, ServiceBuilder};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{Any, CorsLayer};
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};

use crate::auth::{AuthLayer, Authenticated};
use crate::body::{Body, empty, full};
use crate::endpoint::Endpoint;
use crate::error::ApiError;

pub type ApiResult = Result<Response<Body>, ApiError>;

/// Shared state of the router.
pub struct App {
    pub engine: Engine,
    /// Where playback reads objects from (handed in by the binary, not reached through the
    /// engine: the domain decides what may be read, the gateway reads it).
    pub storage: sluice_storage::Storage,
    /// Playback objects in memory, loaded from `storage` once ([`cache`]).
    pub cache: cache::PlaybackCache,
    pub metrics: PrometheusHandle,
}

impl App {
    /// The router's state, with a playback cache sized by the engine's configuration.
    pub fn new(
        engine: Engine,
        storage: sluice_storage::Storage,
        metrics: PrometheusHandle,
    ) -> Self {
        let g = &engine.config().gateway;
        let cache = cache::PlaybackCache::new(
            g.cache_bytes,
            g.cache_max_object_bytes,
            Duration::from_millis(g.cache_ttl_ms),
        );
        cache.follow(&storage);
        Self {
            engine,
            storage,
            cache,
            metrics,
        }
    }
}

/// The authenticated principal, or 401.
pub(crate) fn principal<B>(req: &Request<B>) -> Result<&Principal, ApiError> {
    req.extensions()
        .get::<Authenticated>()
        .map(|a| &a.0)
        .ok_or_else(ApiError::unauthenticated)
}

/// The base URL clients reach us at: the configured public URL, else from `Host`.
pub(crate) fn base_url<B>(app: &App, req: &Request<B>) -> String {
    if let Some(u) = &app.engine.config().public_url {
        return u.trim_end_matches('/').to_string();
    }
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
        })
        .map(str::to_string)
        .unwrap_or_else(|| app.engine.config().addr.to_string());
    format!("http://{host}")
}

async fn route(app: Arc<App>, mut req: Request<ReqBody>) -> Response<Body> {
    let started = Instant::now();
    // The endpoint borrows its parameters from the path; a clone of the URI (which shares
    // its bytes rather than copying them) lets the handler take the request.
    let uri = req.uri().clone();
    let endpoint = Endpoint::parse(req.method(), uri.path());
    let route = endpoint.route();
    let label = route.label();
    let info = observe::RouteInfo {
        label,
        class: route.class(),
        tenant: req
            .extensions()
            .get::<Authenticated>()
            .and_then(|a| a.0.tenant().map(str::to_owned)),
    };
    req.body_mut()
        .set_class(observe::class_label(route.class()));
    if let Err(e) = limits::check_body(app.engine.config(), route.class(), req.headers()) {
        let mut res = e.into_response();
        metrics::counter!("sluice_http_requests_total", "route" => label, "status" => status_label(res.status()))
            .increment(1);
        res.extensions_mut().insert(info);
        return res;
    }
    // Each endpoint's role (`Endpoint::access`), checked here for every route whatever the
    // handler would check; audited actions are noted before the handler takes the request.
    let audit = access::note(&endpoint, &req);
    if let Some(refused) = access::refusal(&endpoint, &req) {
        let mut res = refused.into_response();
        let ended = access::ended(&res);
        access::record(&app.engine, audit, ended).await;
        metrics::counter!("sluice_http_requests_total", "route" => label, "status" => status_label(res.status()))
            .increment(1);
        res.extensions_mut().insert(info);
        return res;
    }
    // Quotas: an upload's permit lives until its handler ends; a playback body's until
    // the body does (quota.rs).
    let metered = quota::Metered::of(&endpoint, &req);
    let _upload_permit = match metered.before(&app.engine).await {
        Ok(p) => p,
        Err(e) => {
            let mut res = e.into_response();
            res.extensions_mut().insert(info);
            return res;
        }
    };
    let fut = dispatch(&app, endpoint, req);
    let result = if route.has_deadline() {
        let d = Duration::from_secs(app.engine.config().gateway.request_timeout_s);
        match tokio::time::timeout(d, fut).await {
            Ok(r) => r,
            Err(_) => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                format!("the request did not complete within {} s", d.as_secs()),
            )),
        }
    } else {
        fut.await
    };
    let res = match result {
        Ok(res) => metered
            .after(&app.engine, res)
            .await
            .unwrap_or_else(ApiError::into_response),
        Err(e) => e.into_response(),
    };
    let ended = access::ended(&res);
    access::record(&app.engine, audit, ended).await;
    let mut res = res;
    res.extensions_mut().insert(info);
    let status = status_label(res.status());
    metrics::counter!("sluice_http_requests_total", "route" => label, "status" => status)
        .increment(1);
    metrics::histogram!("sluice_http_request_duration_seconds", "route" => label)
        .record(started.elapsed().as_secs_f64());
    res
}

async fn dispatch(app: &App, endpoint: Endpoint<'_>, req: Request<ReqBody>) -> ApiResult {
    use Endpoint as E;
    match endpoint {
        E::Healthz => Ok(text(StatusCode::OK, "ok\n")),
        E::Readyz => match app.engine.readiness().await {
            Ok(()) => Ok(text(StatusCode::OK, "ready\n")),
            Err(e) => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                e.to_string(),
            )),
        },
        E::Metrics => {
            let mut res = Response::new(full(app.metrics.render()));
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            Ok(res)
        }
        E::CreateTenant => admin::create_tenant(app, req).await,
        E::PatchTenant { id } => admin::patch_tenant(app, id, req).await,
        E::Tus { target, .. } => ingest::tus(app, target, req).await,
        E::RawUpload => ingest::raw_upload(app, req).await,
        E::GetAsset { id } => admin::get_asset(app, id, &req).await,
        E::GetSource { id } => admin::get_source(app, id, &req).await,
        E::CreatePlayback { id } => admin::create_playback(app, id, req).await,
        E::RerunRendition { id, name } => admin::rerun_rendition(app, id, name, &req).await,
        E::CreateDevice => admin::create_device(app, req).await,
        E::ListDevices => admin::list_devices(app, &req).await,
        E::GetDevice { id } => admin::get_device(app, id, &req).await,
        E::DeleteDevice { id } => admin::revoke_device(app, id, &req, false).await,
        E::RevokeDevice { id } => admin::revoke_device(app, id, &req, true).await,
        E::CreateWebhook => admin::create_webhook(app, req).await,
        E::ListWebhooks => admin::list_webhooks(app, &req).await,
        E::DeleteWebhook { id } => admin::delete_webhook(app, id, &req).await,
        E::ListJobs => admin::list_jobs(app, &req).await,
        E::GetJob { id } => admin::get_job(app, id, &req).await,
        E::CancelJob { id } => admin::cancel_job(app, id, &req).await,
        E::RetryJob { id } => admin::rerun_job(app, id, req).await,
        E::CreateLive => live::create(app, req).await,
        E::ListLive => live::list(app, &req).await,
        E::GetLive { id } => live::get(app, id, &req).await,
        E::EndLive { id } => live::end(app, id, &req).await,
        E::LivePlayback { id } => live::playback(app, id, req).await,
        E::LiveIngest(p) => live::ingest(app, p.stream, p.token, p.file, req).await,
        E::GetPreset => admin::get_preset(app, &req).await,
        E::PutPreset => admin::put_preset(app, req).await,
        E::DeletePreset => admin::delete_preset(app, &req).await,
        E::Play(p) => playback::serve(app, p.tenant, p.asset, p.token, p.entry, &req).await,
        E::EdgeVerify => edge::verify(app, &req).await,
        E::EdgeAdmin => edge::admin(app, &req).await,
        E::EdgeObject {
            tenant,
            asset,
            entry,
        } => edge::object(app, tenant, asset, entry, &req).await,
        E::WatchPage {
            path,
            playlist_stem,
        } => watch::serve_page(app, &path, playlist_stem, &req),
        E::PlayerFile { path, name } => watch::serve_file(app, &path, name, &req),
        E::CreateKey => keys::create(app, req).await,
        E::ListKeys => keys::list(app, &req).await,
        E::RevokeKey { id } => keys::revoke(app, id, &req).await,
        E::ListAudit => keys::audit(app, &req).await,
        E::AdminJwks => keys::jwks(app, &req).await,
        E::AssetTier { id } => tiers::tier(app, id, req).await,
        E::AssetRestore { id } => tiers::restore(app, id, req).await,
        E::AssetTags { id } => tiers::put_tags(app, id, req).await,
        E::AssetLifecycle { id } => tiers::explain(app, id, &req).await,
        E::GetUsage => tiers::usage(app, &req).await,
        E::GetLifecycle => tiers::get_lifecycle(app, &req).await,
        E::PutLifecycle => tiers::put_lifecycle(app, req).await,
        E::RunLifecycle => tiers::run_lifecycle(app, req).await,
        E::CreateMigration => ops::create_migration(app, req).await,
        E::UsageCheck => ops::usage_check(app, req).await,
        E::NotFound(_) => Err(ApiError::not_found(format!(
            "no route for {} {}",
            req.method(),
            req.uri().path()
        ))),
    }
}

/// The `status` label of the HTTP metrics, without an allocation for the common ones.
fn status_label(status: StatusCode) -> std::borrow::Cow<'static, str> {
    let fixed = match status.as_u16() {
        200 => "200",
        201 => "201",
        204 => "204",
        206 => "206",
        304 => "304",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        409 => "409",
        416 => "416",
        429 => "429",
        500 => "500",
        503 => "503",
        other => return other.to_string().into(),
    };
    fixed.into()
}

/// Request ids: ULIDs (unique across processes, sortable by time). A UUIDv4 per request
/// cost a `getrandom` system call on the playback hot path.
#[derive(Clone, Copy, Default)]
struct MakeUlid;

impl MakeRequestId for MakeUlid {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        HeaderValue::from_str(&ulid::Ulid::new().to_string())
            .ok()
            .map(RequestId::new)
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut res = Response::new(full(body));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

/// Headers the browser may read from cross-origin responses (tus clients need these; the
/// rate-limit fields let a player back off).
const EXPOSED: [&str; 16] = [
    "location",
    "upload-offset",
    "upload-length",
    "upload-defer-length",
    "upload-concat",
    "upload-expires",
    "upload-metadata",
    "tus-version",
    "tus-resumable",
    "tus-max-size",
    "tus-extension",
    "content-range",
    "x-request-id",
    "retry-after",
    "ratelimit",
    "ratelimit-policy",
];

/// The whole service: the layer stack around the router.
pub fn service(
    app: Arc<App>,
) -> impl tower::Service<
    Request<ReqBody>,
    Response = Response<impl http_body::Body<Data = bytes::Bytes, Error = body::BoxError> + Send>,
    Error = Infallible,
    Future = impl Send,
> + Clone
+ Send {
    let engine = app.engine.clone();
    let observe = observe::ObserveLayer::new(app.engine.config().gateway.hsts_max_age_s);
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PATCH,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers(Any)
        .expose_headers(EXPOSED.map(http::HeaderName::from_static))
        .max_age(Duration::from_secs(86400));
    let plain = ServiceBuilder::new()
        .layer(AuthLayer::new(engine.clone()))
        .layer(ratelimit::RateLimitLayer::new(engine))
        .service_fn(move |req| {
            let app = app.clone();
            async move { Ok::<_, Infallible>(route(app, req).await) }
        });
    let with_cors = ServiceBuilder::new().layer(cors).service(plain.clone());
    ServiceBuilder::new()
        .layer(SetRequestIdLayer::x_request_id(MakeUlid))
        .layer(observe)
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the server hit a bug handling this request",
            )
            .into_response()
        }))
        .service_fn(move |req: Request<ReqBody>| {
            // tower-http's CORS layer answers every OPTIONS as a preflight; a tus client's
            // OPTIONS (no Access-Control-Request-Method) must reach the tus handler.
            let preflight = req.method() == Method::OPTIONS
                && req
                    .headers()
                    .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
            // Both services are always ready (service_fn, CORS and auth never apply
            // back-pressure), so they are called directly.
            let (mut with_cors, mut plain) = (with_cors.clone(), plain.clone());
            async move {
                if preflight || req.method() != Method::OPTIONS {
                    with_cors.call(req).await
                } else {
                    plain.call(req).await
                }
            }
        })
}

/// The router alone, with none of the layers of [`service`] (request id, observe, panic
/// guard, CORS, auth): what the layer-cost benchmark (`benches/src/bin/layer_cost.rs`)
/// measures the stack against. Never served by `sluice`.
pub fn router_service(
    app: Arc<App>,
) -> impl tower::Service<
    Request<ReqBody>,
    Response = Response<Body>,
    Error = Infallible,
    Future = impl Send,
> + Clone
+ Send {
    tower::service_fn(move |req| {
        let app = app.clone();
        async move { Ok::<_, Infallible>(route(app, req).await) }
    })
}

/// Connections the kernel queues for us while every worker thread is busy (capped by
/// `net.core.somaxconn`). Tokio's default of 1,024 drops connects when thousands of
/// viewers arrive at once.
const LISTEN_BACKLOG: i32 = 8192;

/// A listening socket for the gateway, with a backlog sized for viewer floods.
pub fn listen(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    TcpListener::from_std(socket.into())
}

/// Accept plain HTTP connections (HTTP/1.1 and h2c) until `shutdown` turns true, then
/// drain in-flight requests for up to the configured grace period ([`server::serve`]).
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    server::serve(app, listener, None, shutdown).await
}

/// An empty response with a status.
pub(crate) fn status_only(status: StatusCode) -> Response<Body> {
    let mut res = Response::new(empty());
    *res.status_mut() = status;
    res
}
