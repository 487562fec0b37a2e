//! The object key layout, in one place.
//!
//! ```text
//! tenants/{tenant}/assets/{asset}/source                 original bytes, exactly as received
//! tenants/{tenant}/assets/{asset}/hls/master.m3u8        published output (master written last)
//! tenants/{tenant}/assets/{asset}/hls/{rendition}/...    variant playlists and segments
//! tenants/{tenant}/assets/{asset}/staging/{job}/...      a job's output before publication
//! tenants/{tenant}/assets/{asset}/live/...               a live stream: viewer playlists and
//!                                                        segments named by our sequence
//! tenants/{tenant}/assets/{asset}/upload/tail_{end}      an unfinished tus upload on S3: the
//!                                                        committed bytes past the last whole
//!                                                        multipart part, ending at offset `end`
//! ```
//!
//! Ids are ULIDs chosen by the engine, never user input, but every key is still validated so
//! that a path a viewer sends can never climb out of its asset.

use crate::Error;

/// Object written and read back by readiness checks.
pub const HEALTH_KEY: &str = "_health/probe";

fn asset_root(tenant: &str, asset: &str) -> String {
    format!("tenants/{tenant}/assets/{asset}")
}

/// Prefix of every object of an asset (ends with `/`): what a tier move copies.
pub fn asset_prefix(tenant: &str, asset: &str) -> String {
    format!("{}/", asset_root(tenant, asset))
}

/// Where an asset's original upload lives.
pub fn source(tenant: &str, asset: &str) -> String {
    format!("{}/source", asset_root(tenant, asset))
}

/// Prefix of the scratch objects of an unfinished upload (ends with `/`).
pub fn upload_prefix(tenant: &str, asset: &str) -> String {
    format!("{}/upload/", asset_root(tenant, asset))
}

/// The object holding an unfinished upload's committed bytes past its last whole part,
/// named by the upload offset it ends at (a new name per commit: a request that dies before
/// committing never overwrites the committed one).
pub fn upload_tail(tenant: &str, asset: &str, end: u64) -> String {
    format!("{}tail_{end:020}", upload_prefix(tenant, asset))
}

/// Prefix of an asset's published HLS output (ends with `/`).
pub fn hls_prefix(tenant: &str, asset: &str) -> String {
    format!("{}/hls/", asset_root(tenant, asset))
}

/// Prefix under which a job writes its output before publishing (ends with `/`).
pub fn staging_prefix(tenant: &str, asset: &str, job: &str) -> String {
    format!("{}/staging/{job}/", asset_root(tenant, asset))
}

/// Key of a published HLS file, from the relative path a player asks for
/// (`master.m3u8`, `720p/index.m3u8`, `720p/seg_00001.ts`).
pub fn hls_object(tenant: &str, asset: &str, rel: &str) -> Result<String, Error> {
    validate_relative(rel)?;
    Ok(format!("{}{rel}", hls_prefix(tenant, asset)))
}

/// Prefix of a live stream's objects (ends with `/`): kept apart from `hls/`, which a
/// VOD publication replaces as a whole.
pub fn live_prefix(tenant: &str, asset: &str) -> String {
    format!("{}/live/", asset_root(tenant, asset))
}

/// Key of the object a playback path names: `live/…` is the live stream, anything else
/// the published VOD output.
pub fn playback_object(tenant: &str, asset: &str, rel: &str) -> Result<String, Error> {
    validate_id(tenant)?;
    validate_id(asset)?;
    validate_relative(rel)?;
    Ok(match rel.strip_prefix("live/") {
        Some(rest) => format!("{}{rest}", live_prefix(tenant, asset)),
        None => format!("{}{rel}", hls_prefix(tenant, asset)),
    })
}

/// An id taken from a request path (tenant, asset): 1 to 64 characters of
/// `[A-Za-z0-9_-]`, so it can neither climb out of its prefix nor exceed a file name.
pub fn validate_id(id: &str) -> Result<(), Error> {
    if id.is_empty()
        || id.len() > 64
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
    {
        return Err(Error::InvalidKey {
            key: id.chars().take(64).collect(),
            reason: "an id is 1 to 64 characters of [A-Za-z0-9_-]",
        });
    }
    Ok(())
}

/// A relative path inside an asset's output: non-empty segments of `[A-Za-z0-9._-]`, no
/// `.` / `..` segments, at most 4 levels deep.
pub fn validate_relative(rel: &str) -> Result<(), Error> {
    let bad = |reason| {
        Err(Error::InvalidKey {
            key: rel.to_string(),
            reason,
        })
    };
    if rel.is_empty() || rel.len() > 256 {
        return bad("empty or too long");
    }
    let parts: Vec<&str> = rel.split('/').collect();
    if parts.len() > 4 {
        return bad("too deep");
    }
    for p in parts {
        if p.is_empty() || p == "." || p == ".." {
            return bad("empty, '.' or '..' path segment");
        }
        if !p
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return bad("characters outside [A-Za-z0-9._-]");
        }
    }
    Ok(())
}

/// Validate a full key the engine built.
pub fn validate(key: &str) -> Result<(), Error> {
    if key.starts_with('/') || key.contains("//") {
        return Err(Error::InvalidKey {
            key: key.to_string(),
            reason: "leading or doubled '/'",
        });
    }
    for p in key.split('/') {
        if p == "." || p == ".." {
            return Err(Error::InvalidKey {
                key: key.to_string(),
                reason: "'.' or '..' path segment",
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_exact() {
        assert_eq!(source("T1", "A1"), "tenants/T1/assets/A1/source");
        assert_eq!(hls_prefix("T1", "A1"), "tenants/T1/assets/A1/hls/");
        assert_eq!(
            staging_prefix("T1", "A1", "J1"),
            "tenants/T1/assets/A1/staging/J1/"
        );
        assert_eq!(
            hls_object("T1", "A1", "720p/seg_00001.ts").unwrap(),
            "tenants/T1/assets/A1/hls/720p/seg_00001.ts"
        );
        assert_eq!(
            hls_object("T1", "A1", "master.m3u8").unwrap(),
            "tenants/T1/assets/A1/hls/master.m3u8"
        );
        assert_eq!(live_prefix("T1", "A1"), "tenants/T1/assets/A1/live/");
        assert_eq!(
            playback_object("T1", "A1", "live/index.m3u8").unwrap(),
            "tenants/T1/assets/A1/live/index.m3u8"
        );
        assert_eq!(
            playback_object("T1", "A1", "live/seg/00000001.ts").unwrap(),
            "tenants/T1/assets/A1/live/seg/00000001.ts"
        );
        assert_eq!(
            playback_object("T1", "A1", "720p/index.m3u8").unwrap(),
            "tenants/T1/assets/A1/hls/720p/index.m3u8"
        );
        assert!(playback_object("T1", "A1", "live/../source").is_err());
    }

    #[test]
    fn relative_paths_cannot_escape() {
        for bad in [
            "",
            "..",
            "../source",
            "720p/../../source",
            "/etc/passwd",
            "a//b",
            "720p/./x",
            "a b",
            "x%2e%2e",
            "a/b/c/d/e",
        ] {
            assert!(hls_object("T", "A", bad).is_err(), "accepted {bad:?}");
        }
        assert!(validate_relative("360p/index.m3u8").is_ok());
    }

    #[test]
    fn full_keys_are_checked() {
        assert!(validate("tenants/a/../b").is_err());
        assert!(validate("/abs").is_err());
        assert!(validate("tenants/a/assets/b/source").is_ok());
    }
}
