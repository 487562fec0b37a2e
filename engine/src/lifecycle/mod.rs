//! Lifecycle: per-tenant rules (`PUT`/`GET /v1/lifecycle`, else `[lifecycle] rules`) that
//! move old or unwatched assets to warm or cold, or expire them. Evaluated periodically and
//! on demand (`POST /v1/ops/lifecycle/run`) from database indexes only (never by listing a
//! store); every action is a tier job and a row in `lifecycle_actions`. The rules
//! themselves are pure ([`rules`]).

pub mod rules;

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};

pub use rules::{Action, Decision, Rule, Rules, Since};

use crate::tiers::{CopyState, EXPIRE_KIND, TIER_KIND, Tier};
use crate::{Engine, Error, Principal, Result, store};

/// Candidates read per query (the oldest first, paged by upload time and id).
const CANDIDATES_PER_PAGE: i64 = 500;
/// Candidates looked at per tenant and pass at most; the rest wait for the next pass.
const CANDIDATES_PER_PASS: usize = 100_000;

/// How long one asset's last view is believed before it is written again.
pub(crate) const VIEW_STAMP_TTL: Duration = Duration::from_secs(60);

/// This process's recent last-view writes: at most one per asset per minute.
pub(crate) type ViewStamps = moka::future::Cache<(Arc<str>, Arc<str>), ()>;

pub(crate) fn view_stamps() -> ViewStamps {
    moka::future::Cache::builder()
        .max_capacity(200_000)
        .time_to_live(VIEW_STAMP_TTL)
        .build()
}

/// One planned action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanItem {
    pub tenant: String,
    pub asset: String,
    pub from: Tier,
    /// `warm`, `cold` or `expire`.
    pub to: Action,
    pub bytes: u64,
    pub rule: usize,
    /// The job that carries it out (a run, not a dry run); `None` when the asset already
    /// had a tier job under way.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
}

impl Engine {
    /// The rules that apply to a tenant, and whether they are its own.
    async fn rules_for(&self, tenant: &str) -> Result<(Rules, bool)> {
        match store::lifecycle_rules(&self.inner.db, tenant).await? {
            Some(text) => Ok((serde_json::from_str(&text).unwrap_or_default(), true)),
            None => Ok((
                Rules {
                    rules: self.inner.config.lifecycle.rules.clone(),
                },
                false,
            )),
        }
    }

    /// `GET /v1/lifecycle`: the caller's rules (the default ones if it set none).
    pub async fn get_lifecycle(&self, who: &Principal) -> Result<Value> {
        let tenant = self.tenant_of(who)?;
        let (rules, own) = self.rules_for(tenant).await?;
        Ok(json!({"rules": rules.rules, "source": if own { "tenant" } else { "default" }}))
    }

    /// `PUT /v1/lifecycle`: replace the caller's rules (validated).
    pub async fn put_lifecycle(&self, who: &Principal, rules: Rules) -> Result<Value> {
        let tenant = self.tenant_of(who)?;
        rules.validate().map_err(Error::InvalidInput)?;
        let text = serde_json::to_string(&rules)
            .map_err(|e| Error::InvalidInput(format!("unserialisable rules: {e}")))?;
        store::put_lifecycle_rules(&self.inner.db, tenant, &text, self.now_ms()).await?;
        self.get_lifecycle(who).await
    }

    /// `PUT /v1/assets/{id}/tags`: replace an asset's tags (what tag rules match).
    pub async fn set_tags(&self, who: &Principal, id: &str, tags: Vec<String>) -> Result<Value> {
        let tenant = self.tenant_of(who)?;
        if tags.len() > rules::MAX_TAGS {
            return Err(Error::InvalidInput(format!(
                "at most {} tags per asset",
                rules::MAX_TAGS
            )));
        }
        if let Some(bad) = tags.iter().find(|t| !rules::is_valid_tag(t)) {
            return Err(Error::InvalidInput(format!(
                "tag {bad:?} must be 1 to {} characters of A-Z, a-z, 0-9, '_', '.', ':', '-'",
                rules::MAX_TAG_LEN
            )));
        }
        let mut tags = tags;
        tags.sort();
        tags.dedup();
        let text = serde_json::to_string(&tags).unwrap_or_else(|_| "[]".into());
        if !store::set_asset_tags(&self.inner.db, tenant, id, &text, self.now_ms()).await? {
            return Err(Error::not_found("asset", id));
        }
        Ok(json!({"id": id, "tags": tags}))
    }

    /// A viewer played the asset: its last view is written at most once a minute per
    /// asset and process (in the background: playback never waits for it).
    pub fn note_view(&self, tenant: &str, asset: &str) {
        let key = (Arc::from(tenant), Arc::from(asset));
        if self.inner.views.contains_key(&key) {
            return;
        }
        let (e, t, a) = (self.clone(), tenant.to_string(), asset.to_string());
        tokio::spawn(async move {
            e.inner.views.insert(key, ()).await;
            if let Err(err) = store::record_view(&e.inner.db, &t, &a, e.now_ms()).await {
                tracing::warn!(asset = %a, "could not record a view: {err}");
            }
        });
    }

    /// The home tier and bytes of an asset (hot and unmeasured when no copy is recorded).
    async fn home_of(&self, tenant: &str, asset: &str) -> Result<(Tier, u64)> {
        let copies = self.asset_copies(tenant, asset).await?;
        let home = copies.iter().find(|c| c.state == CopyState::Active);
        Ok(home.map_or((Tier::Hot, 0), |c| (c.tier, c.bytes)))
    }

    /// `GET /v1/assets/{id}/lifecycle`: how the rules judge one asset, and what they would
    /// do now.
    pub async fn explain_lifecycle(&self, who: &Principal, id: &str) -> Result<Value> {
        let tenant = self.tenant_of(who)?;
        let f = store::asset_facts(&self.inner.db, tenant, id)
            .await?
            .ok_or_else(|| Error::not_found("asset", id))?;
        let (rules, own) = self.rules_for(tenant).await?;
        let copies = self.asset_copies(tenant, id).await?;
        let (tier, bytes) = self.home_of(tenant, id).await?;
        let copies: Vec<Value> = copies
            .iter()
            .map(|c| {
                json!({"tier": c.tier, "store": c.store, "state": c.state, "bytes": c.bytes,
                       "objects": c.objects, "expires_at": c.expires_at.map(crate::rfc3339_ms)})
            })
            .collect();
        let facts = rules::Facts {
            created_at_ms: f.created_at,
            last_viewed_at_ms: f.last_viewed_at,
            tags: &f.tags,
            tier,
        };
        let now = self.now_ms();
        Ok(json!({
            "asset": id,
            "tier": tier,
            "bytes": bytes,
            "copies": copies,
            "tags": f.tags,
            "last_viewed_at": f.last_viewed_at.map(crate::rfc3339_ms),
            "rules_from": if own { "tenant" } else { "default" },
            "checks": rules::explain(&rules, &facts, now),
            "decision": rules::decide(&rules, &facts, now),
        }))
    }

    /// `POST /v1/ops/lifecycle/run` (admin) and the periodic pass: evaluate every tenant's
    /// rules; unless `dry_run`, start a job per action and record it.
    pub async fn run_lifecycle(&self, who: &Principal, dry_run: bool) -> Result<Vec<PlanItem>> {
        self.require_ops(who)?;
        self.lifecycle_pass(dry_run).await
    }

    /// One evaluation of every tenant's rules.
    pub async fn lifecycle_pass(&self, dry_run: bool) -> Result<Vec<PlanItem>> {
        let now = self.now_ms();
        let mut plan = Vec::new();
        for tenant in store::tenant_ids(&self.inner.db).await? {
            let (rules, _) = self.rules_for(&tenant).await?;
            let Some(min_after) = rules::min_after_ms(&rules) else {
                continue;
            };
            let cutoff = now.saturating_sub(i64::try_from(min_after).unwrap_or(i64::MAX));
            let mut seen = 0usize;
            let mut after: Option<(i64, String)> = None;
            loop {
                let page = store::lifecycle_candidates(
                    &self.inner.db,
                    &tenant,
                    cutoff,
                    after.as_ref().map(|(t, id)| (*t, id.as_str())),
                    CANDIDATES_PER_PAGE,
                )
                .await?;
                let Some(last) = page.last() else { break };
                after = Some((last.created_at, last.id.clone()));
                seen += page.len();
                for c in page {
                    if let Some(item) = self.plan_one(&tenant, &rules, &c, now).await? {
                        let mut item = item;
                        if !dry_run {
                            item.job = self.act(&item).await?;
                        }
                        plan.push(item);
                    }
                }
                if seen >= CANDIDATES_PER_PASS {
                    break;
                }
            }
        }
        Ok(plan)
    }

    /// The action the rules take on one candidate now, if any.
    async fn plan_one(
        &self,
        tenant: &str,
        rules: &Rules,
        c: &store::AssetFacts,
        now: i64,
    ) -> Result<Option<PlanItem>> {
        let (tier, bytes) = self.home_of(tenant, &c.id).await?;
        let facts = rules::Facts {
            created_at_ms: c.created_at,
            last_viewed_at_ms: c.last_viewed_at,
            tags: &c.tags,
            tier,
        };
        let Some(d) = rules::decide(rules, &facts, now) else {
            return Ok(None);
        };
        // A transition to a tier this deployment lacks is not planned.
        if let Some(t) = d.action.tier()
            && self.stores().store_name(t).is_none()
        {
            return Ok(None);
        }
        Ok(Some(PlanItem {
            tenant: tenant.to_string(),
            asset: c.id.clone(),
            from: tier,
            to: d.action,
            bytes,
            rule: d.rule,
            job: None,
        }))
    }

    /// Start the job of one planned action and record it; `None` when the asset already
    /// has a tier job under way (the next pass looks again).
    async fn act(&self, item: &PlanItem) -> Result<Option<String>> {
        let (kind, target) = match item.to.tier() {
            Some(t) => (TIER_KIND, Some(t.as_str())),
            None => (EXPIRE_KIND, None),
        };
        let job = match self
            .enqueue_tier_job(&item.tenant, &item.asset, kind, target, None)
            .await
        {
            Ok(j) => j,
            Err(Error::Conflict(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        store::insert_lifecycle_action(
            &self.inner.db,
            store::NewAction {
                tenant: &item.tenant,
                asset: &item.asset,
                rule: item.rule as i64,
                action: item.to.as_str(),
                from_tier: item.from.as_str(),
                bytes: item.bytes,
                job_id: &job.id,
                now: self.now_ms(),
            },
        )
        .await?;
        tracing::info!(
            tenant = %item.tenant, asset = %item.asset, action = item.to.as_str(),
            job = %job.id, "lifecycle action"
        );
        Ok(Some(job.id))
    }
}
