
/// Draining copies of assets with no tier job under way (any tenant): what a sweep
/// interrupted between its switch and its deletes left behind.
pub(crate) async fn orphaned_draining(db: &AnyPool, limit: i64) -> Result<Vec<CopyRow>> {
    let rows = sqlx::query(select_copy!(
        "c WHERE c.state = 'draining' AND NOT EXISTS (SELECT 1 FROM tier_jobs j \
         WHERE j.tenant_id = c.tenant_id AND j.asset_id = c.asset_id \
         AND j.status IN ('queued', 'running')) ORDER BY c.updated_at LIMIT $1"
    ))
    .bind(limit)
    .fetch_all(db)
    .await?;
    rows.iter().map(copy_from_row).collect()
}
