//! The HTTP surface of Sluice on hyper 1 and one tower `ServiceBuilder` stack.
//!
//! Read the stack in [`service`] top to bottom: request id → trace → panic guard → CORS →
//! auth → router. The router parses each request once into an [`endpoint::Endpoint`] (the
//! one table of routes, with each route's label, deadline, credentials and class) and
//! dispatches on it. Handlers are grouped by surface: [`ingest`] (tus uploads),
//! [`playback`] (HLS for viewers) and [`watch`] (the watch page), [`admin`] (tenants, assets, jobs), [`live`] (live
//! push) and the operational endpoints (health, readiness, metrics) here. URL paths handed
//! to clients are written and read in [`paths`]; errors become responses only in [`error`].

pub mod admin;
pub mod auth;
pub mod body;
pub mod cache;
pub mod client_ip;
pub mod edge;
pub mod endpoint;
pub mod error;
pub mod ingest;
pub mod live;
pub mod ops;
pub mod paths;
pub mod playback;
mod tus;
pub mod watch;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::body::ReqBody;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use metrics_exporter_prometheus::PrometheusHandle;
use sluice_engine::{Engine, Principal};
use tokio::net::TcpListener;
use tower::{Service, ServiceBuilder};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{Any, CorsLayer};
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;

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

async fn route(app: Arc<App>, req: Request<ReqBody>) -> Response<Body> {
    let started = Instant::now();
    // The endpoint borrows its parameters from the path; a clone of the URI (which shares
    // its bytes rather than copying them) lets the handler take the request.
    let uri = req.uri().clone();
    let endpoint = Endpoint::parse(req.method(), uri.path());
    let route = endpoint.route();
    let label = route.label();
    // A device key uploads and does nothing else: refused here for every other route,
    // whatever the handler would check.
    let device = req
        .extensions()
        .get::<Authenticated>()
        .is_some_and(|a| a.0.is_device());
    if device && !route.credentials().device_may() {
        let res = ApiError::from(sluice_engine::Error::DeviceNotAllowed).into_response();
        metrics::counter!("sluice_http_requests_total", "route" => label, "status" => "403")
            .increment(1);
        return res;
    }
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
    let res = result.unwrap_or_else(ApiError::into_response);
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

/// Headers the browser may read from cross-origin responses (tus clients need these).
const EXPOSED: [&str; 13] = [
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
        .layer(AuthLayer::new(engine))
        .service_fn(move |req| {
            let app = app.clone();
            async move { Ok::<_, Infallible>(route(app, req).await) }
        });
    let with_cors = ServiceBuilder::new().layer(cors).service(plain.clone());
    ServiceBuilder::new()
        .layer(SetRequestIdLayer::x_request_id(MakeUlid))
        .layer(TraceLayer::new_for_http())
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

/// Accept connections until `shutdown` turns true, then drain in-flight requests for up to
/// the configured grace period.
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let cfg = app.engine.config().gateway.clone();
    let grace = Duration::from_secs(cfg.shutdown_grace_s);
    let idle = Duration::from_secs(cfg.body_idle_timeout_s);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(cfg.tcp_keepalive_s))
        .with_interval(Duration::from_secs(10));
    let svc = service(app);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Encoders pushing live HLS (ffmpeg `-method PUT`) send the last chunk of a body and
    // close their socket without waiting for the answer. Without half-close hyper would
    // take that EOF as a cancelled request and drop the handler mid-way. hyper's header
    // read timeout only runs with a timer: without one it is silently off.
    builder
        .http1()
        .half_close(true)
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(cfg.header_read_timeout_s));
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(cfg.tcp_keepalive_s));
    // One permit per open connection: at the cap, accepting pauses (clients wait in the
    // kernel's backlog) instead of the process running out of sockets or memory.
    let permits = Arc::new(tokio::sync::Semaphore::new(cfg.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            _ = shutdown.changed() => break,
        };
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(s) => s,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                if let Err(e) = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive) {
                    tracing::debug!("could not enable TCP keepalive: {e}");
                }
                // Every request body gets the idle deadline; every request knows its peer.
                let with_idle = ServiceBuilder::new()
                    .map_request(move |req: Request<hyper::body::Incoming>| {
                        let mut req = req.map(|b| body::IdleBody::new(b, idle));
                        req.extensions_mut().insert(client_ip::PeerAddr(peer));
                        req
                    })
                    .service(svc.clone());
                let conn = builder.serve_connection_with_upgrades(
                    TokioIo::new(stream),
                    TowerToHyperService::new(with_idle),
                );
                let conn = graceful.watch(conn.into_owned());
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!("connection ended: {e}");
                    }
                    drop(permit);
                });
            }
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(grace) => tracing::warn!("shutdown grace period over; closing open connections"),
    }
    Ok(())
}

/// An empty response with a status.
pub(crate) fn status_only(status: StatusCode) -> Response<Body> {
    let mut res = Response::new(empty());
    *res.status_mut() = status;
    res
}
