//! What the schedule keeps per token: its entry, the queues of due tokens,
//! the probes in flight, what is kept of tokens forgotten, and the earliest a
//! token may be probed.

use super::Urgency;
use crate::probe::Provider;
use crate::time::Timestamp;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

/// One token of one provider.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct Token {
    pub(super) provider: Provider,
    pub(super) key: Arc<str>,
}

/// What the schedule knows of one token.
#[derive(Debug, Clone, Default)]
pub(super) struct Entry {
    /// Platform → resource, for every platform of the provider it is on.
    pub(super) platforms: BTreeMap<String, String>,
    /// Where it is queued: (urgency, time, sequence).
    pub(super) queued: Option<(Urgency, Timestamp, u64)>,
    /// What was wanted while a probe was in flight.
    pub(super) wanted_after_flight: Option<(Urgency, Timestamp)>,
    /// The id of the probe in flight.
    pub(super) in_flight: Option<u64>,
    /// When the last probe was given out.
    pub(super) last_sent: Option<Timestamp>,
    /// Failed or throttled probes in a row.
    pub(super) failures: u32,
    /// No probe before this.
    pub(super) backoff_until: Option<Timestamp>,
    /// Handed out since the last probe was given out.
    pub(super) used: bool,
    /// The urgency of the probe in flight (a retry keeps it).
    pub(super) flight_urgency: Option<Urgency>,
    /// Whether the account is known (no `GET /user` needed).
    pub(super) account_known: bool,
}

/// The due keys of one provider.
#[derive(Debug, Clone, Default)]
pub(super) struct Queue {
    pub(super) urgent: BTreeSet<(Timestamp, u64, Token)>,
    pub(super) routine: BTreeSet<(Timestamp, u64, Token)>,
    /// No probe of the provider before this (it throttled one).
    pub(super) paused_until: Option<Timestamp>,
    /// Throttles in a row.
    pub(super) strikes: u32,
}

impl Queue {
    pub(super) fn set(&mut self, urgency: Urgency) -> &mut BTreeSet<(Timestamp, u64, Token)> {
        match urgency {
            Urgency::Urgent => &mut self.urgent,
            Urgency::Routine => &mut self.routine,
        }
    }

    /// The first due entry of each urgency.
    pub(super) fn head(&self, urgency: Urgency) -> Option<&(Timestamp, u64, Token)> {
        match urgency {
            Urgency::Urgent => self.urgent.first(),
            Urgency::Routine => self.routine.first(),
        }
    }
}

/// A probe given out and not yet answered.
#[derive(Debug, Clone)]
pub(super) struct InFlight {
    pub(super) token: Token,
    pub(super) deadline: Timestamp,
}

/// What is kept of a key no longer published, until its minimum interval and
/// backoff are over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Forgotten {
    pub(super) last_sent: Option<Timestamp>,
    pub(super) failures: u32,
    pub(super) backoff_until: Option<Timestamp>,
}

/// `at`, moved past the key's minimum interval and backoff.
pub(super) fn earliest_allowed(min_interval: Duration, entry: &Entry, at: Timestamp) -> Timestamp {
    let after_last = entry.last_sent.map(|t| t.saturating_add(min_interval));
    [Some(at), after_last, entry.backoff_until]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(at)
}

/// `base` doubled `n - 1` times, at most `max`.
pub(super) fn doubled(base: Duration, n: u32, max: Duration) -> Duration {
    let factor = 1u32 << n.saturating_sub(1).min(20);
    base.saturating_mul(factor).min(max)
}
