//! Live HLS push: stream management for tenants, and the ingest URL encoders PUT to.
//!
//! The ingest URL carries its own secret (its shape: [`crate::paths`]), so an encoder
//! needs no header support; one that sends `Authorization` anyway is fine. Bodies may be
//! chunked and untyped (ffmpeg sends neither `Content-Type` nor `Content-Length`).

use crate::body::ReqBody;
use futures::TryStreamExt;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, BodyStream, Limited};
use serde::Deserialize;
use sluice_engine::live::{IngestKind, ingest_kind};

use crate::admin::{PlaybackReq, json_response, playback_response, read_json};
use crate::error::ApiError;
use crate::paths;
use crate::{ApiResult, App, base_url, principal, status_only};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NewLiveReq {
    name: Option<String>,
    dvr_window_s: Option<u64>,
    vod: Option<String>,
}

pub async fn create(app: &App, req: Request<ReqBody>) -> ApiResult {
    let who = principal(&req)?.clone();
    let base = base_url(app, &req);
    let body: NewLiveReq = read_json(req, true).await?.unwrap_or_default();
    let s = app
        .engine
        .create_live(
            &who,
            body.name.as_deref(),
            body.dvr_window_s,
            body.vod.as_deref(),
        )
        .await?;
    let mut v = serde_json::to_value(&s)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    if let Some(grant) = &s.ingest {
        v["ingest_url"] = serde_json::Value::String(format!("{base}{}", paths::ingest(grant)));
    }
    Ok(json_response(StatusCode::CREATED, &v))
}

pub async fn get<B>(app: &App, id: &str, req: &Request<B>) -> ApiResult {
    let s = app.engine.get_live(principal(req)?, id).await?;
    Ok(json_response(StatusCode::OK, &s))
}

pub async fn list<B>(app: &App, req: &Request<B>) -> ApiResult {
    let s = app.engine.list_live(principal(req)?).await?;
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "streams": s }),
    ))
}

pub async fn end<B>(app: &App, id: &str, req: &Request<B>) -> ApiResult {
    let s = app.engine.end_live(principal(req)?, id).await?;
    // Accepted: the recording is assembled in the background (GET shows `ended` after).
    Ok(json_response(StatusCode::ACCEPTED, &s))
}

pub async fn playback(app: &App, id: &str, req: Request<ReqBody>) -> ApiResult {
    let who = principal(&req)?.clone();
    let base = base_url(app, &req);
    let body: PlaybackReq = read_json(req, true).await?.unwrap_or_default();
    let grant = app
        .engine
        .live_playback_grant(&who, id, body.options())
        .await?;
    playback_response(app, &base, &grant)
}

/// `PUT|POST|DELETE` on a file under a stream's ingest URL.
///
/// Runs in its own task: an encoder that hangs up right after its last byte (ffmpeg does)
/// must not cancel the handling of a segment it sent in full.
pub async fn ingest(
    app: &App,
    id: &str,
    token: &str,
    name: &str,
    req: Request<ReqBody>,
) -> ApiResult {
    let engine = app.engine.clone();
    let (id, token, name) = (id.to_string(), token.to_string(), name.to_string());
    tokio::spawn(async move { ingest_task(&engine, &id, &token, &name, req).await })
        .await
        .unwrap_or_else(|e| {
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("the ingest task failed: {e}"),
            ))
        })
}

async fn ingest_task(
    engine: &sluice_engine::Engine,
    id: &str,
    token: &str,
    name: &str,
    req: Request<ReqBody>,
) -> ApiResult {
    match *req.method() {
        Method::DELETE => {
            engine.live_delete(id, token, name).await?;
            Ok(status_only(StatusCode::NO_CONTENT))
        }
        Method::PUT | Method::POST => {
            // A bad name is refused before reading the body.
            let kind = match ingest_kind(name) {
                Ok(k) => k,
                Err(e) => return Err(engine.live_refused(id, token, "other", e).await.into()),
            };
            match kind {
                IngestKind::Playlist => {
                    // The token first: a body (up to max_playlist_bytes) is buffered only
                    // for a genuine ingest URL.
                    engine.live_check_ingest(id, token).await?;
                    let max = engine.config().live.max_playlist_bytes as usize;
                    let body = Limited::new(req.into_body(), max)
                        .collect()
                        .await
                        .map_err(|e| {
                            if e.is::<http_body_util::LengthLimitError>() {
                                sluice_engine::Error::TooLarge {
                                    size: max as u64 + 1,
                                    max: max as u64,
                                }
                            } else {
                                sluice_engine::Error::Body(e.to_string())
                            }
                        });
                    let body = match body {
                        Ok(b) => b.to_bytes(),
                        Err(e) => {
                            // Refused before the engine saw it: still the stream's business.
                            return Err(engine.live_refused(id, token, "playlist", e).await.into());
                        }
                    };
                    engine.live_put_playlist(id, token, name, body).await?;
                }
                IngestKind::Segment => {
                    let body = BodyStream::new(req.into_body())
                        .try_filter_map(|frame| futures::future::ready(Ok(frame.into_data().ok())));
                    engine
                        .live_put_segment(id, token, name, Box::pin(body))
                        .await?;
                }
            }
            Ok(status_only(StatusCode::CREATED))
        }
        _ => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "the ingest URL takes PUT, POST and DELETE",
        )),
    }
}
