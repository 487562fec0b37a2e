//! The crate's one error type. Refusals of a presented token (the first group) become 403
//! at the gateway; the others are raised while building keys, scopes and CloudFront
//! signers from configuration or request input. No variant ever carries a secret or a
//! whole token.

/// Errors of the CDN crate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The token is not `{kid}.{expires}.{scope}.{sig}` with the allowed characters.
    #[error("malformed playback token")]
    Malformed,
    /// The token's expiry has passed.
    #[error("playback token expired")]
    Expired,
    /// The MAC does not match (tampered, other resource, other key).
    #[error("playback token signature does not match")]
    BadSignature,
    /// The key id is not configured, or the key is past its verify-until time.
    #[error("playback token signed with an unknown or retired key")]
    UnknownKey,
    /// The token is bound to a network the client is not in (or the client is unknown).
    #[error("playback token is bound to another client network")]
    ClientNotAllowed,
    /// A key id outside 1–16 characters of `[A-Za-z0-9_-]`.
    #[error("invalid playback key id {0:?}: use 1 to 16 characters of A-Z, a-z, 0-9, '_', '-'")]
    InvalidKeyId(String),
    /// Two keys with one id.
    #[error("playback key id {0:?} is used twice")]
    DuplicateKeyId(String),
    /// A secret too short to be one.
    #[error("the secret of playback key {0:?} must be at least 16 bytes")]
    WeakSecret(String),
    /// Not an IP address or CIDR (the text is cut to a few characters).
    #[error("{0:?} is not an IP address or CIDR network (as 203.0.113.7 or 2001:db8::/48)")]
    InvalidClientIp(String),
    /// CloudFront signing: a key or policy problem (never the key's content).
    #[error("cloudfront: {0}")]
    CloudFront(String),
}

impl Error {
    /// Whether this is the refusal of a presented token (as opposed to a configuration or
    /// input error).
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Error::Malformed
                | Error::Expired
                | Error::BadSignature
                | Error::UnknownKey
                | Error::ClientNotAllowed
        )
    }
}
