//! Assets: reading them, and every change of an asset's fields outside its creation
//! (which belongs to the upload or live stream that creates it).

use sqlx::{AnyPool, Row};

use crate::model::{Asset, AssetStatus, Rendition, TranscodeJob};
use crate::{Result, rfc3339_ms};

const SELECT_ASSET: &str = "SELECT id, tenant_id, status, progress, duration_s, error, \
    filename, size, job_id, device_id, renditions, probe, created_at, updated_at FROM assets \
    WHERE id = $1 AND tenant_id = $2 AND hidden = 0";

fn asset_from_row(r: &sqlx::any::AnyRow) -> Result<Asset> {
    let status: String = r.try_get("status")?;
    let renditions: String = r.try_get("renditions")?;
    let probe: Option<String> = r.try_get("probe")?;
    Ok(Asset {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        status: AssetStatus::parse(&status).unwrap_or(AssetStatus::Failed),
        progress: r.try_get("progress")?,
        duration_s: r.try_get("duration_s")?,
        error: r.try_get("error")?,
        filename: r.try_get("filename")?,
        size: r.try_get::<Option<i64>, _>("size")?.map(|s| s as u64),
        job_id: r.try_get("job_id")?,
        device_id: r.try_get("device_id")?,
        renditions: serde_json::from_str::<Vec<Rendition>>(&renditions).unwrap_or_default(),
        probe: probe.and_then(|p| serde_json::from_str(&p).ok()),
        created_at: rfc3339_ms(r.try_get("created_at")?),
        updated_at: rfc3339_ms(r.try_get("updated_at")?),
    })
}

pub(crate) async fn get_asset(db: &AnyPool, tenant: &str, id: &str) -> Result<Option<Asset>> {
    let row = sqlx::query(SELECT_ASSET)
        .bind(id)
        .bind(tenant)
        .fetch_optional(db)
        .await?;
    row.as_ref().map(asset_from_row).transpose()
}

/// The device that uploaded an asset.
pub(crate) async fn asset_device(db: &AnyPool, asset: &str) -> Result<Option<String>> {
    Ok(sqlx::query("SELECT device_id FROM assets WHERE id = $1")
        .bind(asset)
        .fetch_optional(db)
        .await?
        .and_then(|r| r.get::<Option<String>, _>(0)))
}

pub(crate) async fn asset_probed(
    db: &AnyPool,
    job: &TranscodeJob,
    duration_s: f64,
    probe: &serde_json::Value,
    now: i64,
) -> Result<()> {
    sqlx::query("UPDATE assets SET duration_s = $1, probe = $2, updated_at = $3 WHERE id = $4")
        .bind(duration_s)
        .bind(probe.to_string())
        .bind(now)
        .bind(&job.asset_id)
        .execute(db)
        .await?;
    Ok(())
}

pub(crate) async fn fail_asset(db: &AnyPool, asset: &str, error: &str, now: i64) -> Result<()> {
    sqlx::query("UPDATE assets SET status = 'failed', error = $1, updated_at = $2 WHERE id = $3")
        .bind(error)
        .bind(now)
        .bind(asset)
        .execute(db)
        .await?;
    Ok(())
}
