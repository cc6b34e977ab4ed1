//! What to simulate: the scenario's settings, their checks and the fixed
//! constants of every simulation.

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
}

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
        Ok(())
    }

    /// The interval between two calls of one worker, in milliseconds (at least 1).
    pub fn call_interval_ms(&self) -> u64 {
        // The rate is validated to (0, 1000], so this is between 1 and 1e3/rate.
        ((1000.0 / self.rate).round() as u64).max(1)
    }

    /// The most calls the valid keys' quotas allow in the simulated time: valid
    /// keys × quota × the windows that can begin within the duration.
    pub fn capacity(&self) -> u64 {
        let windows = millis(self.duration).div_ceil(millis(self.window).max(1));
        ((self.keys - self.invalid.min(self.keys)) as u64)
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
