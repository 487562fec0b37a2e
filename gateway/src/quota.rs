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
    pub(crate) async fn before(&self, engine: &Engine) -> Result<Option<QuotaPermit>, ApiError> {
        match self {
            Metered::Upload(t) => Ok(Some(engine.acquire_permit(t, PermitKind::Upload).await?)),
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
                _permit: permit,
            }
            .boxed_unsync()
        }))
    }
}

/// A response body that counts its bytes to a tenant's egress and holds a permit until
/// it is dropped (finished, or abandoned when the client hangs up).
struct CountingBody {
    inner: Body,
    engine: Engine,
    tenant: String,
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
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            this.engine.record_egress(&this.tenant, data.len() as u64);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
