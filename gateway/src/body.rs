//! Response bodies: small ones in memory, large ones streamed from storage.

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
