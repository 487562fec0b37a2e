//! tus 1.0.0 resumable uploads on `/v1/uploads` (core, creation, creation-with-upload,
//! creation-defer-length, termination, checksum, expiration, concatenation). The protocol
//! lives here; the bytes and their durability live in the engine.

use crate::body::ReqBody;
use futures::TryStreamExt;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyStream;

use sluice_engine::UploadConcat;

use crate::body::Body;
use crate::endpoint::TusTarget;
use crate::error::ApiError;
use crate::paths::{self, upload_id_of};
use crate::{ApiResult, App, base_url, principal, status_only};

const TUS_VERSION: &str = "1.0.0";
const TUS_EXTENSIONS: &str = "creation,creation-with-upload,creation-defer-length,termination,\
checksum,expiration,concatenation";
const OFFSET_OCTET_STREAM: &str = "application/offset+octet-stream";

fn tus_headers(res: &mut Response<Body>) {
    let h = res.headers_mut();
    h.insert("tus-resumable", HeaderValue::from_static(TUS_VERSION));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// `Upload-Expires` (an HTTP date) for an unfinished upload.
fn set_expires(res: &mut Response<Body>, state: &sluice_engine::UploadState) {
    if let Some(ms) = state.expires_at {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
        if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(t)) {
            res.headers_mut().insert("upload-expires", v);
        }
    }
}

fn header_u64(h: &HeaderMap, name: &str) -> Result<Option<u64>, ApiError> {
    match h.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .map(Some)
            .ok_or_else(|| ApiError::bad_request(format!("{name} must be a non-negative integer"))),
    }
}

/// `Upload-Defer-Length`: absent, or exactly `1`.
fn defer_length(h: &HeaderMap) -> Result<bool, ApiError> {
    match h.get("upload-defer-length") {
        None => Ok(false),
        Some(v) if v.as_bytes() == b"1" => Ok(true),
        Some(_) => Err(ApiError::bad_request("Upload-Defer-Length must be 1")),
    }
}

/// `Upload-Concat` of a creation request: `partial` or `final;<url> <url>…`.
fn parse_concat(h: &HeaderMap) -> Result<UploadConcat, ApiError> {
    let Some(v) = h.get("upload-concat") else {
        return Ok(UploadConcat::None);
    };
    let v = v
        .to_str()
        .map_err(|_| ApiError::bad_request("Upload-Concat must be ASCII"))?
        .trim();
    if v == "partial" {
        return Ok(UploadConcat::Partial);
    }
    let Some(urls) = v.strip_prefix("final;") else {
        return Err(ApiError::bad_request(
            "Upload-Concat must be 'partial' or 'final;<url> <url>…'",
        ));
    };
    let ids = urls
        .split_whitespace()
        .map(|u| {
            upload_id_of(u).map(str::to_string).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "Upload-Concat names {u:?}, which is not an upload URL of this server"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if ids.is_empty() {
        return Err(ApiError::bad_request(
            "Upload-Concat: final names no partial upload",
        ));
    }
    Ok(UploadConcat::Final(ids))
}

fn is_offset_stream(h: &HeaderMap) -> bool {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim())
        .is_some_and(|v| v.eq_ignore_ascii_case(OFFSET_OCTET_STREAM))
}

/// Entry point for every `/v1/uploads…` request, whatever its method: the protocol's
/// methods are routed here, by [`tus_inner`].
pub async fn tus(app: &App, target: TusTarget<'_>, req: Request<ReqBody>) -> ApiResult {
    let result = tus_inner(app, target, req).await;
    // Every tus response, error or not, carries Tus-Resumable.
    let mut res = result.unwrap_or_else(ApiError::into_response);
    tus_headers(&mut res);
    Ok(res)
}

async fn tus_inner(app: &App, target: TusTarget<'_>, req: Request<ReqBody>) -> ApiResult {
    let method = req.method().clone();
    if method == Method::OPTIONS {
        let mut res = status_only(StatusCode::NO_CONTENT);
        let h = res.headers_mut();
        h.insert("tus-version", HeaderValue::from_static(TUS_VERSION));
        h.insert("tus-extension", HeaderValue::from_static(TUS_EXTENSIONS));
        h.insert(
            "tus-checksum-algorithm",
            HeaderValue::from_static(sluice_engine::checksum::ALGORITHMS),
        );
        h.insert(
            "tus-max-size",
            HeaderValue::from(app.engine.config().uploads.max_size),
        );
        return Ok(res);
    }
    match req.headers().get("tus-resumable").map(|v| v.as_bytes()) {
        Some(v) if v == TUS_VERSION.as_bytes() => {}
        _ => {
            let mut res = ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "unsupported_tus_version",
                "this server speaks tus 1.0.0: send 'Tus-Resumable: 1.0.0'",
            )
            .into_response();
            res.headers_mut()
                .insert("tus-version", HeaderValue::from_static(TUS_VERSION));
            return Ok(res);
        }
    }
    let who = principal(&req)?.clone();
    match (method, target) {
        (Method::POST, TusTarget::Collection) => create(app, &who, req).await,
        (Method::HEAD, TusTarget::Upload(id)) => {
            let s = app.engine.upload_state(&who, id).await?;
            let mut res = status_only(StatusCode::OK);
            let concat = match &s.concat {
                UploadConcat::None => None,
                UploadConcat::Partial => Some("partial".to_string()),
                UploadConcat::Final(ids) => {
                    let base = base_url(app, &req);
                    let urls: Vec<String> = ids
                        .iter()
                        .map(|i| format!("{base}{}", paths::upload(i)))
                        .collect();
                    Some(format!("final;{}", urls.join(" ")))
                }
            };
            let h = res.headers_mut();
            h.insert("upload-offset", HeaderValue::from(s.offset));
            match s.length {
                Some(l) => h.insert("upload-length", HeaderValue::from(l)),
                None => h.insert("upload-defer-length", HeaderValue::from_static("1")),
            };
            if let Some(c) = concat.and_then(|c| HeaderValue::from_str(&c).ok()) {
                h.insert("upload-concat", c);
            }
            if let Some(m) = s
                .metadata
                .as_ref()
                .and_then(|m| HeaderValue::from_str(m).ok())
            {
                h.insert("upload-metadata", m);
            }
            set_expires(&mut res, &s);
            Ok(res)
        }
        (Method::PATCH, TusTarget::Upload(id)) => {
            if !is_offset_stream(req.headers()) {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    format!("PATCH needs 'Content-Type: {OFFSET_OCTET_STREAM}'"),
                ));
            }
            let offset = header_u64(req.headers(), "upload-offset")?
                .ok_or_else(|| ApiError::bad_request("PATCH needs an Upload-Offset header"))?;
            let id = id.to_string();
            let s = append(app, &who, &id, offset, req).await?;
            let mut res = status_only(StatusCode::NO_CONTENT);
            res.headers_mut()
                .insert("upload-offset", HeaderValue::from(s.offset));
            set_expires(&mut res, &s);
            Ok(res)
        }
        (Method::DELETE, TusTarget::Upload(id)) => {
            app.engine.terminate_upload(&who, id).await?;
            Ok(status_only(StatusCode::NO_CONTENT))
        }
        (m, _) => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{m} is not part of tus on this path"),
        )),
    }
}

async fn append(
    app: &App,
    who: &sluice_engine::Principal,
    id: &str,
    offset: u64,
    req: Request<ReqBody>,
) -> Result<sluice_engine::UploadState, ApiError> {
    let checksum = match req.headers().get("upload-checksum") {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::bad_request("Upload-Checksum must be ASCII"))
                .and_then(|s| crate::tus::parse_checksum(s).map_err(ApiError::bad_request))?,
        ),
        None => None,
    };
    // creation-defer-length: a PATCH may declare the length (once).
    let declared = header_u64(req.headers(), "upload-length")?;
    let body = BodyStream::new(req.into_body())
        .try_filter_map(|frame| futures::future::ready(Ok(frame.into_data().ok())));
    Ok(app
        .engine
        .append_upload_declaring(who, id, offset, Box::pin(body), checksum.as_ref(), declared)
        .await?)
}

async fn create(app: &App, who: &sluice_engine::Principal, req: Request<ReqBody>) -> ApiResult {
    let h = req.headers();
    let defer = defer_length(h)?;
    let length = header_u64(h, "upload-length")?;
    let concat = parse_concat(h)?;
    let metadata = match h.get("upload-metadata") {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::bad_request("Upload-Metadata must be ASCII"))
                .and_then(|s| crate::tus::parse_metadata(s).map_err(ApiError::bad_request))?,
        ),
        None => None,
    };
    let with_body = is_offset_stream(h);
    let base = base_url(app, &req);
    let mut res = status_only(StatusCode::CREATED);
    let id = if let UploadConcat::Final(parts) = concat {
        // concatenation: the final upload is assembled now, from complete partials.
        if defer {
            return Err(ApiError::bad_request(
                "a final upload's length is the sum of its partials: \
                 do not send Upload-Defer-Length",
            ));
        }
        if with_body {
            return Err(ApiError::bad_request(
                "a final upload takes no body: its bytes are those of its partials",
            ));
        }
        let asset = app
            .engine
            .create_final_upload(who, &parts, metadata.as_ref(), length)
            .await?;
        res.headers_mut().insert(
            "upload-offset",
            HeaderValue::from(asset.size.unwrap_or_default()),
        );
        asset.id
    } else {
        let length = match (length, defer) {
            (Some(_), true) => {
                return Err(ApiError::bad_request(
                    "send either Upload-Length or 'Upload-Defer-Length: 1', not both",
                ));
            }
            (None, false) => {
                return Err(ApiError::bad_request(
                    "creating an upload needs Upload-Length (or 'Upload-Defer-Length: 1')",
                ));
            }
            (l, _) => l,
        };
        let spec = sluice_engine::NewUploadSpec {
            length,
            metadata: metadata.as_ref(),
            partial: concat == UploadConcat::Partial,
        };
        let id = app.engine.create_upload_with(who, &spec).await?;
        // A zero-length upload is complete (and failed) at creation: no body to append.
        let state = if with_body && length != Some(0) {
            // creation-with-upload: the first chunk rides on the POST.
            let s = append(app, who, &id, 0, req).await?;
            res.headers_mut()
                .insert("upload-offset", HeaderValue::from(s.offset));
            s
        } else {
            app.engine.upload_state(who, &id).await?
        };
        set_expires(&mut res, &state);
        id
    };
    let loc = HeaderValue::from_str(&format!("{base}{}", paths::upload(&id)))
        .map_err(|_| ApiError::bad_request("invalid Host header"))?;
    res.headers_mut().insert(header::LOCATION, loc);
    Ok(res)
}

/// Media types a raw upload may declare: any `video/*`, or bytes of unstated type.
fn is_raw_media_type(h: &HeaderMap) -> bool {
    let Some(v) = h.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = v
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.split_once('/') {
        Some(("video", sub)) => !sub.is_empty(),
        _ => essence == "application/octet-stream",
    }
}

/// `POST /v1/assets`: the whole file as the request body → 201 with the asset JSON (the
/// first response again for a retry under the same `Idempotency-Key`).
pub async fn raw_upload(app: &App, req: Request<ReqBody>) -> ApiResult {
    let who = principal(&req)?.clone();
    let h = req.headers();
    if !is_raw_media_type(h) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "a raw upload needs 'Content-Type: video/…' or 'application/octet-stream'",
        ));
    }
    let content_length = header_u64(h, "content-length")?;
    let ascii = |name: &str| -> Result<Option<String>, ApiError> {
        h.get(name)
            .map(|v| {
                v.to_str()
                    .map(|s| s.trim().to_string())
                    .map_err(|_| ApiError::bad_request(format!("{name} must be ASCII")))
            })
            .transpose()
    };
    let idempotency_key = ascii("idempotency-key")?;
    let mut filename = ascii("x-filename")?;
    for (k, v) in form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "filename" => filename = Some(v.into_owned()),
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {other:?}"
                )));
            }
        }
    }
    let body = BodyStream::new(req.into_body())
        .try_filter_map(|frame| futures::future::ready(Ok(frame.into_data().ok())));
    let done = app
        .engine
        .raw_upload(
            &who,
            sluice_engine::RawUpload {
                content_length,
                filename: filename.as_deref(),
                idempotency_key: idempotency_key.as_deref(),
            },
            Box::pin(body),
        )
        .await?;
    let mut res = Response::new(crate::body::full(done.body));
    *res.status_mut() = StatusCode::CREATED;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&paths::asset(&done.asset_id)) {
        h.insert(header::LOCATION, v);
    }
    if done.replayed {
        h.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn concat_and_defer_headers() {
        assert_eq!(parse_concat(&headers(&[])).unwrap(), UploadConcat::None);
        assert_eq!(
            parse_concat(&headers(&[("upload-concat", "partial")])).unwrap(),
            UploadConcat::Partial
        );
        assert_eq!(
            parse_concat(&headers(&[(
                "upload-concat",
                "final;http://h/v1/uploads/A /v1/uploads/B"
            )]))
            .unwrap(),
            UploadConcat::Final(vec!["A".into(), "B".into()])
        );
        for bad in ["final;", "final;/files/x", "whole", "final /v1/uploads/A"] {
            let e = parse_concat(&headers(&[("upload-concat", bad)])).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{bad}");
        }
        assert!(!defer_length(&headers(&[])).unwrap());
        assert!(defer_length(&headers(&[("upload-defer-length", "1")])).unwrap());
        assert!(defer_length(&headers(&[("upload-defer-length", "0")])).is_err());
    }
}
