//! What a simulation reports: its settings, the counts and the key states over
//! time, serializable as JSON.

use super::config::{ClientBehaviour, Orchestrator, SimConfig};
use crate::pool::Selection;
use serde::Serialize;

/// The settings a [`Report`] was made with, in plain numbers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Settings {
    /// Keys published, including the invalid ones.
    pub keys: usize,
    /// Invalid keys among them.
    pub invalid: usize,
    /// Workers.
    pub workers: usize,
    /// Calls per worker per second.
    pub rate: f64,
    /// Simulated time, in seconds.
    pub duration_seconds: f64,
    /// Calls per key per window.
    pub quota: u64,
    /// The quota window, in seconds.
    pub window_seconds: f64,
    /// The remaining count under which workers give a key up, if any.
    pub floor: Option<u64>,
    /// The seed.
    pub seed: u64,
    /// The sampling interval, in seconds.
    pub sample_every_seconds: f64,
    /// How the workers use their keys.
    pub clients: ClientBehaviour,
    /// Whose wait policy answered NEW.
    pub orchestrator: Orchestrator,
    /// Calls per hour of the donor outside keyman (0: none).
    pub donor_calls: u64,
    /// Accounts the keys belong to, if grouped.
    pub accounts: Option<usize>,
    /// The platform's clock minus ours, in seconds.
    pub skew_seconds: i64,
    /// The secondary limit on calls of one account in flight, if any.
    pub max_concurrent: Option<u64>,
    /// The time over which the workers started, in seconds.
    pub ramp_up_seconds: f64,
    /// How keyman's engine chose among fresh keys: `uniform`, `round-robin`,
    /// `most-remaining`, `weighted-remaining` or `least-assigned`.
    pub selection: String,
    /// Whether keyman's engine staggered its wait hints.
    pub stagger_waits: bool,
    /// Whether the engine probed the API about its keys.
    pub probe: bool,
}

impl From<&SimConfig> for Settings {
    fn from(c: &SimConfig) -> Self {
        Self {
            keys: c.keys,
            invalid: c.invalid,
            workers: c.workers,
            rate: c.rate,
            duration_seconds: c.duration.as_secs_f64(),
            quota: c.quota,
            window_seconds: c.window.as_secs_f64(),
            floor: c.floor,
            seed: c.seed,
            sample_every_seconds: c.sample_every.as_secs_f64(),
            clients: c.clients,
            orchestrator: c.orchestrator,
            donor_calls: c.donor_calls,
            accounts: c.accounts,
            skew_seconds: c.skew_seconds,
            max_concurrent: c.max_concurrent,
            ramp_up_seconds: c.ramp_up.as_secs_f64(),
            selection: selection_name(c.selection).to_string(),
            stagger_waits: c.stagger_waits,
            probe: c.probe,
        }
    }
}

/// The name of a choice strategy, as the command line spells it.
pub fn selection_name(selection: Selection) -> &'static str {
    match selection {
        Selection::Uniform => "uniform",
        Selection::RoundRobin => "round-robin",
        Selection::MostRemaining => "most-remaining",
        Selection::WeightedRemaining => "weighted-remaining",
        Selection::LeastAssigned => "least-assigned",
    }
}

/// The key states as the engine reported them (STATUS) at one moment, and how
/// many workers were waiting for a key.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sample {
    /// Seconds since the start of the simulation.
    pub at_seconds: u64,
    /// Keys the engine may hand out.
    pub fresh: u64,
    /// Keys reported rate limited, waiting for their reset.
    pub expired: u64,
    /// Keys reported invalid.
    pub invalid: u64,
    /// Workers without a key at that moment.
    pub workers_waiting: u64,
    /// Workers without a key on average since the previous sample (at the first
    /// sample, the same as `workers_waiting`).
    pub workers_waiting_mean: f64,
}

/// What happened in a simulation. Equal configurations give equal reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// What was simulated.
    pub settings: Settings,
    /// API calls answered with a 2xx.
    pub calls_served: u64,
    /// API calls of the workers answered with a 403 (over quota, or a secondary
    /// limit): `forbidden_own + forbidden_outside`.
    pub rate_limited: u64,
    /// 403s caused by keyman's own grants: the workers' own calls had spent the
    /// window's quota, or too many of them were in flight (secondary limit).
    pub forbidden_own: u64,
    /// 403s caused by use outside keyman: the donor's calls spent the quota that
    /// the workers' own calls had not.
    pub forbidden_outside: u64,
    /// Of `forbidden_own`, the secondary-limit 403s (too many calls in flight).
    pub secondary_limited: u64,
    /// Calls served to the workers that left their account fewer calls than the
    /// floor (0 without a floor).
    pub calls_below_floor: u64,
    /// Calls the donor made with their key outside keyman.
    pub donor_calls_made: u64,
    /// Of them, calls served.
    pub donor_calls_served: u64,
    /// Of them, calls refused (the quota spent).
    pub donor_forbidden: u64,
    /// NEW answered with a lease (keyman-aware workers).
    pub leases_granted: u64,
    /// REPORT messages the keyman-aware workers sent.
    pub reports_sent: u64,
    /// Messages the engine rejected (an engine without the quota extension
    /// rejects every REPORT).
    pub engine_rejected: u64,
    /// Times a key ran out: the first 403 of the workers' own calls in a
    /// window of the key's account.
    pub key_run_outs: u64,
    /// How many workers held a key when it ran out (the median over
    /// `key_run_outs`; 0 when no key ran out). Each of them gets a 403 with
    /// Augur's clients: a herd on one key makes this high.
    pub holders_at_run_out_median: f64,
    /// API calls answered with a 401 (bad key).
    pub unauthorized: u64,
    /// Probes the engine made (0 without probes); they spend no quota.
    pub probes: u64,
    /// Calls the workers would have made had they never waited for a key.
    pub demand: u64,
    /// The most calls the valid keys' quotas allow in the simulated time
    /// ([`SimConfig::capacity`]).
    pub capacity: u64,
    /// `calls_served / min(demand, capacity)`: how much of what was possible
    /// keyman made possible.
    pub utilization: f64,
    /// Time all workers spent without a key, in seconds.
    pub waiting_seconds_total: f64,
    /// The same per worker, in seconds.
    pub waiting_seconds_per_worker: f64,
    /// The share of the workers' time spent without a key.
    pub waiting_share: f64,
    /// NEW answered with a key.
    pub keys_handed_out: u64,
    /// NEW answered with `{"wait": n}`.
    pub wait_replies: u64,
    /// NEW answered with an error (no usable key).
    pub error_replies: u64,
    /// EXPIRE messages the workers sent.
    pub expire_reports: u64,
    /// INVALIDATE messages the workers sent.
    pub invalidate_reports: u64,
    /// Times the engine moved a key to expired (or extended its expiry).
    pub keys_expired: u64,
    /// Times the engine moved a key to invalid.
    pub keys_invalidated: u64,
    /// NEW answers that carried a key after the engine had invalidated it (an
    /// invalid key handed out again). Always 0 unless the engine is wrong.
    pub invalid_handouts_after_invalidation: u64,
    /// Calls the simulated API served beyond a key's quota in its window. Always
    /// 0 unless the simulation is wrong: the API checks it independently.
    pub over_quota_successes: u64,
    /// Calls served with a bad key. Always 0 unless the simulation is wrong.
    pub invalid_key_successes: u64,
    /// The key states over time, every [`SimConfig::sample_every`] and at the end.
    pub samples: Vec<Sample>,
}
