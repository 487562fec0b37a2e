//! Playback grants: signing a path to an asset's playlists, and checking one on the
//! segment hot path without touching the database.

use std::net::IpAddr;

use sluice_cdn::ClientNet;
use sluice_cdn::cloudfront::CloudFrontSigner;
use sluice_storage::keys;

use crate::{AssetStatus, Engine, Error, PlaybackGrant, Principal, Result};

/// What a tenant asks of a playback URL (`POST …/playback`).
#[derive(Debug, Clone, Copy, Default)]
pub struct PlaybackOptions<'a> {
    /// Lifetime, seconds. Default: `playback.default_ttl_s`.
    pub ttl_s: Option<u64>,
    /// Bind the URL to a viewer's address or network (IP or CIDR text). Default: unbound.
    pub client_ip: Option<&'a str>,
}

impl Engine {
    /// A signed playback grant for the master playlist of a ready asset.
    pub async fn playback_grant(
        &self,
        who: &Principal,
        id: &str,
        opts: PlaybackOptions<'_>,
    ) -> Result<PlaybackGrant> {
        let asset = self.get_asset(who, id).await?;
        if asset.status != AssetStatus::Ready {
            return Err(Error::Conflict(format!(
                "asset {id} is {} and cannot be played yet",
                asset.status.as_str()
            )));
        }
        self.sign_playback(&asset.tenant_id, &asset.id, "master.m3u8", opts)
    }

    /// A signed grant to play `entry` of an asset.
    pub(crate) fn sign_playback(
        &self,
        tenant: &str,
        asset: &str,
        entry: &str,
        opts: PlaybackOptions<'_>,
    ) -> Result<PlaybackGrant> {
        let cfg = &self.inner.config.playback;
        let client = opts
            .client_ip
            .map(|c| c.parse::<ClientNet>())
            .transpose()
            .map_err(|e| Error::InvalidInput(format!("client_ip: {e}")))?;
        let ttl = opts.ttl_s.unwrap_or(cfg.default_ttl_s);
        if ttl == 0 || ttl > cfg.max_ttl_s {
            return Err(Error::InvalidInput(format!(
                "ttl_s must be between 1 and {}",
                cfg.max_ttl_s
            )));
        }
        let expires = (self.now_ms() / 1000) as u64 + ttl;
        let resource = format!("{tenant}/{asset}");
        let token = self.inner.signer.sign(&resource, expires, client.as_ref());
        Ok(PlaybackGrant {
            tenant: tenant.to_string(),
            asset: asset.to_string(),
            token,
            entry: entry.to_string(),
            expires,
            client,
        })
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

    /// The CloudFront signer and the distribution's base URL, when `[cdn.cloudfront]` is
    /// configured.
    pub fn cloudfront(&self) -> Option<(&CloudFrontSigner, &str)> {
        let cfg = self.inner.config.cdn.cloudfront.as_ref()?;
        Some((self.inner.cloudfront.as_ref()?, cfg.base_url()))
    }

    /// Check a playback request from a client at `client_ip` (`None`: unknown) and return
    /// the object key it names. No database access: the token binds tenant and asset, so
    /// the segment hot path is pure computation.
    pub fn resolve_playback(
        &self,
        tenant: &str,
        asset: &str,
        token: &str,
        rel: &str,
        client_ip: Option<IpAddr>,
    ) -> Result<String> {
        self.verify_playback(tenant, asset, token, client_ip)?;
        Ok(keys::playback_object(tenant, asset, rel)?)
    }

    /// Check a playback token alone, for a client at `client_ip`, and answer what it grants
    /// (its expiry: a caching edge keeps its verdict no longer). For what a playback URL
    /// serves that is no object of the asset (the watch page's player files) and for an
    /// edge's check. No database access.
    pub fn verify_playback(
        &self,
        tenant: &str,
        asset: &str,
        token: &str,
        client_ip: Option<IpAddr>,
    ) -> Result<sluice_cdn::Claims> {
        let resource = format!("{tenant}/{asset}");
        Ok(self
            .inner
            .signer
            .verify(&resource, token, self.now_s(), client_ip)?)
    }
}
