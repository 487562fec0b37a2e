//! SQL for the metadata store, one module per aggregate. Every query on Sluice's tables
//! lives in this module (sqlx's `Any` driver: each is written once and runs on SQLite and
//! on PostgreSQL); the rest of the engine calls these functions as `store::…`. Every query
//! on a tenant's asset carries the tenant, and every change of an asset's status goes
//! through `assets::set_asset_status`.
//!
//! - `tenants`: tenants, API keys and the storage quota;
//! - `keys`: API keys: resolving, per-role keys, `last_used_at`, revoking;
//! - `audit`: the append-only audit log;
//! - `usage`: tenants' rate limits and quotas, monthly usage counters;
//! - `devices`: device keys and their uploads;
//! - `assets`: reading assets and changing their fields;
//! - `copies`: asset copies per tier and store, and the per-tier counters;
//! - `uploads`: upload sessions, multipart state, leases and expiry;
//! - `idempotency`: `Idempotency-Key` claims of raw uploads;
//! - `jobs`: job rows and their lifecycle;
//! - `tier_jobs`: tier moves, archive, restore and expiry jobs (their own queue table);
//! - `lifecycle`: lifecycle rules, last views, tags and the lifecycle action record;
//! - `live`: live streams, playlists and segments;
//! - `presets`: tenants' preset overrides;
//! - `webhooks`: webhooks and their deliveries;
//! - shared settings are here.

use sqlx::{AnyPool, Row};

use crate::Result;

mod assets;
mod audit;
mod copies;
mod devices;
mod idempotency;
mod jobs;
mod keys;
mod lifecycle;
mod live;
mod presets;
mod queue;
mod tenants;
mod tier_jobs;
mod uploads;
mod usage;
mod webhooks;

pub(crate) use assets::{asset_device, asset_probed, fail_asset, get_asset};
pub(crate) use audit::{AuditRow, insert_audit, list_audit};
pub use copies::{CopyKey, CopyRow};
pub(crate) use copies::{
    asset_copies, delete_copy, expire_restored, expired_restores, extend_restored, hide_asset,
    insert_copy, orphaned_draining, record_measured, switch_copy, tier_usage, unmeasured_copies,
};
pub(crate) use devices::{device_uploads, devices, insert_device, revoke_device, touch_device};
pub(crate) use idempotency::{
    KeyClaim, claim_idempotency_key, finish_idempotency_key, lapse_idempotency_key,
    release_idempotency_key, renew_idempotency_key, sweep_idempotency_keys,
};
pub(crate) use jobs::{
    NewJob, Start, active_jobs_for_asset, asset_job, cancel_requested, count_waiting, get_job,
    insert_job, job_ended, job_head, job_heartbeat, job_progress, job_pushed, job_requeued,
    job_reset, job_run_after, job_spec, job_started, job_succeeded, jobs_owed_a_push, list_jobs,
    rendition_succeeded, request_cancel,
};
pub(crate) use keys::{
    NewKeyRow, insert_key, key_owner, list_keys, revoke_key, tenant_exists, touch_key,
};
pub(crate) use lifecycle::{
    AssetFacts, NewAction, asset_facts, insert_lifecycle_action, lifecycle_candidates,
    lifecycle_rules, put_lifecycle_rules, record_view, set_asset_tags, tenant_ids,
};
pub(crate) use live::{
    LivePlaylistRow, LiveRow, LiveSegmentRow, NewLive, charge_live_bytes, count_live_by_state,
    get_live, insert_live, list_live, live_asset_recorded, live_begin_end, live_by_asset,
    live_default_primary, live_ended, live_insert_segment, live_latest_by_name, live_list_segment,
    live_mark_init, live_missing_segments, live_next_seq, live_ok, live_playlist_segments,
    live_playlists, live_received_inits, live_rejected, live_save_playlist, live_segment_at,
    live_segment_received, live_set_master, live_to_finalize, live_touch_ending,
};
pub(crate) use presets::{delete_tenant_preset, put_tenant_preset, tenant_preset};
pub(crate) use queue::queue_depth;
pub(crate) use tenants::{insert_tenant, storage_usage};
pub(crate) use tier_jobs::{
    NewTierJob, TierJobRow, active_tier_job, claim_tier_job, get_tier_job, insert_tier_job,
    list_tier_jobs, tier_job_end, tier_job_progress,
};
pub(crate) use uploads::{
    MultipartRow, NewUpload, UploadJob, UploadPart, commit_raw_upload, commit_upload_parts,
    complete_empty_upload, complete_upload, consume_partials, delete_upload, expired_uploads,
    get_upload, insert_upload, lease_upload, release_upload, set_upload_length,
    set_upload_multipart, set_upload_offset, upload_multipart, upload_session_exists,
};
pub(crate) use usage::{LimitsRow, add_usage, month_usage, set_tenant_limits, tenant_limits};
pub(crate) use webhooks::{
    ClaimedDelivery, claim_deliveries, delete_webhook, delivery_attempted, insert_delivery,
    insert_webhook, list_webhooks, webhook_subscriptions,
};

/// A shared setting, if it exists.
pub(crate) async fn setting(db: &AnyPool, key: &str) -> Result<Option<String>> {
    Ok(sqlx::query("SELECT value FROM settings WHERE key = $1")
        .bind(key)
        .fetch_optional(db)
        .await?
        .map(|r| r.get(0)))
}

/// A shared setting, created with `value` by whichever process asks first.
pub(crate) async fn setting_or_insert(db: &AnyPool, key: &str, value: &str) -> Result<String> {
    sqlx::query("INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
        .bind(key)
        .bind(value)
        .execute(db)
        .await?;
    Ok(sqlx::query("SELECT value FROM settings WHERE key = $1")
        .bind(key)
        .fetch_one(db)
        .await?
        .get(0))
}
