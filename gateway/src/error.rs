//! The one place where errors become HTTP responses. Every error body has the contract's
//! shape: `{"error": {"code": "snake_case", "message": "human sentence"}}`.

use http::{HeaderValue, StatusCode, header};
use sluice_engine::Error as EngineError;

use crate::body::{Body, full};

/// An error on its way to the client.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds a client should wait before retrying (503s from a struggling backend).
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn unauthenticated() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send a valid key as 'Authorization: Bearer <key>'",
        )
    }

    fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            retry_after: Some(1),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
        }
    }

    /// A store that is not answering (its breaker is open): 503 with when to retry.
    fn store_unavailable(retry_after_s: u32) -> Self {
        Self {
            retry_after: Some(retry_after_s),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the store holding this object is not answering; retry later",
            )
        }
    }

    pub fn into_response(self) -> http::Response<Body> {
        // A 5xx never carries the text it was made with (backend messages, paths, SQL):
        // that goes to the log, in the request's span (with its request id), and the client
        // gets the one message that asks it to quote the request id.
        let message = if self.status.is_server_error() {
            if self.message != SERVER_SIDE {
                tracing::error!(request_id = %crate::observe::request_id(), code = self.code, "{}", self.message);
            }
            SERVER_SIDE
        } else {
            self.message.as_str()
        };
        let body = serde_json::json!({"error": {"code": self.code, "message": message}});
        let mut res = http::Response::new(full(body.to_string()));
        *res.status_mut() = self.status;
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(s) = self.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        res
    }
}

/// The message of every 5xx answer.
const SERVER_SIDE: &str = "the server could not complete this request; retry later, or \
    quote the response's x-request-id to the operator";

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        use sluice_cdn::Error as TokenError;
        use sluice_storage::Error as StorageError;
        let msg = e.to_string();
        match e {
            EngineError::NotFound { .. } => Self::not_found(msg),
            EngineError::Unauthenticated => Self::unauthenticated(),
            EngineError::Forbidden(_) => Self::new(StatusCode::FORBIDDEN, "forbidden", msg),
            EngineError::InvalidInput(_) | EngineError::Body(_) => Self::bad_request(msg),
            EngineError::OffsetMismatch { .. } => {
                Self::new(StatusCode::CONFLICT, "offset_mismatch", msg)
            }
            EngineError::UploadLocked(_) => Self::new(StatusCode::LOCKED, "upload_locked", msg),
            EngineError::Conflict(_) => Self::new(StatusCode::CONFLICT, "conflict", msg),
            EngineError::Archived(_) => Self::new(StatusCode::CONFLICT, "archived", msg),
            EngineError::Expired(_) => Self::new(StatusCode::GONE, "upload_expired", msg),
            // tus checksum extension: 460 Checksum Mismatch.
            EngineError::ChecksumMismatch => Self::new(
                StatusCode::from_u16(460).unwrap_or(StatusCode::BAD_REQUEST),
                "checksum_mismatch",
                msg,
            ),
            EngineError::TooLarge { .. } => {
                Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", msg)
            }
            EngineError::QuotaExceeded { .. } => {
                Self::new(StatusCode::FORBIDDEN, "quota_exceeded", msg)
            }
            // A concurrency quota frees up by itself: 429 with a retry hint. A monthly
            // one does not until the month ends: 403.
            EngineError::QuotaLimit { quota, .. } if quota.starts_with("concurrent_") => Self {
                retry_after: Some(1),
                ..Self::new(StatusCode::TOO_MANY_REQUESTS, "quota_exceeded", msg)
            },
            EngineError::QuotaLimit { .. } => {
                Self::new(StatusCode::FORBIDDEN, "quota_exceeded", msg)
            }
            EngineError::UnsupportedMedia(_) | EngineError::UnsupportedSegment(_) => {
                Self::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media", msg)
            }
            EngineError::IdempotencyKeyReused => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                msg,
            ),
            EngineError::IdempotencyInFlight => {
                Self::new(StatusCode::CONFLICT, "idempotency_key_in_flight", msg)
            }
            EngineError::DeviceNotAllowed => {
                Self::new(StatusCode::FORBIDDEN, "device_not_allowed", msg)
            }
            EngineError::Token(TokenError::Expired) => {
                Self::new(StatusCode::FORBIDDEN, "token_expired", msg)
            }
            EngineError::Token(TokenError::ClientNotAllowed) => {
                Self::new(StatusCode::FORBIDDEN, "client_not_allowed", msg)
            }
            EngineError::Token(e) if e.is_refusal() => {
                Self::new(StatusCode::FORBIDDEN, "invalid_token", msg)
            }
            EngineError::Storage(StorageError::NotFound { .. }) => {
                Self::not_found("no such object")
            }
            EngineError::Storage(StorageError::InvalidKey { .. }) => {
                Self::not_found("no such object")
            }
            EngineError::Storage(StorageError::Unavailable { retry_after_s, .. }) => {
                tracing::warn!(code = "store_unavailable", "{msg}");
                Self::store_unavailable(retry_after_s)
            }
            // Server-side failures: the details (paths, SQL, backend messages) go to the
            // log, in the request's span (with its x-request-id); the client gets a
            // message that reveals nothing internal and the id to quote.
            EngineError::Storage(_) => {
                tracing::error!(request_id = %crate::observe::request_id(), code = "storage_unavailable", "{msg}");
                Self::unavailable("storage_unavailable", SERVER_SIDE)
            }
            EngineError::Db(_) => {
                tracing::error!(request_id = %crate::observe::request_id(), code = "metadata_unavailable", "{msg}");
                Self::unavailable("metadata_unavailable", SERVER_SIDE)
            }
            EngineError::Queue(_) => {
                tracing::error!(request_id = %crate::observe::request_id(), code = "queue_unavailable", "{msg}");
                Self::unavailable("queue_unavailable", SERVER_SIDE)
            }
            _ => {
                tracing::error!(request_id = %crate::observe::request_id(), code = "internal", "{msg}");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", SERVER_SIDE)
            }
        }
    }
}

/// CDN errors met while answering (a token refusal, or CloudFront signing failing).
impl From<sluice_cdn::Error> for ApiError {
    fn from(e: sluice_cdn::Error) -> Self {
        EngineError::Token(e).into()
    }
}

impl From<sluice_storage::Error> for ApiError {
    fn from(e: sluice_storage::Error) -> Self {
        EngineError::from(e).into()
    }
}

/// A storage error shared by every caller of one single-flight load.
impl From<std::sync::Arc<sluice_storage::Error>> for ApiError {
    fn from(e: std::sync::Arc<sluice_storage::Error>) -> Self {
        use sluice_storage::Error as StorageError;
        match &*e {
            StorageError::NotFound { .. } | StorageError::InvalidKey { .. } => {
                Self::not_found("no such object")
            }
            StorageError::Unavailable { retry_after_s, .. } => {
                tracing::warn!(code = "store_unavailable", "{e}");
                Self::store_unavailable(*retry_after_s)
            }
            other => {
                tracing::error!(request_id = %crate::observe::request_id(), code = "storage_unavailable", "storage error: {other}");
                Self::unavailable("storage_unavailable", SERVER_SIDE)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_and_shape() {
        let e: ApiError = EngineError::OffsetMismatch {
            expected: 5,
            got: 3,
        }
        .into();
        assert_eq!(
            (e.status, e.code),
            (StatusCode::CONFLICT, "offset_mismatch")
        );
        let e: ApiError = EngineError::TooLarge { size: 9, max: 1 }.into();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
        let e: ApiError = EngineError::Token(sluice_cdn::Error::Expired).into();
        assert_eq!((e.status, e.code), (StatusCode::FORBIDDEN, "token_expired"));
        for refusal in [
            sluice_cdn::Error::Malformed,
            sluice_cdn::Error::BadSignature,
            sluice_cdn::Error::UnknownKey,
        ] {
            let e: ApiError = EngineError::Token(refusal).into();
            assert_eq!((e.status, e.code), (StatusCode::FORBIDDEN, "invalid_token"));
        }
        let e: ApiError = sluice_cdn::Error::ClientNotAllowed.into();
        assert_eq!(
            (e.status, e.code),
            (StatusCode::FORBIDDEN, "client_not_allowed")
        );
        // Signing failing on our side is a server error that reveals nothing.
        let e: ApiError = sluice_cdn::Error::CloudFront("key /srv/k.pem".into()).into();
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!e.message.contains("/srv"), "{}", e.message);
        let e: ApiError = sluice_storage::Error::NotFound { key: "k".into() }.into();
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        let e: ApiError = EngineError::QuotaExceeded {
            used: 1,
            requested: 2,
            quota: 2,
        }
        .into();
        assert_eq!(
            (e.status, e.code),
            (StatusCode::FORBIDDEN, "quota_exceeded")
        );
        let e: ApiError = EngineError::UnsupportedMedia("text").into();
        assert_eq!(
            (e.status, e.code),
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media")
        );
        let e: ApiError = EngineError::IdempotencyKeyReused.into();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        let e: ApiError = EngineError::DeviceNotAllowed.into();
        assert_eq!(
            (e.status, e.code),
            (StatusCode::FORBIDDEN, "device_not_allowed")
        );
        // Server-side details never reach the client.
        let e: ApiError = EngineError::Config("db at /srv/secret/path".into()).into();
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!e.message.contains("/srv"), "{}", e.message);
        // Whatever a 5xx was made with stays out of its body.
        let res = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", "db at /srv/x")
            .into_response();
        let body = futures::executor::block_on(http_body_util::BodyExt::collect(res.into_body()))
            .unwrap()
            .to_bytes();
        let text = String::from_utf8_lossy(&body);
        assert!(
            !text.contains("/srv") && text.contains("not_ready"),
            "{text}"
        );
        let res = ApiError::bad_request("nope").into_response();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        assert_eq!(res.headers()[header::CONTENT_TYPE], "application/json");
    }
}
