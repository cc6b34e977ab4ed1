//! [`QuotaConfig`]: the quota settings of an engine.

use super::{Account, DEFAULT_LEASE_TTL, DEFAULT_MAX_LEASES, DEFAULT_WINDOW};
use crate::pool::Selection;
use std::collections::BTreeMap;
use std::time::Duration;

/// The quota settings of an [`Engine`](crate::Engine): floors, lease limits, and
/// the choice strategy of each platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaConfig {
    /// Calls kept in reserve per platform: a key whose account has this many
    /// remaining calls or fewer is withheld until its reset, and no lease takes
    /// it below. Platforms not named have no floor (0).
    pub floors: BTreeMap<String, u64>,
    /// Floors of single accounts (platform, then account name), over the
    /// platform's.
    pub account_floors: BTreeMap<String, BTreeMap<String, u64>>,
    /// The choice strategy of single platforms, over
    /// [`EngineConfig::selection`](crate::EngineConfig::selection).
    pub selections: BTreeMap<String, Selection>,
    /// The most leases outstanding at once per account; 0 means no leases.
    pub max_leases: usize,
    /// How long a lease lasts; after it the lease counts as fully used.
    pub lease_ttl: Duration,
    /// The quota window assumed when no reset time is known.
    pub window: Duration,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        Self {
            floors: BTreeMap::new(),
            account_floors: BTreeMap::new(),
            selections: BTreeMap::new(),
            max_leases: DEFAULT_MAX_LEASES,
            lease_ttl: DEFAULT_LEASE_TTL,
            window: DEFAULT_WINDOW,
        }
    }
}

impl QuotaConfig {
    /// The floor of `account` of `platform`.
    pub fn floor(&self, platform: &str, account: &Account) -> u64 {
        if let Account::Named(name) = account
            && let Some(f) = self.account_floors.get(platform).and_then(|m| m.get(name))
        {
            return *f;
        }
        self.floors.get(platform).copied().unwrap_or(0)
    }

    /// The choice strategy of `platform`, `default` when none is set for it.
    pub fn selection(&self, platform: &str, default: Selection) -> Selection {
        self.selections.get(platform).copied().unwrap_or(default)
    }
}
