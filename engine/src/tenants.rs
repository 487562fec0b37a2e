//! Tenants (created by the platform admin) and their storage usage.

use crate::limits::RateLimit;
use crate::secrets::hash_key;
use crate::{Engine, Error, NewTenant, Principal, Result, TenantQuotas, random_token, store};

impl Engine {
    /// Create a tenant and its first API key (admin only).
    pub async fn create_tenant(&self, who: &Principal, name: &str) -> Result<NewTenant> {
        self.create_tenant_with(who, name, TenantQuotas::default())
            .await
    }

    /// Create a tenant with quotas (admin only).
    pub async fn create_tenant_with(
        &self,
        who: &Principal,
        name: &str,
        quotas: TenantQuotas,
    ) -> Result<NewTenant> {
        self.create_tenant_limited(who, name, quotas, None).await
    }

    /// Create a tenant with quotas, its own rate limit, and its first API key (admin only).
    pub async fn create_tenant_limited(
        &self,
        who: &Principal,
        name: &str,
        quotas: TenantQuotas,
        rate_limit: Option<RateLimit>,
    ) -> Result<NewTenant> {
        if *who != Principal::Admin {
            return Err(Error::Forbidden("creating tenants needs the admin key"));
        }
        let name = name.trim();
        if name.is_empty() || name.len() > 200 {
            return Err(Error::InvalidInput(
                "tenant name must be 1 to 200 characters".into(),
            ));
        }
        crate::quotas::validate_limits(&quotas, rate_limit.as_ref())?;
        let id = ulid::Ulid::new().to_string();
        let api_key = format!("sk_{}", random_token(24));
        store::insert_tenant(
            &self.inner.db,
            &id,
            name,
            &hex::encode(hash_key(&api_key)),
            &store::LimitsRow {
                quotas: quotas.clone(),
                rate_limit,
            },
            self.now_ms(),
        )
        .await?;
        tracing::info!(tenant = %id, "tenant created");
        Ok(NewTenant {
            id,
            name: name.to_string(),
            api_key,
            quotas,
            rate_limit,
        })
    }

    /// The caller's storage quota and usage in bytes (sources plus reserved uploads).
    pub async fn storage_usage(&self, who: &Principal) -> Result<(Option<u64>, u64)> {
        let tenant = self.tenant_of(who)?;
        store::storage_usage(&self.inner.db, tenant).await
    }
}
