//! What to simulate: the scenario's settings, their checks and the fixed
//! constants of every simulation.

use crate::pool::Selection;
use crate::time::Timestamp;
use std::time::Duration;

/// The platform the simulated keys are published to.
pub const PLATFORM: &str = "github_rest";

/// The seed used when none is given.
pub const DEFAULT_SEED: u64 = 42;

/// The virtual wall-clock time at which every simulation starts:
/// 2026-01-01T00:00:00Z. Reported times are relative to it.
pub const START: Timestamp = Timestamp::from_secs(1_767_225_600);

/// What to simulate. [`SimConfig::default`] is the README's scenario: 20 keys (one
/// of them invalid), 200 workers at one call per second for 24 hours, against
/// GitHub's REST quota of 5 000 calls per hour.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Keys published, including the invalid ones.
    pub keys: usize,
    /// How many of the keys are bad (every call with them gets a 401).
    pub invalid: usize,
    /// Workers calling the API.
    pub workers: usize,
    /// Calls per worker per second while it holds a key (the interval between two
    /// calls is rounded to a whole millisecond, so at most 1 000).
    pub rate: f64,
    /// How much virtual time to simulate.
    pub duration: Duration,
    /// Calls each key may make per window.
    pub quota: u64,
    /// The length of a quota window (at least one second).
    pub window: Duration,
    /// When set, a worker gives a key up as soon as an answer shows fewer than
    /// this many calls remaining (Augur uses 50), instead of waiting for a 403.
    pub floor: Option<u64>,
    /// The seed of every random choice (the engine's and the workers').
    pub seed: u64,
    /// How often the key states are sampled for
    /// [`Report::samples`](super::Report::samples).
    pub sample_every: Duration,
    /// How the workers use their keys.
    pub clients: ClientBehaviour,
    /// Whose wait policy answers NEW when no key is fresh.
    pub orchestrator: Orchestrator,
    /// Calls per hour the donor of the first valid key makes with it outside
    /// keyman (0: none). Their calls spend the same quota.
    pub donor_calls: u64,
    /// When set, the keys belong to this many accounts (key `i` to account
    /// `i % accounts`) and the keys of one account share one quota.
    pub accounts: Option<usize>,
    /// How far the platform's clock is ahead of ours (negative: behind), in
    /// seconds; the API's `x-ratelimit-reset` and `Date` headers use its clock.
    pub skew_seconds: i64,
    /// When set, a secondary limit: a call made while this many calls of the same
    /// account are in flight (a call is in flight for one call interval) gets a
    /// 403 with `Retry-After`.
    pub max_concurrent: Option<u64>,
    /// Workers start one after another over this time (worker `i` of `n` at
    /// `i × ramp_up / n`, plus a random part of a call interval), as a fleet of
    /// processes started in turn does; zero (the default): all within the first
    /// call interval.
    pub ramp_up: Duration,
    /// How keyman's engine chooses among fresh keys (the model of Augur's
    /// orchestrator always chooses uniformly).
    pub selection: Selection,
    /// Whether keyman's engine staggers its wait hints over the upcoming
    /// refreshes ([`EngineConfig::stagger_waits`](crate::EngineConfig::stagger_waits));
    /// on by default, as in `serve`.
    pub stagger_waits: bool,
    /// Whether the engine probes the simulated API about each key (its
    /// `/rate_limit`, answered in virtual time after [`PROBE_LATENCY`]), with
    /// the default [`ProbeConfig`](crate::probe::ProbeConfig).
    pub probe: bool,
}

/// How long the simulated API takes to answer a probe.
pub const PROBE_LATENCY: Duration = Duration::from_millis(100);

/// How the simulated workers use a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientBehaviour {
    /// As Augur's `GithubDataAccess`: hold one key until a 403 (or, with a
    /// floor, until the remaining count falls under it), then EXPIRE with the
    /// reset header as it reads; learn nothing else from the headers.
    #[default]
    Augur,
    /// Keyman-aware: borrow calls in leases (NEW with `lease` and `hold_ms`),
    /// end each with a REPORT of the rate-limit headers and the calls made,
    /// stop early when the headers say the key is spent, limited or bad; with
    /// a key that comes without a lease, read the headers alone (see the
    /// [module docs](super)).
    Keyman,
}

/// Whose policy answers a NEW when no key is fresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Orchestrator {
    /// keyman's engine as it is.
    #[default]
    Keyman,
    /// A model of Augur's orchestrator: the same engine with uniform choice
    /// among fresh keys, every wait hint for the earliest refresh with
    /// [`AUGUR_WAIT_EXTRA`] added (Augur's hint is the seconds until the
    /// earliest refresh plus 5), and none of the extensions: no held requests,
    /// no leases (a NEW with `lease` gets a plain key), no floors or accounts.
    Augur,
}

/// What the [`Orchestrator::Augur`] model adds to every wait hint.
pub const AUGUR_WAIT_EXTRA: Duration = Duration::from_secs(5);

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            keys: 20,
            invalid: 1,
            workers: 200,
            rate: 1.0,
            duration: Duration::from_secs(24 * 3600),
            quota: 5000,
            window: Duration::from_secs(3600),
            floor: None,
            seed: DEFAULT_SEED,
            sample_every: Duration::from_secs(15 * 60),
            clients: ClientBehaviour::Augur,
            orchestrator: Orchestrator::Keyman,
            donor_calls: 0,
            accounts: None,
            skew_seconds: 0,
            max_concurrent: None,
            ramp_up: Duration::ZERO,
            selection: Selection::Uniform,
            stagger_waits: true,
            probe: false,
        }
    }
}

/// Why a [`SimConfig`] cannot be simulated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// At least one key is needed.
    #[error("at least one key is needed")]
    NoKeys,
    /// More invalid keys than keys.
    #[error("{invalid} invalid keys among only {keys} keys")]
    TooManyInvalid {
        /// Invalid keys asked for.
        invalid: usize,
        /// Keys in all.
        keys: usize,
    },
    /// At least one worker is needed.
    #[error("at least one worker is needed")]
    NoWorkers,
    /// The rate is not a number of calls per second in `(0, 1000]`.
    #[error("the rate must be more than 0 and at most 1000 calls per second, not {0}")]
    Rate(f64),
    /// The duration is zero or longer than ten years.
    #[error("the duration must be more than zero and at most ten years")]
    Duration,
    /// The quota is zero.
    #[error("the quota must be at least one call per window")]
    Quota,
    /// The window is shorter than a second or longer than ten years.
    #[error("the window must be at least one second and at most ten years")]
    Window,
    /// The sampling interval is zero.
    #[error("the sampling interval must be more than zero")]
    SampleEvery,
    /// The number of accounts is zero.
    #[error("at least one account is needed")]
    Accounts,
    /// The donor makes more than one call per second or no key is valid.
    #[error("the donor makes at most 3600 calls per hour, with a valid key")]
    DonorCalls,
    /// The skew is more than a day either way.
    #[error("the clock skew must be at most a day either way")]
    Skew,
    /// The concurrency limit is zero.
    #[error("the concurrency limit must be at least one call")]
    MaxConcurrent,
    /// The ramp-up is not shorter than the duration.
    #[error("the ramp-up must be shorter than the duration")]
    RampUp,
}

const TEN_YEARS: Duration = Duration::from_secs(10 * 366 * 24 * 3600);

impl SimConfig {
    /// Checks that the configuration can be simulated.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.keys == 0 {
            return Err(ConfigError::NoKeys);
        }
        if self.invalid > self.keys {
            return Err(ConfigError::TooManyInvalid {
                invalid: self.invalid,
                keys: self.keys,
            });
        }
        if self.workers == 0 {
            return Err(ConfigError::NoWorkers);
        }
        if !(self.rate.is_finite() && self.rate > 0.0 && self.rate <= 1000.0) {
            return Err(ConfigError::Rate(self.rate));
        }
        if self.duration.is_zero() || self.duration > TEN_YEARS {
            return Err(ConfigError::Duration);
        }
        if self.quota == 0 {
            return Err(ConfigError::Quota);
        }
        if self.window < Duration::from_secs(1) || self.window > TEN_YEARS {
            return Err(ConfigError::Window);
        }
        if self.sample_every.is_zero() {
            return Err(ConfigError::SampleEvery);
        }
        if self.accounts == Some(0) {
            return Err(ConfigError::Accounts);
        }
        if self.donor_calls > 3600 || (self.donor_calls > 0 && self.invalid >= self.keys) {
            return Err(ConfigError::DonorCalls);
        }
        if self.skew_seconds.unsigned_abs() > 24 * 3600 {
            return Err(ConfigError::Skew);
        }
        if self.max_concurrent == Some(0) {
            return Err(ConfigError::MaxConcurrent);
        }
        if self.ramp_up >= self.duration {
            return Err(ConfigError::RampUp);
        }
        Ok(())
    }

    /// Whether anything beyond the original simulation is asked for (another
    /// client behaviour or orchestrator, or a scenario of the quota
    /// extension). Such runs make every call its own event.
    pub fn is_extended(&self) -> bool {
        self.clients != ClientBehaviour::Augur
            || self.orchestrator != Orchestrator::Keyman
            || self.donor_calls > 0
            || self.accounts.is_some()
            || self.skew_seconds != 0
            || self.max_concurrent.is_some()
    }

    /// The account of key `key`.
    pub(super) fn account_of(&self, key: usize) -> usize {
        match self.accounts {
            Some(n) if n > 0 => key % n,
            _ => key,
        }
    }

    /// The interval between two calls of one worker, in milliseconds (at least 1).
    pub fn call_interval_ms(&self) -> u64 {
        // The rate is validated to (0, 1000], so this is between 1 and 1e3/rate.
        ((1000.0 / self.rate).round() as u64).max(1)
    }

    /// The most calls the valid keys' quotas allow in the simulated time: valid
    /// keys × quota × the windows that can begin within the duration.
    /// With [`SimConfig::accounts`], the smaller of the accounts and the valid
    /// keys takes the place of the valid keys.
    pub fn capacity(&self) -> u64 {
        let windows = millis(self.duration).div_ceil(millis(self.window).max(1));
        let mut valid = self.keys - self.invalid.min(self.keys);
        if let Some(accounts) = self.accounts {
            valid = valid.min(accounts);
        }
        (valid as u64)
            .saturating_mul(self.quota)
            .saturating_mul(windows)
    }
}

pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate::run;

    #[test]
    fn invalid_configurations_are_refused() {
        let ok = SimConfig::default();
        assert_eq!(ok.validate(), Ok(()));
        let bad = [
            SimConfig {
                keys: 0,
                ..ok.clone()
            },
            SimConfig {
                invalid: 21,
                ..ok.clone()
            },
            SimConfig {
                workers: 0,
                ..ok.clone()
            },
            SimConfig {
                rate: 0.0,
                ..ok.clone()
            },
            SimConfig {
                rate: f64::NAN,
                ..ok.clone()
            },
            SimConfig {
                rate: 5000.0,
                ..ok.clone()
            },
            SimConfig {
                duration: Duration::ZERO,
                ..ok.clone()
            },
            SimConfig {
                quota: 0,
                ..ok.clone()
            },
            SimConfig {
                window: Duration::from_millis(10),
                ..ok.clone()
            },
            SimConfig {
                sample_every: Duration::ZERO,
                ..ok.clone()
            },
        ];
        for c in bad {
            assert!(run(&c, &mut |_| {}).is_err(), "{c:?}");
        }
    }

    #[test]
    fn capacity_counts_valid_keys_times_quota_times_windows() {
        let c = SimConfig::default();
        assert_eq!(c.capacity(), 19 * 5000 * 24);
        let c = SimConfig {
            duration: Duration::from_secs(5400),
            ..SimConfig::default()
        };
        assert_eq!(c.capacity(), 19 * 5000 * 2);
    }
}
