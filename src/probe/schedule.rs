//! [`ProbeSchedule`]: which key to probe next, at a bounded rate.
//!
//! Every key of a probed platform has an entry, per provider: the platforms it
//! is published to, when it was last probed, whether it was handed out since,
//! and its failures. A key is due at a time and with an [`Urgency`]; the
//! schedule gives out the due keys, urgent ones first, as long as
//!
//! - no more than [`max_per_second`](super::ProbeConfig::max_per_second)
//!   probes are given out in any one second (a sliding window: the probe that
//!   would be the `n + 1`-th within 1 000 ms waits),
//! - no more than [`max_in_flight`](super::ProbeConfig::max_in_flight) wait
//!   for their answer,
//! - a key is never probed twice within
//!   [`min_interval`](super::ProbeConfig::min_interval), nor before its backoff
//!   after a failure has passed, nor while a probe of it is in flight,
//! - a provider that throttled a probe (403/429) gets none until its pause ends.
//!
//! Times only move forward here: a `now` earlier than one already seen is
//! taken as the later one, so that a wall clock stepped back never lets more
//! probes through.

use super::{ProbeConfig, ProbeRequest, Provider};
use crate::quota::Skew;
use crate::time::Timestamp;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

mod entries;
use entries::{Entry, Forgotten, InFlight, Queue, Token, doubled, earliest_allowed};

/// How soon a probe is wanted: urgent ones go before routine ones that are due
/// at the same time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Urgency {
    /// A new key, a key said invalid, a key about to refresh: someone waits
    /// for the answer.
    Urgent,
    /// The periodic look at a key.
    Routine,
}

/// How a probe ended, for [`ProbeSchedule::settle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// The platform answered (valid or 401): failures are forgotten.
    Answered,
    /// No useful answer (network error, timeout, 5xx): back off.
    Failed,
    /// 403/429 to the probe itself: back off the key, pause the provider.
    Throttled {
        /// The platform's `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
}

/// Which key to probe when. See the [probe module docs](crate::probe).
#[derive(Debug, Clone)]
pub struct ProbeSchedule {
    max_per_second: usize,
    max_in_flight: usize,
    min_interval: Duration,
    in_use_interval: Duration,
    idle_interval: Duration,
    answer_timeout: Duration,
    backoff: Duration,
    max_backoff: Duration,
    entries: HashMap<Token, Entry>,
    queues: BTreeMap<Provider, Queue>,
    in_flight: HashMap<u64, InFlight>,
    deadlines: BTreeSet<(Timestamp, u64)>,
    /// When the probes of the last second were given out (at most
    /// `max_per_second` of them).
    sent: VecDeque<Timestamp>,
    /// The latest `now` seen.
    clock: Timestamp,
    next_id: u64,
    next_seq: u64,
    skew: BTreeMap<Provider, Skew>,
    total_sent: u64,
    /// What the schedule knew of keys forgotten lately: a key published
    /// again keeps its minimum interval, its failures and its backoff.
    forgotten: HashMap<Token, Forgotten>,
    /// When each of them may be forgotten for good, in the order they were
    /// forgotten.
    forgotten_order: VecDeque<(Timestamp, Token)>,
}

impl ProbeSchedule {
    /// An empty schedule with the rates and intervals of `config`.
    pub fn new(config: &ProbeConfig) -> Self {
        Self {
            max_per_second: (config.max_per_second as usize).max(1),
            max_in_flight: config.max_in_flight.max(1),
            min_interval: config.min_interval,
            in_use_interval: config.in_use_interval,
            idle_interval: config.idle_interval,
            answer_timeout: config.answer_timeout,
            backoff: config.backoff,
            max_backoff: config.max_backoff.max(config.backoff),
            entries: HashMap::new(),
            queues: BTreeMap::new(),
            in_flight: HashMap::new(),
            deadlines: BTreeSet::new(),
            sent: VecDeque::new(),
            clock: Timestamp::EPOCH,
            next_id: 0,
            next_seq: 0,
            skew: BTreeMap::new(),
            total_sent: 0,
            forgotten: HashMap::new(),
            forgotten_order: VecDeque::new(),
        }
    }

    fn token(provider: Provider, key: &str) -> Token {
        Token {
            provider,
            key: Arc::from(key),
        }
    }

    fn observe(&mut self, now: Timestamp) -> Timestamp {
        self.clock = self.clock.max(now);
        self.clock
    }

    /// Adds `platform` (probed as `resource`) to the platforms of `key` of
    /// `provider`. A key new to the schedule is due at once, urgently; returns
    /// whether it was new.
    pub fn track(
        &mut self,
        now: Timestamp,
        provider: Provider,
        key: &str,
        platform: &str,
        resource: &str,
    ) -> bool {
        self.forget_old();
        let token = Self::token(provider, key);
        let forgotten = self.forgotten.remove(&token);
        let entry = self.entries.entry(token).or_default();
        let new = entry.platforms.is_empty();
        if new && let Some(f) = forgotten {
            entry.last_sent = entry.last_sent.or(f.last_sent);
            entry.failures = entry.failures.max(f.failures);
            entry.backoff_until = entry.backoff_until.max(f.backoff_until);
        }
        entry
            .platforms
            .insert(platform.to_string(), resource.to_string());
        if new {
            self.want(now, provider, key, now, Urgency::Urgent);
        }
        new
    }

    /// Removes `platform` from `key`'s platforms; a key left with none is
    /// forgotten (the answer to a probe in flight is then ignored).
    pub fn untrack(&mut self, provider: Provider, key: &str, platform: &str) {
        let token = Self::token(provider, key);
        let Some(entry) = self.entries.get_mut(&token) else {
            return;
        };
        entry.platforms.remove(platform);
        if entry.platforms.is_empty() {
            self.dequeue(&token);
            if let Some(id) = self.entries.get(&token).and_then(|e| e.in_flight)
                && let Some(f) = self.in_flight.remove(&id)
            {
                self.deadlines.remove(&(f.deadline, id));
            }
            if let Some(e) = self.entries.remove(&token) {
                let until = [
                    e.last_sent.map(|t| t.saturating_add(self.min_interval)),
                    e.backoff_until,
                ]
                .into_iter()
                .flatten()
                .max();
                if let Some(until) = until {
                    let kept = Forgotten {
                        last_sent: e.last_sent,
                        failures: e.failures,
                        backoff_until: e.backoff_until,
                    };
                    self.forgotten.insert(token.clone(), kept);
                    self.forgotten_order.push_back((until, token));
                }
            }
            self.forget_old();
        }
    }

    /// Forgets for good the keys whose minimum interval and backoff are over.
    fn forget_old(&mut self) {
        while let Some((until, token)) = self.forgotten_order.front() {
            if *until > self.clock {
                break;
            }
            let entry_until = self.forgotten.get(token).and_then(|f| {
                [
                    f.last_sent.map(|t| t.saturating_add(self.min_interval)),
                    f.backoff_until,
                ]
                .into_iter()
                .flatten()
                .max()
            });
            if entry_until.is_some_and(|u| u <= *until) {
                self.forgotten.remove(token);
            }
            self.forgotten_order.pop_front();
        }
    }

    /// Whether `key` of `provider` is in the schedule.
    pub fn tracks(&self, provider: Provider, key: &str) -> bool {
        self.entries.contains_key(&Self::token(provider, key))
    }

    /// The platforms of `key` of `provider` and the resource of each.
    pub fn platforms_of(&self, provider: Provider, key: &str) -> Vec<(String, String)> {
        self.entries
            .get(&Self::token(provider, key))
            .map(|e| {
                e.platforms
                    .iter()
                    .map(|(p, r)| (p.clone(), r.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// How many keys are in the schedule.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no key is in the schedule.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many probes wait for their answer.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Whether probe `id` waits for its answer (it was neither answered nor
    /// timed out, and its key is still in the schedule).
    pub fn is_in_flight(&self, id: u64) -> bool {
        self.in_flight.contains_key(&id)
    }

    /// How many probes were given out so far.
    pub fn total_sent(&self) -> u64 {
        self.total_sent
    }

    /// Whether a probe of `key` is queued or in flight.
    pub fn pending(&self, provider: Provider, key: &str) -> bool {
        self.entries
            .get(&Self::token(provider, key))
            .is_some_and(|e| e.queued.is_some() || e.in_flight.is_some())
    }

    /// Wants a probe of `key` at `at` (or as soon after as the key's minimum
    /// interval and backoff allow); an earlier or more urgent want that is
    /// already queued stays.
    pub fn want(
        &mut self,
        now: Timestamp,
        provider: Provider,
        key: &str,
        at: Timestamp,
        urgency: Urgency,
    ) {
        self.observe(now);
        let token = Self::token(provider, key);
        let Some(entry) = self.entries.get_mut(&token) else {
            return;
        };
        if entry.in_flight.is_some() {
            let merged = match entry.wanted_after_flight {
                Some((u, t)) => (u.min(urgency), t.min(at)),
                None => (urgency, at),
            };
            entry.wanted_after_flight = Some(merged);
            return;
        }
        let at = earliest_allowed(self.min_interval, entry, at);
        let (urgency, at) = match entry.queued {
            Some((u, t, _)) => (u.min(urgency), t.min(at)),
            None => (urgency, at),
        };
        if entry
            .queued
            .is_some_and(|(u, t, _)| (u, t) == (urgency, at))
        {
            return;
        }
        self.dequeue(&token);
        self.enqueue(token, urgency, at);
    }

    fn enqueue(&mut self, token: Token, urgency: Urgency, at: Timestamp) {
        self.next_seq += 1;
        let seq = self.next_seq;
        if let Some(entry) = self.entries.get_mut(&token) {
            entry.queued = Some((urgency, at, seq));
        }
        self.queues
            .entry(token.provider)
            .or_default()
            .set(urgency)
            .insert((at, seq, token));
    }

    fn dequeue(&mut self, token: &Token) {
        let Some(entry) = self.entries.get_mut(token) else {
            return;
        };
        if let Some((u, t, seq)) = entry.queued.take()
            && let Some(q) = self.queues.get_mut(&token.provider)
        {
            q.set(u).remove(&(t, seq, token.clone()));
        }
    }

    /// Notes that `key` was handed out: it is probed again within
    /// [`in_use_interval`](super::ProbeConfig::in_use_interval) of its last
    /// probe.
    pub fn mark_used(&mut self, now: Timestamp, provider: Provider, key: &str) {
        let token = Self::token(provider, key);
        let Some(entry) = self.entries.get_mut(&token) else {
            return;
        };
        if entry.used {
            return;
        }
        entry.used = true;
        if entry.in_flight.is_some() {
            return;
        }
        let at = entry
            .last_sent
            .map_or(now, |t| t.saturating_add(self.in_use_interval));
        self.want(now, provider, key, at, Urgency::Routine);
    }

    /// Notes that the account of `key` is known (no need to ask for it again).
    pub fn set_account_known(&mut self, provider: Provider, key: &str) {
        if let Some(e) = self.entries.get_mut(&Self::token(provider, key)) {
            e.account_known = true;
        }
    }

    /// Whether the rate allows one more probe at `now`.
    fn rate_allows(&self, now: Timestamp) -> bool {
        self.sent.len() < self.max_per_second
            || self
                .sent
                .front()
                .is_some_and(|t| t.saturating_add(Duration::from_secs(1)) <= now)
    }

    /// The next probe to make at `now`, if one is due and the rates allow it.
    /// Call it until `None`.
    pub fn next(&mut self, now: Timestamp) -> Option<ProbeRequest> {
        let now = self.observe(now);
        if self.in_flight.len() >= self.max_in_flight || !self.rate_allows(now) {
            return None;
        }
        let mut best: Option<(Urgency, Timestamp, u64, Token)> = None;
        for q in self.queues.values() {
            if q.paused_until.is_some_and(|t| t > now) {
                continue;
            }
            for urgency in [Urgency::Urgent, Urgency::Routine] {
                if let Some((at, seq, token)) = q.head(urgency)
                    && *at <= now
                {
                    let candidate = (urgency, *at, *seq, token.clone());
                    if best.as_ref().is_none_or(|b| candidate < *b) {
                        best = Some(candidate);
                    }
                    break;
                }
            }
        }
        let (urgency, _, _, token) = best?;
        self.dequeue(&token);
        let entry = self.entries.get_mut(&token)?;
        self.next_id += 1;
        let id = self.next_id;
        entry.in_flight = Some(id);
        entry.flight_urgency = Some(urgency);
        entry.last_sent = Some(now);
        entry.used = false;
        let request = ProbeRequest {
            id,
            provider: token.provider,
            key: token.key.to_string(),
            platforms: entry
                .platforms
                .iter()
                .map(|(p, r)| (p.clone(), r.clone()))
                .collect(),
            want_account: !entry.account_known,
        };
        let deadline = now.saturating_add(self.answer_timeout);
        self.in_flight.insert(id, InFlight { token, deadline });
        self.deadlines.insert((deadline, id));
        if self.sent.len() >= self.max_per_second {
            self.sent.pop_front();
        }
        self.sent.push_back(now);
        self.total_sent += 1;
        Some(request)
    }

    /// Takes probe `id` out of flight: the provider and key it was of, if it
    /// is still in flight and its key still in the schedule. Then
    /// [`settle`](Self::settle) it.
    pub fn take_answer(&mut self, id: u64) -> Option<(Provider, String)> {
        let flight = self.in_flight.remove(&id)?;
        self.deadlines.remove(&(flight.deadline, id));
        let entry = self.entries.get_mut(&flight.token)?;
        if entry.in_flight == Some(id) {
            entry.in_flight = None;
        }
        Some((flight.token.provider, flight.token.key.to_string()))
    }

    /// The probes whose answer is overdue at `now`, taken out of flight:
    /// settle each as [`Settled::Failed`].
    pub fn overdue(&mut self, now: Timestamp) -> Vec<(Provider, String)> {
        let mut out = Vec::new();
        while let Some(&(deadline, id)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            if let Some(x) = self.take_answer(id) {
                out.push(x);
            } else {
                self.deadlines.remove(&(deadline, id));
            }
        }
        out
    }

    /// Plans the next probe of `key` after one of it ended as `how` at `now`:
    /// the periodic one after an answer, a retry after a backoff otherwise
    /// (and, when throttled, a pause of the whole provider).
    pub fn settle(&mut self, now: Timestamp, provider: Provider, key: &str, how: Settled) {
        let now = self.observe(now);
        let token = Self::token(provider, key);
        let (backoff, max_backoff) = (self.backoff, self.max_backoff);
        let Some(entry) = self.entries.get_mut(&token) else {
            return;
        };
        let wanted = entry.wanted_after_flight.take();
        let flight_urgency = entry.flight_urgency.take().unwrap_or(Urgency::Routine);
        let (urgency, at) = match how {
            Settled::Answered => {
                entry.failures = 0;
                entry.backoff_until = None;
                if let Some(q) = self.queues.get_mut(&provider) {
                    q.strikes = 0;
                }
                let every = if entry.used {
                    self.in_use_interval
                } else {
                    self.idle_interval
                };
                (Urgency::Routine, now.saturating_add(every))
            }
            Settled::Failed | Settled::Throttled { .. } => {
                entry.failures = entry.failures.saturating_add(1);
                let mut wait = doubled(backoff, entry.failures, max_backoff);
                if let Settled::Throttled { retry_after } = how {
                    if let Some(r) = retry_after {
                        wait = wait.max(r.min(max_backoff));
                    }
                    let q = self.queues.entry(provider).or_default();
                    q.strikes = q.strikes.saturating_add(1);
                    let pause = retry_after
                        .map(|r| r.min(max_backoff))
                        .unwrap_or_else(|| doubled(backoff, q.strikes, max_backoff));
                    let until = now.saturating_add(pause);
                    q.paused_until = Some(q.paused_until.map_or(until, |t| t.max(until)));
                }
                let until = now.saturating_add(wait);
                entry.backoff_until = Some(until);
                // A retry keeps its urgency (and that of what was wanted meanwhile).
                let urgency = wanted.map_or(flight_urgency, |(u, _)| u.min(flight_urgency));
                (urgency, until)
            }
        };
        let (urgency, at) = match wanted {
            Some((u, t)) if how == Settled::Answered => (u.min(urgency), t.min(at)),
            _ => (urgency, at),
        };
        self.want(now, provider, key, at, urgency);
    }

    /// When the schedule next has something to do: the next probe the rates
    /// allow, or the next answer deadline. `None` when nothing is queued or
    /// in flight.
    pub fn next_wake(&self) -> Option<Timestamp> {
        let deadline = self.deadlines.first().map(|(t, _)| *t);
        if self.in_flight.len() >= self.max_in_flight {
            return deadline;
        }
        let due = self
            .queues
            .values()
            .filter_map(|q| {
                let head = [q.head(Urgency::Urgent), q.head(Urgency::Routine)]
                    .into_iter()
                    .flatten()
                    .map(|(t, _, _)| *t)
                    .min()?;
                Some(q.paused_until.map_or(head, |p| p.max(head)))
            })
            .min();
        let rate_free = if self.sent.len() >= self.max_per_second {
            self.sent
                .front()
                .map(|t| t.saturating_add(Duration::from_secs(1)))
        } else {
            None
        };
        let due = due.map(|d| rate_free.map_or(d, |r| r.max(d)));
        [due, deadline].into_iter().flatten().min()
    }

    /// Takes in the `Date` of an answer of `provider` received at `now`.
    pub fn observe_date(&mut self, provider: Provider, date: Timestamp, now: Timestamp) {
        self.skew.entry(provider).or_default().observe(date, now);
    }

    /// The clock skew of `provider` as its answers showed it.
    pub fn skew(&self, provider: Provider) -> Option<Skew> {
        self.skew.get(&provider).copied()
    }
}
