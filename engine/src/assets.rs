//! Assets as their tenant sees them, and their original bytes.

use sluice_storage::keys;

use crate::{Asset, AssetStatus, Engine, Error, Principal, Result, store};

impl Engine {
    // ---- assets -------------------------------------------------------------------------

    pub async fn get_asset(&self, who: &Principal, id: &str) -> Result<Asset> {
        let tenant = self.tenant_of(who)?;
        store::get_asset(&self.inner.db, tenant, id)
            .await?
            .ok_or_else(|| Error::not_found("asset", id))
    }

    /// The original bytes of an asset, streamed from the hot tier.
    pub async fn asset_source(
        &self,
        who: &Principal,
        id: &str,
    ) -> Result<(
        Asset,
        sluice_storage::ObjectInfo,
        sluice_storage::ByteStream,
    )> {
        let asset = self.get_asset(who, id).await?;
        if asset.status == AssetStatus::Uploading {
            return Err(Error::Conflict(
                "the upload of this asset is not complete".into(),
            ));
        }
        let readable = self.readable(&asset.tenant_id, &asset.id).await?;
        let (info, stream) = readable
            .storage
            .get_stream(&keys::source(&asset.tenant_id, &asset.id), None)
            .await?;
        Ok((asset, info, stream))
    }
}
