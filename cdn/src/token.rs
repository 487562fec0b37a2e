//! Signed playback tokens: `{expires_unix}-{signature}` where the signature is the first
//! 16 bytes of HMAC-SHA256(secret, "play:{resource}:{expires_unix}"), base64url without
//! padding. The resource is the `{tenant}/{asset}` of the playback URL (its shape: the
//! crate docs). Binding the resource stops a token for one asset from opening another;
//! binding the expiry stops anyone from extending it.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Signature bytes kept in the token (128 bits).
const SIG_LEN: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    #[error("malformed playback token")]
    Malformed,
    #[error("playback token expired")]
    Expired,
    #[error("playback token signature does not match")]
    BadSignature,
}

/// Issues and verifies playback tokens with one secret.
#[derive(Clone)]
pub struct PlaybackSigner {
    secret: Vec<u8>,
}

impl std::fmt::Debug for PlaybackSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PlaybackSigner { secret: <redacted> }")
    }
}

impl PlaybackSigner {
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        Self {
            secret: secret.into(),
        }
    }

    fn mac(&self, resource: &str, expires: u64) -> HmacSha256 {
        let mut mac =
            HmacSha256::new_from_slice(&self.secret).expect("HMAC accepts keys of any length");
        mac.update(format!("play:{resource}:{expires}").as_bytes());
        mac
    }

    /// A token for `resource` valid until `expires` (unix seconds).
    pub fn sign(&self, resource: &str, expires: u64) -> String {
        let sig = self.mac(resource, expires).finalize().into_bytes();
        format!("{expires}-{}", URL_SAFE_NO_PAD.encode(&sig[..SIG_LEN]))
    }

    /// Check a token for `resource` at time `now` (unix seconds). The signature is
    /// compared in constant time.
    pub fn verify(&self, resource: &str, token: &str, now: u64) -> Result<u64, TokenError> {
        let (exp, sig) = token.split_once('-').ok_or(TokenError::Malformed)?;
        if exp.is_empty() || exp.len() > 20 || !exp.bytes().all(|b| b.is_ascii_digit()) {
            return Err(TokenError::Malformed);
        }
        let expires: u64 = exp.parse().map_err(|_| TokenError::Malformed)?;
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| TokenError::Malformed)?;
        if sig.len() != SIG_LEN {
            return Err(TokenError::Malformed);
        }
        self.mac(resource, expires)
            .verify_truncated_left(&sig)
            .map_err(|_| TokenError::BadSignature)?;
        if now >= expires {
            return Err(TokenError::Expired);
        }
        Ok(expires)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_token_and_round_trip() {
        let s = PlaybackSigner::new(b"secret".to_vec());
        let t = s.sign("01ASSET", 1_700_000_000);
        // Fixed secret, resource and expiry give a fixed token.
        assert_eq!(t, s.sign("01ASSET", 1_700_000_000));
        assert!(t.starts_with("1700000000-"));
        assert_eq!(t.len(), "1700000000-".len() + 22);
        assert_eq!(s.verify("01ASSET", &t, 1_699_999_999), Ok(1_700_000_000));
    }

    #[test]
    fn rejects_expired_other_resource_tampered_and_garbage() {
        let s = PlaybackSigner::new(b"secret".to_vec());
        let t = s.sign("A", 100);
        assert_eq!(s.verify("A", &t, 100), Err(TokenError::Expired));
        assert_eq!(s.verify("B", &t, 50), Err(TokenError::BadSignature));
        let extended = t.replacen("100-", "200-", 1);
        assert_eq!(s.verify("A", &extended, 50), Err(TokenError::BadSignature));
        let other_key = PlaybackSigner::new(b"other".to_vec());
        assert_eq!(other_key.verify("A", &t, 50), Err(TokenError::BadSignature));
        for g in ["", "-", "100", "abc-xyz", "100-!!!!", "-AAAA", "100-AAAA"] {
            assert_eq!(s.verify("A", g, 50), Err(TokenError::Malformed), "{g:?}");
        }
    }
}
