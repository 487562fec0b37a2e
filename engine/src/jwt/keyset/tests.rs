//! The key-set logic, exactly: parsing, caching headers, grace, throttle.

use super::*;

/// A JWKS document of the given JWKs.
fn doc(keys: &[serde_json::Value]) -> Vec<u8> {
    serde_json::json!({ "keys": keys }).to_string().into_bytes()
}

fn rsa(kid: &str, n: &str) -> serde_json::Value {
    serde_json::json!({"kty": "RSA", "kid": kid, "n": n, "e": "AQAB"})
}

fn ed(kid: &str) -> serde_json::Value {
    serde_json::json!({"kty": "OKP", "crv": "Ed25519", "kid": kid,
        "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"})
}

fn fresh(kids: &[&str]) -> Vec<FreshKey> {
    parse_jwks(&doc(&kids
        .iter()
        .map(|k| rsa(k, "sXch"))
        .collect::<Vec<_>>()))
    .unwrap()
}

#[test]
fn usable_keys_only() {
    let es = serde_json::json!({"kty": "EC", "crv": "P-256", "kid": "e1", "alg": "ES256",
        "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
        "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"});
    let keys = parse_jwks(&doc(&[
        rsa("r1", "sXch"),
        ed("d1"),
        es,
        // Refused: an HMAC secret, no kid, an alg that is not the key's, an HS alg on RSA.
        serde_json::json!({"kty": "oct", "kid": "h1", "k": "c2VjcmV0"}),
        serde_json::json!({"kty": "RSA", "n": "sXch", "e": "AQAB"}),
        serde_json::json!({"kty": "RSA", "kid": "r2", "alg": "ES256", "n": "sXch", "e": "AQAB"}),
        serde_json::json!({"kty": "RSA", "kid": "r3", "alg": "HS256", "n": "sXch", "e": "AQAB"}),
        serde_json::json!({"kty": "RSA", "kid": "r4", "alg": "RS512", "n": "sXch", "e": "AQAB"}),
    ]))
    .unwrap();
    let got: Vec<(&str, Algorithm)> = keys.iter().map(|k| (k.kid.as_str(), k.alg)).collect();
    assert_eq!(
        got,
        [
            ("r1", Algorithm::RS256),
            ("d1", Algorithm::EdDSA),
            ("e1", Algorithm::ES256)
        ]
    );
    // A set with nothing usable, or no set at all, is an error (cached keys are kept).
    assert!(
        parse_jwks(&doc(&[
            serde_json::json!({"kty": "oct", "kid": "h", "k": "c2VjcmV0"})
        ]))
        .is_err()
    );
    assert!(parse_jwks(b"<html>").is_err());
    assert!(parse_jwks(b"{}").is_err());
}

#[test]
fn caching_headers_within_bounds() {
    let c =
        |cc: Option<&str>, ex: Option<&str>| cache_seconds(cc, ex, 1_000_000_000, 300, 60, 86_400);
    assert_eq!(c(None, None), 300);
    assert_eq!(c(Some("public, max-age=3600"), None), 3600);
    assert_eq!(c(Some("max-age=5"), None), 60, "raised to the minimum");
    assert_eq!(
        c(Some("max-age=99999999"), None),
        86_400,
        "cut to the maximum"
    );
    assert_eq!(c(Some("no-store"), None), 60);
    assert_eq!(c(Some("max-age=abc"), None), 300);
    // Expires: relative to now; max-age wins over it.
    let in_an_hour = httpdate::fmt_http_date(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000 + 3600),
    );
    assert_eq!(c(None, Some(&in_an_hour)), 3600);
    assert_eq!(c(Some("max-age=120"), Some(&in_an_hour)), 120);
    assert_eq!(
        c(None, Some("Thu, 01 Jan 1970 00:00:00 GMT")),
        60,
        "past: the minimum"
    );
    assert_eq!(c(None, Some("garbage")), 300);
}

#[test]
fn several_keys_valid_then_removed_ones_within_grace_only() {
    let mut s = KeySet::default();
    let grace = 10_000;
    assert!(s.stale(0), "never fetched");
    s.replace(fresh(&["a", "b"]), 1_000, 60_000, grace);
    assert!(s.get("a", 1_000, grace).is_some());
    assert!(s.get("b", 1_000, grace).is_some());
    assert!(!s.stale(60_999));
    assert!(s.stale(61_000));
    // Rotation: b is gone from the set, c is new; b stays valid for the grace period.
    s.replace(fresh(&["a", "c"]), 5_000, 60_000, grace);
    assert!(s.get("c", 5_000, grace).is_some());
    assert!(s.get("b", 14_999, grace).is_some(), "in its grace period");
    assert!(
        s.get("b", 15_000, grace).is_none(),
        "after its grace period"
    );
    assert!(s.get("a", 15_000, grace).is_some());
    // A later fetch drops keys past their grace; one that comes back is valid again.
    s.replace(fresh(&["a", "c"]), 16_000, 60_000, grace);
    assert_eq!(s.iter().count(), 2);
    s.replace(fresh(&["c"]), 17_000, 60_000, grace);
    s.replace(fresh(&["a", "c"]), 18_000, 60_000, grace);
    assert!(
        s.get("a", 40_000, grace).is_some(),
        "back in the set: no longer removed"
    );
}

#[test]
fn a_failed_fetch_keeps_the_keys_and_throttles() {
    let mut s = KeySet::default();
    s.replace(fresh(&["a"]), 1_000, 60_000, 10_000);
    assert!(!s.may_fetch(5_000, 10_000));
    assert!(s.may_fetch(11_000, 10_000));
    s.failed(70_000, 10_000);
    assert!(
        s.get("a", 70_000, 10_000).is_some(),
        "cached keys survive a failed fetch"
    );
    assert!(!s.stale(79_999));
    assert!(s.stale(80_000), "retried after the interval");
    assert!(!s.may_fetch(75_000, 10_000));
}

#[test]
fn a_changed_key_under_the_same_kid_is_a_new_key() {
    let mut s = KeySet::default();
    s.replace(fresh(&["a"]), 1_000, 60_000, 10_000);
    let other = parse_jwks(&doc(&[rsa("a", "AQID")])).unwrap();
    s.replace(other, 2_000, 60_000, 10_000);
    assert_eq!(s.get("a", 2_000, 10_000).unwrap().fetched_at_ms, 2_000);
}
