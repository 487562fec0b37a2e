//! Webhooks: a tenant registers a URL; `asset.ready`, `asset.failed` and `job.dead` events
//! are POSTed to it, signed, and retried with backoff until they are acknowledged.
//!
//! Every delivery is a row (`webhook_deliveries`) written when the event happens, so a
//! crash loses nothing, and any process running the dispatcher can send it: a delivery is
//! claimed with a short lock before sending, so two dispatchers never send it at once.
//!
//! The engine keeps the outbox (deliveries, claims, outcomes) and the rules of what may be
//! a target; the HTTP sending runs beside the workers (`sluice_workers::webhooks`), through
//! the [`WebhookOutbox`] handle.
//!
//! Signature: `Sluice-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
//! Receivers recompute it over the raw body and reject stale timestamps (replays).

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;

use crate::model::Principal;
use crate::{Engine, Error, Result, random_token, rfc3339_ms, store};

/// Event types a webhook can subscribe to (and gets when it names none).
pub const EVENTS: [&str; 3] = ["asset.ready", "asset.failed", "job.dead"];

/// The tenant's audit log rows, delivered as they are written: only to webhooks that
/// name it (docs/auth.md).
pub const AUDIT_EVENT: &str = "audit.entry";

/// Attempts per delivery before it is marked failed.
const MAX_DELIVERY_ATTEMPTS: i64 = 10;
/// How long a dispatcher holds a claimed delivery.
const CLAIM: Duration = Duration::from_secs(30);

/// A webhook as listed (the secret is shown only at creation).
#[derive(Debug, Clone, Serialize)]
pub struct Webhook {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// The `Sluice-Signature` header value for `body` sent at `t` (unix seconds).
pub fn signature(secret: &str, t: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Is this an address any tenant may make Sluice call? Not loopback, private, link-local
/// (cloud metadata), shared, unspecified, broadcast, multicast or documentation space.
pub fn is_public(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1])) // shared (CGNAT)
                || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
                || o[0] >= 240) // reserved
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] == 0x2001 && s[1] == 0x0db8)) // documentation
        }
    }
}

/// The host of a URI as written (IPv6 brackets removed).
pub fn host_of(uri: &http::Uri) -> &str {
    uri.host()
        .unwrap_or("")
        .trim_start_matches('[')
        .trim_end_matches(']')
}

/// Refuse an IP-literal host that is not public (names are checked when resolved).
pub fn check_literal(uri: &http::Uri, allow: &[String]) -> Result<()> {
    let host = host_of(uri);
    if allow.iter().any(|a| a.eq_ignore_ascii_case(host)) {
        return Ok(());
    }
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) if !is_public(ip) => Err(Error::InvalidInput(format!(
            "webhook url points at a non-public address ({ip}); an operator can allow it \
             with webhooks.allow_hosts"
        ))),
        _ => Ok(()),
    }
}

/// Validate a receiver URL: absolute http(s), a host, no credentials, bounded length.
pub fn validate_url(url: &str) -> Result<http::Uri> {
    let bad = |m: &str| Error::InvalidInput(format!("webhook url {m}"));
    if url.len() > 2048 {
        return Err(bad("is longer than 2048 characters"));
    }
    let uri: http::Uri = url.parse().map_err(|_| bad("is not a valid URL"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err(bad("must start with http:// or https://")),
    }
    let auth = uri.authority().ok_or_else(|| bad("needs a host"))?;
    if auth.as_str().contains('@') {
        return Err(bad("must not carry credentials"));
    }
    Ok(uri)
}

impl Engine {
    /// Register a webhook for the caller's tenant; `events` defaults to all.
    pub async fn create_webhook(
        &self,
        who: &Principal,
        url: &str,
        events: Option<Vec<String>>,
    ) -> Result<Webhook> {
        let tenant = self.tenant_of(who)?;
        let uri = validate_url(url)?;
        check_literal(&uri, &self.inner.config.webhooks.allow_hosts)?;
        let events = events.unwrap_or_else(|| EVENTS.iter().map(|e| e.to_string()).collect());
        if events.is_empty() {
            return Err(Error::InvalidInput("events must not be empty".into()));
        }
        if let Some(e) = events
            .iter()
            .find(|e| !EVENTS.contains(&e.as_str()) && *e != AUDIT_EVENT)
        {
            return Err(Error::InvalidInput(format!(
                "unknown event {e:?}; use {}, {AUDIT_EVENT}",
                EVENTS.join(", ")
            )));
        }
        let id = ulid::Ulid::new().to_string();
        let secret = format!("whsec_{}", random_token(24));
        let now = self.now_ms();
        store::insert_webhook(
            &self.inner.db,
            &id,
            tenant,
            url,
            &secret,
            &events.join(","),
            now,
        )
        .await?;
        Ok(Webhook {
            id,
            url: url.to_string(),
            events,
            created_at: rfc3339_ms(now),
            secret: Some(secret),
        })
    }

    pub async fn list_webhooks(&self, who: &Principal) -> Result<Vec<Webhook>> {
        let tenant = self.tenant_of(who)?;
        Ok(store::list_webhooks(&self.inner.db, tenant)
            .await?
            .into_iter()
            .map(|(id, url, events, created_at)| Webhook {
                id,
                url,
                events: events.split(',').map(String::from).collect(),
                created_at: rfc3339_ms(created_at),
                secret: None,
            })
            .collect())
    }

    pub async fn delete_webhook(&self, who: &Principal, id: &str) -> Result<()> {
        let tenant = self.tenant_of(who)?;
        if !store::delete_webhook(&self.inner.db, tenant, id).await? {
            return Err(Error::not_found("webhook", id));
        }
        Ok(())
    }

    /// Record an event for every webhook of `tenant` subscribed to it. Never fails the
    /// caller's operation: an event that cannot be recorded is logged.
    pub(crate) async fn emit(&self, tenant: &str, event: &'static str, data: serde_json::Value) {
        if let Err(e) = self.try_emit(tenant, event, data).await {
            tracing::error!(tenant, event, "could not record webhook event: {e}");
        }
    }

    async fn try_emit(&self, tenant: &str, event: &str, data: serde_json::Value) -> Result<()> {
        let hooks = store::webhook_subscriptions(&self.inner.db, tenant).await?;
        let now = self.now_ms();
        for (webhook, events) in hooks {
            if !events.split(',').any(|e| e == event) {
                continue;
            }
            let id = ulid::Ulid::new().to_string();
            let payload = serde_json::json!({
                "id": id,
                "type": event,
                "created_at": rfc3339_ms(now),
                "data": data,
            })
            .to_string();
            store::insert_delivery(&self.inner.db, &id, &webhook, tenant, event, &payload, now)
                .await?;
        }
        Ok(())
    }

    /// Claim up to `limit` due deliveries for this dispatcher.
    pub(crate) async fn claim_deliveries(&self, limit: i64) -> Result<Vec<store::ClaimedDelivery>> {
        let now = self.now_ms();
        store::claim_deliveries(&self.inner.db, now, now + CLAIM.as_millis() as i64, limit).await
    }

    pub(crate) async fn delivery_result(
        &self,
        id: &str,
        attempts: i64,
        outcome: std::result::Result<u16, String>,
    ) -> Result<()> {
        let now = self.now_ms();
        let attempts = attempts + 1;
        let (status, code, error, next) = match &outcome {
            Ok(code) if (200..300).contains(code) => ("delivered", Some(*code), None, now),
            other => {
                let (code, err) = match other {
                    Ok(c) => (Some(*c), format!("receiver answered {c}")),
                    Err(e) => (None, e.clone()),
                };
                let delay = crate::jobs::policy::backoff(
                    Duration::from_secs(1),
                    Duration::from_secs(3600),
                    attempts as u32,
                    rand::random::<f64>(),
                );
                let status = if attempts >= MAX_DELIVERY_ATTEMPTS {
                    "failed"
                } else {
                    "pending"
                };
                (status, code, Some(err), now + delay.as_millis() as i64)
            }
        };
        store::delivery_attempted(
            &self.inner.db,
            id,
            status,
            attempts,
            code.map(i64::from),
            error.as_deref(),
            next,
            now,
        )
        .await?;
        metrics::counter!("sluice_webhook_deliveries_total", "outcome" => status).increment(1);
        Ok(())
    }
}

/// One delivery claimed for sending.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: String,
    pub url: String,
    /// The webhook's signing secret.
    pub secret: String,
    /// The JSON body.
    pub payload: String,
    /// Attempts made before this one.
    pub attempts: i64,
}

/// What a webhook dispatcher holds: the outbox (claim due deliveries, record outcomes) and
/// the operator's allowlist of non-public targets; nothing else of the engine. Made by
/// [`Engine::webhook_outbox`].
#[derive(Clone)]
pub struct WebhookOutbox {
    engine: Engine,
}

impl Engine {
    /// The handle a webhook dispatcher gets.
    pub fn webhook_outbox(&self) -> WebhookOutbox {
        WebhookOutbox {
            engine: self.clone(),
        }
    }
}

impl WebhookOutbox {
    /// Hosts an operator allowed as targets although not public (`webhooks.allow_hosts`).
    pub fn allow_hosts(&self) -> &[String] {
        &self.engine.inner.config.webhooks.allow_hosts
    }

    /// Claim up to `limit` due deliveries (each held for a while by this dispatcher).
    pub async fn claim(&self, limit: i64) -> Result<Vec<Delivery>> {
        Ok(self
            .engine
            .claim_deliveries(limit)
            .await?
            .into_iter()
            .map(|(id, url, secret, payload, attempts)| Delivery {
                id,
                url,
                secret,
                payload,
                attempts,
            })
            .collect())
    }

    /// Record how sending `delivery` went: the receiver's HTTP status, or why no answer
    /// came. A non-2xx answer or an error is retried with backoff.
    pub async fn record(
        &self,
        delivery: &Delivery,
        outcome: std::result::Result<u16, String>,
    ) -> Result<()> {
        self.engine
            .delivery_result(&delivery.id, delivery.attempts, outcome)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_over_timestamp_and_body() {
        // Reference value computed independently:
        // printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac whsec_test
        assert_eq!(
            signature("whsec_test", 1_700_000_000, br#"{"a":1}"#),
            "t=1700000000,v1=38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789"
        );
    }

    #[test]
    fn non_public_targets_are_refused_unless_allowed() {
        for url in [
            "http://127.0.0.1:9000/x",
            "http://10.1.2.3/x",
            "http://172.16.0.1/x",
            "http://192.168.1.1/x",
            "http://169.254.169.254/latest/meta-data/",
            "http://100.64.0.1/x",
            "http://0.0.0.0/x",
            "http://[::1]/x",
            "http://[fd00::1]/x",
            "http://[fe80::1]/x",
            "http://[::ffff:127.0.0.1]/x",
        ] {
            let uri = validate_url(url).unwrap();
            assert!(check_literal(&uri, &[]).is_err(), "{url}");
        }
        let uri = validate_url("http://127.0.0.1:9000/x").unwrap();
        assert!(check_literal(&uri, &["127.0.0.1".to_string()]).is_ok());
        for url in [
            "https://93.184.216.34/x",
            "https://[2606:4700::1111]/x",
            "https://hooks.example.com/x",
        ] {
            assert!(
                check_literal(&validate_url(url).unwrap(), &[]).is_ok(),
                "{url}"
            );
        }
    }

    #[test]
    fn urls() {
        assert!(validate_url("https://hooks.example.com/sluice").is_ok());
        assert!(validate_url("http://127.0.0.1:9000/x").is_ok());
        for bad in [
            "ftp://x/y",
            "/relative",
            "https://user:pw@host/",
            "not a url",
            "",
        ] {
            assert!(validate_url(bad).is_err(), "{bad}");
        }
    }
}
