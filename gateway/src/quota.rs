//! Tenant quotas at the HTTP edge: an upload holds a `concurrent_uploads` permit for its
//! whole request; a playback response holds a `concurrent_viewers` permit for its whole
//! body (released when the body ends or the client hangs up), and every byte of a
//! playback or source body is counted to the tenant's monthly egress as it is handed to
//! the connection. The counters themselves live in the engine (`sluice_engine::quotas`).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Frame;
use http_body_util::BodyExt;
use sluice_engine::Engine;
use sluice_engine::quotas::{PermitKind, QuotaPermit};

use crate::auth::Authenticated;
use crate::body::{Body, BoxError};
use crate::endpoint::{Endpoint, Route};
use crate::error::ApiError;

/// What a request owes the quotas, known before its handler runs.
pub(crate) enum Metered {
    /// Nothing.
    None,
    /// An upload of this tenant: a `concurrent_uploads` permit over the request.
    Upload(String),
    /// A playback object of this tenant: a viewer permit and egress over the body.
    Playback(String),
    /// A source download of this tenant: egress over the body.
    Download(String),
}

impl Metered {
    pub(crate) fn of<B>(endpoint: &Endpoint<'_>, req: &Request<B>) -> Self {
        let tenant = || {
            req.extensions()
                .get::<Authenticated>()
                .and_then(|a| a.0.tenant())
                .map(str::to_string)
        };
        match endpoint {
            Endpoint::Play(p) => Metered::Playback(p.tenant.to_string()),
            Endpoint::GetSource { .. } => tenant().map_or(Metered::None, Metered::Download),
            _ => match endpoint.route() {
                Route::TusCreate | Route::TusPatch | Route::RawUpload => {
                    tenant().map_or(Metered::None, Metered::Upload)
                }
                _ => Metered::None,
            },
        }
    }

    /// Before the handler: the upload permit (held by the caller until the handler ends).
    /// An upload is refused before its bytes when the month's transcode minutes are used
    /// up (the transcode would be refused at enqueue).
    pub(crate) async fn before(&self, engine: &Engine) -> Result<Option<QuotaPermit>, ApiError> {
        match self {
            Metered::Upload(t) => {
                engine.check_transcode_quota(t).await?;
                Ok(Some(engine.acquire_permit(t, PermitKind::Upload).await?))
            }
            _ => Ok(None),
        }
    }

    /// After the handler, before any byte of the body leaves: refuse a response once the
    /// month's egress is used up or every viewer permit is taken; else count its body.
    /// Only successful responses are metered (an error body is the server's, not content).
    pub(crate) async fn after(
        self,
        engine: &Engine,
        res: Response<Body>,
    ) -> Result<Response<Body>, ApiError> {
        if !res.status().is_success() {
            return Ok(res);
        }
        let (tenant, permit) = match self {
            Metered::None | Metered::Upload(_) => return Ok(res),
            Metered::Download(t) => {
                engine.check_egress(&t).await?;
                (t, None)
            }
            Metered::Playback(t) => {
                engine.check_egress(&t).await?;
                let p = engine.acquire_permit(&t, PermitKind::Viewer).await?;
                (t, Some(p))
            }
        };
        let engine = engine.clone();
        Ok(res.map(|inner| {
            CountingBody {
                inner,
                engine,
                tenant,
                rest: Bytes::new(),
                _permit: permit,
            }
            .boxed_unsync()
        }))
    }
}

/// Bytes handed to the connection at a time: a large frame (a cached object is one) is
/// passed on in pieces, so what is counted follows what the connection takes, and a
/// client that hangs up mid-body is not charged for the rest.
const PIECE: usize = 64 * 1024;

/// A response body that counts its bytes to a tenant's egress and holds a permit until
/// it is dropped (finished, or abandoned when the client hangs up).
struct CountingBody {
    inner: Body,
    engine: Engine,
    tenant: String,
    /// The rest of a large frame, still to be handed on.
    rest: Bytes,
    _permit: Option<QuotaPermit>,
}

impl http_body::Body for CountingBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let data = if this.rest.is_empty() {
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => data,
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                other => return other,
            }
        } else {
            std::mem::take(&mut this.rest)
        };
        let mut piece = data;
        if piece.len() > PIECE {
            this.rest = piece.split_off(PIECE);
        }
        this.engine.record_egress(&this.tenant, piece.len() as u64);
        Poll::Ready(Some(Ok(Frame::data(piece))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let inner = self.inner.size_hint();
        let rest = self.rest.len() as u64;
        let mut hint = http_body::SizeHint::new();
        hint.set_lower(inner.lower().saturating_add(rest));
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper.saturating_add(rest));
        }
        hint
    }
}
