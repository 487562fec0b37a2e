//! Device credentials: a tenant mints a key per camera or device. A device key uploads for
//! its tenant (tus and raw uploads, its own uploads only) and does nothing else; revoking
//! the device revokes the key in the same transaction, and since keys are checked against
//! the database on every request, the next request on any gateway gets 401.

use std::collections::HashMap;

use crate::model::{AssetStatus, Device, DeviceUpload, NewDevice, Principal};
use crate::secrets::hash_key;
use crate::{Engine, Error, Result, random_token, rfc3339_ms, store};

/// `last_seen_at` is written at most this often per device (one UPDATE, not one per
/// request of a chatty uploader).
pub(crate) const LAST_SEEN_THROTTLE_MS: i64 = 5_000;

/// How many recent uploads a device listing shows.
const LAST_UPLOADS: i64 = 5;

impl Engine {
    /// `POST /v1/devices`: a new device and its key (shown once).
    pub async fn create_device(&self, who: &Principal, name: &str) -> Result<NewDevice> {
        let tenant = self.tenant_of(who)?;
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
            return Err(Error::InvalidInput(
                "device name must be 1 to 200 printable characters".into(),
            ));
        }
        let id = ulid::Ulid::new().to_string();
        let key = format!("dk_{}", random_token(24));
        let now = self.now_ms();
        store::insert_device(
            &self.inner.db,
            &id,
            tenant,
            name,
            &hex::encode(hash_key(&key)),
            now,
        )
        .await?;
        tracing::info!(tenant, device = %id, "device created");
        Ok(NewDevice {
            id,
            name: name.to_string(),
            key,
            created_at: rfc3339_ms(now),
        })
    }

    /// `GET /v1/devices`: the tenant's devices with their latest uploads.
    pub async fn list_devices(&self, who: &Principal) -> Result<Vec<Device>> {
        let tenant = self.tenant_of(who)?;
        self.devices(tenant, None).await
    }

    /// `GET /v1/devices/{id}`
    pub async fn get_device(&self, who: &Principal, id: &str) -> Result<Device> {
        let tenant = self.tenant_of(who)?;
        self.devices(tenant, Some(id))
            .await?
            .pop()
            .ok_or_else(|| Error::not_found("device", id))
    }

    /// Revoke a device: its key is refused from the next request on. Revoking twice keeps
    /// the first revocation time.
    pub async fn revoke_device(&self, who: &Principal, id: &str) -> Result<Device> {
        let tenant = self.tenant_of(who)?;
        if !store::revoke_device(&self.inner.db, tenant, id, self.now_ms()).await? {
            return Err(Error::not_found("device", id));
        }
        tracing::info!(tenant, device = id, "device revoked");
        self.get_device(who, id).await
    }

    async fn devices(&self, tenant: &str, id: Option<&str>) -> Result<Vec<Device>> {
        let rows = store::devices(&self.inner.db, tenant, id).await?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let mut uploads: HashMap<String, Vec<DeviceUpload>> = HashMap::new();
        for (device, asset, status, created) in
            store::device_uploads(&self.inner.db, tenant, id, LAST_UPLOADS).await?
        {
            uploads.entry(device).or_default().push(DeviceUpload {
                asset_id: asset,
                status: AssetStatus::parse(&status).unwrap_or(AssetStatus::Failed),
                created_at: rfc3339_ms(created),
            });
        }
        Ok(rows
            .into_iter()
            .map(|(id, name, created, revoked, seen)| Device {
                last_uploads: uploads.remove(&id).unwrap_or_default(),
                id,
                name,
                created_at: rfc3339_ms(created),
                revoked_at: revoked.map(rfc3339_ms),
                last_seen_at: seen.map(rfc3339_ms),
            })
            .collect())
    }
}
