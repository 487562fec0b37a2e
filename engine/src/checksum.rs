//! The tus checksum extension: `Upload-Checksum: <algorithm> <base64 digest>` on a PATCH
//! covers that request's body. The engine hashes the bytes as they are written and keeps
//! them only if the digest matches.

use base64::Engine as _;
use sha2::Digest;

/// Algorithms offered in `Tus-Checksum-Algorithm`.
pub const ALGORITHMS: &str = "sha1,md5,sha256";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha1,
    Md5,
    Sha256,
}

/// An expected digest for one request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    pub algorithm: Algorithm,
    pub expected: Vec<u8>,
}

impl Checksum {
    /// Parse an `Upload-Checksum` header value.
    pub fn parse(header: &str) -> Result<Self, String> {
        let (name, value) = header
            .trim()
            .split_once(' ')
            .ok_or("Upload-Checksum must be '<algorithm> <base64 digest>'")?;
        let (algorithm, len) = match name.to_ascii_lowercase().as_str() {
            "sha1" => (Algorithm::Sha1, 20),
            "md5" => (Algorithm::Md5, 16),
            "sha256" => (Algorithm::Sha256, 32),
            other => {
                return Err(format!(
                    "unsupported checksum algorithm {other:?}; use one of {ALGORITHMS}"
                ));
            }
        };
        let expected = base64::engine::general_purpose::STANDARD
            .decode(value.trim())
            .map_err(|_| "the Upload-Checksum digest is not base64".to_string())?;
        if expected.len() != len {
            return Err(format!(
                "a {name} digest has {len} bytes, this one has {}",
                expected.len()
            ));
        }
        Ok(Self {
            algorithm,
            expected,
        })
    }

    pub(crate) fn hasher(&self) -> Hasher {
        match self.algorithm {
            Algorithm::Sha1 => Hasher::Sha1(sha1::Sha1::new()),
            Algorithm::Md5 => Hasher::Md5(md5::Md5::new()),
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
        }
    }
}

/// A running digest over one request body.
pub(crate) enum Hasher {
    Sha1(sha1::Sha1),
    Md5(md5::Md5),
    Sha256(sha2::Sha256),
}

impl Hasher {
    pub(crate) fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha1(h) => h.update(data),
            Hasher::Md5(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
        }
    }

    pub(crate) fn matches(self, expected: &[u8]) -> bool {
        let got: Vec<u8> = match self {
            Hasher::Sha1(h) => h.finalize().to_vec(),
            Hasher::Md5(h) => h.finalize().to_vec(),
            Hasher::Sha256(h) => h.finalize().to_vec(),
        };
        got == expected
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_verify() {
        // sha1("hello") = aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d
        let c = Checksum::parse("sha1 qvTGHdzF6KLavt4PO0gs2a6pQ00=").unwrap();
        assert_eq!(c.algorithm, Algorithm::Sha1);
        let mut h = c.hasher();
        h.update(b"hel");
        h.update(b"lo");
        assert!(h.matches(&c.expected));
        let mut h = c.hasher();
        h.update(b"hellO");
        assert!(!h.matches(&c.expected));
        // md5("hello") = 5d41402abc4b2a76b9719d911017c592
        let c = Checksum::parse("MD5 XUFAKrxLKna5cZ2REBfFkg==").unwrap();
        let mut h = c.hasher();
        h.update(b"hello");
        assert!(h.matches(&c.expected));
        for bad in [
            "sha1",
            "crc32 AAAA",
            "sha1 !!!",
            "sha1 AAAA",
            "md5 qvTGHdzF6KLavt4PO0gs2a6pQ00=",
        ] {
            assert!(Checksum::parse(bad).is_err(), "{bad}");
        }
    }
}
