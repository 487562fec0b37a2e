//! Live streams: the stream rows, their media playlists and the stored segments.

use sqlx::{AnyPool, Row};

use super::tenants::check_quota_locked;
use crate::Result;

/// A live stream row as stored.
pub(crate) struct LiveRow {
    pub id: String,
    pub tenant_id: String,
    pub asset_id: String,
    pub name: Option<String>,
    pub ingest_hash: String,
    pub state: String,
    pub end_reason: Option<String>,
    pub dvr_window_s: i64,
    pub master: Option<String>,
    pub primary_playlist: Option<String>,
    pub segments_received: i64,
    pub bytes_received: i64,
    pub rejected_requests: i64,
    pub last_error: Option<String>,
    pub last_error_at: Option<i64>,
    pub last_ok_at: Option<i64>,
    pub created_at: i64,
    pub ended_at: Option<i64>,
    pub vod_mode: sluice_media::VodMode,
}

const LIVE_COLS: &str = "id, tenant_id, asset_id, name, ingest_hash, state, end_reason, \
    dvr_window_s, master, primary_playlist, segments_received, bytes_received, \
    rejected_requests, last_error, last_error_at, last_ok_at, created_at, ended_at, vod_mode";

fn live_from_row(r: &sqlx::any::AnyRow) -> Result<LiveRow> {
    Ok(LiveRow {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        asset_id: r.try_get("asset_id")?,
        name: r.try_get("name")?,
        ingest_hash: r.try_get("ingest_hash")?,
        state: r.try_get("state")?,
        end_reason: r.try_get("end_reason")?,
        dvr_window_s: r.try_get("dvr_window_s")?,
        master: r.try_get("master")?,
        primary_playlist: r.try_get("primary_playlist")?,
        segments_received: r.try_get("segments_received")?,
        bytes_received: r.try_get("bytes_received")?,
        rejected_requests: r.try_get("rejected_requests")?,
        last_error: r.try_get("last_error")?,
        last_error_at: r.try_get("last_error_at")?,
        last_ok_at: r.try_get("last_ok_at")?,
        created_at: r.try_get("created_at")?,
        ended_at: r.try_get("ended_at")?,
        vod_mode: sluice_media::VodMode::parse(r.try_get("vod_mode")?).unwrap_or_default(),
    })
}

pub(crate) struct NewLive<'a> {
    pub id: &'a str,
    pub tenant: &'a str,
    pub asset: &'a str,
    pub name: Option<&'a str>,
    pub ingest_hash: &'a str,
    pub dvr_window_s: i64,
    pub vod_mode: &'a str,
    pub now: i64,
}

/// A live stream and the asset it records into (`uploading` while live), atomically.
pub(crate) async fn insert_live(db: &AnyPool, l: NewLive<'_>) -> Result<()> {
    let mut tx = db.begin().await?;
    sqlx::query(
        "INSERT INTO assets (id, tenant_id, status, filename, created_at, updated_at) \
         VALUES ($1, $2, 'uploading', $3, $4, $5)",
    )
    .bind(l.asset)
    .bind(l.tenant)
    .bind(l.name)
    .bind(l.now)
    .bind(l.now)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO live_streams (id, tenant_id, asset_id, name, ingest_hash, state, \
         dvr_window_s, vod, vod_mode, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, 'idle', $6, 1, $7, $8, $9)",
    )
    .bind(l.id)
    .bind(l.tenant)
    .bind(l.asset)
    .bind(l.name)
    .bind(l.ingest_hash)
    .bind(l.dvr_window_s)
    .bind(l.vod_mode)
    .bind(l.now)
    .bind(l.now)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// One stream; `tenant` None for the ingest path (which authenticates by token).
pub(crate) async fn get_live(
    db: &AnyPool,
    tenant: Option<&str>,
    id: &str,
) -> Result<Option<LiveRow>> {
    // Two statements rather than `$2 IS NULL OR …`: PostgreSQL cannot type a NULL parameter.
    let row = match tenant {
        Some(t) => {
            let sql =
                format!("SELECT {LIVE_COLS} FROM live_streams WHERE id = $1 AND tenant_id = $2");
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .bind(t)
                .fetch_optional(db)
                .await?
        }
        None => {
            let sql = format!("SELECT {LIVE_COLS} FROM live_streams WHERE id = $1");
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .fetch_optional(db)
                .await?
        }
    };
    row.as_ref().map(live_from_row).transpose()
}

/// The stream recording into `asset`.
pub(crate) async fn live_by_asset(db: &AnyPool, asset: &str) -> Result<Option<LiveRow>> {
    let sql = format!("SELECT {LIVE_COLS} FROM live_streams WHERE asset_id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(asset)
        .fetch_optional(db)
        .await?;
    row.as_ref().map(live_from_row).transpose()
}

pub(crate) async fn list_live(db: &AnyPool, tenant: &str, limit: i64) -> Result<Vec<LiveRow>> {
    let sql = format!(
        "SELECT {LIVE_COLS} FROM live_streams WHERE tenant_id = $1 \
         ORDER BY created_at DESC LIMIT $2"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(tenant)
        .bind(limit)
        .fetch_all(db)
        .await?;
    rows.iter().map(live_from_row).collect()
}

/// Streams to end for inactivity (also those never pushed to, counted from their
/// creation), and `ending` streams whose finaliser went silent.
pub(crate) async fn live_to_finalize(
    db: &AnyPool,
    idle_before: i64,
    stale_before: i64,
) -> Result<Vec<String>> {
    let rows = sqlx::query(
        "SELECT id FROM live_streams WHERE (state = 'live' AND last_ok_at < $1) \
         OR (state = 'idle' AND created_at < $1) OR (state = 'ending' AND updated_at < $2)",
    )
    .bind(idle_before)
    .bind(stale_before)
    .fetch_all(db)
    .await?;
    Ok(rows.iter().map(|r| r.get::<String, _>(0)).collect())
}

pub(crate) async fn count_live_by_state(db: &AnyPool) -> Result<Vec<(String, i64)>> {
    let rows = sqlx::query("SELECT state, COUNT(*) FROM live_streams GROUP BY state")
        .fetch_all(db)
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1)))
        .collect())
}

/// A request was accepted: count it and mark the stream live.
pub(crate) async fn live_ok(
    db: &AnyPool,
    id: &str,
    bytes: i64,
    segments: i64,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE live_streams SET segments_received = segments_received + $1, \
         bytes_received = bytes_received + $2, last_ok_at = $3, updated_at = $3, \
         state = CASE WHEN state = 'idle' THEN 'live' ELSE state END WHERE id = $4",
    )
    .bind(segments)
    .bind(bytes)
    .bind(now)
    .bind(id)
    .execute(db)
    .await?;
    Ok(())
}

/// A request was refused: remember why (the pusher may never look at the status).
pub(crate) async fn live_rejected(
    db: &AnyPool,
    id: &str,
    error_json: &str,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE live_streams SET rejected_requests = rejected_requests + 1, last_error = $1, \
         last_error_at = $2 WHERE id = $3",
    )
    .bind(error_json)
    .bind(now)
    .bind(id)
    .execute(db)
    .await?;
    Ok(())
}

pub(crate) async fn live_set_master(
    db: &AnyPool,
    id: &str,
    master: &str,
    primary: Option<&str>,
) -> Result<()> {
    sqlx::query(
        "UPDATE live_streams SET master = $1, primary_playlist = COALESCE($2, primary_playlist) \
         WHERE id = $3",
    )
    .bind(master)
    .bind(primary)
    .bind(id)
    .execute(db)
    .await?;
    Ok(())
}

pub(crate) async fn live_default_primary(db: &AnyPool, id: &str, playlist: &str) -> Result<()> {
    sqlx::query(
        "UPDATE live_streams SET primary_playlist = $1 WHERE id = $2 AND primary_playlist IS NULL",
    )
    .bind(playlist)
    .bind(id)
    .execute(db)
    .await?;
    Ok(())
}

/// Claim the end of a stream: true for exactly one caller (or a stale `ending` retry).
pub(crate) async fn live_begin_end(
    db: &AnyPool,
    id: &str,
    reason: &str,
    now: i64,
    stale_before: i64,
) -> Result<bool> {
    let r = sqlx::query(
        "UPDATE live_streams SET state = 'ending', end_reason = COALESCE(end_reason, $1), \
         updated_at = $2 WHERE id = $3 AND (state IN ('idle', 'live') \
         OR (state = 'ending' AND updated_at < $4))",
    )
    .bind(reason)
    .bind(now)
    .bind(id)
    .bind(stale_before)
    .execute(db)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// The heartbeat of a process ending a stream.
pub(crate) async fn live_touch_ending(db: &AnyPool, id: &str, now: i64) -> Result<()> {
    sqlx::query("UPDATE live_streams SET updated_at = $1 WHERE id = $2 AND state = 'ending'")
        .bind(now)
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

pub(crate) async fn live_ended(db: &AnyPool, id: &str, now: i64) -> Result<()> {
    sqlx::query(
        "UPDATE live_streams SET state = 'ended', ended_at = $1, updated_at = $1 WHERE id = $2",
    )
    .bind(now)
    .bind(id)
    .execute(db)
    .await?;
    Ok(())
}

/// A media playlist's recording state.
pub(crate) struct LivePlaylistRow {
    pub name: String,
    pub target_duration: i64,
    pub epoch: i64,
    pub first_msn: i64,
    pub last_msn: i64,
    pub next_pos: i64,
    pub ended: bool,
}

pub(crate) async fn live_playlists(db: &AnyPool, stream: &str) -> Result<Vec<LivePlaylistRow>> {
    let rows = sqlx::query(
        "SELECT name, target_duration, epoch, first_msn, last_msn, next_pos, ended \
         FROM live_playlists WHERE stream_id = $1 ORDER BY name",
    )
    .bind(stream)
    .fetch_all(db)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(LivePlaylistRow {
                name: r.try_get("name")?,
                target_duration: r.try_get("target_duration")?,
                epoch: r.try_get("epoch")?,
                first_msn: r.try_get("first_msn")?,
                last_msn: r.try_get("last_msn")?,
                next_pos: r.try_get("next_pos")?,
                ended: r.try_get::<i64, _>("ended")? != 0,
            })
        })
        .collect()
}

pub(crate) async fn live_save_playlist(
    db: &AnyPool,
    stream: &str,
    p: &LivePlaylistRow,
) -> Result<()> {
    let r = sqlx::query(
        "UPDATE live_playlists SET target_duration = $1, epoch = $2, first_msn = $3, \
         last_msn = $4, next_pos = $5, ended = $6 WHERE stream_id = $7 AND name = $8",
    )
    .bind(p.target_duration)
    .bind(p.epoch)
    .bind(p.first_msn)
    .bind(p.last_msn)
    .bind(p.next_pos)
    .bind(i64::from(p.ended))
    .bind(stream)
    .bind(&p.name)
    .execute(db)
    .await?;
    if r.rows_affected() == 0 {
        sqlx::query(
            "INSERT INTO live_playlists (stream_id, name, target_duration, epoch, first_msn, \
             last_msn, next_pos, ended) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(stream)
        .bind(&p.name)
        .bind(p.target_duration)
        .bind(p.epoch)
        .bind(p.first_msn)
        .bind(p.last_msn)
        .bind(p.next_pos)
        .bind(i64::from(p.ended))
        .execute(db)
        .await?;
    }
    Ok(())
}

/// A segment row (recorded bytes, or a listed name whose bytes have not come yet).
#[derive(Debug, Clone)]
pub(crate) struct LiveSegmentRow {
    pub seq: i64,
    /// The encoder's name for it.
    pub name: String,
    pub ext: String,
    pub is_init: bool,
    pub playlist: Option<String>,
    pub pos: Option<i64>,
    pub duration: Option<f64>,
    pub discontinuity: bool,
    pub map_seq: Option<i64>,
    pub received: bool,
    /// Bytes stored (None until received).
    pub size: Option<i64>,
}

const SEG_COLS: &str =
    "seq, name, ext, is_init, playlist, pos, duration, discontinuity, map_seq, received_at, size";

fn seg_from_row(r: &sqlx::any::AnyRow) -> Result<LiveSegmentRow> {
    Ok(LiveSegmentRow {
        seq: r.try_get("seq")?,
        name: r.try_get("name")?,
        ext: r.try_get("ext")?,
        is_init: r.try_get::<i64, _>("is_init")? != 0,
        playlist: r.try_get("playlist")?,
        pos: r.try_get("pos")?,
        duration: r.try_get("duration")?,
        discontinuity: r.try_get::<i64, _>("discontinuity")? != 0,
        map_seq: r.try_get("map_seq")?,
        received: r.try_get::<Option<i64>, _>("received_at")?.is_some(),
        size: r.try_get("size")?,
    })
}

/// The newest row carrying an encoder name.
pub(crate) async fn live_latest_by_name(
    db: &AnyPool,
    stream: &str,
    name: &str,
) -> Result<Option<LiveSegmentRow>> {
    let sql = format!(
        "SELECT {SEG_COLS} FROM live_segments WHERE stream_id = $1 AND name = $2 \
         ORDER BY seq DESC LIMIT 1"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(stream)
        .bind(name)
        .fetch_optional(db)
        .await?;
    row.as_ref().map(seg_from_row).transpose()
}

/// The next sequence number of a stream's stored objects, allocated in one statement
/// (atomic across gateways sharing the database).
pub(crate) async fn live_next_seq(db: &AnyPool, stream: &str) -> Result<i64> {
    let row = sqlx::query(
        "UPDATE live_streams SET next_seq = next_seq + 1 WHERE id = $1 RETURNING next_seq - 1",
    )
    .bind(stream)
    .fetch_optional(db)
    .await?;
    match row {
        Some(r) => Ok(r.try_get(0)?),
        None => Err(crate::Error::not_found("live stream", stream)),
    }
}

/// A new row: received bytes (`received_at` set) or a listed-but-missing name.
pub(crate) async fn live_insert_segment(
    db: &AnyPool,
    stream: &str,
    seq: i64,
    name: &str,
    ext: &str,
    received: Option<(i64, i64)>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO live_segments (stream_id, seq, name, ext, size, received_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(stream)
    .bind(seq)
    .bind(name)
    .bind(ext)
    .bind(received.map(|r| r.0))
    .bind(received.map(|r| r.1))
    .execute(db)
    .await?;
    Ok(())
}

pub(crate) async fn live_segment_received(
    db: &AnyPool,
    stream: &str,
    seq: i64,
    size: i64,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE live_segments SET size = $1, received_at = $2 WHERE stream_id = $3 AND seq = $4",
    )
    .bind(size)
    .bind(now)
    .bind(stream)
    .bind(seq)
    .execute(db)
    .await?;
    Ok(())
}

/// Put a row in a playlist at `pos`.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn live_list_segment(
    db: &AnyPool,
    stream: &str,
    seq: i64,
    playlist: &str,
    pos: i64,
    duration: f64,
    discontinuity: bool,
    map_seq: Option<i64>,
) -> Result<()> {
    sqlx::query(
        "UPDATE live_segments SET playlist = $1, pos = $2, duration = $3, discontinuity = $4, \
         map_seq = $5 WHERE stream_id = $6 AND seq = $7",
    )
    .bind(playlist)
    .bind(pos)
    .bind(duration)
    .bind(i64::from(discontinuity))
    .bind(map_seq)
    .bind(stream)
    .bind(seq)
    .execute(db)
    .await?;
    Ok(())
}

pub(crate) async fn live_mark_init(db: &AnyPool, stream: &str, seq: i64) -> Result<()> {
    sqlx::query("UPDATE live_segments SET is_init = 1 WHERE stream_id = $1 AND seq = $2")
        .bind(stream)
        .bind(seq)
        .execute(db)
        .await?;
    Ok(())
}

/// A playlist's segments in order.
pub(crate) async fn live_playlist_segments(
    db: &AnyPool,
    stream: &str,
    playlist: &str,
) -> Result<Vec<LiveSegmentRow>> {
    let sql = format!(
        "SELECT {SEG_COLS} FROM live_segments WHERE stream_id = $1 AND playlist = $2 \
         AND is_init = 0 ORDER BY pos"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(stream)
        .bind(playlist)
        .fetch_all(db)
        .await?;
    rows.iter().map(seg_from_row).collect()
}

/// The segment a playlist lists at position `pos`, if any.
pub(crate) async fn live_segment_at(
    db: &AnyPool,
    stream: &str,
    playlist: &str,
    pos: i64,
) -> Result<Option<LiveSegmentRow>> {
    let sql = format!(
        "SELECT {SEG_COLS} FROM live_segments WHERE stream_id = $1 AND playlist = $2 \
         AND pos = $3 AND is_init = 0"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(stream)
        .bind(playlist)
        .bind(pos)
        .fetch_optional(db)
        .await?
        .as_ref()
        .map(seg_from_row)
        .transpose()
}

/// Segments (and init segments) a playlist names whose bytes have not arrived.
pub(crate) async fn live_missing_segments(db: &AnyPool, stream: &str) -> Result<i64> {
    let n: i64 = sqlx::query(
        "SELECT COUNT(*) FROM live_segments WHERE stream_id = $1 AND received_at IS NULL \
         AND (playlist IS NOT NULL OR is_init = 1)",
    )
    .bind(stream)
    .fetch_one(db)
    .await?
    .get(0);
    Ok(n)
}

/// The init segments of a stream that have their bytes.
pub(crate) async fn live_received_inits(db: &AnyPool, stream: &str) -> Result<Vec<(i64, String)>> {
    let rows = sqlx::query(
        "SELECT seq, ext FROM live_segments WHERE stream_id = $1 AND is_init = 1 \
         AND received_at IS NOT NULL",
    )
    .bind(stream)
    .fetch_all(db)
    .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get::<i64, _>(0), r.get::<String, _>(1)))
        .collect())
}

/// Live segment bytes arrive: add them to the stream asset's size if they fit the
/// tenant's storage quota (checked under the tenant's lock, like every reservation).
pub(crate) async fn charge_live_bytes(
    db: &AnyPool,
    tenant: &str,
    asset: &str,
    bytes: i64,
) -> Result<()> {
    let mut tx = db.begin().await?;
    check_quota_locked(&mut tx, tenant, bytes.max(0) as u64).await?;
    sqlx::query("UPDATE assets SET size = COALESCE(size, 0) + $1 WHERE id = $2 AND tenant_id = $3")
        .bind(bytes)
        .bind(asset)
        .bind(tenant)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// The recording is the asset's source now: queue it like a finished upload.
pub(crate) async fn live_asset_recorded(
    db: &AnyPool,
    tenant: &str,
    asset: &str,
    size: i64,
    now: i64,
) -> Result<()> {
    sqlx::query("UPDATE assets SET size = $1, updated_at = $2 WHERE id = $3 AND tenant_id = $4")
        .bind(size)
        .bind(now)
        .bind(asset)
        .bind(tenant)
        .execute(db)
        .await?;
    Ok(())
}
