//! Response bodies: small ones in memory, large ones streamed from storage; request
//! bodies with an idle deadline.

use std::future::Future;

use bytes::Bytes;
use futures::TryStreamExt;
use http_body_util::{BodyExt, Empty, Full, StreamBody, combinators::UnsyncBoxBody};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

pub fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

pub fn stream(s: sluice_storage::ByteStream) -> Body {
    StreamBody::new(
        s.map_ok(http_body::Frame::data)
            .map_err(|e| Box::new(e) as BoxError),
    )
    .boxed_unsync()
}

pub fn json(value: &impl serde::Serialize) -> Body {
    full(serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec()))
}

/// Request bodies as every handler sees them: hyper's body with an idle deadline.
pub type ReqBody = IdleBody<hyper::body::Incoming>;

/// A request body that fails when the client sends nothing for `idle` while the server
/// is waiting for bytes: a half-open or stalled upload gives up its task, socket, file and
/// write lease instead of holding them forever. The clock starts at the first read, so a
/// handler that reads the body late is not penalised; it restarts at every frame.
pub struct IdleBody<B> {
    inner: B,
    idle: std::time::Duration,
    /// Allocated once, re-armed when the body goes from "a frame arrived" to "waiting".
    deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    armed: bool,
    /// Bytes read so far, added to `sluice_http_server_request_body_bytes_total` under
    /// `class` (the route class, set by the router) when the body is dropped.
    read: u64,
    class: &'static str,
}

impl<B> IdleBody<B> {
    pub fn new(inner: B, idle: std::time::Duration) -> Self {
        Self {
            inner,
            idle,
            deadline: None,
            armed: false,
            read: 0,
            class: "unrouted",
        }
    }

    /// The route class the bytes of this body are counted under.
    pub fn set_class(&mut self, class: &'static str) {
        self.class = class;
    }
}

impl<B> Drop for IdleBody<B> {
    fn drop(&mut self) {
        if self.read > 0 {
            metrics::counter!("sluice_http_server_request_body_bytes_total", "class" => self.class)
                .increment(self.read);
        }
    }
}

/// The error of a request body that went quiet for longer than the idle timeout.
#[derive(Debug, thiserror::Error)]
#[error("the request body stalled: no bytes for {0} s")]
pub struct BodyIdle(pub u64);

impl<B> http_body::Body for IdleBody<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        use std::task::Poll;
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.armed = false;
                if let Some(Ok(f)) = &frame
                    && let Some(d) = f.data_ref()
                {
                    this.read += d.len() as u64;
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                // The clock measures the client's silence: it starts when the server waits.
                let idle = this.idle;
                let deadline = this
                    .deadline
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                if !this.armed {
                    deadline.as_mut().reset(tokio::time::Instant::now() + idle);
                    this.armed = true;
                }
                match deadline.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.armed = false;
                        Poll::Ready(Some(Err(Box::new(BodyIdle(idle.as_secs())))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
