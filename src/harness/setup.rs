//! [`Setup`]: the engine configuration a fuzz input or a property test runs
//! with: floors per platform and per named account, choice strategies per
//! platform, the lease cap and duration, staggered waits on or off.

use super::PLATFORMS;
use super::quota_ops::ACCOUNTS;
use crate::engine::EngineConfig;
use crate::pool::Selection;
use std::time::Duration;

/// How the engine under test is set up. Every field is small on purpose: a
/// floor of a few calls, leases of a few seconds, a cap of a few leases, so
/// that a short sequence of operations reaches them.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Setup {
    /// The floor of each platform of [`PLATFORMS`] (calls; none when `None`).
    pub floors: [Option<u8>; 3],
    /// The floor of the first named account of [`ACCOUNTS`] on the first
    /// platform, over the platform's.
    pub account_floor: Option<u8>,
    /// The strategy of each platform (`None`: the engine's, uniform).
    pub selections: [Option<Strategy>; 3],
    /// The most leases per account: this modulo 8, 100 (the default) for 7
    /// and none (keys only) for 0.
    pub max_leases: u8,
    /// How long a lease lasts: 1 + this modulo 120 seconds.
    pub lease_ttl: u8,
    /// Whether waits are not staggered.
    pub no_stagger: bool,
}

/// A choice strategy ([`Selection`]).
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Strategy {
    Uniform,
    RoundRobin,
    MostRemaining,
    WeightedRemaining,
    LeastAssigned,
}

impl Strategy {
    /// Every strategy.
    pub const ALL: [Strategy; 5] = [
        Strategy::Uniform,
        Strategy::RoundRobin,
        Strategy::MostRemaining,
        Strategy::WeightedRemaining,
        Strategy::LeastAssigned,
    ];

    /// The strategy as the engine knows it.
    pub fn selection(self) -> Selection {
        match self {
            Strategy::Uniform => Selection::Uniform,
            Strategy::RoundRobin => Selection::RoundRobin,
            Strategy::MostRemaining => Selection::MostRemaining,
            Strategy::WeightedRemaining => Selection::WeightedRemaining,
            Strategy::LeastAssigned => Selection::LeastAssigned,
        }
    }
}

impl Setup {
    /// The engine configuration: the default one with this setup's quota
    /// settings.
    pub fn config(&self) -> EngineConfig {
        let mut c = EngineConfig::default();
        for (i, platform) in PLATFORMS.iter().enumerate() {
            if let Some(f) = self.floors[i] {
                c.quota.floors.insert(platform.to_string(), u64::from(f));
            }
            if let Some(s) = self.selections[i] {
                c.quota
                    .selections
                    .insert(platform.to_string(), s.selection());
            }
        }
        if let Some(f) = self.account_floor {
            c.quota
                .account_floors
                .entry(PLATFORMS[0].to_string())
                .or_default()
                .insert(ACCOUNTS[0].to_string(), u64::from(f));
        }
        c.quota.max_leases = match self.max_leases % 8 {
            7 => crate::quota::DEFAULT_MAX_LEASES,
            n => usize::from(n),
        };
        c.quota.lease_ttl = Duration::from_secs(1 + u64::from(self.lease_ttl % 120));
        c.stagger_waits = !self.no_stagger;
        c
    }
}
