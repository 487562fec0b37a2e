//! Copying an asset's objects from one store to another: copy → verify (size, and the
//! content hash when the destination is a local store) per object, skipping objects the
//! destination already holds with the same size (a job resumed after a crash).

use std::collections::HashMap;
use std::path::Path;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sluice_storage::{Storage, keys};

/// Objects at most this large are copied through memory; larger ones through a scratch
/// file (memory stays bounded whatever the object size).
const IN_MEMORY_MAX: u64 = 16 << 20;

/// An object a job could not copy, and why (no secrets or paths: store errors are
/// summarised).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedObject {
    pub key: String,
    pub reason: String,
}

/// What a tier job did: the job's `result`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierJobResult {
    pub objects_copied: u64,
    pub objects_skipped: u64,
    pub bytes_copied: u64,
    pub objects_deleted: u64,
    pub failed: Vec<FailedObject>,
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

async fn sha256_file(path: &Path) -> Result<[u8; 32], String> {
    use tokio::io::AsyncReadExt;
    let mut f = tokio::fs::File::open(path)
        .await
        .map_err(|e| format!("cannot read the copy back: {}", e.kind()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .await
            .map_err(|e| format!("cannot read the copy back: {}", e.kind()))?;
        if n == 0 {
            return Ok(h.finalize().into());
        }
        h.update(&buf[..n]);
    }
}

/// A store error as a reason a user may read (its kind, not the backend's text).
pub(crate) fn reason(e: &sluice_storage::Error) -> String {
    match e {
        sluice_storage::Error::NotFound { .. } => "the object disappeared from the source".into(),
        sluice_storage::Error::Io { source, .. } => format!("local i/o error ({})", source.kind()),
        _ if e.is_retryable() => "the store did not answer (will retry)".into(),
        _ => "the store refused the object".into(),
    }
}

/// Copy one object and verify it; returns its size.
async fn copy_one(
    src: &Storage,
    dst: &Storage,
    key: &str,
    size: u64,
    scratch: &Path,
) -> Result<u64, String> {
    let hash = if size <= IN_MEMORY_MAX {
        let body: Bytes = src.get_bytes(key).await.map_err(|e| reason(&e))?;
        if body.len() as u64 != size {
            return Err("the source object changed while it was copied".into());
        }
        let h = sha256(&body);
        dst.put(key, body).await.map_err(|e| reason(&e))?;
        h
    } else {
        tokio::fs::create_dir_all(scratch)
            .await
            .map_err(|e| format!("local i/o error ({})", e.kind()))?;
        let tmp = scratch.join("object");
        let n = src
            .get_concat_to_file(&[key], &tmp, false)
            .await
            .map_err(|e| reason(&e))?;
        if n != size {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err("the source object changed while it was copied".into());
        }
        let h = sha256_file(&tmp).await?;
        let put = dst.put_file(key, &tmp).await;
        let _ = tokio::fs::remove_file(&tmp).await;
        put.map_err(|e| reason(&e))?;
        h
    };
    let info = dst.head(key).await.map_err(|e| reason(&e))?;
    if info.size != size {
        return Err(format!(
            "verification failed: the copy has {} bytes, the source {size}",
            info.size
        ));
    }
    if let Some(path) = dst.local_path(key)
        && sha256_file(&path).await? != hash
    {
        return Err("verification failed: the copy's content hash differs".into());
    }
    Ok(size)
}

/// Copy every object of the tenant's asset from `src` to `dst` (different stores),
/// recording what happened in `result`; `progress` gets the fraction of bytes handled.
pub(crate) async fn copy_asset(
    src: &Storage,
    dst: &Storage,
    tenant: &str,
    asset: &str,
    scratch: &Path,
    result: &mut TierJobResult,
    mut progress: impl FnMut(f64),
) -> Result<(), sluice_storage::Error> {
    let prefix = keys::asset_prefix(tenant, asset);
    let objects = src.list(&prefix).await?;
    let there: HashMap<String, u64> = dst
        .list(&prefix)
        .await?
        .into_iter()
        .map(|o| (o.key, o.size))
        .collect();
    let total: u64 = objects.iter().map(|o| o.size).sum::<u64>().max(1);
    let mut done = 0u64;
    for o in &objects {
        if there.get(&o.key) == Some(&o.size) {
            result.objects_skipped += 1;
        } else {
            match copy_one(src, dst, &o.key, o.size, scratch).await {
                Ok(n) => {
                    result.objects_copied += 1;
                    result.bytes_copied += n;
                }
                Err(reason) => result.failed.push(FailedObject {
                    key: o.key.strip_prefix(&prefix).unwrap_or(&o.key).to_string(),
                    reason,
                }),
            }
        }
        done = done.saturating_add(o.size);
        progress(done as f64 / total as f64);
    }
    Ok(())
}

/// Delete every object of the tenant's asset in `store`; returns how many.
pub(crate) async fn delete_asset_objects(
    store: &Storage,
    tenant: &str,
    asset: &str,
) -> Result<u64, sluice_storage::Error> {
    Ok(store
        .delete_prefix(&keys::asset_prefix(tenant, asset))
        .await? as u64)
}
