//! The S3-compatible hot tier: configuration and client construction.

use object_store::aws::{AmazonS3, AmazonS3Builder};
use serde::{Deserialize, Serialize};

use crate::Error;

/// S3's smallest part size (every part of a multipart upload but the last).
pub const MIN_PART_SIZE: u64 = 5 << 20;

/// Environment variable that supplies the secret key when the config file has none (so the
/// secret need not be written into the file).
pub const SECRET_ENV: &str = "SLUICE_S3_SECRET_ACCESS_KEY";

/// `[storage.s3]`: an S3-compatible store (AWS S3, Garage, MinIO) as the hot tier.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// Endpoint URL, e.g. `http://127.0.0.1:3900` for Garage. Unset: AWS S3 of `region`.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Bucket name. Required.
    pub bucket: String,
    /// Region name (Garage's default is `garage`). Default `us-east-1`.
    #[serde(default = "default_region")]
    pub region: String,
    /// Access key id. Required.
    pub access_key_id: String,
    /// Secret access key. Unset: taken from the environment variable
    /// `SLUICE_S3_SECRET_ACCESS_KEY`.
    #[serde(default, skip_serializing)]
    pub secret_access_key: Option<String>,
    /// Allow a plain-http endpoint (a loopback Garage). Default false.
    #[serde(default)]
    pub allow_http: bool,
    /// Key prefix inside the bucket (no leading or trailing `/`), to share a bucket.
    /// Default: none.
    #[serde(default)]
    pub prefix: Option<String>,
    /// Part size of multipart uploads (tus uploads stream into the store in parts of this
    /// size), bytes; at least 5 MiB. Default 8 MiB.
    #[serde(default = "default_part_size")]
    pub part_size: u64,
}

fn default_region() -> String {
    "us-east-1".to_string()
}

fn default_part_size() -> u64 {
    8 << 20
}

/// Never print the secret.
impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .field("allow_http", &self.allow_http)
            .field("prefix", &self.prefix)
            .field("part_size", &self.part_size)
            .finish()
    }
}

impl S3Config {
    /// Check values that parse but cannot work.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |m: &str| Err(Error::Config(m.to_string()));
        if self.bucket.trim().is_empty() {
            return bad("storage.s3.bucket must not be empty");
        }
        if self.access_key_id.trim().is_empty() {
            return bad("storage.s3.access_key_id must not be empty");
        }
        if self.part_size < MIN_PART_SIZE || self.part_size > (5 << 30) {
            return bad("storage.s3.part_size must be between 5 MiB and 5 GiB");
        }
        if let Some(p) = &self.prefix
            && (crate::keys::validate(p).is_err() || p.ends_with('/'))
        {
            return bad("storage.s3.prefix must be a relative key without a trailing '/'");
        }
        if let Some(e) = &self.endpoint {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return bad("storage.s3.endpoint must be an http:// or https:// URL");
            }
            if e.starts_with("http://") && !self.allow_http {
                return bad("storage.s3.endpoint is plain http: set storage.s3.allow_http = true");
            }
        }
        Ok(())
    }

    /// The secret key: from the config, else from `SLUICE_S3_SECRET_ACCESS_KEY`.
    fn secret(&self) -> Result<String, Error> {
        match &self.secret_access_key {
            Some(s) if !s.is_empty() => Ok(s.clone()),
            _ => std::env::var(SECRET_ENV)
                .ok()
                .filter(|s| !s.is_empty())
                .ok_or_else(|| {
                    Error::Config(format!(
                        "storage.s3.secret_access_key is not set (in the config or {SECRET_ENV})"
                    ))
                }),
        }
    }
}

pub(crate) fn build(config: &S3Config) -> Result<(AmazonS3, Option<String>), Error> {
    config.validate()?;
    let mut b = AmazonS3Builder::new()
        .with_bucket_name(&config.bucket)
        .with_region(&config.region)
        .with_access_key_id(&config.access_key_id)
        .with_secret_access_key(config.secret()?)
        .with_allow_http(config.allow_http);
    if let Some(e) = &config.endpoint {
        // Path-style requests: what Garage and MinIO expect on a bare endpoint.
        b = b.with_endpoint(e).with_virtual_hosted_style_request(false);
    }
    let store = b
        .build()
        .map_err(|e| Error::Config(format!("storage.s3: {e}")))?;
    Ok((store, config.prefix.clone().filter(|p| !p.is_empty())))
}
