//! The tus checksum extension: `Upload-Checksum: <algorithm> <base64 digest>` on a PATCH
//! covers that request's body. The engine hashes the bytes as they are written and keeps
//! them only if the digest matches; the gateway parses the header (its `tus` module).

use sha2::Digest;

/// Algorithms offered in `Tus-Checksum-Algorithm`.
pub const ALGORITHMS: &str = "sha1,md5,sha256";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha1,
    Md5,
    Sha256,
}

impl Algorithm {
    /// The algorithm named (case-insensitively) as in `Tus-Checksum-Algorithm`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "sha1" => Some(Self::Sha1),
            "md5" => Some(Self::Md5),
            "sha256" => Some(Self::Sha256),
            _ => None,
        }
    }

    /// Bytes in one of its digests.
    pub fn digest_len(self) -> usize {
        match self {
            Self::Sha1 => 20,
            Self::Md5 => 16,
            Self::Sha256 => 32,
        }
    }
}

/// An expected digest for one request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    pub algorithm: Algorithm,
    pub expected: Vec<u8>,
}

impl Checksum {
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
    fn hashes_verify_across_chunks() {
        // sha1("hello") = aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d
        let c = Checksum {
            algorithm: Algorithm::Sha1,
            expected: hex::decode("aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d").unwrap(),
        };
        let mut h = c.hasher();
        h.update(b"hel");
        h.update(b"lo");
        assert!(h.matches(&c.expected));
        let mut h = c.hasher();
        h.update(b"hellO");
        assert!(!h.matches(&c.expected));
        // md5("hello") = 5d41402abc4b2a76b9719d911017c592
        let c = Checksum {
            algorithm: Algorithm::from_name("MD5").unwrap(),
            expected: hex::decode("5d41402abc4b2a76b9719d911017c592").unwrap(),
        };
        let mut h = c.hasher();
        h.update(b"hello");
        assert!(h.matches(&c.expected));
        assert_eq!(Algorithm::from_name("crc32"), None);
        assert_eq!(Algorithm::Sha256.digest_len(), 32);
    }
}
