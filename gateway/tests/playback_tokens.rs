//! Playback tokens through the real listener: client binding judged against the socket's
//! peer (or a trusted proxy's `X-Forwarded-For` hop), rotation keys from configuration,
//! and the CloudFront half of a playback answer.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use sluice_engine::{Config, Engine, Principal};

struct Server {
    base: String,
    key: String,
    stream: String,
    _shutdown: tokio::sync::watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

async fn start(edit: impl FnOnce(&mut Config, &std::path::Path)) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        data_dir: dir.path().join("data"),
        ..Config::default()
    };
    config.workers.in_process = false;
    edit(&mut config, dir.path());
    let (engine, _) = Engine::open(config, None).await.unwrap();
    let tenant = engine
        .create_tenant(&Principal::Admin, "acme")
        .await
        .unwrap();
    let who = Principal::Tenant {
        tenant_id: tenant.id.clone(),
    };
    // A live stream can be granted before anything is pushed: its playlist is then
    // missing (404), which is how a test tells an accepted token from a refused one (403).
    let stream = engine.create_live(&who, None, None, None).await.unwrap();
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .build_recorder()
        .handle();
    let app = Arc::new(sluice_gateway::App::new(
        engine.clone(),
        engine.storage().clone(),
        metrics,
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(sluice_gateway::serve(app, listener, rx));
    Server {
        base,
        key: tenant.api_key,
        stream: stream.id,
        _shutdown: tx,
        _dir: dir,
    }
}

async fn call(req: Request<Full<Bytes>>) -> (StatusCode, Value) {
    let client = Client::builder(TokioExecutor::new()).build_http();
    let res = client.request(req).await.unwrap();
    let status = res.status();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

impl Server {
    async fn grant(&self, body: Value) -> (StatusCode, Value) {
        call(
            Request::post(format!("{}/v1/live/{}/playback", self.base, self.stream))
                .header("authorization", format!("Bearer {}", self.key))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body.to_string())))
                .unwrap(),
        )
        .await
    }

    async fn play(&self, url: &str, xff: Option<&str>) -> (StatusCode, Value) {
        let mut b = Request::get(url);
        if let Some(x) = xff {
            b = b.header("x-forwarded-for", x);
        }
        call(b.body(Full::new(Bytes::new())).unwrap()).await
    }

    async fn url(&self, body: Value) -> String {
        let (status, v) = self.grant(body).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        v["url"].as_str().unwrap().to_string()
    }
}

#[tokio::test]
async fn a_bound_url_plays_only_from_inside_its_network() {
    let s = start(|_, _| {}).await;
    let (status, v) = s.grant(serde_json::json!({"client_ip": "127.0.0.1"})).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["client_ip"], "127.0.0.1/32");
    let url = v["url"].as_str().unwrap();
    // Accepted: the (not yet pushed) playlist is missing.
    assert_eq!(s.play(url, None).await.0, StatusCode::NOT_FOUND);

    let other = s
        .url(serde_json::json!({"client_ip": "203.0.113.0/24"}))
        .await;
    let (status, v) = s.play(&other, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(v["error"]["code"], "client_not_allowed", "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("network"));
    // With no trusted proxy, a forwarded address is ignored.
    let (status, _) = s.play(&other, Some("203.0.113.9")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // An unbound URL plays from anywhere.
    let free = s.url(serde_json::json!({})).await;
    assert_eq!(s.play(&free, None).await.0, StatusCode::NOT_FOUND);

    // Bad client_ip values are refused with the contract's error shape.
    for bad in [
        serde_json::json!({"client_ip": "localhost"}),
        serde_json::json!({"client_ip": "10.0.0.0/33"}),
        serde_json::json!({"client_ip": "1".repeat(5000)}),
        serde_json::json!({"client_ip": 7}),
    ] {
        let (status, v) = s.grant(bad.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {v}");
        assert_eq!(v["error"]["code"], "invalid_request");
        assert!(v["error"]["message"].as_str().unwrap().len() < 300);
    }
}

#[tokio::test]
async fn a_trusted_proxy_names_the_client() {
    let s = start(|c, _| c.gateway.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()]).await;
    let url = s
        .url(serde_json::json!({"client_ip": "203.0.113.0/24"}))
        .await;
    assert_eq!(
        s.play(&url, Some("198.51.100.1, 203.0.113.9")).await.0,
        StatusCode::NOT_FOUND
    );
    // Only the right-most hop counts: a client cannot put an address in front.
    assert_eq!(
        s.play(&url, Some("203.0.113.9, 198.51.100.1")).await.0,
        StatusCode::FORBIDDEN
    );
    // The trusted proxy itself, with no header, is the client.
    assert_eq!(s.play(&url, None).await.0, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn previous_keys_verify_until_their_time() {
    // A server signing with k1, then restarted on k2 with k1 kept for the overlap (and the
    // same k1 secret, given inline here), then with k1's window over.
    let k1 = "first key secret, 32 bytes long!";
    let s1 = start(|c, _| {
        c.playback.key_id = "k1".into();
        c.playback.secret = Some(k1.into());
    })
    .await;
    let old_url = s1.url(serde_json::json!({})).await;
    assert!(old_url.contains("/k1."), "{old_url}");
    let path = old_url.split_once("/v1/").unwrap().1.to_string();
    // Verification reads no database: the second server knows this tenant and stream
    // from the path alone, and answers 404 (nothing pushed) once the token holds.
    for (until, expect) in [
        ("2999-01-01T00:00:00Z", StatusCode::NOT_FOUND),
        ("2001-01-01T00:00:00Z", StatusCode::FORBIDDEN),
    ] {
        let s2 = start(|c, _| {
            c.playback.key_id = "k2".into();
            c.playback.previous_keys = vec![sluice_engine::config::PreviousKeyConfig {
                id: "k1".into(),
                secret: Some(k1.into()),
                secret_env: None,
                verify_until: until.into(),
            }];
        })
        .await;
        let new_url = s2.url(serde_json::json!({})).await;
        assert!(new_url.contains("/k2."), "{new_url}");
        let (status, v) = s2.play(&format!("{}/v1/{path}", s2.base), None).await;
        assert_eq!(status, expect, "{until}: {v}");
        if status == StatusCode::FORBIDDEN {
            assert_eq!(v["error"]["code"], "invalid_token");
            assert!(!v.to_string().contains(k1));
        }
    }
}

#[tokio::test]
async fn cloudfront_answers_carry_a_signed_url_and_cookies() {
    let s = start(|c, dir| {
        let key = dir.join("cf.pem");
        let out = std::process::Command::new("openssl")
            .args(["genrsa", "-out"])
            .arg(&key)
            .arg("2048")
            .output()
            .expect("openssl is installed");
        assert!(out.status.success());
        c.cdn.cloudfront = Some(sluice_engine::config::CloudFrontConfig {
            domain: "https://d111111abcdef8.cloudfront.net/".into(),
            key_pair_id: "K2JCJMDEHXQW5F".into(),
            private_key_file: key,
        });
    })
    .await;
    let (status, v) = s.grant(serde_json::json!({"client_ip": "127.0.0.1"})).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let origin_path = v["url"].as_str().unwrap().split_once("/v1/").unwrap().1;
    let cf = &v["cloudfront"];
    let url = cf["url"].as_str().unwrap();
    assert!(
        url.starts_with(&format!(
            "https://d111111abcdef8.cloudfront.net/v1/{origin_path}?Policy="
        )),
        "{url}"
    );
    assert!(url.contains("&Signature=") && url.ends_with("&Key-Pair-Id=K2JCJMDEHXQW5F"));
    let cookies = cf["cookies"].as_object().unwrap();
    assert_eq!(cookies["CloudFront-Key-Pair-Id"], "K2JCJMDEHXQW5F");
    let policy =
        sluice_cdn::cloudfront::decode(cookies["CloudFront-Policy"].as_str().unwrap()).unwrap();
    let policy = String::from_utf8(policy).unwrap();
    let prefix = cf["cookie_path"].as_str().unwrap();
    assert!(origin_path.starts_with(prefix.trim_start_matches("/v1/")));
    // One policy for the whole asset: its prefix and a wildcard, the grant's expiry and
    // the same client binding.
    assert!(
        policy.starts_with(&format!(
            r#"{{"Statement":[{{"Resource":"https://d111111abcdef8.cloudfront.net{prefix}*","Condition":{{"DateLessThan":{{"AWS:EpochTime":"#
        )),
        "{policy}"
    );
    assert!(
        policy.ends_with(r#""IpAddress":{"AWS:SourceIp":"127.0.0.1/32"}}}]}"#),
        "{policy}"
    );
    assert!(cookies["CloudFront-Signature"].as_str().unwrap().len() > 300);
}
