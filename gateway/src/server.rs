//! The accept loop and the connection limits: how many connections, how long a silent one
//! lives, how large a request head may be, how long a TLS handshake may take, and what
//! happens when `accept` fails.
//!
//! Every connection holds a permit of a semaphore sized `gateway.max_connections` for its
//! whole life: at the cap, accepting pauses and clients wait in the listen backlog (8192)
//! instead of the process running out of sockets. `accept` errors (EMFILE, ENFILE,
//! ENOBUFS…) back off exponentially, 5 ms doubling to 1 s, and reset at the next success.
//! A connection on which no byte moves for `gateway.idle_timeout_s` is shut down
//! gracefully (an answer under way is finished), which ends idle keep-alive connections;
//! HTTP/1.1 heads must arrive within `gateway.header_read_timeout_s` (slowloris) and fit in
//! `gateway.max_header_bytes` (431 otherwise). With TLS, the handshake must finish within
//! `gateway.tls_handshake_timeout_s`, and ALPN picks HTTP/2 or HTTP/1.1; without TLS the
//! same builder answers HTTP/1.1 and h2c (prior knowledge).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceBuilder;

use crate::{App, body, client_ip, service, tls};

/// Marks a request that arrived over TLS (a request extension): HSTS is sent only then.
#[derive(Debug, Clone, Copy)]
pub struct Secure;

/// Run one connection to its end: shut it down gracefully at process shutdown, or when no
/// byte has moved on it for a whole `idle` period (checked once per period, so a silent
/// connection lives between one and two periods). A macro, not a function: the
/// connection's type spells out hyper's whole service stack.
macro_rules! drive {
    ($conn:expr, $activity:expr, $idle:expr, $shutdown:expr) => {{
        let conn = $conn;
        let mut conn = std::pin::pin!(conn);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + $idle, $idle);
        let mut seen = $activity.load(Ordering::Relaxed);
        let mut closing = false;
        loop {
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!("connection ended: {e}");
                    }
                    break;
                }
                _ = tick.tick(), if !closing => {
                    let now = $activity.load(Ordering::Relaxed);
                    if now == seen {
                        metrics::counter!("sluice_http_idle_closed_total").increment(1);
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                    }
                    seen = now;
                }
                _ = $shutdown.wait_for(|s| *s), if !closing => {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }};
}

/// Accept connections until `shutdown` turns true, then drain in-flight requests for up to
/// the configured grace period. With `tls`, every connection is HTTPS.
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    tls: Option<tls::Tls>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let cfg = app.engine.config().gateway.clone();
    let grace = Duration::from_secs(cfg.shutdown_grace_s);
    let body_idle = Duration::from_secs(cfg.body_idle_timeout_s);
    let conn_idle = Duration::from_secs(cfg.idle_timeout_s);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(cfg.tcp_keepalive_s))
        .with_interval(Duration::from_secs(10));
    // Egress counted in memory reaches the database every flush interval and at the end.
    let flusher = app.engine.spawn_usage_flusher();
    let engine = app.engine.clone();
    let svc = service(app);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Encoders pushing live HLS (ffmpeg `-method PUT`) send the last chunk of a body and
    // close their socket without waiting for the answer. Without half-close hyper would
    // take that EOF as a cancelled request and drop the handler mid-way. hyper's header
    // read timeout only runs with a timer: without one it is silently off. The read
    // buffer's cap is what bounds a request head (hyper answers 431 when a head does not
    // fit).
    builder
        .http1()
        .half_close(true)
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(cfg.header_read_timeout_s))
        .max_buf_size(cfg.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(cfg.tcp_keepalive_s))
        .max_header_list_size(u32::try_from(cfg.max_header_bytes).unwrap_or(u32::MAX));
    let builder = Arc::new(builder);
    let max = cfg.max_connections;
    let permits = Arc::new(tokio::sync::Semaphore::new(max));
    let mut backoff = Duration::from_millis(5);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            _ = shutdown.changed() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(s) => {
                    backoff = Duration::from_millis(5);
                    s
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    metrics::counter!("sluice_http_accept_errors_total").increment(1);
                    tracing::warn!(backoff_ms = backoff.as_millis() as u64, "accept failed: {e}");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => break,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        if let Err(e) = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive) {
            tracing::debug!("could not enable TCP keepalive: {e}");
        }
        let (svc, builder, tls, mut shutdown) =
            (svc.clone(), builder.clone(), tls.clone(), shutdown.clone());
        tokio::spawn(async move {
            let activity = Arc::new(AtomicU64::new(0));
            let secure = tls.is_some();
            // Every request body gets the idle deadline; every request knows its peer.
            let svc = ServiceBuilder::new()
                .map_request(move |req: Request<hyper::body::Incoming>| {
                    let mut req = req.map(|b| body::IdleBody::new(b, body_idle));
                    req.extensions_mut().insert(client_ip::PeerAddr(peer));
                    if secure {
                        req.extensions_mut().insert(Secure);
                    }
                    req
                })
                .service(svc);
            let svc = TowerToHyperService::new(svc);
            match tls {
                None => {
                    let io = Tracked::new(stream, activity.clone());
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
                    drive!(conn, activity, conn_idle, shutdown);
                }
                Some(tls) => {
                    let accepted =
                        tokio::time::timeout(tls.handshake_timeout, tls.acceptor.accept(stream))
                            .await;
                    let stream = match accepted {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            metrics::counter!("sluice_tls_handshake_failures_total", "reason" => "error").increment(1);
                            tracing::debug!("TLS handshake failed: {e}");
                            return;
                        }
                        Err(_) => {
                            metrics::counter!("sluice_tls_handshake_failures_total", "reason" => "timeout").increment(1);
                            tracing::debug!("TLS handshake timed out");
                            return;
                        }
                    };
                    let io = Tracked::new(stream, activity.clone());
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
                    drive!(conn, activity, conn_idle, shutdown);
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    // Every connection gives its permit back when it ends: all of them back means drained.
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    tokio::select! {
        _ = permits.acquire_many(all) => {}
        _ = tokio::time::sleep(grace) => tracing::warn!("shutdown grace period over; closing open connections"),
    }
    flusher.abort();
    if let Err(e) = engine.flush_usage().await {
        tracing::error!("could not write usage counters at shutdown: {e}");
    }
    Ok(())
}

/// An I/O stream that counts its reads and writes, so a watchdog can tell a silent
/// connection from a busy one without a timer per operation.
pub struct Tracked<T> {
    inner: T,
    activity: Arc<AtomicU64>,
}

impl<T> Tracked<T> {
    fn new(inner: T, activity: Arc<AtomicU64>) -> Self {
        Self { inner, activity }
    }

    fn tick(&self) {
        self.activity.fetch_add(1, Ordering::Relaxed);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if r.is_ready() {
            self.tick();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if r.is_ready() {
            self.tick();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if r.is_ready() {
            self.tick();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
