//! The tus 1.0.0 requests, over one keep-alive hyper client (http and https).
//!
//! Each request answers with what the caller should do next rather than with a raw status:
//! the retry policy (what is worth retrying, what needs a HEAD first, what is final) is the
//! protocol's, so it lives next to the requests, while the loop that applies it lives in
//! the parent module.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty, Limited, combinators::UnsyncBoxBody};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use super::UploadError;

const TUS_VERSION: &str = "1.0.0";
const OFFSET_OCTET_STREAM: &str = "application/offset+octet-stream";
/// Deadline for the small requests (OPTIONS, POST, HEAD, GET): they carry no file data, so
/// a server that takes longer is stuck, and waiting for ever would hang the whole run.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Error bodies are short JSON; never read more than this of one.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Request bodies: streamed file pieces, or nothing.
pub type ReqBody = UnsyncBoxBody<Bytes, std::io::Error>;
type HttpClient = Client<HttpsConnector<HttpConnector>, ReqBody>;

fn empty() -> ReqBody {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// What the server supports, from its OPTIONS answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caps {
    /// The checksum extension with SHA-1: send `Upload-Checksum` on every PATCH.
    pub sha1_checksum: bool,
    /// `Tus-Max-Size`: refuse bigger files before sending anything.
    pub max_size: Option<u64>,
}

/// A HEAD answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Head {
    Found {
        offset: u64,
        length: Option<u64>,
    },
    /// 404 or 410: the upload no longer exists (expired, terminated, another tenant's).
    Gone,
}

/// The part of the asset JSON that `--wait` follows.
#[derive(Debug, Clone, Deserialize)]
pub struct AssetView {
    pub status: String,
    #[serde(default)]
    pub progress: f64,
    #[serde(default)]
    pub error: Option<String>,
}

/// A failed request, sorted by what the caller does next.
#[derive(Debug)]
pub enum Failure {
    /// Pause, then try again (connection error, timeout, 5xx, 423 Locked, 460 checksum
    /// mismatch).
    Retry(String),
    /// 409: the server's offset is not ours; HEAD and continue from its offset.
    Conflict(String),
    /// Trying again cannot help.
    Fatal(UploadError),
}

/// How a response status is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    Success,
    Retry,
    Resync,
    Fatal,
}

/// The retry policy for upload requests, by status.
pub fn classify(status: StatusCode) -> Disposition {
    match status.as_u16() {
        200..=299 => Disposition::Success,
        409 => Disposition::Resync,
        // 408 and 429 say "later", 423 is another request still holding the upload (for
        // example one from a client that was killed and whose connection the server has
        // not noticed closing yet), 460 is a chunk damaged on the way.
        408 | 423 | 429 | 460 => Disposition::Retry,
        500..=599 => Disposition::Retry,
        _ => Disposition::Fatal,
    }
}

/// What the OPTIONS headers say.
pub fn parse_caps(h: &HeaderMap) -> Caps {
    let list = |name: &str| -> Vec<String> {
        h.get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|s| s.trim().to_ascii_lowercase())
            .filter(|s| !s.is_empty())
            .collect()
    };
    let checksum = list("tus-extension").iter().any(|e| e == "checksum");
    let sha1 = list("tus-checksum-algorithm").iter().any(|a| a == "sha1");
    Caps {
        sha1_checksum: checksum && sha1,
        max_size: h
            .get("tus-max-size")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok()),
    }
}

/// The upload URL from a `Location` header. This server sends absolute URLs, but tus allows
/// relative ones, so resolve those against the creation endpoint.
pub fn resolve_location(endpoint: &str, location: &str) -> String {
    let location = location.trim();
    if location.contains("://") {
        return location.to_string();
    }
    let (scheme, rest) = endpoint.split_once("://").unwrap_or(("http", endpoint));
    if let Some(net) = location.strip_prefix("//") {
        return format!("{scheme}://{net}");
    }
    let authority = rest.split('/').next().unwrap_or(rest);
    if location.starts_with('/') {
        return format!("{scheme}://{authority}{location}");
    }
    let dir = match endpoint.rfind('/') {
        Some(i) if i + 1 > scheme.len() + 3 => &endpoint[..=i],
        _ => endpoint,
    };
    let sep = if dir.ends_with('/') { "" } else { "/" };
    format!("{dir}{sep}{location}")
}

/// The asset id: the last path segment of the upload URL (the contract says the
/// `Location` ends in it).
pub fn asset_id_from_url(url: &str) -> Option<String> {
    let url = url.split(['?', '#']).next().unwrap_or(url);
    let path = match url.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("", |i| &rest[i..]),
        None => url,
    };
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// The human sentence of an error response: the `message` of the server's
/// `{"error": {"code", "message"}}`, else the start of the body, else the status reason.
pub fn server_message(status: StatusCode, body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Envelope {
        error: Inner,
    }
    #[derive(Deserialize)]
    struct Inner {
        message: String,
    }
    if let Ok(e) = serde_json::from_slice::<Envelope>(body) {
        return e.error.message;
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if !text.is_empty() {
        return text.chars().take(300).collect();
    }
    status
        .canonical_reason()
        .unwrap_or("no explanation given")
        .to_string()
}

/// The full cause of a client error: hyper's top-level message ("client error
/// (Connect)") alone does not tell a person what happened.
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let s_text = s.to_string();
        if parts.last() != Some(&s_text) {
            parts.push(s_text);
        }
        cur = s.source();
    }
    parts.join(": ")
}

/// A tus client for one server and one key.
#[derive(Clone)]
pub struct Tus {
    client: HttpClient,
    /// The server URL without a trailing slash.
    base: String,
    auth: HeaderValue,
}

impl Tus {
    pub fn new(base: String, key: &str) -> Result<Self, UploadError> {
        let mut auth = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
            UploadError::BadArgument("--key contains characters not allowed in a header".into())
        })?;
        auth.set_sensitive(true);
        let builder = match hyper_rustls::HttpsConnectorBuilder::new().with_native_roots() {
            Ok(b) => b,
            // No CA certificates on this machine: plain http still works, and an https
            // server fails with a certificate error that says why.
            Err(_) => hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(
                rustls::ClientConfig::builder()
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth(),
            ),
        };
        let https = builder.https_or_http().enable_http1().build();
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(https);
        Ok(Self { client, base, auth })
    }

    pub fn endpoint(&self) -> String {
        format!("{}/v1/uploads/", self.base)
    }

    fn request(&self, method: Method, url: &str) -> http::request::Builder {
        Request::builder()
            .method(method)
            .uri(url)
            .header(header::AUTHORIZATION, self.auth.clone())
            .header("tus-resumable", TUS_VERSION)
    }

    /// Send; `deadline` bounds the wait for the response head.
    async fn send(
        &self,
        req: Result<Request<ReqBody>, http::Error>,
        deadline: Option<Duration>,
    ) -> Result<Response<Incoming>, Failure> {
        let req = req.map_err(|e| {
            Failure::Fatal(UploadError::Protocol(format!(
                "cannot build the request: {e}"
            )))
        })?;
        let url = req.uri().to_string();
        let fut = self.client.request(req);
        let res = match deadline {
            Some(d) => tokio::time::timeout(d, fut)
                .await
                .map_err(|_| Failure::Retry(format!("no answer from {url} within {d:?}")))?,
            None => fut.await,
        };
        res.map_err(|e| {
            let text = describe(&e);
            if e.is_connect() {
                Failure::Retry(format!("cannot connect to {url}: {text}"))
            } else {
                Failure::Retry(format!("request to {url} failed: {text}"))
            }
        })
    }

    /// The failure for a non-success response, with the server's message.
    async fn failure(res: Response<Incoming>) -> Failure {
        let status = res.status();
        let body = Limited::new(res.into_body(), MAX_ERROR_BODY).collect();
        let bytes = match tokio::time::timeout(REQUEST_TIMEOUT, body).await {
            Ok(Ok(b)) => b.to_bytes(),
            _ => Bytes::new(),
        };
        let message = server_message(status, &bytes);
        match classify(status) {
            Disposition::Retry | Disposition::Success => {
                Failure::Retry(format!("server answered {status}: {message}"))
            }
            Disposition::Resync => {
                Failure::Conflict(format!("server answered {status}: {message}"))
            }
            Disposition::Fatal => Failure::Fatal(UploadError::Server { status, message }),
        }
    }

    /// OPTIONS: what the server supports. A server that does not answer OPTIONS gets the
    /// core protocol only.
    pub async fn options(&self) -> Result<Caps, Failure> {
        let req = self
            .request(Method::OPTIONS, &self.endpoint())
            .body(empty());
        let res = self.send(req, Some(REQUEST_TIMEOUT)).await?;
        let status = res.status();
        if status.is_success() {
            return Ok(parse_caps(res.headers()));
        }
        match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(Self::failure(res).await),
            s if s.is_client_error() => Ok(Caps::default()),
            _ => Err(Self::failure(res).await),
        }
    }

    /// POST: create an upload of `length` bytes; returns its absolute URL.
    pub async fn create(&self, length: u64, metadata: &str) -> Result<String, Failure> {
        let endpoint = self.endpoint();
        let mut req = self
            .request(Method::POST, &endpoint)
            .header("upload-length", length);
        if !metadata.is_empty() {
            req = req.header("upload-metadata", metadata);
        }
        let res = self.send(req.body(empty()), Some(REQUEST_TIMEOUT)).await?;
        if !res.status().is_success() {
            return Err(Self::failure(res).await);
        }
        let location = res
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                Failure::Fatal(UploadError::Protocol(
                    "the server created the upload but sent no Location header".into(),
                ))
            })?;
        Ok(resolve_location(&endpoint, location))
    }

    /// HEAD: the committed offset.
    pub async fn head(&self, url: &str) -> Result<Head, Failure> {
        let req = self.request(Method::HEAD, url).body(empty());
        let res = self.send(req, Some(REQUEST_TIMEOUT)).await?;
        let status = res.status();
        if status == StatusCode::NOT_FOUND || status == StatusCode::GONE {
            return Ok(Head::Gone);
        }
        if !status.is_success() {
            return Err(Self::failure(res).await);
        }
        let num = |name: &str| {
            res.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let offset = num("upload-offset").ok_or_else(|| {
            Failure::Fatal(UploadError::Protocol(
                "HEAD answered without a valid Upload-Offset".into(),
            ))
        })?;
        Ok(Head::Found {
            offset,
            length: num("upload-length"),
        })
    }

    /// PATCH: send `len` bytes at `offset`; returns the server's new offset.
    pub async fn patch(
        &self,
        url: &str,
        offset: u64,
        len: u64,
        body: ReqBody,
        checksum: Option<&str>,
    ) -> Result<u64, Failure> {
        let mut req = self
            .request(Method::PATCH, url)
            .header(header::CONTENT_TYPE, OFFSET_OCTET_STREAM)
            .header(header::CONTENT_LENGTH, len)
            .header("upload-offset", offset);
        if let Some(c) = checksum {
            req = req.header("upload-checksum", c);
        }
        // No deadline: a chunk takes as long as the network needs to carry it.
        let res = self.send(req.body(body), None).await?;
        if !res.status().is_success() {
            return Err(Self::failure(res).await);
        }
        res.headers()
            .get("upload-offset")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| {
                // The bytes may or may not be in: find out with a HEAD.
                Failure::Conflict("PATCH answered without a valid Upload-Offset".into())
            })
    }

    /// GET /v1/assets/{id}.
    pub async fn asset(&self, id: &str) -> Result<AssetView, Failure> {
        let url = format!("{}/v1/assets/{id}", self.base);
        let req = Request::builder()
            .method(Method::GET)
            .uri(&url)
            .header(header::AUTHORIZATION, self.auth.clone())
            .body(empty());
        let res = self.send(req, Some(REQUEST_TIMEOUT)).await?;
        if !res.status().is_success() {
            return Err(Self::failure(res).await);
        }
        let body = Limited::new(res.into_body(), 4 << 20).collect();
        let bytes = tokio::time::timeout(REQUEST_TIMEOUT, body)
            .await
            .map_err(|_| Failure::Retry(format!("{url}: the answer stalled")))?
            .map_err(|e| Failure::Retry(format!("{url}: {e}")))?
            .to_bytes();
        serde_json::from_slice(&bytes).map_err(|e| {
            Failure::Fatal(UploadError::Protocol(format!(
                "{url} did not answer with asset JSON: {e}"
            )))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_policy_by_status() {
        let d = |s: u16| classify(StatusCode::from_u16(s).unwrap_or(StatusCode::IM_A_TEAPOT));
        assert_eq!(d(204), Disposition::Success);
        for s in [500, 502, 503, 504, 423, 460, 429, 408] {
            assert_eq!(d(s), Disposition::Retry, "{s}");
        }
        assert_eq!(d(409), Disposition::Resync);
        for s in [400, 401, 403, 404, 410, 413, 415] {
            assert_eq!(d(s), Disposition::Fatal, "{s}");
        }
    }

    #[test]
    fn capabilities_from_options() {
        let mut h = HeaderMap::new();
        h.insert(
            "tus-extension",
            HeaderValue::from_static("creation, termination,Checksum"),
        );
        h.insert(
            "tus-checksum-algorithm",
            HeaderValue::from_static("md5,sha1"),
        );
        h.insert("tus-max-size", HeaderValue::from_static("1000"));
        assert_eq!(
            parse_caps(&h),
            Caps {
                sha1_checksum: true,
                max_size: Some(1000)
            }
        );
        // The server this was written against advertises no checksum yet.
        let mut h = HeaderMap::new();
        h.insert(
            "tus-extension",
            HeaderValue::from_static("creation,creation-with-upload,termination"),
        );
        assert_eq!(parse_caps(&h), Caps::default());
        // checksum without sha1 is no use to us.
        let mut h = HeaderMap::new();
        h.insert("tus-extension", HeaderValue::from_static("checksum"));
        h.insert("tus-checksum-algorithm", HeaderValue::from_static("md5"));
        assert!(!parse_caps(&h).sha1_checksum);
    }

    #[test]
    fn locations_resolve() {
        let ep = "http://h:8080/v1/uploads/";
        assert_eq!(
            resolve_location(ep, "http://h:8080/v1/uploads/A1"),
            "http://h:8080/v1/uploads/A1"
        );
        assert_eq!(
            resolve_location(ep, "/v1/uploads/A1"),
            "http://h:8080/v1/uploads/A1"
        );
        assert_eq!(resolve_location(ep, "A1"), "http://h:8080/v1/uploads/A1");
        assert_eq!(resolve_location(ep, "//cdn/x/A1"), "http://cdn/x/A1");
    }

    #[test]
    fn asset_ids_come_from_the_url() {
        assert_eq!(
            asset_id_from_url("http://h/v1/uploads/01HX").as_deref(),
            Some("01HX")
        );
        assert_eq!(
            asset_id_from_url("http://h/v1/uploads/01HX/?a=b").as_deref(),
            Some("01HX")
        );
        assert_eq!(asset_id_from_url("http://h").as_deref(), None);
    }

    #[test]
    fn error_messages() {
        let body = br#"{"error":{"code":"unauthorized","message":"send a valid key"}}"#;
        assert_eq!(
            server_message(StatusCode::UNAUTHORIZED, body),
            "send a valid key"
        );
        assert_eq!(
            server_message(StatusCode::BAD_GATEWAY, b"  upstream down\n"),
            "upstream down"
        );
        assert_eq!(server_message(StatusCode::NOT_FOUND, b""), "Not Found");
    }
}
