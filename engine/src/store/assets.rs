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

/// The tenant's asset (hidden partial-upload assets are not found).
pub(crate) async fn get_asset(db: &AnyPool, tenant: &str, id: &str) -> Result<Option<Asset>> {
    let row = sqlx::query(SELECT_ASSET)
        .bind(id)
        .bind(tenant)
        .fetch_optional(db)
        .await?;
    row.as_ref().map(asset_from_row).transpose()
}

/// The device that uploaded an asset of the tenant.
pub(crate) async fn asset_device(
    db: &AnyPool,
    tenant: &str,
    asset: &str,
) -> Result<Option<String>> {
    Ok(
        sqlx::query("SELECT device_id FROM assets WHERE id = $1 AND tenant_id = $2")
            .bind(asset)
            .bind(tenant)
            .fetch_optional(db)
            .await?
            .and_then(|r| r.get::<Option<String>, _>(0)),
    )
}

/// The probe of a job's source is known: record its duration and the probe on the asset
/// (its status is the job's to change).
pub(crate) async fn asset_probed(
    db: &AnyPool,
    job: &TranscodeJob,
    duration_s: f64,
    probe: &serde_json::Value,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE assets SET duration_s = $1, probe = $2, updated_at = $3 WHERE id = $4 \
         AND tenant_id = $5",
    )
    .bind(duration_s)
    .bind(probe.to_string())
    .bind(now)
    .bind(&job.asset_id)
    .bind(&job.tenant_id)
    .execute(db)
    .await?;
    Ok(())
}

// ---- status changes ------------------------------------------------------------------------

/// Which of the tenant's asset rows a status change applies to. The conditions are
/// load-bearing: a change allowed only from some statuses must not undo a later one.
#[derive(Clone, Copy, Default)]
pub(crate) struct Only<'a> {
    /// Only from one of these statuses (empty: from any).
    pub from: &'a [AssetStatus],
    /// Only if this job transcodes the whole ladder. A job re-running one rendition of a
    /// ready asset never changes the asset's status: the asset stays playable, and a
    /// failed re-run leaves the published rendition as it was.
    pub whole_job: Option<&'a str>,
}

impl<'a> Only<'a> {
    /// From whatever status the asset is in.
    pub fn any() -> Self {
        Self::default()
    }

    /// Only from one of `statuses`.
    pub fn from_statuses(statuses: &'a [AssetStatus]) -> Self {
        Self {
            from: statuses,
            whole_job: None,
        }
    }

    /// Only if `job` transcodes the whole ladder (see the field of that name).
    pub fn whole_job(job: &'a str) -> Self {
        Self {
            from: &[],
            whole_job: Some(job),
        }
    }
}

/// What happens to the asset's `error` with a status change.
#[derive(Clone, Copy, Default)]
pub(crate) enum ErrorChange<'a> {
    /// Left as it is.
    #[default]
    Keep,
    /// Cleared (a new attempt, or success).
    Clear,
    /// The message for the user.
    Set(&'a str),
}

/// What a status change writes besides `status` and `updated_at` (`None`: left as is).
#[derive(Clone, Copy, Default)]
pub(crate) struct Also<'a> {
    pub progress: Option<f64>,
    pub error: ErrorChange<'a>,
    pub job_id: Option<&'a str>,
    pub duration_s: Option<f64>,
    pub renditions: Option<&'a [Rendition]>,
}

/// A value bound to a statement built at run time.
enum Arg {
    Text(String),
    Real(f64),
    Int(i64),
}

/// Numbered placeholders (`$1`, `$2`, …) and their values, in binding order.
#[derive(Default)]
struct Args(Vec<Arg>);

impl Args {
    fn push(&mut self, a: Arg) -> String {
        self.0.push(a);
        format!("${}", self.0.len())
    }
}

/// Every change of an asset's status goes through here: the tenant's asset `asset` moves
/// to `to` if `only` allows it, writing `also` with it, and `updated_at`. Returns the
/// number of rows changed (0 when the condition did not hold).
///
/// The SQL is built from the typed arguments: statuses come from [`AssetStatus::as_str`]
/// (a closed set of constants), every other value is bound.
pub(crate) async fn set_asset_status(
    conn: &mut sqlx::AnyConnection,
    tenant: &str,
    asset: &str,
    to: AssetStatus,
    only: Only<'_>,
    also: Also<'_>,
    now: i64,
) -> Result<u64> {
    let mut args = Args::default();
    let mut set = vec![format!("status = '{}'", to.as_str())];
    if let Some(p) = also.progress {
        set.push(format!("progress = {}", args.push(Arg::Real(p))));
    }
    match also.error {
        ErrorChange::Keep => {}
        ErrorChange::Clear => set.push("error = NULL".into()),
        ErrorChange::Set(e) => set.push(format!("error = {}", args.push(Arg::Text(e.into())))),
    }
    if let Some(j) = also.job_id {
        set.push(format!("job_id = {}", args.push(Arg::Text(j.into()))));
    }
    if let Some(d) = also.duration_s {
        set.push(format!("duration_s = {}", args.push(Arg::Real(d))));
    }
    if let Some(r) = also.renditions {
        let json = serde_json::to_string(r).unwrap_or_else(|_| "[]".into());
        set.push(format!("renditions = {}", args.push(Arg::Text(json))));
    }
    set.push(format!("updated_at = {}", args.push(Arg::Int(now))));
    let mut sql = format!(
        "UPDATE assets SET {} WHERE id = {} AND tenant_id = {}",
        set.join(", "),
        args.push(Arg::Text(asset.into())),
        args.push(Arg::Text(tenant.into())),
    );
    match only.from {
        [] => {}
        [one] => sql.push_str(&format!(" AND status = '{}'", one.as_str())),
        many => {
            let list: Vec<String> = many.iter().map(|s| format!("'{}'", s.as_str())).collect();
            sql.push_str(&format!(" AND status IN ({})", list.join(", ")));
        }
    }
    if let Some(job) = only.whole_job {
        sql.push_str(&format!(
            " AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = {} AND j.rendition IS NOT NULL)",
            args.push(Arg::Text(job.into()))
        ));
    }
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for a in args.0 {
        q = match a {
            Arg::Text(v) => q.bind(v),
            Arg::Real(v) => q.bind(v),
            Arg::Int(v) => q.bind(v),
        };
    }
    Ok(q.execute(conn).await?.rows_affected())
}

/// The tenant's asset failed, whatever it was doing, with `error` for the user.
pub(crate) async fn fail_asset(
    db: &AnyPool,
    tenant: &str,
    asset: &str,
    error: &str,
    now: i64,
) -> Result<()> {
    fail_asset_in(&mut *db.acquire().await?, tenant, asset, error, now).await
}

/// [`fail_asset`] inside the caller's transaction.
pub(crate) async fn fail_asset_in(
    conn: &mut sqlx::AnyConnection,
    tenant: &str,
    asset: &str,
    error: &str,
    now: i64,
) -> Result<()> {
    set_asset_status(
        conn,
        tenant,
        asset,
        AssetStatus::Failed,
        Only::any(),
        Also {
            error: ErrorChange::Set(error),
            ..Also::default()
        },
        now,
    )
    .await?;
    Ok(())
}
