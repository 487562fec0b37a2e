//! Roles and the one rule that relates them (docs/roles.md, docs/auth.md).
//!
//! Every endpoint declares the role it needs (the gateway's endpoint table); a caller
//! holds one role (its key's, or its JWT's role claim). [`Role::satisfies`] decides, and
//! nothing else does: the platform admin may do everything; ops may do the ops routes and
//! nothing tenant-scoped; a tenant admin holds the uploader's and the viewer's rights
//! within its tenant; an uploader only uploads; a viewer only reads. Which tenant a
//! tenant-scoped caller reaches is the engine's business (every query carries it).

use serde::{Deserialize, Serialize};

/// The contract's role values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The admin key: every tenant, every route.
    PlatformAdmin,
    /// Operations: the `/v1/ops/*` routes and the edge's admin routes; no tenant's data.
    Ops,
    /// What a tenant key from `POST /v1/tenants` is: everything within its tenant.
    TenantAdmin,
    /// What a device key is: uploads for its tenant and nothing else.
    Uploader,
    /// Read-only within its tenant (assets, jobs, live streams, playback URLs).
    Viewer,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::PlatformAdmin,
        Role::Ops,
        Role::TenantAdmin,
        Role::Uploader,
        Role::Viewer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::PlatformAdmin => "platform_admin",
            Role::Ops => "ops",
            Role::TenantAdmin => "tenant_admin",
            Role::Uploader => "uploader",
            Role::Viewer => "viewer",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Whether a caller holding `self` may use an endpoint that needs `required`.
    pub fn satisfies(self, required: Role) -> bool {
        match self {
            Role::PlatformAdmin => true,
            Role::Ops => required == Role::Ops,
            Role::TenantAdmin => {
                matches!(required, Role::TenantAdmin | Role::Uploader | Role::Viewer)
            }
            Role::Uploader => required == Role::Uploader,
            Role::Viewer => required == Role::Viewer,
        }
    }

    /// Whether the role belongs to one tenant (its keys and tokens name the tenant).
    pub fn is_tenant_scoped(self) -> bool {
        matches!(self, Role::TenantAdmin | Role::Uploader | Role::Viewer)
    }

    /// Whether a caller holding `self` may create a key of role `granted`: admins only, up
    /// to their own role; the platform admin also creates `ops` keys. No key is ever a
    /// `platform_admin` (that is the admin key, or a JWT).
    pub fn may_grant(self, granted: Role) -> bool {
        match self {
            Role::PlatformAdmin => granted != Role::PlatformAdmin,
            Role::TenantAdmin => granted.is_tenant_scoped(),
            _ => false,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::Role::{self, *};

    #[test]
    fn the_lattice() {
        // Allowed first: each role reaches its own routes.
        for r in Role::ALL {
            assert!(r.satisfies(r), "{r}");
            assert!(PlatformAdmin.satisfies(r), "{r}");
        }
        assert!(TenantAdmin.satisfies(Uploader));
        assert!(TenantAdmin.satisfies(Viewer));
        // Then the refusals.
        assert!(!Ops.satisfies(PlatformAdmin), "ops cannot create tenants");
        assert!(!Ops.satisfies(TenantAdmin));
        assert!(!Ops.satisfies(Viewer), "ops reads no tenant's data");
        assert!(!TenantAdmin.satisfies(Ops));
        assert!(!TenantAdmin.satisfies(PlatformAdmin));
        assert!(!Viewer.satisfies(Uploader), "a viewer cannot upload");
        assert!(!Uploader.satisfies(Viewer), "an uploader cannot read");
        assert!(!Uploader.satisfies(TenantAdmin));
        assert!(!Viewer.satisfies(TenantAdmin));
    }

    #[test]
    fn granting_keys_goes_up_to_ones_own_role() {
        assert!(TenantAdmin.may_grant(Viewer));
        assert!(TenantAdmin.may_grant(Uploader));
        assert!(TenantAdmin.may_grant(TenantAdmin));
        assert!(PlatformAdmin.may_grant(TenantAdmin));
        assert!(PlatformAdmin.may_grant(Ops));
        assert!(!TenantAdmin.may_grant(Ops));
        assert!(!TenantAdmin.may_grant(PlatformAdmin));
        assert!(!Viewer.may_grant(Uploader));
        assert!(!Viewer.may_grant(Viewer), "only admins manage keys");
        assert!(!Uploader.may_grant(Uploader));
        assert!(!Ops.may_grant(Viewer));
        assert!(!PlatformAdmin.may_grant(PlatformAdmin));
    }

    #[test]
    fn names_round_trip() {
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert_eq!(Role::parse("admin"), None);
        assert_eq!(Role::parse(""), None);
    }
}
