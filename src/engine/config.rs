//! How an [`Engine`](super::Engine) is set up.

use crate::pool::Selection;
use crate::probe::ProbeConfig;
use crate::protocol::{Channels, DEFAULT_MAX_PAYLOAD};
use crate::quota::QuotaConfig;
use std::time::Duration;

/// The default of [`EngineConfig::max_platforms`].
pub const DEFAULT_MAX_PLATFORMS: usize = 1_000;

/// The default of [`EngineConfig::max_keys_per_platform`].
pub const DEFAULT_MAX_KEYS_PER_PLATFORM: usize = 1_000_000;

/// How an [`Engine`](super::Engine) is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// The ids of the request channels (Augur's by default).
    pub channels: Channels,
    /// The largest payload handled; larger ones are rejected unread.
    pub max_payload: usize,
    /// How keys are chosen among the fresh ones.
    pub selection: Selection,
    /// The longest a NEW that asks to be held (`hold_ms`, ext) is held.
    pub max_hold: Duration,
    /// The most NEW requests held at once; beyond it they get `{"wait": n}` at once.
    pub max_held: usize,
    /// The furthest ahead an EXPIRE may park a key: a later refresh time (a
    /// wrong header, a bad client) is cut to `now + max_expiry`, so that no key
    /// is lost for years. One day and an hour by default (daily quotas).
    pub max_expiry: Duration,
    /// Spread the waits of a platform over its upcoming refreshes: when many
    /// requests find no fresh key, each rate-limited key is the one they are
    /// told to wait for (`{"wait": n}`, or the time [`Engine::assign`]
    /// answers) for about its share of them, earliest first, instead of all of
    /// them waking at the earliest refresh onto the one key that came back. A
    /// lone waiter is told the earliest refresh. On by default; off, every
    /// wait names the earliest refresh.
    ///
    /// [`Engine::assign`]: super::Engine::assign
    pub stagger_waits: bool,
    /// Learn how far behind ours a platform's clock is from the EXPIREs whose
    /// reset time has already passed by our clock, and keep such keys (and
    /// the platform's later EXPIREs) expired until the platform's reset
    /// ([`Engine::expire`](super::Engine::expire)). On by default; off, such
    /// an EXPIRE changes nothing and the key stays fresh, as in Augur's
    /// orchestrator, whose workers then loop on 403s until the platform's
    /// clock reaches the reset (Augur #3598).
    pub learn_lag: bool,
    /// Quota awareness: floors per platform and account, the choice
    /// strategy per platform, the lease cap per account and lease duration.
    pub quota: QuotaConfig,
    /// The most platforms: a PUBLISH that would add one more is refused
    /// (logged and dropped). 1 000 by default.
    pub max_platforms: usize,
    /// The most keys of one platform, in any state: a PUBLISH of one more is
    /// refused (logged and dropped). 1 000 000 by default.
    pub max_keys_per_platform: usize,
    /// Probes of the platform's own view of each key (its quota, account,
    /// validity, expiry; see [`crate::probe`]); `None`, the default, probes
    /// nothing and changes nothing.
    pub probe: Option<ProbeConfig>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            channels: Channels::default(),
            max_payload: DEFAULT_MAX_PAYLOAD,
            selection: Selection::Uniform,
            max_hold: Duration::from_secs(60),
            max_held: 10_000,
            max_expiry: Duration::from_secs(25 * 3600),
            stagger_waits: true,
            learn_lag: true,
            quota: QuotaConfig::default(),
            max_platforms: DEFAULT_MAX_PLATFORMS,
            max_keys_per_platform: DEFAULT_MAX_KEYS_PER_PLATFORM,
            probe: None,
        }
    }
}
