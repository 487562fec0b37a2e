//! Per-tenant transcode presets: stored overrides over the configured defaults (the
//! vocabulary and validation are in `sluice_media::preset`).

use crate::{
    Engine, Error, PresetOverrides, Principal, Result, TranscodePreset, preset, rfc3339_ms, store,
};

impl Engine {
    // ---- presets and renditions --------------------------------------------------------

    /// The preset a new job of `tenant` runs with: the configuration's transcode section
    /// with the tenant's overrides applied.
    pub async fn effective_preset(&self, tenant: &str) -> Result<TranscodePreset> {
        let base = TranscodePreset::from_config(&self.inner.config.transcode);
        Ok(base.with(&self.tenant_overrides(tenant).await?.0))
    }

    async fn tenant_overrides(&self, tenant: &str) -> Result<(PresetOverrides, Option<i64>)> {
        Ok(match store::tenant_preset(&self.inner.db, tenant).await? {
            Some((json, at)) => {
                let o = serde_json::from_str(&json).unwrap_or_else(|e| {
                    tracing::error!(tenant, "stored preset is unreadable, ignoring it: {e}");
                    PresetOverrides::default()
                });
                (o, Some(at))
            }
            None => (PresetOverrides::default(), None),
        })
    }

    /// `GET /v1/preset`: the tenant's overrides and the preset in effect.
    pub async fn get_preset(&self, who: &Principal) -> Result<PresetView> {
        let tenant = self.tenant_of(who)?;
        let (overrides, at) = self.tenant_overrides(tenant).await?;
        let effective = TranscodePreset::from_config(&self.inner.config.transcode).with(&overrides);
        Ok(PresetView {
            overrides,
            effective,
            updated_at: at.map(rfc3339_ms),
        })
    }

    /// `PUT /v1/preset`: replace the tenant's overrides (validated strictly). Jobs already
    /// queued keep the preset they were enqueued with.
    pub async fn put_preset(
        &self,
        who: &Principal,
        overrides: PresetOverrides,
    ) -> Result<PresetView> {
        let tenant = self.tenant_of(who)?;
        preset::validate(&overrides).map_err(Error::InvalidInput)?;
        let json = serde_json::to_string(&overrides)
            .map_err(|e| Error::InvalidInput(format!("unserialisable preset: {e}")))?;
        store::put_tenant_preset(&self.inner.db, tenant, &json, self.now_ms()).await?;
        tracing::info!(tenant, "transcode preset updated");
        self.get_preset(who).await
    }

    /// `DELETE /v1/preset`: back to the configured defaults.
    pub async fn delete_preset(&self, who: &Principal) -> Result<()> {
        let tenant = self.tenant_of(who)?;
        store::delete_tenant_preset(&self.inner.db, tenant).await?;
        Ok(())
    }
}

/// A tenant's preset as `GET /v1/preset` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PresetView {
    /// The fields the tenant set (absent ones follow the server configuration).
    pub overrides: PresetOverrides,
    /// What a job enqueued now would run with.
    pub effective: TranscodePreset,
    pub updated_at: Option<String>,
}
