//! Named stores: `[storage.stores.NAME]` in the config file, each opened as one [`Storage`].
//!
//! A store is a URL (`file:///abs/dir`, `s3://bucket` or `s3://bucket/prefix`) plus, for
//! S3, the endpoint, region, credentials, `allow_http` and the storage class objects are
//! written with. Credentials left out of the file come from the environment:
//! `SLUICE_STORE_{NAME}_ACCESS_KEY_ID` and `SLUICE_STORE_{NAME}_SECRET_ACCESS_KEY`, with
//! `NAME` upper-cased and `-` turned into `_` (`cold-eu` → `SLUICE_STORE_COLD_EU_…`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{Error, S3Config, Storage};

/// Longest store name.
pub const MAX_STORE_NAME: usize = 32;

/// `[storage.stores.NAME]`: one named object store. `Debug` never shows the secret.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `file:///abs/dir` or `s3://bucket[/prefix]`. Required.
    pub url: String,
    /// S3 only: the endpoint URL, e.g. `http://127.0.0.1:3900` for Garage. Unset: AWS S3
    /// of `region`.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// S3 only: the region. Default `us-east-1`.
    #[serde(default)]
    pub region: Option<String>,
    /// S3 only: access key id. Unset: `SLUICE_STORE_{NAME}_ACCESS_KEY_ID`.
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// S3 only: secret key. Unset: `SLUICE_STORE_{NAME}_SECRET_ACCESS_KEY`.
    #[serde(default, skip_serializing)]
    pub secret_access_key: Option<String>,
    /// S3 only: allow a plain-http endpoint. Default false.
    #[serde(default)]
    pub allow_http: bool,
    /// S3 only: the storage class whole objects and multipart uploads are written with
    /// (`STANDARD_IA`, `GLACIER_IR`, …). Default: the bucket's default.
    #[serde(default)]
    pub storage_class: Option<String>,
    /// S3 only: part size of multipart writes, bytes (5 MiB to 5 GiB). Default 8 MiB.
    #[serde(default)]
    pub part_size: Option<u64>,
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("url", &self.url)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .field("allow_http", &self.allow_http)
            .field("storage_class", &self.storage_class)
            .field("part_size", &self.part_size)
            .finish()
    }
}

/// Where a store's URL points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// A local directory (absolute).
    File(PathBuf),
    /// A bucket, and a key prefix inside it.
    S3 {
        bucket: String,
        prefix: Option<String>,
    },
}

/// Whether `name` can name a store: 1–32 characters of `[a-z0-9_-]`, starting with a letter.
pub fn is_valid_store_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_STORE_NAME
        && name.as_bytes()[0].is_ascii_lowercase()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// The environment variable holding a store's credential `what` (`ACCESS_KEY_ID`,
/// `SECRET_ACCESS_KEY`).
pub fn store_env_var(name: &str, what: &str) -> String {
    format!(
        "SLUICE_STORE_{}_{what}",
        name.to_ascii_uppercase().replace('-', "_")
    )
}

impl StoreConfig {
    /// Parse the URL. Errors name the store and say what is expected.
    pub fn parse_url(&self, name: &str) -> Result<StoreUrl, Error> {
        let bad = |m: String| Err(Error::Config(format!("storage.stores.{name}.url: {m}")));
        if let Some(path) = self.url.strip_prefix("file://") {
            if !path.starts_with('/') {
                return bad(format!(
                    "{:?} is not an absolute path: write file:///abs/dir",
                    self.url
                ));
            }
            if path.split('/').any(|s| s == "..") {
                return bad("a file path must not contain '..'".into());
            }
            return Ok(StoreUrl::File(PathBuf::from(path)));
        }
        if let Some(rest) = self.url.strip_prefix("s3://") {
            let (bucket, prefix) = match rest.split_once('/') {
                Some((b, p)) => (b, Some(p.trim_end_matches('/'))),
                None => (rest, None),
            };
            if bucket.is_empty()
                || !bucket
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
            {
                return bad(format!("{:?} has no valid bucket name", self.url));
            }
            let prefix = prefix.filter(|p| !p.is_empty()).map(str::to_string);
            if let Some(p) = &prefix
                && crate::keys::validate(p).is_err()
            {
                return bad(format!("{:?} has an invalid key prefix", self.url));
            }
            return Ok(StoreUrl::S3 {
                bucket: bucket.to_string(),
                prefix,
            });
        }
        bad(format!("{:?} must start with file:/// or s3://", self.url))
    }

    /// Check the whole section without opening anything (credentials from the environment
    /// are looked up when the store is opened).
    pub fn validate(&self, name: &str) -> Result<(), Error> {
        if !is_valid_store_name(name) {
            return Err(Error::Config(format!(
                "storage.stores: store name {name:?} must be 1 to {MAX_STORE_NAME} characters of \
                 a-z, 0-9, '_', '-', starting with a letter"
            )));
        }
        match self.parse_url(name)? {
            StoreUrl::File(_) => {
                let s3_only = self.endpoint.is_some()
                    || self.access_key_id.is_some()
                    || self.secret_access_key.is_some()
                    || self.storage_class.is_some()
                    || self.part_size.is_some();
                if s3_only {
                    return Err(Error::Config(format!(
                        "storage.stores.{name}: endpoint, credentials, storage_class and \
                         part_size apply to s3:// stores only"
                    )));
                }
                Ok(())
            }
            StoreUrl::S3 { .. } => {
                if let Some(c) = &self.storage_class
                    && (c.is_empty()
                        || c.len() > 64
                        || !c.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'))
                {
                    return Err(Error::Config(format!(
                        "storage.stores.{name}.storage_class must be an S3 class name such as \
                         STANDARD_IA"
                    )));
                }
                self.s3_config(name, Some("-".into()), Some("-".into()))?
                    .validate()
                    .map_err(|e| Error::Config(format!("storage.stores.{name}: {e}")))
            }
        }
    }

    /// The S3 settings of an `s3://` store, with credentials given or from the environment.
    fn s3_config(
        &self,
        name: &str,
        key_id: Option<String>,
        secret: Option<String>,
    ) -> Result<S3Config, Error> {
        let StoreUrl::S3 { bucket, prefix } = self.parse_url(name)? else {
            return Err(Error::Config(format!("storage.stores.{name} is not s3://")));
        };
        let from_env = |what: &str| {
            let var = store_env_var(name, what);
            std::env::var(&var)
                .ok()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| {
                    Error::Config(format!(
                        "storage.stores.{name}: {} is not set (in the config or {var})",
                        what.to_ascii_lowercase()
                    ))
                })
        };
        let access_key_id = match key_id.or_else(|| self.access_key_id.clone()) {
            Some(k) if !k.is_empty() => k,
            _ => from_env("ACCESS_KEY_ID")?,
        };
        let secret = match secret.or_else(|| self.secret_access_key.clone()) {
            Some(s) if !s.is_empty() => s,
            _ => from_env("SECRET_ACCESS_KEY")?,
        };
        Ok(S3Config {
            endpoint: self.endpoint.clone(),
            bucket,
            region: self
                .region
                .clone()
                .unwrap_or_else(|| "us-east-1".to_string()),
            access_key_id,
            secret_access_key: Some(secret),
            allow_http: self.allow_http,
            prefix,
            part_size: self.part_size.unwrap_or(8 << 20),
        })
    }

    /// Open the store (builds the client; nothing is sent until the first request).
    pub fn open(&self, name: &str) -> Result<Storage, Error> {
        self.validate(name)?;
        let storage = match self.parse_url(name)? {
            StoreUrl::File(dir) => Storage::local(dir)?,
            StoreUrl::S3 { .. } => {
                let cfg = self.s3_config(name, None, None)?;
                Storage::s3(&cfg)?.with_storage_class(self.storage_class.clone())
            }
        };
        Ok(storage.named(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(url: &str) -> StoreConfig {
        StoreConfig {
            url: url.into(),
            endpoint: None,
            region: None,
            access_key_id: Some("k".into()),
            secret_access_key: Some("s".into()),
            allow_http: false,
            storage_class: None,
            part_size: None,
        }
    }

    #[test]
    fn urls_parse_and_bad_ones_are_explained() {
        assert_eq!(
            store("file:///srv/warm").parse_url("w").unwrap(),
            StoreUrl::File("/srv/warm".into())
        );
        assert_eq!(
            store("s3://media/sluice/prod/").parse_url("w").unwrap(),
            StoreUrl::S3 {
                bucket: "media".into(),
                prefix: Some("sluice/prod".into())
            }
        );
        assert_eq!(
            store("s3://media").parse_url("w").unwrap(),
            StoreUrl::S3 {
                bucket: "media".into(),
                prefix: None
            }
        );
        for (url, want) in [
            ("file://rel/dir", "not an absolute path"),
            ("file:///a/../b", "'..'"),
            ("s3://", "no valid bucket"),
            ("http://x", "must start with file:/// or s3://"),
            ("s3://b/../x", "invalid key prefix"),
        ] {
            let e = store(url).parse_url("cold").unwrap_err().to_string();
            assert!(
                e.contains("storage.stores.cold.url") && e.contains(want),
                "{url}: {e}"
            );
        }
    }

    #[test]
    fn names_classes_and_secrets() {
        assert!(is_valid_store_name("cold-eu_2"));
        for bad in ["", "Cold", "1x", "a/b", &"x".repeat(33)] {
            assert!(!is_valid_store_name(bad), "{bad}");
        }
        assert_eq!(
            store_env_var("cold-eu", "SECRET_ACCESS_KEY"),
            "SLUICE_STORE_COLD_EU_SECRET_ACCESS_KEY"
        );
        let mut s = store("s3://b");
        s.storage_class = Some("STANDARD_IA".into());
        s.validate("warm").unwrap();
        s.storage_class = Some("standard ia".into());
        assert!(s.validate("warm").is_err());
        let mut f = store("file:///x");
        assert!(f.validate("w").is_err(), "credentials on a file store");
        f.access_key_id = None;
        f.secret_access_key = None;
        f.validate("w").unwrap();
        let mut h = store("s3://b");
        h.endpoint = Some("http://127.0.0.1:3900".into());
        assert!(h.validate("w").is_err(), "plain http needs allow_http");
        h.allow_http = true;
        h.validate("w").unwrap();
        h.secret_access_key = Some("hunter2".into());
        assert!(!format!("{h:?}").contains("hunter2"));
    }
}
