//! The JWT key set against a real local HTTP server that counts its fetches: 1,000
//! concurrent requests with a kid the cache does not know cause exactly one fetch (and all
//! succeed); a thousand with a kid the set does not have either: one fetch, then refused
//! by the throttle without more; a key set that is down keeps the cached keys; a fetch is
//! cut at its size limit.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use sluice_engine::jwt::{JwtConfig, JwtVerifier};
use sluice_engine::{Role, SystemClock};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Mutex;

struct TestKey {
    kid: String,
    pkcs8: Vec<u8>,
    public: Vec<u8>,
}

impl TestKey {
    fn new(kid: &str) -> Self {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(doc.as_ref()).unwrap();
        Self {
            kid: kid.into(),
            pkcs8: doc.as_ref().to_vec(),
            public: pair.public_key().as_ref().to_vec(),
        }
    }

    fn jwk(&self) -> serde_json::Value {
        serde_json::json!({"kty": "OKP", "crv": "Ed25519", "kid": self.kid,
            "x": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&self.public)})
    }

    fn token(&self, role: &str) -> String {
        let mut h = Header::new(Algorithm::EdDSA);
        h.kid = Some(self.kid.clone());
        let now = jsonwebtoken::get_current_timestamp();
        let claims = serde_json::json!({"iss": "https://id.test/", "aud": "sluice",
            "sub": "someone", "exp": now + 300, "role": role, "tenant": "T1"});
        jsonwebtoken::encode(&h, &claims, &EncodingKey::from_ed_der(&self.pkcs8)).unwrap()
    }
}

/// A real HTTP/1.1 server answering every request with the current key set.
struct JwksServer {
    url: String,
    fetches: Arc<AtomicUsize>,
    body: Arc<Mutex<String>>,
    down: Arc<AtomicBool>,
}

async fn serve(keys: &[&TestKey]) -> JwksServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    let fetches = Arc::new(AtomicUsize::new(0));
    let down = Arc::new(AtomicBool::new(false));
    let body = Arc::new(Mutex::new(set(keys)));
    let (f, b, d) = (fetches.clone(), body.clone(), down.clone());
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            let (f, b, d) = (f.clone(), b.clone(), d.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                f.fetch_add(1, Ordering::SeqCst);
                // A slow identity provider: the burst piles up behind the one fetch.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                let res = if d.load(Ordering::SeqCst) {
                    "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_string()
                } else {
                    let body = b.lock().await.clone();
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                         cache-control: max-age=3600\r\ncontent-length: {}\r\n\
                         connection: close\r\n\r\n{body}",
                        body.len()
                    )
                };
                let _ = sock.write_all(res.as_bytes()).await;
            });
        }
    });
    JwksServer {
        url,
        fetches,
        body,
        down,
    }
}

fn set(keys: &[&TestKey]) -> String {
    serde_json::json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()}).to_string()
}

fn config(url: &str) -> JwtConfig {
    toml::from_str(&format!(
        "issuer = \"https://id.test/\"\naudience = \"sluice\"\njwks_url = \"{url}\"\n\
         refresh_min_interval_s = 1\nmin_cache_s = 60\n"
    ))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_requests_with_a_new_kid_make_one_fetch() {
    let k1 = TestKey::new("k1");
    let k2 = TestKey::new("k2");
    let server = serve(&[&k1]).await;
    let v = Arc::new(JwtVerifier::new(config(&server.url), Arc::new(SystemClock)).unwrap());
    // Allowed: the first token fetches the set once.
    let c = v.verify(&k1.token("viewer")).await.unwrap();
    assert_eq!(c.role, Role::Viewer);
    assert_eq!(c.tenant.as_deref(), Some("T1"));
    assert_eq!(server.fetches.load(Ordering::SeqCst), 1);
    // The provider rotates in k2; past the throttle (1 s), 1,000 concurrent requests carry
    // it: one fetch.
    *server.body.lock().await = set(&[&k1, &k2]);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let token = Arc::new(k2.token("tenant_admin"));
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let (v, t) = (v.clone(), token.clone());
            tokio::spawn(async move { v.verify(&t).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().role, Role::TenantAdmin);
    }
    assert_eq!(
        server.fetches.load(Ordering::SeqCst),
        2,
        "one fetch for the burst"
    );

    // At once a kid the provider does not have either: within the throttle (1 s since the
    // last fetch), all refused without a fetch.
    let k3 = TestKey::new("k3");
    let token = Arc::new(k3.token("viewer"));
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let (v, t) = (v.clone(), token.clone());
            tokio::spawn(async move { v.verify(&t).await })
        })
        .collect();
    for t in tasks {
        assert!(t.await.unwrap().is_err());
    }
    assert_eq!(
        server.fetches.load(Ordering::SeqCst),
        2,
        "throttled: no fetch"
    );
    // Past the throttle, another thousand: one fetch, still refused, no more fetches.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let (v, t) = (v.clone(), token.clone());
            tokio::spawn(async move { v.verify(&t).await })
        })
        .collect();
    for t in tasks {
        assert!(t.await.unwrap().is_err());
    }
    assert_eq!(
        server.fetches.load(Ordering::SeqCst),
        3,
        "one fetch for the burst"
    );
    // Known keys still verify.
    assert!(v.verify(&k1.token("viewer")).await.is_ok());
}

#[tokio::test]
async fn a_key_set_that_is_down_keeps_the_cached_keys() {
    let k1 = TestKey::new("k1");
    let server = serve(&[&k1]).await;
    let mut cfg = config(&server.url);
    cfg.min_cache_s = 0;
    cfg.default_cache_s = 0;
    cfg.max_cache_s = 0;
    cfg.refresh_min_interval_s = 0;
    let v = JwtVerifier::new(cfg, Arc::new(SystemClock)).unwrap();
    assert!(v.verify(&k1.token("viewer")).await.is_ok());
    server.down.store(true, Ordering::SeqCst);
    let before = server.fetches.load(Ordering::SeqCst);
    // The set is stale at once (cache 0 s): each request tries a fetch, which fails, and
    // the cached key still verifies.
    for _ in 0..3 {
        assert!(v.verify(&k1.token("viewer")).await.is_ok());
    }
    assert!(server.fetches.load(Ordering::SeqCst) > before);
    assert_eq!(v.cached_keys().await.len(), 1);
}

#[tokio::test]
async fn an_oversized_key_set_is_refused() {
    let k1 = TestKey::new("k1");
    let server = serve(&[&k1]).await;
    let mut cfg = config(&server.url);
    cfg.max_jwks_bytes = 20;
    let v = JwtVerifier::new(cfg, Arc::new(SystemClock)).unwrap();
    assert!(v.verify(&k1.token("viewer")).await.is_err());
    assert!(v.cached_keys().await.is_empty());
}
