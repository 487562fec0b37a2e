//! Storage tiers: the named stores ([`Stores`]), the tiers they hold, the copies of each
//! asset (`asset_copies`) and where playback reads an asset from.
//!
//! An asset has one or more copies, each in one tier and one store, in a state:
//! `active` (its home), `restored` (a temporary readable copy of an archived asset, until
//! `expires_at`) or `draining` (being moved away: still readable until its objects go).
//! Reads resolve restored → active → draining; an asset whose only copies are cold is
//! archived and not served (409 `archived`), on any backend.

mod copies;
mod copy;
mod jobs;
pub(crate) mod resolve;
mod usage;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sluice_storage::Storage;

use crate::config::StorageConfig;
use crate::{Error, Result};

pub use crate::store::{CopyKey, CopyRow};
pub use copies::CopyChange;
pub use copy::{FailedObject, TierJobResult};
pub use jobs::{EXPIRE_KIND, MAX_RESTORE_DAYS, RESTORE_KIND, TIER_KIND};
pub use resolve::Readable;

/// The name of the store that `hot_dir` / `[storage.s3]` (or the default data-dir store)
/// defines.
pub const LEGACY_HOT: &str = "hot";

/// A storage tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Hot,
    Warm,
    Cold,
}

impl Tier {
    pub const ALL: [Tier; 3] = [Tier::Hot, Tier::Warm, Tier::Cold];

    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Hot => "hot",
            Tier::Warm => "warm",
            Tier::Cold => "cold",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "hot" => Some(Tier::Hot),
            "warm" => Some(Tier::Warm),
            "cold" => Some(Tier::Cold),
            _ => None,
        }
    }
}

/// The state of one copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CopyState {
    Active,
    Restored,
    Draining,
}

impl CopyState {
    pub fn as_str(self) -> &'static str {
        match self {
            CopyState::Active => "active",
            CopyState::Restored => "restored",
            CopyState::Draining => "draining",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(CopyState::Active),
            "restored" => Some(CopyState::Restored),
            "draining" => Some(CopyState::Draining),
            _ => None,
        }
    }
}

/// The named stores and the tier → store map, opened once by [`crate::Engine::open`] and
/// shared by the gateway and the workers (`Engine::stores`). Cheap to clone.
#[derive(Clone, Debug)]
pub struct Stores {
    inner: Arc<StoresInner>,
}

#[derive(Debug)]
struct StoresInner {
    by_name: BTreeMap<String, Storage>,
    /// The store name of hot, warm, cold.
    tiers: [Option<String>; 3],
}

impl Stores {
    /// Open every configured store: `hot` from `hot_dir` / `[storage.s3]` (default
    /// `hot_dir`) unless `[storage.stores.hot]` defines it, then each `[storage.stores]`.
    pub fn open(config: &StorageConfig, default_hot_dir: &Path) -> Result<Self> {
        config.validate_stores()?;
        let tiers = [
            Some(
                config
                    .tiers
                    .hot
                    .clone()
                    .unwrap_or_else(|| LEGACY_HOT.to_string()),
            ),
            config.tiers.warm.clone(),
            config.tiers.cold.clone(),
        ];
        let label = |name: &str| -> &'static str {
            Tier::ALL
                .iter()
                .zip(&tiers)
                .find(|(_, n)| n.as_deref() == Some(name))
                .map_or("none", |(t, _)| t.as_str())
        };
        let mut by_name = BTreeMap::new();
        if !config.stores.contains_key(LEGACY_HOT) {
            let hot = match &config.s3 {
                Some(s3) => Storage::s3(s3)?,
                None => Storage::local(config.hot_dir.as_deref().unwrap_or(default_hot_dir))?,
            };
            by_name.insert(
                LEGACY_HOT.to_string(),
                hot.named(LEGACY_HOT).with_tier_label(label(LEGACY_HOT)),
            );
        }
        for (name, store) in &config.stores {
            let s = store
                .open(name)
                .map_err(|e| Error::Config(e.to_string()))?
                .with_tier_label(label(name));
            by_name.insert(name.clone(), s);
        }
        Ok(Self {
            inner: Arc::new(StoresInner { by_name, tiers }),
        })
    }

    /// A store by name.
    pub fn get(&self, name: &str) -> Option<&Storage> {
        self.inner.by_name.get(name)
    }

    /// A store by name, or an error naming it (a copy row naming a store the config no
    /// longer defines).
    pub fn require(&self, name: &str) -> Result<&Storage> {
        self.get(name).ok_or_else(|| {
            Error::Config(format!(
                "store {name:?} holds copies but is not configured ([storage.stores.{name}])"
            ))
        })
    }

    /// The name of the store holding `tier`, if the tier is configured.
    pub fn store_name(&self, tier: Tier) -> Option<&str> {
        self.inner.tiers[tier as usize].as_deref()
    }

    /// The store of `tier`, if configured.
    pub fn tier(&self, tier: Tier) -> Option<&Storage> {
        self.store_name(tier).and_then(|n| self.get(n))
    }

    /// The hot store (always configured).
    pub fn hot(&self) -> &Storage {
        self.tier(Tier::Hot)
            .expect("the hot tier's store is validated at open")
    }

    /// Every store's name, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.inner.by_name.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_open_from_config_with_the_legacy_hot_store() {
        let dir = tempfile::tempdir().unwrap();
        let warm = dir.path().join("warm");
        let cfg = crate::Config::from_toml(&format!(
            "[storage.stores.warm]\nurl = \"file://{}\"\n[storage.tiers]\nwarm = \"warm\"\n",
            warm.display()
        ))
        .unwrap();
        let s = Stores::open(&cfg.storage, &dir.path().join("hot")).unwrap();
        assert_eq!(s.names().collect::<Vec<_>>(), ["hot", "warm"]);
        assert_eq!(s.store_name(Tier::Hot), Some("hot"));
        assert_eq!(s.tier(Tier::Warm).unwrap().name(), "warm");
        assert!(s.tier(Tier::Cold).is_none());
        assert_eq!(s.hot().name(), "hot");
        assert!(s.require("gone").is_err());
        // The hot tier on a named store.
        let cfg = crate::Config::from_toml(&format!(
            "[storage.stores.fast]\nurl = \"file://{}\"\n[storage.tiers]\nhot = \"fast\"\n",
            warm.display()
        ))
        .unwrap();
        let s = Stores::open(&cfg.storage, &dir.path().join("hot")).unwrap();
        assert_eq!(s.hot().name(), "fast");
        assert!(s.get("hot").is_some(), "the legacy store stays readable");
    }

    #[test]
    fn names_round_trip() {
        for t in Tier::ALL {
            assert_eq!(Tier::parse(t.as_str()), Some(t));
        }
        for c in [CopyState::Active, CopyState::Restored, CopyState::Draining] {
            assert_eq!(CopyState::parse(c.as_str()), Some(c));
        }
        assert_eq!(Tier::parse("HOT"), None);
    }
}
