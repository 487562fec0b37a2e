//! CloudFront signed URLs and signed cookies, for deployments where CloudFront admits
//! viewers (its behaviour restricted to a trusted key group) and Sluice is the origin.
//!
//! CloudFront checks an RSA-SHA1 PKCS#1 v1.5 signature over a JSON policy with the public
//! key it holds under the `Key-Pair-Id`. Two policy kinds:
//!
//! - **canned**: one resource URL and an expiry. CloudFront rebuilds the policy text from
//!   the URL itself, so it must be byte-exact: [`Policy::canned`] writes exactly
//!   `{"Statement":[{"Resource":"URL","Condition":{"DateLessThan":{"AWS:EpochTime":N}}}]}`.
//!   The URL carries `Expires`, `Signature`, `Key-Pair-Id`.
//! - **custom**: a resource that may hold `*` wildcards, `DateLessThan`, optional
//!   `DateGreaterThan` and an optional `IpAddress` (`AWS:SourceIp`, a CIDR). The policy
//!   itself travels (as `Policy`), so one signature covers every URL the wildcard matches.
//!
//! Why cookies matter for HLS: a signed URL's query string belongs to that one URL. A
//! master playlist names its variants, and a variant its segments, by *relative* URIs, and
//! a player resolves those against the playlist's URL without its query string; so the
//! signature would open the master playlist and nothing after it. Signed cookies
//! (`CloudFront-Policy`, `CloudFront-Signature`, `CloudFront-Key-Pair-Id`) with a custom
//! policy whose resource ends in `*` are sent with every request under the asset's prefix,
//! so the whole ladder plays. (Sluice's own token sits in the path and is inherited for the
//! same reason.)
//!
//! Base64 here is CloudFront's URL-safe variant: standard base64 with `+` → `-`,
//! `=` → `_`, `/` → `~`.

use std::fmt::Write as _;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rsa::PrivateKey;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::DecodePrivateKey;

use crate::{ClientNet, Error};

/// Longest resource URL accepted in a policy.
const MAX_RESOURCE_LEN: usize = 4096;

/// A CloudFront policy: one statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    resource: String,
    date_less_than: u64,
    date_greater_than: Option<u64>,
    ip_address: Option<ClientNet>,
    canned: bool,
}

impl Policy {
    /// A canned policy: `url` (no wildcard) until `expires` (unix seconds).
    pub fn canned(url: &str, expires: u64) -> Result<Self, Error> {
        check_resource(url)?;
        if url.contains('*') {
            return Err(Error::CloudFront(
                "a canned policy's resource cannot hold a wildcard".into(),
            ));
        }
        Ok(Self {
            resource: url.to_string(),
            date_less_than: expires,
            date_greater_than: None,
            ip_address: None,
            canned: true,
        })
    }

    /// A custom policy for `resource` (may hold `*`) until `expires` (unix seconds).
    pub fn custom(resource: &str, expires: u64) -> Result<Self, Error> {
        check_resource(resource)?;
        Ok(Self {
            resource: resource.to_string(),
            date_less_than: expires,
            date_greater_than: None,
            ip_address: None,
            canned: false,
        })
    }

    /// Not valid before `t` (unix seconds). Custom policies only.
    pub fn not_before(mut self, t: u64) -> Self {
        self.date_greater_than = Some(t);
        self.canned = false;
        self
    }

    /// Only for viewers inside `net`. Custom policies only.
    pub fn from_network(mut self, net: ClientNet) -> Self {
        self.ip_address = Some(net);
        self.canned = false;
        self
    }

    pub fn is_canned(&self) -> bool {
        self.canned
    }

    pub fn expires(&self) -> u64 {
        self.date_less_than
    }

    /// The policy's JSON exactly as signed: no whitespace, keys in CloudFront's order.
    pub fn to_json(&self) -> String {
        // The resource was checked to hold no character JSON must escape.
        let mut s = format!(
            "{{\"Statement\":[{{\"Resource\":\"{}\",\"Condition\":{{\"DateLessThan\":{{\"AWS:EpochTime\":{}}}",
            self.resource, self.date_less_than
        );
        if let Some(t) = self.date_greater_than {
            let _ = write!(s, ",\"DateGreaterThan\":{{\"AWS:EpochTime\":{t}}}");
        }
        if let Some(net) = &self.ip_address {
            let _ = write!(s, ",\"IpAddress\":{{\"AWS:SourceIp\":\"{net}\"}}");
        }
        s.push_str("}}]}");
        s
    }
}

/// A resource URL must be printable ASCII without the characters JSON escapes.
fn check_resource(url: &str) -> Result<(), Error> {
    if url.is_empty()
        || url.len() > MAX_RESOURCE_LEN
        || !url
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
    {
        return Err(Error::CloudFront(
            "a policy resource must be a URL of printable ASCII without quotes or backslashes"
                .into(),
        ));
    }
    Ok(())
}

/// CloudFront's URL-safe base64: standard base64 with `+` → `-`, `=` → `_`, `/` → `~`.
pub fn encode(bytes: &[u8]) -> String {
    STANDARD
        .encode(bytes)
        .chars()
        .map(|c| match c {
            '+' => '-',
            '=' => '_',
            '/' => '~',
            c => c,
        })
        .collect()
}

/// The inverse of [`encode`] (for tests and tools that check a signature).
pub fn decode(text: &str) -> Result<Vec<u8>, Error> {
    let std: String = text
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '=',
            '~' => '/',
            c => c,
        })
        .collect();
    STANDARD
        .decode(std)
        .map_err(|_| Error::CloudFront("not CloudFront base64".into()))
}

/// The three signed cookies, by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCookies {
    /// `CloudFront-Policy`: the encoded custom policy.
    pub policy: String,
    /// `CloudFront-Signature`.
    pub signature: String,
    /// `CloudFront-Key-Pair-Id`.
    pub key_pair_id: String,
}

impl SignedCookies {
    /// `(name, value)` pairs, in the order CloudFront documents them.
    pub fn pairs(&self) -> [(&'static str, &str); 3] {
        [
            ("CloudFront-Policy", &self.policy),
            ("CloudFront-Signature", &self.signature),
            ("CloudFront-Key-Pair-Id", &self.key_pair_id),
        ]
    }
}

/// Signs policies with one CloudFront key pair. The private key never appears in `Debug`.
#[derive(Clone)]
pub struct CloudFrontSigner {
    key_pair_id: String,
    key: PrivateKey,
}

impl std::fmt::Debug for CloudFrontSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CloudFrontSigner {{ key_pair_id: {:?}, key: <redacted> }}",
            self.key_pair_id
        )
    }
}

impl CloudFrontSigner {
    /// From a PEM private key (PKCS#1 `RSA PRIVATE KEY` or PKCS#8 `PRIVATE KEY`).
    pub fn from_pem(key_pair_id: &str, pem: &str) -> Result<Self, Error> {
        if key_pair_id.is_empty()
            || key_pair_id.len() > 64
            || !key_pair_id.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(Error::CloudFront(
                "key_pair_id must be 1 to 64 letters and digits (as K2JCJMDEHXQW5F)".into(),
            ));
        }
        let key = PrivateKey::from_pkcs8_pem(pem)
            .or_else(|_| PrivateKey::from_pkcs1_pem(pem))
            .map_err(|_| {
                Error::CloudFront(
                    "the private key is not an RSA key in PEM (PKCS#1 or PKCS#8)".into(),
                )
            })?;
        Ok(Self {
            key_pair_id: key_pair_id.to_string(),
            key,
        })
    }

    /// From a PEM file. Errors name the file, never its content.
    pub fn from_pem_file(key_pair_id: &str, path: &Path) -> Result<Self, Error> {
        let pem = std::fs::read_to_string(path).map_err(|e| {
            Error::CloudFront(format!("cannot read private key {}: {e}", path.display()))
        })?;
        Self::from_pem(key_pair_id, &pem).map_err(|e| match e {
            Error::CloudFront(m) => Error::CloudFront(format!("{}: {m}", path.display())),
            e => e,
        })
    }

    pub fn key_pair_id(&self) -> &str {
        &self.key_pair_id
    }

    /// The raw RSA-SHA1 PKCS#1 v1.5 signature of `policy_json`.
    pub fn sign_raw(&self, policy_json: &[u8]) -> Result<Vec<u8>, Error> {
        self.key
            .pkcs1v15_sign::<sha1::Sha1>(policy_json)
            .map_err(|_| Error::CloudFront("signing failed".into()))
    }

    /// The signature of `policy`, in CloudFront's base64.
    pub fn signature(&self, policy: &Policy) -> Result<String, Error> {
        Ok(encode(&self.sign_raw(policy.to_json().as_bytes())?))
    }

    /// `url` signed with `policy`: a canned policy adds `Expires`, a custom one `Policy`;
    /// both add `Signature` and `Key-Pair-Id`. For a canned policy `url` must be the
    /// policy's resource.
    pub fn signed_url(&self, url: &str, policy: &Policy) -> Result<String, Error> {
        if policy.canned && url != policy.resource {
            return Err(Error::CloudFront(
                "a canned policy signs exactly its resource URL".into(),
            ));
        }
        let sig = self.signature(policy)?;
        let sep = if url.contains('?') { '&' } else { '?' };
        let head = if policy.canned {
            format!("Expires={}", policy.date_less_than)
        } else {
            format!("Policy={}", encode(policy.to_json().as_bytes()))
        };
        Ok(format!(
            "{url}{sep}{head}&Signature={sig}&Key-Pair-Id={}",
            self.key_pair_id
        ))
    }

    /// The three signed cookies for a custom `policy` (cookies always carry the policy).
    pub fn cookies(&self, policy: &Policy) -> Result<SignedCookies, Error> {
        Ok(SignedCookies {
            policy: encode(policy.to_json().as_bytes()),
            signature: self.signature(policy)?,
            key_pair_id: self.key_pair_id.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canned_policy_is_byte_exact() {
        let p = Policy::canned(
            "https://d111111abcdef8.cloudfront.net/image.jpg",
            1357034400,
        )
        .unwrap();
        assert_eq!(
            p.to_json(),
            r#"{"Statement":[{"Resource":"https://d111111abcdef8.cloudfront.net/image.jpg","Condition":{"DateLessThan":{"AWS:EpochTime":1357034400}}}]}"#
        );
        assert!(p.is_canned());
        assert!(Policy::canned("https://d.example/*", 1).is_err());
    }

    #[test]
    fn custom_policy_is_byte_exact() {
        let p = Policy::custom("https://d.example/v1/play/t/a/*", 1_700_000_600)
            .unwrap()
            .not_before(1_700_000_000)
            .from_network("203.0.113.7/24".parse().unwrap());
        assert_eq!(
            p.to_json(),
            r#"{"Statement":[{"Resource":"https://d.example/v1/play/t/a/*","Condition":{"DateLessThan":{"AWS:EpochTime":1700000600},"DateGreaterThan":{"AWS:EpochTime":1700000000},"IpAddress":{"AWS:SourceIp":"203.0.113.0/24"}}}]}"#
        );
        let plain = Policy::custom("https://d.example/x/*", 5).unwrap();
        assert_eq!(
            plain.to_json(),
            r#"{"Statement":[{"Resource":"https://d.example/x/*","Condition":{"DateLessThan":{"AWS:EpochTime":5}}}]}"#
        );
        assert!(!plain.is_canned());
        for bad in [
            "",
            "https://d/\"x",
            "https://d/\\x",
            "https://d/ x",
            "https://d/é",
        ] {
            assert!(Policy::custom(bad, 1).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cloudfront_base64() {
        // 0xfb 0xff → "+/8=" in standard base64.
        assert_eq!(encode(&[0xfb, 0xff]), "-~8_");
        assert_eq!(decode("-~8_").unwrap(), vec![0xfb, 0xff]);
        assert!(decode("!!").is_err());
    }

    #[test]
    fn key_errors_reveal_nothing() {
        let e = CloudFrontSigner::from_pem("KABC", "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("c2VjcmV0"), "{e}");
        assert!(CloudFrontSigner::from_pem("bad id", "").is_err());
        let e = CloudFrontSigner::from_pem_file("KABC", Path::new("/nonexistent/key.pem"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/key.pem"), "{e}");
    }
}
