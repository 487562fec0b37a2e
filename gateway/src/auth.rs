//! The authentication layer: resolves `Authorization: Bearer …` into a [`Principal`] in the
//! request extensions. A request without credentials passes through unauthenticated (the
//! public routes need none; the others answer 401 themselves); a request with a wrong
//! credential is refused here, whatever route it targets.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Request, Response, header};
use sluice_engine::{Engine, Principal};
use tower::{Layer, Service};

use crate::body::Body;
use crate::error::ApiError;

/// The principal of an authenticated request (absent: anonymous).
#[derive(Debug, Clone)]
pub struct Authenticated(pub Principal);

#[derive(Clone)]
pub struct AuthLayer {
    engine: Engine,
}

impl AuthLayer {
    pub fn new(engine: Engine) -> Self {
        Self { engine }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Auth {
            inner,
            engine: self.engine.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    engine: Engine,
}

fn bearer<B>(req: &Request<B>) -> Option<Result<String, ()>> {
    let v = req.headers().get(header::AUTHORIZATION)?;
    let s = match v.to_str() {
        Ok(s) => s.trim(),
        Err(_) => return Some(Err(())),
    };
    match s.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() => {
            Some(Ok(token.trim().to_string()))
        }
        _ => Some(Err(())),
    }
}

impl<S, B> Service<Request<B>> for Auth<S>
where
    S: Service<Request<B>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        // The clone that was driven to readiness serves this request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let engine = self.engine.clone();
        Box::pin(async move {
            match bearer(&req) {
                None => {}
                Some(Err(())) => return Ok(ApiError::unauthenticated().into_response()),
                Some(Ok(key)) => match engine.identify(&key).await {
                    Ok(id) => {
                        tracing::Span::current().record("actor", id.actor.as_str());
                        req.extensions_mut().insert(Authenticated(id.principal));
                        req.extensions_mut().insert(crate::access::Actor(id.actor));
                    }
                    Err(e) => return Ok(ApiError::from(e).into_response()),
                },
            }
            inner.call(req).await
        })
    }
}
