//! Secrets as the engine makes and compares them: random tokens, and keys kept only as
//! their SHA-256, compared in constant time. A leaf: it knows nothing of the domain.

use base64::Engine as _;
use sha2::{Digest, Sha256};

/// The SHA-256 of a key: what is stored and compared, never the key itself.
pub(crate) fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Equality of two hashes in time independent of where they differ.
pub(crate) fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `bytes` random bytes as unpadded base64url.
pub(crate) fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::fill(&mut buf[..]);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}
