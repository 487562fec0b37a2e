//! Sending webhook deliveries: the HTTP side of the engine's outbox, run beside the
//! workers (in `sluice serve` and `sluice worker` alike). A target's name is resolved
//! through a guard that refuses non-public addresses (unless the operator allowed the
//! host), and the connection uses exactly the addresses checked; every wait is bounded.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sluice_engine::webhooks::{
    Delivery, WebhookOutbox, check_literal, is_public, signature, validate_url,
};
use tokio::sync::watch;

/// Per-request deadline for a receiver (and for resolving its name).
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// The most of a receiver's answer body that is read (and thrown away).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The DNS resolver of the webhook client: a name that resolves to a non-public address
/// is refused after resolution (so a DNS answer cannot smuggle a request into the local
/// network), unless the operator allowed that host. The connection uses exactly the
/// addresses checked here: nothing is resolved twice.
#[derive(Clone)]
struct GuardedResolver {
    allow: std::sync::Arc<Vec<String>>,
}

impl tower::Service<hyper_util::client::legacy::connect::dns::Name> for GuardedResolver {
    type Response = std::vec::IntoIter<std::net::SocketAddr>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = std::io::Result<Self::Response>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: hyper_util::client::legacy::connect::dns::Name) -> Self::Future {
        let allow = self.allow.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<std::net::SocketAddr> =
                tokio::time::timeout(SEND_TIMEOUT, tokio::net::lookup_host((host.as_str(), 0)))
                    .await
                    .map_err(|_| {
                        std::io::Error::new(std::io::ErrorKind::TimedOut, "DNS timed out")
                    })??
                    .collect();
            if allow.iter().any(|a| a.eq_ignore_ascii_case(&host)) {
                return Ok(addrs.into_iter());
            }
            let public: Vec<_> = addrs.into_iter().filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!("{host} resolves to no public address (see webhooks.allow_hosts)"),
                ));
            }
            Ok(public.into_iter())
        })
    }
}

/// Send due webhook deliveries until `shutdown` turns true.
pub async fn run_dispatcher(outbox: WebhookOutbox, mut shutdown: watch::Receiver<bool>) {
    let allow = std::sync::Arc::new(outbox.allow_hosts().to_vec());
    let mut http =
        hyper_util::client::legacy::connect::HttpConnector::new_with_resolver(GuardedResolver {
            allow: allow.clone(),
        });
    http.enforce_http(false);
    http.set_connect_timeout(Some(SEND_TIMEOUT));
    let https = match hyper_rustls::HttpsConnectorBuilder::new().with_native_roots() {
        Ok(b) => b.https_or_http().enable_http1().wrap_connector(http),
        Err(e) => {
            tracing::error!("webhook dispatcher disabled: no TLS root certificates: {e}");
            return;
        }
    };
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(https);
    loop {
        let batch = match outbox.claim(16).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!("webhook dispatcher: {e}");
                Vec::new()
            }
        };
        let idle = batch.is_empty();
        let sends = batch.into_iter().map(|d| {
            let (client, outbox, allow) = (client.clone(), outbox.clone(), allow.clone());
            async move {
                let outcome = send(&client, &allow, &d).await;
                if let Err(e) = outbox.record(&d, outcome).await {
                    tracing::warn!(delivery = %d.id, "could not record webhook result: {e}");
                }
            }
        });
        futures::future::join_all(sends).await;
        if idle {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        } else if *shutdown.borrow() {
            return;
        }
    }
}

async fn send<C>(
    client: &Client<C, Full<Bytes>>,
    allow: &[String],
    d: &Delivery,
) -> std::result::Result<u16, String>
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let uri = validate_url(&d.url).map_err(|e| e.to_string())?;
    // Checked again at every delivery: the allowlist may have changed since creation.
    check_literal(&uri, allow).map_err(|e| e.to_string())?;
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let sig = signature(&d.secret, t, d.payload.as_bytes());
    let event = serde_json::from_str::<serde_json::Value>(&d.payload)
        .ok()
        .and_then(|v| v["type"].as_str().map(String::from))
        .unwrap_or_default();
    let req = http::Request::post(uri)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::USER_AGENT, "sluice-webhooks/1")
        .header("sluice-event", event)
        .header("sluice-delivery", d.id.as_str())
        .header("sluice-signature", sig)
        .body(Full::new(Bytes::from(d.payload.clone())))
        .map_err(|e| e.to_string())?;
    let res = tokio::time::timeout(SEND_TIMEOUT, client.request(req))
        .await
        .map_err(|_| format!("no answer within {} s", SEND_TIMEOUT.as_secs()))?
        .map_err(|e| format!("request failed: {e}"))?;
    let status = res.status().as_u16();
    // Drain a little of the body so the connection can be reused; never more than
    // MAX_ANSWER_BYTES, never longer than 2 s.
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        http_body_util::Limited::new(res.into_body(), MAX_ANSWER_BYTES).collect(),
    )
    .await;
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn names_resolving_to_private_addresses_are_refused() {
        use tower::Service;
        let mut r = GuardedResolver {
            allow: std::sync::Arc::new(vec![]),
        };
        let name = "localhost".parse().unwrap();
        assert!(r.call(name).await.is_err());
        let mut r = GuardedResolver {
            allow: std::sync::Arc::new(vec!["localhost".to_string()]),
        };
        assert!(r.call("localhost".parse().unwrap()).await.is_ok());
    }
}
