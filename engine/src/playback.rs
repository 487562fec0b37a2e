//! Playback grants: signing a path to an asset's playlists, and checking one on the
//! segment hot path without touching the database.

use sluice_storage::keys;

use crate::{AssetStatus, Engine, Error, PlaybackGrant, Principal, Result};

impl Engine {
    /// A signed playback grant for the master playlist of a ready asset.
    pub async fn playback_grant(
        &self,
        who: &Principal,
        id: &str,
        ttl_s: Option<u64>,
    ) -> Result<PlaybackGrant> {
        let asset = self.get_asset(who, id).await?;
        if asset.status != AssetStatus::Ready {
            return Err(Error::Conflict(format!(
                "asset {id} is {} and cannot be played yet",
                asset.status.as_str()
            )));
        }
        self.sign_playback(&asset.tenant_id, &asset.id, "master.m3u8", ttl_s)
    }

    /// A signed grant to play `entry` of an asset.
    pub(crate) fn sign_playback(
        &self,
        tenant: &str,
        asset: &str,
        entry: &str,
        ttl_s: Option<u64>,
    ) -> Result<PlaybackGrant> {
        let cfg = &self.inner.config.playback;
        let ttl = ttl_s.unwrap_or(cfg.default_ttl_s);
        if ttl == 0 || ttl > cfg.max_ttl_s {
            return Err(Error::InvalidInput(format!(
                "ttl_s must be between 1 and {}",
                cfg.max_ttl_s
            )));
        }
        let expires = (self.now_ms() / 1000) as u64 + ttl;
        let resource = format!("{tenant}/{asset}");
        let token = self.inner.signer.sign(&resource, expires);
        Ok(PlaybackGrant {
            tenant: tenant.to_string(),
            asset: asset.to_string(),
            token,
            entry: entry.to_string(),
            expires,
        })
    }

    /// Check a playback token for an asset and answer when it expires (unix seconds): a
    /// caching edge keeps its verdict no longer than that.
    pub fn playback_expires(&self, tenant: &str, asset: &str, token: &str) -> Result<u64> {
        let resource = format!("{tenant}/{asset}");
        Ok(self
            .inner
            .signer
            .verify(&resource, token, (self.now_ms() / 1000) as u64)?)
    }

    /// The object key of a playback entry, for an admin fetching it without a token (an
    /// edge purge); the entry is validated like a viewer's.
    pub fn playback_object(&self, tenant: &str, asset: &str, entry: &str) -> Result<String> {
        Ok(keys::playback_object(tenant, asset, entry)?)
    }

    /// Unix seconds now, by the engine's clock.
    pub fn now_s(&self) -> u64 {
        (self.now_ms() / 1000) as u64
    }

    /// Check a playback request and return the object key it names. No database access:
    /// the token binds tenant and asset, so the segment hot path is pure computation.
    pub fn resolve_playback(
        &self,
        tenant: &str,
        asset: &str,
        token: &str,
        rel: &str,
    ) -> Result<String> {
        self.verify_playback(tenant, asset, token)?;
        Ok(keys::playback_object(tenant, asset, rel)?)
    }

    /// Check a playback token alone, for what a playback URL serves that is no object of
    /// the asset (the watch page's player files). No database access.
    pub fn verify_playback(&self, tenant: &str, asset: &str, token: &str) -> Result<()> {
        let resource = format!("{tenant}/{asset}");
        self.inner
            .signer
            .verify(&resource, token, (self.now_ms() / 1000) as u64)?;
        Ok(())
    }
}
