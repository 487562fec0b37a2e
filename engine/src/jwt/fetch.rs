//! Fetching a key set: over HTTP(S) or from a file, always within a deadline and a size
//! limit.

use std::time::Duration;

use tokio::io::AsyncReadExt;

use super::config::JwksSource;

/// A fetched key set document and its caching headers.
pub(crate) struct Fetched {
    pub body: Vec<u8>,
    pub cache_control: Option<String>,
    pub expires: Option<String>,
}

/// Fetch the document, failing past `timeout` or `max_bytes`. Errors are short sentences
/// for the log (never a response).
pub(crate) async fn fetch(
    client: &reqwest::Client,
    source: &JwksSource,
    timeout: Duration,
    max_bytes: u64,
) -> Result<Fetched, String> {
    match tokio::time::timeout(timeout, fetch_inner(client, source, max_bytes)).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {} s", timeout.as_secs())),
    }
}

async fn fetch_inner(
    client: &reqwest::Client,
    source: &JwksSource,
    max_bytes: u64,
) -> Result<Fetched, String> {
    let too_large = || format!("the key set is larger than {max_bytes} bytes");
    match source {
        JwksSource::File(path) => {
            let f = tokio::fs::File::open(path)
                .await
                .map_err(|e| format!("cannot open the key set file: {}", e.kind()))?;
            let mut body = Vec::new();
            f.take(max_bytes.saturating_add(1))
                .read_to_end(&mut body)
                .await
                .map_err(|e| format!("cannot read the key set file: {}", e.kind()))?;
            if body.len() as u64 > max_bytes {
                return Err(too_large());
            }
            Ok(Fetched {
                body,
                cache_control: None,
                expires: None,
            })
        }
        JwksSource::Http(url) => {
            let mut res = client
                .get(url)
                .header("accept", "application/json")
                .send()
                .await
                .map_err(|e| format!("request failed: {}", e.without_url()))?;
            if !res.status().is_success() {
                return Err(format!("answered {}", res.status()));
            }
            if res.content_length().is_some_and(|n| n > max_bytes) {
                return Err(too_large());
            }
            let header = |name: &str| {
                res.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            let cache_control = header("cache-control");
            let expires = header("expires");
            let mut body = Vec::new();
            while let Some(chunk) = res
                .chunk()
                .await
                .map_err(|e| format!("reading the body failed: {}", e.without_url()))?
            {
                if (body.len() as u64).saturating_add(chunk.len() as u64) > max_bytes {
                    return Err(too_large());
                }
                body.extend_from_slice(&chunk);
            }
            Ok(Fetched {
                body,
                cache_control,
                expires,
            })
        }
    }
}
