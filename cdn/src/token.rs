//! Signed playback tokens, version 2: `{kid}.{expires}.{scope}.{sig}`.
//!
//! - `kid`: the id of the key that signed (1–16 characters of `[A-Za-z0-9_-]`), so keys can
//!   rotate: one active key signs, older keys keep verifying until their verify-until time.
//! - `expires`: unix seconds, digits only (at most 20).
//! - `scope`: `_` when the token is not bound to a client, else the base64url (no padding)
//!   of the client network's CIDR text as [`ClientNet`] displays it (`203.0.113.7/32`,
//!   `2001:db8::/48`: host bits cleared, a bare IP is a /32 or /128).
//! - `sig`: base64url (no padding) of the first 16 bytes of HMAC-SHA256 over
//!   [`signed_string`]`(kid, resource, expires, scope)` = `play2:{kid}:{resource}:{expires}:{scope}`,
//!   keyed with the bytes of the key's secret text as configured (not decoded).
//!
//! The resource is the `{tenant}/{asset}` of the playback URL (its shape: the crate docs):
//! one token opens every playlist and segment of one asset and nothing else. The expiry and
//! the scope are signed, so neither can be extended or widened; the key id is signed, so a
//! token cannot be replayed under another key's rules.
//!
//! The fields use no `.` and only URL-safe characters, so the token is one path segment.
//! Verification never panics and allocates little on malformed input of any size.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use ipnet::IpNet;
use sha2::Sha256;

use crate::Error;

type HmacSha256 = Hmac<Sha256>;

/// Signature bytes kept in the token (128 bits).
pub const SIG_LEN: usize = 16;
/// Characters of the signature field (16 bytes in unpadded base64).
const SIG_CHARS: usize = 22;
/// Longest key id.
pub const MAX_KEY_ID_LEN: usize = 16;
/// Longest token accepted (a bound IPv6 token is about 100 characters).
pub const MAX_TOKEN_LEN: usize = 200;
/// The scope field of a token not bound to a client.
pub const UNBOUND_SCOPE: &str = "_";
/// Shortest secret a key may have.
pub const MIN_SECRET_LEN: usize = 16;
/// Longest text accepted as a client IP or CIDR (the longest IPv6 CIDR is 43 characters).
const MAX_NET_TEXT: usize = 64;

/// The text every token's MAC covers: `play2:{kid}:{resource}:{expires}:{scope}`, where
/// `scope` is the token's scope field exactly as written (`_` or the base64url of a CIDR).
/// A CDN edge that verifies tokens builds this same string.
pub fn signed_string(kid: &str, resource: &str, expires: u64, scope: &str) -> String {
    format!("play2:{kid}:{resource}:{expires}:{scope}")
}

/// Whether `id` is a valid key id: 1–16 characters of `[A-Za-z0-9_-]`.
pub fn is_valid_key_id(id: &str) -> bool {
    (1..=MAX_KEY_ID_LEN).contains(&id.len()) && id.bytes().all(is_kid_byte)
}

fn is_kid_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

fn is_b64url_byte(b: u8) -> bool {
    is_kid_byte(b)
}

/// A client network a token is bound to: an IP network with its host bits cleared. A bare
/// address is its own /32 or /128. Parsed from and displayed as CIDR text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientNet(IpNet);

impl ClientNet {
    /// The network of a single address.
    pub fn host(ip: IpAddr) -> Self {
        Self(IpNet::from(ip.to_canonical()))
    }

    /// Whether `ip` is inside (an IPv4-mapped IPv6 address counts as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&ip.to_canonical())
    }

    pub fn net(&self) -> IpNet {
        self.0
    }

    /// The token's scope field for this network: base64url of the CIDR text.
    pub fn scope_field(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.to_string())
    }
}

impl FromStr for ClientNet {
    type Err = Error;

    /// `203.0.113.7`, `203.0.113.0/24`, `2001:db8::1`, `2001:db8::/48`. Host bits are
    /// cleared (`203.0.113.7/24` is `203.0.113.0/24`).
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || Error::InvalidClientIp(s.chars().take(MAX_NET_TEXT).collect());
        if s.len() > MAX_NET_TEXT {
            return Err(bad());
        }
        if s.contains('/') {
            let net: IpNet = s.parse().map_err(|_| bad())?;
            Ok(Self(net.trunc()))
        } else {
            let ip: IpAddr = s.parse().map_err(|_| bad())?;
            Ok(Self::host(ip))
        }
    }
}

impl fmt::Display for ClientNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl serde::Serialize for ClientNet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ClientNet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One HMAC key: its id and its secret. The secret never appears in `Debug`.
#[derive(Clone)]
pub struct PlaybackKey {
    id: String,
    secret: Vec<u8>,
    /// HMAC keyed with `secret`, before any input: cloned for each token, so the key
    /// schedule is not recomputed on the segment hot path.
    keyed: HmacSha256,
}

impl fmt::Debug for PlaybackKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PlaybackKey {{ id: {:?}, secret: <redacted> }}", self.id)
    }
}

impl PlaybackKey {
    /// A key with a valid id and a secret of at least 16 bytes.
    pub fn new(id: &str, secret: impl Into<Vec<u8>>) -> Result<Self, Error> {
        if !is_valid_key_id(id) {
            return Err(Error::InvalidKeyId(id.chars().take(32).collect()));
        }
        let secret = secret.into();
        if secret.len() < MIN_SECRET_LEN {
            return Err(Error::WeakSecret(id.to_string()));
        }
        let keyed = HmacSha256::new_from_slice(&secret).expect("HMAC accepts keys of any length");
        Ok(Self {
            id: id.to_string(),
            secret,
            keyed,
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The secret bytes, for a component that must verify tokens elsewhere (a CDN edge's
    /// configuration). Never log them.
    pub fn secret(&self) -> &[u8] {
        &self.secret
    }

    /// The MAC of [`signed_string`], fed piece by piece (no allocation per token).
    fn mac(&self, resource: &str, expires: u64, scope: &str) -> HmacSha256 {
        let mut mac = self.keyed.clone();
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        let mut n = expires;
        loop {
            at -= 1;
            digits[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        for piece in [
            b"play2:".as_slice(),
            self.id.as_bytes(),
            b":",
            resource.as_bytes(),
            b":",
            &digits[at..],
            b":",
            scope.as_bytes(),
        ] {
            mac.update(piece);
        }
        mac
    }
}

/// The fields of a token, split and checked for shape but not verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenParts<'a> {
    pub kid: &'a str,
    pub expires: u64,
    /// `_` or the base64url of a CIDR, exactly as written.
    pub scope: &'a str,
    /// The signature field (22 base64url characters).
    pub sig: &'a str,
}

impl<'a> TokenParts<'a> {
    /// Split a token into its four fields, refusing any other shape.
    pub fn parse(token: &'a str) -> Result<Self, Error> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(Error::Malformed);
        }
        let mut it = token.split('.');
        let (Some(kid), Some(exp), Some(scope), Some(sig), None) =
            (it.next(), it.next(), it.next(), it.next(), it.next())
        else {
            return Err(Error::Malformed);
        };
        if !is_valid_key_id(kid) {
            return Err(Error::Malformed);
        }
        if exp.is_empty() || exp.len() > 20 || !exp.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::Malformed);
        }
        let expires: u64 = exp.parse().map_err(|_| Error::Malformed)?;
        if scope.is_empty() || !scope.bytes().all(is_b64url_byte) {
            return Err(Error::Malformed);
        }
        if sig.len() != SIG_CHARS || !sig.bytes().all(is_b64url_byte) {
            return Err(Error::Malformed);
        }
        Ok(Self {
            kid,
            expires,
            scope,
            sig,
        })
    }
}

/// What a verified token grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claims {
    /// Unix seconds.
    pub expires: u64,
    /// The client network the token is bound to, if any.
    pub client: Option<ClientNet>,
}

#[derive(Clone, Debug)]
struct VerifyKey {
    key: PlaybackKey,
    /// `None` for the active key; else the unix second from which it no longer verifies.
    until: Option<u64>,
}

/// Issues tokens with the active key and verifies them with every key still in its
/// window. Cheap to share; verification does no I/O.
#[derive(Clone, Debug)]
pub struct PlaybackSigner {
    /// The active key first, then previous keys.
    keys: Vec<VerifyKey>,
}

impl PlaybackSigner {
    /// A signer whose `active` key signs (and always verifies).
    pub fn new(active: PlaybackKey) -> Self {
        Self {
            keys: vec![VerifyKey {
                key: active,
                until: None,
            }],
        }
    }

    /// Add a previous key: it verifies tokens (never signs) while `now < verify_until`.
    pub fn with_previous(mut self, key: PlaybackKey, verify_until: u64) -> Result<Self, Error> {
        if self.keys.iter().any(|k| k.key.id == key.id) {
            return Err(Error::DuplicateKeyId(key.id));
        }
        self.keys.push(VerifyKey {
            key,
            until: Some(verify_until),
        });
        Ok(self)
    }

    /// The id of the key that signs.
    pub fn active_key_id(&self) -> &str {
        &self.keys[0].key.id
    }

    /// Every key with its verify-until time (`None`: the active key), active first. For
    /// components that verify elsewhere (a CDN edge's configuration).
    pub fn keys(&self) -> impl Iterator<Item = (&PlaybackKey, Option<u64>)> {
        self.keys.iter().map(|k| (&k.key, k.until))
    }

    /// A token for `resource` valid until `expires` (unix seconds), bound to `client` if
    /// given.
    pub fn sign(&self, resource: &str, expires: u64, client: Option<&ClientNet>) -> String {
        let key = &self.keys[0].key;
        let scope = client.map_or_else(|| UNBOUND_SCOPE.to_string(), ClientNet::scope_field);
        let sig = key.mac(resource, expires, &scope).finalize().into_bytes();
        format!(
            "{}.{expires}.{scope}.{}",
            key.id,
            URL_SAFE_NO_PAD.encode(&sig[..SIG_LEN])
        )
    }

    /// Check a token for `resource` at `now` (unix seconds) from a client at `client_ip`
    /// (`None`: not known, which fails a client-bound token). The MAC is compared in
    /// constant time; the expiry and the client are judged only once the MAC holds.
    pub fn verify(
        &self,
        resource: &str,
        token: &str,
        now: u64,
        client_ip: Option<IpAddr>,
    ) -> Result<Claims, Error> {
        let parts = TokenParts::parse(token)?;
        let key = self
            .keys
            .iter()
            .find(|k| k.key.id == parts.kid)
            .ok_or(Error::UnknownKey)?;
        if key.until.is_some_and(|until| now >= until) {
            return Err(Error::UnknownKey);
        }
        let mut sig = [0u8; SIG_LEN + 2];
        let n = URL_SAFE_NO_PAD
            .decode_slice(parts.sig, &mut sig)
            .map_err(|_| Error::Malformed)?;
        if n != SIG_LEN {
            return Err(Error::Malformed);
        }
        key.key
            .mac(resource, parts.expires, parts.scope)
            .verify_truncated_left(&sig[..SIG_LEN])
            .map_err(|_| Error::BadSignature)?;
        if now >= parts.expires {
            return Err(Error::Expired);
        }
        let client = if parts.scope == UNBOUND_SCOPE {
            None
        } else {
            let text = URL_SAFE_NO_PAD
                .decode(parts.scope)
                .map_err(|_| Error::Malformed)?;
            let net: ClientNet = std::str::from_utf8(&text)
                .map_err(|_| Error::Malformed)?
                .parse()
                .map_err(|_| Error::Malformed)?;
            match client_ip {
                Some(ip) if net.contains(ip) => {}
                _ => return Err(Error::ClientNotAllowed),
            }
            Some(net)
        };
        Ok(Claims {
            expires: parts.expires,
            client,
        })
    }
}

#[cfg(test)]
mod tests;
