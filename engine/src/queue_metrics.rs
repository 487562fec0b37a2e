//! The queue's depth as a metric: `sluice_queue_jobs{kind,status}` (status `queued` or
//! `running`), refreshed by the serving process's periodic sweep.

use crate::{Engine, Result, store};

/// The job kinds and statuses the gauge always shows (0 when none), so a dashboard never
/// sees a series vanish.
const KINDS: [&str; 2] = ["transcode", "live_copy"];
const STATUSES: [&str; 2] = ["queued", "running"];

impl Engine {
    /// Count waiting and running jobs per kind and publish them as gauges.
    pub async fn publish_queue_depth(&self) -> Result<()> {
        let rows = store::queue_depth(&self.inner.db).await?;
        for kind in KINDS {
            for status in STATUSES {
                let n = rows
                    .iter()
                    .find(|(k, s, _)| k == kind && s == status)
                    .map_or(0, |r| r.2);
                metrics::gauge!("sluice_queue_jobs", "kind" => kind, "status" => status)
                    .set(n as f64);
            }
        }
        // A kind this list does not know is counted under `other` (labels stay bounded).
        for status in STATUSES {
            let other: i64 = rows
                .iter()
                .filter(|(k, s, _)| s == status && !KINDS.contains(&k.as_str()))
                .map(|r| r.2)
                .sum();
            metrics::gauge!("sluice_queue_jobs", "kind" => "other", "status" => status)
                .set(other as f64);
        }
        Ok(())
    }
}
