//! Observability of every request: one span, one log line, the HTTP metrics, and the
//! security headers, all in one tower layer ([`ObserveLayer`]) near the top of the stack.
//!
//! - **Span**: `request`, at DEBUG (free at the default `info` filter: an enabled span
//!   costs a few microseconds per request, a quarter of a cached playlist's answer), with
//!   OpenTelemetry semantic-convention names: `http.request.method`, `http.route` (the
//!   route's fixed label, never the raw path: playback and ingest paths carry tokens),
//!   `http.response.status_code`, `tenant`, `request_id`, `duration_ms`. The request id is
//!   also in a task-local ([`request_id`]) for the whole request, so a 5xx's internal
//!   details logged by `error.rs` carry it at any filter.
//! - **Log line**: one per request when it is answered, with the same fields, at a level
//!   chosen by the status class: 5xx `error`, 4xx `info`, everything else `debug` (a
//!   viewer's segment requests do not fill the log at the default `info` filter).
//! - **Metrics** (bounded labels only: route class, status class, route label):
//!   `sluice_http_server_requests_total{class,status_class}`,
//!   `sluice_http_server_request_duration_seconds{class,status_class}`,
//!   `sluice_http_server_response_body_bytes_total{class}` (bytes actually sent, counted
//!   as the body is polled), and `sluice_http_server_request_body_bytes_total{class}`
//!   (counted by the request body, [`crate::body::IdleBody`]).
//! - **Headers**: [`crate::headers::apply`] on every answer.
//!
//! The router tells this layer what it decided through a response extension
//! ([`RouteInfo`]): the route's label and class and the caller's tenant.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use tower::{Layer, Service};
use tracing::Instrument;

use crate::endpoint::RouteClass;
use crate::server::Secure;

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The `x-request-id` of the request being answered ("" outside of one), for log lines
/// made deep inside a handler.
pub fn request_id() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_default()
}

/// What the router decided about a request, handed back in the response's extensions.
#[derive(Debug, Clone)]
pub struct RouteInfo {
    pub label: &'static str,
    pub class: RouteClass,
    pub tenant: Option<String>,
}

/// The `class` label of the HTTP metrics.
pub fn class_label(c: RouteClass) -> &'static str {
    match c {
        RouteClass::Ingest => "ingest",
        RouteClass::Playback => "playback",
        RouteClass::Admin => "admin",
        RouteClass::Ops => "ops",
    }
}

/// The `status_class` label: `1xx` … `5xx`.
pub fn status_class(s: StatusCode) -> &'static str {
    match s.as_u16() / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    }
}

/// The layer; `hsts` is the `Strict-Transport-Security` value sent over TLS (none: off).
#[derive(Clone)]
pub struct ObserveLayer {
    hsts: Option<http::HeaderValue>,
}

impl ObserveLayer {
    pub fn new(hsts_max_age_s: u64) -> Self {
        let hsts = (hsts_max_age_s > 0).then(|| {
            http::HeaderValue::from_str(&format!("max-age={hsts_max_age_s}"))
                .expect("digits are a valid header value")
        });
        Self { hsts }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;
    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            hsts: self.hsts.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Observe<S> {
    inner: S,
    hsts: Option<http::HeaderValue>,
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for Observe<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>, Error = Infallible> + Send,
    S::Future: Send + 'static,
    ReqB: Send + 'static,
    ResB: http_body::Body<Data = Bytes> + Unpin + Send + 'static,
{
    type Response = Response<Counted<ResB>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let started = Instant::now();
        let secure = req.extensions().get::<Secure>().is_some();
        let request_id = req
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let span = tracing::debug_span!(
            "request",
            http.request.method = %req.method(),
            http.route = tracing::field::Empty,
            http.response.status_code = tracing::field::Empty,
            tenant = tracing::field::Empty,
            request_id = %request_id,
            duration_ms = tracing::field::Empty,
        );
        let method = req.method().clone();
        let fut = REQUEST_ID.scope(
            request_id.clone(),
            self.inner.call(req).instrument(span.clone()),
        );
        let hsts = self.hsts.clone().filter(|_| secure);
        Box::pin(async move {
            let Ok(mut res) = fut.await;
            crate::headers::apply(&mut res, hsts);
            let status = res.status();
            let info = res.extensions().get::<RouteInfo>();
            let (label, class) =
                // No route info: answered before the router (a CORS preflight, a key the
                // auth layer refused, a panic).
                info.map_or(("unrouted", "unrouted"), |i| (i.label, class_label(i.class)));
            let tenant = info.and_then(|i| i.tenant.clone());
            let elapsed = started.elapsed();
            let sc = status_class(status);
            metrics::counter!("sluice_http_server_requests_total", "class" => class, "status_class" => sc)
                .increment(1);
            metrics::histogram!("sluice_http_server_request_duration_seconds", "class" => class, "status_class" => sc)
                .record(elapsed.as_secs_f64());
            let ms = elapsed.as_secs_f64() * 1000.0;
            span.record("http.route", label);
            span.record("http.response.status_code", status.as_u16());
            span.record("duration_ms", ms);
            if let Some(t) = &tenant {
                span.record("tenant", t.as_str());
            }
            let tenant = tenant.as_deref().unwrap_or("");
            let code = status.as_u16();
            macro_rules! line {
                ($lvl:ident) => {
                    tracing::$lvl!(
                        parent: None,
                        http.request.method = %method,
                        http.route = label,
                        http.response.status_code = code,
                        tenant,
                        request_id = %request_id,
                        duration_ms = ms,
                        "answered"
                    )
                };
            }
            if status.is_server_error() {
                line!(error);
            } else if status.is_client_error() {
                line!(info);
            } else {
                line!(debug);
            }
            Ok(res.map(|b| Counted {
                inner: b,
                class,
                sent: 0,
            }))
        })
    }
}

/// A response body that counts the bytes it hands to the connection and adds them to
/// `sluice_http_server_response_body_bytes_total` when it is dropped (finished, or cut by
/// the client hanging up: only what was sent counts).
pub struct Counted<B> {
    inner: B,
    class: &'static str,
    sent: u64,
}

impl<B> Drop for Counted<B> {
    fn drop(&mut self) {
        if self.sent > 0 {
            metrics::counter!("sluice_http_server_response_body_bytes_total", "class" => self.class)
                .increment(self.sent);
        }
    }
}

impl<B> http_body::Body for Counted<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &r
            && let Some(d) = f.data_ref()
        {
            this.sent += d.len() as u64;
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
