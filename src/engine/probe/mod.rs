//! The probe side of the [`Engine`]: when a key is probed, and what the
//! platform's answer does to the pool. The schedule (which key next, at what
//! rate) is [`ProbeSchedule`]'s; the HTTP calls are the service's.
//!
//! - **PUBLISH** of a new key (or of an invalid one) withholds it on that
//!   platform until the platform has answered a probe of it: a 401 makes it
//!   invalid before any worker sees it; otherwise it is handed out, with its
//!   quota and account known. A key published again while fresh or expired is
//!   only probed.
//! - **INVALIDATE** from a worker withholds the key while a probe confirms it:
//!   it is invalid only if the platform answers 401, otherwise it comes back
//!   with its quota.
//! - While a withheld key's probe is pending (queued, in flight, or retried
//!   after a failure), its refresh time moves on in steps of
//!   [`withhold_step`](crate::probe::ProbeConfig::withhold_step), so a NEW
//!   meanwhile gets a short `wait`; after
//!   [`max_withhold`](crate::probe::ProbeConfig::max_withhold) without an
//!   answer a new key is handed out unconfirmed and a key said invalid is
//!   invalid (the worker's word stands).
//! - An **expired** key whose platform's clock is measured off ours by a
//!   second or more is probed before its refresh time: when the platform's
//!   clock is behind, the probe finds the window not yet reset and keeps the
//!   key until the platform's reset; when it is ahead, the probe finds the new
//!   window and the key is handed out at the platform's reset.
//! - Keys handed out are probed every
//!   [`in_use_interval`](crate::probe::ProbeConfig::in_use_interval), the
//!   others every [`idle_interval`](crate::probe::ProbeConfig::idle_interval).
//!
//! An answer's quotas go through [`Engine::report`], as a worker's REPORT
//! would: a key at or under its floor (or drained) is withheld until the
//! reset the platform gave.

use super::{Engine, Event, ProbeEvent};
use crate::mask::Masked;
use crate::pool::{Invalidated, KeyState, Published};
use crate::probe::{
    ProbeAnswer, ProbeConfig, ProbeFacts, ProbeOutcome, ProbeRequest, ProbeSchedule, Provider,
    Settled, Urgency,
};
use crate::protocol::PlatformStatus;
use crate::quota::{Account, Observation, Source};
use crate::time::Timestamp;
use rand_core::Rng;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::Duration;

#[cfg(test)]
mod tests_herd;
mod withhold;

/// Two reset times closer than this are the same window.
const SAME_WINDOW: Duration = Duration::from_secs(2);
/// The longest a probe before a refresh comes ahead of it when the
/// platform's clock is behind ours.
const MAX_PRE_REFRESH_LEAD: Duration = Duration::from_secs(30);

/// Why a key is withheld while its probe is pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    /// Published and not yet confirmed by the platform.
    New,
    /// A worker said it is invalid.
    Suspect,
}

#[derive(Debug, Clone, Copy)]
struct Withheld {
    why: Why,
    /// When its probe was first given out (the longest withholding counts
    /// from then: waiting for the rate cap does not count).
    sent: Option<Timestamp>,
    until: Timestamp,
}

/// What INVALIDATE did ([`Engine::invalidate_or_confirm`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suspected {
    /// The key is withheld while a probe confirms it.
    Confirming,
    /// No probe for its platform: it was invalidated as without probes.
    Done(Invalidated),
}

/// The engine's probing state.
#[derive(Debug, Clone)]
pub(super) struct ProbeState {
    config: ProbeConfig,
    schedule: ProbeSchedule,
    out: VecDeque<ProbeRequest>,
    withheld: HashMap<(String, String), Withheld>,
    deadlines: BTreeSet<(Timestamp, String, String)>,
    /// Known token expiry times, and whether they were warned about.
    expiry: HashMap<(Provider, String), (Timestamp, bool)>,
}

impl ProbeState {
    pub(super) fn new(config: &ProbeConfig) -> Self {
        Self {
            config: config.clone(),
            schedule: ProbeSchedule::new(config),
            out: VecDeque::new(),
            withheld: HashMap::new(),
            deadlines: BTreeSet::new(),
            expiry: HashMap::new(),
        }
    }

    /// The provider that probes `platform`, if any.
    fn provider_of(&self, platform: &str) -> Option<Provider> {
        self.config.target(platform).map(|t| t.provider)
    }

    /// Notes that `key` of `platform` was handed out.
    pub(super) fn mark_used(&mut self, now: Timestamp, platform: &str, key: &str) {
        if let Some(provider) = self.provider_of(platform) {
            self.schedule.mark_used(now, provider, key);
        }
    }

    fn track(&mut self, now: Timestamp, platform: &str, key: &str) -> Option<Provider> {
        let target = self.config.target(platform)?.clone();
        self.schedule
            .track(now, target.provider, key, platform, &target.resource);
        Some(target.provider)
    }
}

impl<R: Rng> Engine<R> {
    /// The next probe to make, in order; `None` when there is nothing more.
    /// Call it until `None` after every input, with the transmits (see the
    /// [run loop](super#the-run-loop)): make each call, and give its answer to
    /// [`handle_probe`](Self::handle_probe) with the request's id. Always
    /// `None` when probing is off ([`EngineConfig::probe`](super::EngineConfig::probe)).
    #[must_use]
    pub fn poll_probe(&mut self) -> Option<ProbeRequest> {
        self.probe.as_mut()?.out.pop_front()
    }

    /// The probe schedule, for inspection; `None` when probing is off.
    pub fn probes(&self) -> Option<&ProbeSchedule> {
        self.probe.as_ref().map(|p| &p.schedule)
    }

    /// Takes the platform's answer to the probe `answer.id` at `now`: a 401
    /// makes the key invalid on every platform it was probed for; a valid
    /// token's withheld platforms are handed out again, its quotas go to the
    /// quota views as a REPORT's would (a key at its floor or drained is
    /// withheld until the platform's reset), its account is learnt, its
    /// expiry warned about; a throttled or failed probe is tried again
    /// later. An answer to a probe not in flight (already timed out, or of a
    /// key since unpublished) is ignored.
    pub fn handle_probe(&mut self, now: Timestamp, answer: ProbeAnswer) {
        if self.shutdown {
            return;
        }
        self.hold_clock.observe(now);
        let Some(p) = self.probe.as_mut() else {
            return;
        };
        let Some((provider, key)) = p.schedule.take_answer(answer.id) else {
            return;
        };
        self.settle_probe(now, provider, &key, answer.outcome);
        self.after_probe_input(now);
    }

    /// A worker's INVALIDATE of `key` of `platform` at `now`: with probes for
    /// the platform, the key is withheld while a probe confirms it (invalid
    /// only on a 401); without, it is [`invalidate`](Self::invalidate)d.
    pub fn invalidate_or_confirm(
        &mut self,
        now: Timestamp,
        platform: &str,
        key: &str,
    ) -> Suspected {
        let probed = self
            .probe
            .as_ref()
            .is_some_and(|p| p.provider_of(platform).is_some());
        let confirmable = matches!(
            self.pool.state(platform, key, now),
            Some(KeyState::Fresh | KeyState::Expired { .. })
        );
        if !probed || !confirmable {
            return Suspected::Done(self.invalidate(now, platform, key));
        }
        let Some(p) = self.probe.as_mut() else {
            return Suspected::Done(self.invalidate(now, platform, key));
        };
        if let Some(provider) = p.track(now, platform, key) {
            p.schedule.want(now, provider, key, now, Urgency::Urgent);
        }
        self.withhold_for_probe(now, platform, key, Why::Suspect);
        self.after_probe_input(now);
        Suspected::Confirming
    }

    /// Applies a probe's outcome for `key` of `provider`.
    fn settle_probe(
        &mut self,
        now: Timestamp,
        provider: Provider,
        key: &str,
        outcome: ProbeOutcome,
    ) {
        let Some(p) = self.probe.as_mut() else {
            return;
        };
        let platforms = p.schedule.platforms_of(provider, key);
        let masked = Masked(key).to_string();
        match outcome {
            ProbeOutcome::Valid(facts) => {
                p.schedule.settle(now, provider, key, Settled::Answered);
                if let Some(date) = facts.server_date {
                    p.schedule.observe_date(provider, date, now);
                }
                self.take_facts(now, provider, key, &platforms, facts);
            }
            ProbeOutcome::Unauthorized => {
                p.schedule.settle(now, provider, key, Settled::Answered);
                self.events.push_back(Event::Probe {
                    provider,
                    key: masked,
                    what: ProbeEvent::Revoked,
                });
                for (platform, _) in &platforms {
                    self.drop_withheld(platform, key);
                    self.invalidate(now, platform, key);
                }
            }
            ProbeOutcome::Throttled { retry_after } => {
                p.schedule
                    .settle(now, provider, key, Settled::Throttled { retry_after });
                self.events.push_back(Event::Probe {
                    provider,
                    key: masked,
                    what: ProbeEvent::Throttled { retry_after },
                });
            }
            ProbeOutcome::Failed => {
                p.schedule.settle(now, provider, key, Settled::Failed);
                self.events.push_back(Event::Probe {
                    provider,
                    key: masked,
                    what: ProbeEvent::Failed,
                });
            }
        }
    }

    /// What a valid token's probe told: account, withheld keys released,
    /// quotas, expiry.
    fn take_facts(
        &mut self,
        now: Timestamp,
        provider: Provider,
        key: &str,
        platforms: &[(String, String)],
        facts: ProbeFacts,
    ) {
        if let Some(account) = facts.account.as_deref().filter(|a| !a.is_empty()) {
            for (platform, _) in platforms {
                if matches!(self.quota.account_of(platform, key), Account::Key(_)) {
                    self.quota
                        .set_account(now, platform, key, Some(account), None);
                    self.stats.changes += 1;
                }
            }
            if let Some(p) = self.probe.as_mut() {
                p.schedule.set_account_known(provider, key);
            }
        }
        for (platform, _) in platforms {
            self.release_withheld(now, platform, key);
        }
        for (platform, resource) in platforms {
            let Some(q) = facts.resources.iter().find(|r| &r.resource == resource) else {
                continue;
            };
            // The quota views take the reset at its latest (a `Date` has
            // whole seconds), never early.
            let observation = Observation {
                remaining: q.remaining,
                limit: q.limit,
                reset: q.reset,
                resource: Some(resource.clone()),
                server_date: facts.server_date,
            };
            self.release_if_reset(now, platform, key, &observation);
            self.report_from(now, platform, key, &observation, None, Source::Probe);
        }
        if let Some(expires_at) = facts.expires_at {
            self.note_expiry(now, provider, key, expires_at);
        }
    }

    /// Hands out again an expired key that the probe shows in a new window
    /// (the platform's reset came, as its clock counts, before the key's
    /// refresh time) with calls above its floor.
    fn release_if_reset(
        &mut self,
        now: Timestamp,
        platform: &str,
        key: &str,
        observation: &Observation,
    ) {
        let Some(KeyState::Expired { refresh_at }) = self.pool.state(platform, key, now) else {
            return;
        };
        let (Some(remaining), Some(reset)) = (observation.remaining, observation.reset) else {
            return;
        };
        let floor = self
            .config
            .quota
            .floor(platform, &self.quota.account_of(platform, key));
        if remaining > floor && reset > refresh_at.saturating_add(SAME_WINDOW) {
            self.release_key(now, platform, key);
        }
    }

    /// Makes an expired key fresh at once and serves the held requests.
    fn release_key(&mut self, now: Timestamp, platform: &str, key: &str) {
        if self.pool.release(platform, key, now) {
            self.stats.changes += 1;
            self.serve_held_after_change(now);
        }
    }

    /// Warns once about a token that expires within the warning time.
    fn note_expiry(
        &mut self,
        now: Timestamp,
        provider: Provider,
        key: &str,
        expires_at: Timestamp,
    ) {
        let Some(p) = self.probe.as_mut() else {
            return;
        };
        let soon = expires_at <= now.saturating_add(p.config.expiry_warning);
        let entry = p
            .expiry
            .entry((provider, key.to_string()))
            .or_insert((expires_at, false));
        if entry.0 != expires_at {
            *entry = (expires_at, false);
        }
        if soon && !entry.1 {
            entry.1 = true;
            self.events.push_back(Event::Probe {
                provider,
                key: Masked(key).to_string(),
                what: ProbeEvent::Expiring { expires_at },
            });
        }
    }

    /// After a publish: a new (or revived) key of a probed platform is
    /// withheld until its probe answers; any other is probed.
    pub(super) fn probe_published(
        &mut self,
        now: Timestamp,
        platform: &str,
        key: &str,
        outcome: Published,
    ) {
        let Some(p) = self.probe.as_mut() else {
            return;
        };
        let Some(provider) = p.track(now, platform, key) else {
            return;
        };
        if matches!(outcome, Published::Added | Published::Revived) {
            p.schedule.want(now, provider, key, now, Urgency::Urgent);
            self.withhold_for_probe(now, platform, key, Why::New);
        }
        self.after_probe_input(now);
    }

    /// After an unpublish: the key is no longer probed for `platform`.
    pub(super) fn probe_unpublished(&mut self, platform: &str, key: &str) {
        self.drop_withheld(platform, key);
        let Some(p) = self.probe.as_mut() else {
            return;
        };
        if let Some(provider) = p.provider_of(platform) {
            p.schedule.untrack(provider, key, platform);
            if !p.schedule.tracks(provider, key) {
                p.expiry.remove(&(provider, key.to_string()));
            }
        }
    }

    /// After an EXPIRE to `refresh_at`: when the platform's clock is measured
    /// off ours, the key is probed before it refreshes.
    pub(super) fn probe_expired(
        &mut self,
        now: Timestamp,
        platform: &str,
        key: &str,
        refresh_at: Timestamp,
    ) {
        let Some(p) = self.probe.as_mut() else {
            return;
        };
        let Some(provider) = p.provider_of(platform) else {
            return;
        };
        let Some(skew) = p.schedule.skew(provider) else {
            return;
        };
        let offset = skew.offset_ms;
        if offset.unsigned_abs() < crate::quota::MEASURABLE_SKEW.as_millis() as u64 {
            return;
        }
        let at = if offset > 0 {
            // The platform's clock is ahead: its reset comes before ours.
            Timestamp::from_millis(
                refresh_at
                    .as_millis()
                    .saturating_sub(offset.unsigned_abs())
                    .saturating_add(1000),
            )
        } else {
            let lead = Duration::from_millis(offset.unsigned_abs()).min(MAX_PRE_REFRESH_LEAD);
            Timestamp::from_millis(
                refresh_at
                    .as_millis()
                    .saturating_sub(u64::try_from(lead.as_millis()).unwrap_or(u64::MAX)),
            )
        };
        p.schedule
            .want(now, provider, key, at.max(now), Urgency::Urgent);
        self.after_probe_input(now);
    }

    /// After a restore: every fresh or expired key of a probed platform is
    /// probed soon (none is withheld: they were in use before).
    pub(super) fn probe_restored(&mut self) {
        let Some(p) = self.probe.as_mut() else {
            return;
        };
        let snapshot = self.pool.snapshot();
        for platform in &snapshot.platforms {
            let keys = platform
                .fresh
                .iter()
                .chain(platform.expired.iter().map(|(k, _)| k));
            for key in keys {
                p.track(Timestamp::EPOCH, &platform.name, key);
            }
        }
    }

    /// Answer deadlines that passed, withheld keys whose step ended, and the
    /// probes now due (queued for [`poll_probe`](Self::poll_probe)).
    pub(super) fn after_probe_input(&mut self, now: Timestamp) {
        let Some(p) = self.probe.as_mut() else {
            return;
        };
        for (provider, key) in p.schedule.overdue(now) {
            self.settle_probe(now, provider, &key, ProbeOutcome::Failed);
        }
        self.settle_withheld(now);
        let Some(p) = self.probe.as_mut() else {
            return;
        };
        while let Some(request) = p.schedule.next(now) {
            for (platform, _) in &request.platforms {
                let record = (platform.clone(), request.key.clone());
                if let Some(w) = p.withheld.get_mut(&record) {
                    w.sent.get_or_insert(now);
                }
            }
            p.out.push_back(request);
        }
    }

    /// When the probes next need [`handle_timeout`](Self::handle_timeout).
    pub(super) fn probe_wake(&self) -> Option<Timestamp> {
        let p = self.probe.as_ref()?;
        let withheld = p.deadlines.first().map(|(t, _, _)| *t);
        [p.schedule.next_wake(), withheld]
            .into_iter()
            .flatten()
            .min()
    }

    /// Adds the token expiries known of each platform's keys to STATUS.
    pub(super) fn add_probe_status(&self, now: Timestamp, status: &mut [PlatformStatus]) {
        let Some(p) = self.probe.as_ref() else {
            return;
        };
        let horizon = now.saturating_add(p.config.expiry_warning);
        for s in status {
            let Some(provider) = p.provider_of(&s.platform) else {
                continue;
            };
            let mut expiring = 0u64;
            let mut earliest: Option<Timestamp> = None;
            for ((prov, key), (at, _)) in &p.expiry {
                if *prov != provider
                    || !matches!(
                        self.pool.state(&s.platform, key, now),
                        Some(KeyState::Fresh | KeyState::Expired { .. })
                    )
                {
                    continue;
                }
                earliest = Some(earliest.map_or(*at, |e| e.min(*at)));
                if *at <= horizon {
                    expiring += 1;
                }
            }
            s.tokens_expiring = Some(expiring).filter(|&n| n > 0);
            s.token_expires_at = earliest.map(|t| t.as_secs());
        }
    }
}
