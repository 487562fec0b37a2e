//! CloudFront signatures checked by an independent implementation: `openssl` generates the
//! RSA key, our code signs, and `openssl dgst -sha1 -verify` checks the signature against
//! the public key, as CloudFront does with the key it holds.

use std::path::Path;
use std::process::Command;

use sluice_cdn::cloudfront::{self, CloudFrontSigner, Policy};

fn openssl(args: &[&str], dir: &Path) -> std::process::Output {
    Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed (Debian package openssl)")
}

/// A fresh key pair: (signer, directory holding pub.pem).
fn key_pair(kind: &str) -> (CloudFrontSigner, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let out = if kind == "pkcs1" {
        openssl(
            &["genrsa", "-traditional", "-out", "key.pem", "2048"],
            dir.path(),
        )
    } else {
        openssl(&["genrsa", "-out", "key.pem", "2048"], dir.path())
    };
    assert!(out.status.success(), "{out:?}");
    let out = openssl(
        &["rsa", "-in", "key.pem", "-pubout", "-out", "pub.pem"],
        dir.path(),
    );
    assert!(out.status.success(), "{out:?}");
    let signer =
        CloudFrontSigner::from_pem_file("K2JCJMDEHXQW5F", &dir.path().join("key.pem")).unwrap();
    (signer, dir)
}

/// Whether openssl accepts `sig` over `policy` with the public key.
fn openssl_verifies(dir: &Path, policy: &[u8], sig: &[u8]) -> bool {
    std::fs::write(dir.join("policy.json"), policy).unwrap();
    std::fs::write(dir.join("sig.bin"), sig).unwrap();
    let out = openssl(
        &[
            "dgst",
            "-sha1",
            "-verify",
            "pub.pem",
            "-signature",
            "sig.bin",
            "policy.json",
        ],
        dir,
    );
    out.status.success()
}

/// The value of `name` in a URL's query.
fn query(url: &str, name: &str) -> String {
    let (_, q) = url.split_once('?').unwrap();
    q.split('&')
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("{name} missing from {url}"))
        .to_string()
}

#[test]
fn canned_signed_url_verifies_with_openssl() {
    let (signer, dir) = key_pair("pkcs8");
    let url = "https://d111111abcdef8.cloudfront.net/v1/play/t/a/k1.9._.x/master.m3u8";
    let policy = Policy::canned(url, 2_000_000_000).unwrap();
    let signed = signer.signed_url(url, &policy).unwrap();
    assert!(signed.starts_with(&format!("{url}?Expires=2000000000&Signature=")));
    assert!(signed.ends_with("&Key-Pair-Id=K2JCJMDEHXQW5F"));
    let sig = cloudfront::decode(&query(&signed, "Signature")).unwrap();
    // CloudFront rebuilds the canned policy from the URL and Expires: the same text.
    let rebuilt = format!(
        r#"{{"Statement":[{{"Resource":"{url}","Condition":{{"DateLessThan":{{"AWS:EpochTime":2000000000}}}}}}]}}"#
    );
    assert!(openssl_verifies(dir.path(), rebuilt.as_bytes(), &sig));
    let tampered = rebuilt.replace("2000000000", "2000000001");
    assert!(!openssl_verifies(dir.path(), tampered.as_bytes(), &sig));
}

#[test]
fn custom_policy_url_and_cookies_verify_with_openssl() {
    let (signer, dir) = key_pair("pkcs1");
    let policy = Policy::custom("https://d.example.net/v1/play/t/a/*", 2_000_000_000)
        .unwrap()
        .not_before(1_700_000_000)
        .from_network("203.0.113.0/24".parse().unwrap());
    let url = "https://d.example.net/v1/play/t/a/k1.9._.x/master.m3u8";
    let signed = signer.signed_url(url, &policy).unwrap();
    assert_eq!(query(&signed, "Key-Pair-Id"), "K2JCJMDEHXQW5F");
    let sent_policy = cloudfront::decode(&query(&signed, "Policy")).unwrap();
    assert_eq!(sent_policy, policy.to_json().as_bytes());
    let sig = cloudfront::decode(&query(&signed, "Signature")).unwrap();
    assert!(openssl_verifies(dir.path(), &sent_policy, &sig));
    // Widening the resource, or dropping the IP condition, breaks the signature.
    let wider = policy.to_json().replace("/t/a/*", "/*");
    assert!(!openssl_verifies(dir.path(), wider.as_bytes(), &sig));
    let no_ip = Policy::custom("https://d.example.net/v1/play/t/a/*", 2_000_000_000)
        .unwrap()
        .not_before(1_700_000_000)
        .to_json();
    assert!(!openssl_verifies(dir.path(), no_ip.as_bytes(), &sig));

    let cookies = signer.cookies(&policy).unwrap();
    let names: Vec<_> = cookies.pairs().iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        [
            "CloudFront-Policy",
            "CloudFront-Signature",
            "CloudFront-Key-Pair-Id"
        ]
    );
    assert_eq!(cookies.key_pair_id, "K2JCJMDEHXQW5F");
    let p = cloudfront::decode(&cookies.policy).unwrap();
    let s = cloudfront::decode(&cookies.signature).unwrap();
    assert!(openssl_verifies(dir.path(), &p, &s));
    // Every value is cookie- and URL-safe: CloudFront's alphabet has no + / =.
    for v in [&cookies.policy, &cookies.signature] {
        assert!(
            v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_~".contains(&b)),
            "{v}"
        );
    }
}
