//! [`Engine`]: the orchestrator as a sans-IO state machine.
//!
//! The engine owns a [`KeyPool`] and every decision about it: what a request
//! for a key gets, how far ahead an EXPIRE may park a key, what a publish of an
//! invalid or expired key does, which [`Event`] a change emits and at which
//! [`Level`] it is logged, and when the state is worth saving
//! ([`Stats::changes`]). Drivers only move bytes, read clocks and wait: the
//! orchestrator feeds it wire messages through [`Engine::handle`], the embedded
//! pool calls its typed operations ([`Engine::assign`], [`Engine::expire`], …)
//! directly, and tests and simulations do either in virtual time. `handle`
//! decodes a message and calls the same typed operations, so both paths apply
//! one policy.
//!
//! The engine never reads a clock, never draws from a global RNG and never does
//! I/O. Bad input of any kind (not JSON, wrong types, unknown types, missing
//! fields, oversized payloads) changes no state: it is reported as an
//! [`Event::Rejected`] and, when the sender waits for an answer and can be
//! addressed, answered with an `error` reply so that it does not wait in vain.
//!
//! Its parts: [`EngineConfig`] (config), [`Transmit`], [`Event`] and [`Level`]
//! (events), [`Stats`] (stats), the held requests (held), and the wire side
//! that decodes messages and encodes answers (wire).
//!
#![doc = include_str!("run_loop.md")]

use crate::mask::Masked;
use crate::pool::Counts;
use crate::pool::{Assignment, Expired, Invalidated, KeyPool, KeyState, Pick, Published};
use crate::protocol::{DecodeError, MAX_KEY_LEN, MAX_PLATFORM_LEN, PlatformStatus, ReplyTo};
use crate::quota::Quotas;
use crate::time::Timestamp;
use rand_core::Rng;
use std::collections::VecDeque;

mod config;
mod events;
mod held;
mod lag;
mod probe;
mod quota;
mod stagger;
mod state;
mod stats;
#[cfg(test)]
mod tests;
mod wire;

pub use config::{DEFAULT_MAX_KEYS_PER_PLATFORM, DEFAULT_MAX_PLATFORMS, EngineConfig};
pub use events::{Event, KeyEvent, Level, ProbeEvent, Transmit};
pub use probe::Suspected;
pub use quota::Leased;
pub use state::StateGeneration;
pub use stats::Stats;

use held::{HeldRequests, HoldClock};
use lag::PlatformLags;
use stagger::{Stagger, Waiter};

/// The orchestrator's state machine. See the [module docs](self) for the run
/// loop, the order in which to drain outputs, and time going backwards.
///
/// Its methods, by group:
///
/// - **Inputs** (each takes the current time): [`handle`](Self::handle) and
///   [`handle_with_reply`](Self::handle_with_reply) for wire messages,
///   [`handle_timeout`](Self::handle_timeout) for timers, and the typed
///   operations [`assign`](Self::assign), [`expire`](Self::expire),
///   [`invalidate`](Self::invalidate), [`publish`](Self::publish),
///   [`unpublish`](Self::unpublish) and [`shutdown`](Self::shutdown). Every
///   change of the pool goes through them, with its event and its count in
///   [`Stats::changes`]. Quota awareness adds
///   [`lease`](Self::lease), [`report`](Self::report) and
///   [`publish_account`](Self::publish_account); [`quotas`](Self::quotas) and
///   [`restore_quotas`](Self::restore_quotas) inspect and restore its state.
/// - **Outputs**: [`poll_transmit`](Self::poll_transmit),
///   [`poll_event`](Self::poll_event), [`poll_timeout`](Self::poll_timeout),
///   [`is_shutdown`](Self::is_shutdown).
/// - **Queries**: [`platforms`](Self::platforms), [`keys`](Self::keys),
///   [`invalid_keys`](Self::invalid_keys), [`status`](Self::status),
///   [`counts`](Self::counts) (these refresh due keys, which is no change).
/// - **Inspection**: [`pool`](Self::pool) (read only), [`held`](Self::held),
///   [`stats`](Self::stats), [`config`](Self::config); and
///   [`restore`](Self::restore) to load a saved state.
/// - **Saving** (state): [`state_generation`](Self::state_generation),
///   [`changed_since`](Self::changed_since),
///   [`encode_records`](Self::encode_records),
///   [`encode_all_records`](Self::encode_all_records) and
///   [`restore_state`](Self::restore_state).
#[derive(Debug)]
pub struct Engine<R> {
    pool: KeyPool,
    config: EngineConfig,
    rng: R,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    shutdown: bool,
    stats: Stats,
    /// Held NEW requests, indexed by platform, by request and by deadline.
    held: HeldRequests,
    /// What holds are timed by: it never goes back.
    hold_clock: HoldClock,
    /// Quota views, accounts and leases.
    quota: Quotas,
    /// Probes of the platforms (`None`: probing is off).
    probe: Option<Box<probe::ProbeState>>,
    /// When the requests told to wait ask again.
    stagger: Stagger,
    /// How far behind ours each platform's clock is, as EXPIREs show it.
    lags: PlatformLags,
}

impl<R: Rng> Engine<R> {
    /// An engine with an empty pool, drawing randomness from `rng`.
    pub fn new(config: EngineConfig, rng: R) -> Self {
        Self::with_pool(KeyPool::with_selection(config.selection), config, rng)
    }

    /// An engine over an existing pool (for example one restored from storage).
    pub fn with_pool(pool: KeyPool, config: EngineConfig, rng: R) -> Self {
        let probe = config
            .probe
            .as_ref()
            .map(|c| Box::new(probe::ProbeState::new(c)));
        let mut engine = Self {
            pool,
            config,
            rng,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            shutdown: false,
            stats: Stats::default(),
            held: HeldRequests::default(),
            hold_clock: HoldClock::default(),
            quota: Quotas::new(),
            stagger: Stagger::default(),
            lags: PlatformLags::default(),
            probe,
        };
        engine.probe_restored();
        engine
    }

    /// How many NEW requests are held waiting for a key now;
    /// [`Stats::holds_total`] counts every request ever held.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// The pool, for inspection.
    pub fn pool(&self) -> &KeyPool {
        &self.pool
    }

    /// Replaces the pool with the state `snapshot` describes (the one saved
    /// before a restart). Held requests are kept. It emits no event and does not
    /// move [`Stats::changes`]: the state came from storage, there is nothing new
    /// to save. What a restart then does to each key, with Augur's
    /// republishing, is in the [protocol docs](crate::protocol#restarts-with-the-state-kept).
    pub fn restore(&mut self, snapshot: &crate::pool::PoolSnapshot) {
        self.pool = KeyPool::from_snapshot(snapshot, self.config.selection);
        self.probe = self
            .config
            .probe
            .as_ref()
            .map(|c| Box::new(probe::ProbeState::new(c)));
        self.probe_restored();
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// What the engine has done so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Whether SHUTDOWN was handled. Once true, input is ignored; drain the
    /// transmits still queued, then stop.
    pub fn is_shutdown(&self) -> bool {
        self.shutdown
    }

    /// Refreshes the keys whose refresh time has come. Call it at (or after) the
    /// time [`poll_timeout`](Self::poll_timeout) gave; calling it early is harmless.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        self.settle_withheld(now);
        self.end_due_leases(now);
        self.pool.refresh_due(now);
        self.stagger.forget_due(now);
        self.hold_clock.observe(now);
        if self.held.len() > 0 {
            self.serve_held(now, true);
        }
        self.after_probe_input(now);
    }

    /// When the engine next needs [`handle_timeout`](Self::handle_timeout): the
    /// earliest refresh time of an expired key, end of a held request or
    /// deadline of a lease, or `None` if nothing is pending. Held requests are answered only through it
    /// (or the next message); refreshes of expired keys also happen lazily.
    ///
    /// The end of a hold is given on the clock of the last `now`: after a step
    /// back of the wall clock it comes as much earlier, so the hold lasts its
    /// time (see [time going backwards](self#when-now-goes-backwards)).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        if self.shutdown {
            return None;
        }
        let hold_end = self
            .held
            .next_deadline()
            .map(|at| self.hold_clock.wall_time_of(at));
        [
            self.pool.next_refresh(),
            hold_end,
            self.quota.next_lease_end(),
            self.probe_wake(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The next payload to publish, in order; `None` when there is nothing more.
    /// Call it until `None` after every input, before [`poll_event`](Self::poll_event).
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event to log, in order; `None` when there is nothing more.
    /// Call it until `None` after every input, after
    /// [`poll_transmit`](Self::poll_transmit).
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Hands out a fresh key of `platform` at `now`, or says why not: when
    /// every key is rate limited, when to ask again (a refresh time: the
    /// earliest, or a later one when many wait, see
    /// [`EngineConfig::stagger_waits`]); or that the platform is unknown or
    /// has no usable key (which is also reported as an
    /// [`Event::UnknownPlatform`]). The answer a NEW gets, without the wire.
    /// Each call that waits counts as one more waiter; a caller that asks
    /// again for the same waiter uses [`assign_for`](Self::assign_for).
    pub fn assign(&mut self, now: Timestamp, platform: &str) -> Assignment<'_> {
        let pick = self.assign_pick(now, platform, None);
        self.pool.picked(platform, pick)
    }

    /// [`assign`](Self::assign) for the waiter `waiter` (its requester and
    /// request ids): when it must wait, asking again before its time replaces
    /// its earlier place among the waiters instead of adding one.
    pub fn assign_for(
        &mut self,
        now: Timestamp,
        platform: &str,
        waiter: &ReplyTo,
    ) -> Assignment<'_> {
        let waiter = (waiter.requester_id.clone(), waiter.request_id.clone());
        let pick = self.assign_pick(now, platform, Some(waiter));
        self.pool.picked(platform, pick)
    }

    /// [`assign`](Self::assign) with the key as its place in the pool.
    fn assign_pick(&mut self, now: Timestamp, platform: &str, waiter: Option<Waiter>) -> Pick {
        match self.request_pick(now, platform, waiter.as_ref()) {
            Pick::Wait(refresh_at) => {
                Pick::Wait(self.wait_until(now, platform, waiter, refresh_at))
            }
            other => other,
        }
    }

    /// A request's draw: an unknown platform is reported; a waiter that comes
    /// back at the time it was told gets the key it was told to wait for, if
    /// that key is fresh and may be chosen; else the platform's strategy
    /// chooses, and a wait is for the earliest time anything can change.
    fn request_pick(&mut self, now: Timestamp, platform: &str, waiter: Option<&Waiter>) -> Pick {
        if !self.pool.has_platform(platform) {
            self.events.push_back(Event::UnknownPlatform {
                platform: platform.to_string(),
            });
        }
        if let Some(w) = waiter
            && let Some(key) = self.stagger.take(now, platform, w)
            && self.may_choose(now, platform, &key)
            && let Some(pick) = self.pool.pick_key(platform, &key, now)
        {
            self.assigned(now, platform, pick);
            return pick;
        }
        let pick = self.draw(now, platform);
        if let (Pick::Key(_), Some(w)) = (pick, waiter) {
            self.stagger.forget(now, platform, w);
        }
        pick
    }

    /// Whether the platform's strategy may choose `key` now: what it knows of
    /// the key's quota leaves it calls to lend.
    fn may_choose(&self, now: Timestamp, platform: &str, key: &str) -> bool {
        if !self.quota.knows(platform) {
            return true;
        }
        let floor = self
            .config
            .quota
            .floor(platform, &self.quota.account_of(platform, key));
        self.quota.available(now, platform, key, floor) != Some(0)
    }

    /// When a waiter of `platform` that found no fresh key at `now` should ask
    /// again: `earliest` (the platform's earliest refresh, or end of a lease),
    /// or, with [`EngineConfig::stagger_waits`], the refresh of the key whose
    /// share of the waiters it falls in.
    fn wait_until(
        &mut self,
        now: Timestamp,
        platform: &str,
        waiter: Option<Waiter>,
        earliest: Timestamp,
    ) -> Timestamp {
        // A wait for something before the next refresh (a lease's end) is
        // not staggered.
        if !self.config.stagger_waits || self.pool.next_refresh_of(platform) != Some(earliest) {
            return earliest;
        }
        let keys = self.pool.counts(platform, now).map_or(0, |c| c.expired);
        let aimed = self.stagger.aim(
            now,
            platform,
            waiter,
            keys,
            self.pool.expired_keys(platform),
        );
        aimed.map_or(earliest, |at| at.max(earliest))
    }

    /// [`KeyPool::assign`], counted in [`Stats::assigned`]; quota-aware
    /// ([`KeyPool::choose`]) once anything is known of the platform's quotas or
    /// it has a strategy of its own, so that with nothing known the choice is
    /// exactly what it was without quotas.
    fn draw(&mut self, now: Timestamp, platform: &str) -> Pick {
        self.draw_capped(now, platform, None)
    }

    /// [`draw`](Self::draw), passing over the keys handed out `max_handouts`
    /// times since they became fresh.
    fn draw_capped(&mut self, now: Timestamp, platform: &str, max_handouts: Option<u32>) -> Pick {
        self.settle_withheld(now);
        self.withhold_at_floor(now, platform);
        let selection = self.config.quota.selection(platform, self.config.selection);
        let answer = if self.quota.knows(platform)
            || selection != self.config.selection
            || max_handouts.is_some()
        {
            let fallback = self.quota.next_lease_end_of(platform);
            let (quota, config) = (&self.quota, &self.config.quota);
            self.pool.pick_weighted(
                platform,
                now,
                &mut self.rng,
                selection,
                fallback,
                max_handouts,
                |key| {
                    let floor = config.floor(platform, &quota.account_of(platform, key));
                    match quota.available(now, platform, key, floor) {
                        Some(n) => crate::pool::Weight::Calls(n),
                        None => crate::pool::Weight::Unknown,
                    }
                },
            )
        } else {
            self.pool.pick(platform, now, &mut self.rng)
        };
        if let Pick::Key(_) = answer {
            self.assigned(now, platform, answer);
        }
        answer
    }

    /// Counts a key handed out, and tells the probes it is in use (probed
    /// every `in_use_interval`).
    fn assigned(&mut self, now: Timestamp, platform: &str, pick: Pick) {
        self.stats.assigned += 1;
        if let (Some(p), Assignment::Key(key)) =
            (self.probe.as_deref_mut(), self.pool.picked(platform, pick))
        {
            p.mark_used(now, platform, key);
        }
    }

    /// Marks `key` rate limited until `refresh_at` (from the API's reset
    /// header), cut to `now + max_expiry` ([`EngineConfig::max_expiry`]) so that
    /// a wrong header parks no key for years. The later of two refresh times
    /// wins; an unknown or an invalid key change nothing. A change is
    /// reported as [`KeyEvent::Expired`] with the refresh time applied.
    ///
    /// A refresh time up to [`MAX_SKEW`](crate::quota::MAX_SKEW) before
    /// `now` means the platform refused the key although its reset has passed
    /// by our clock: its clock is behind ours. The key is kept expired for as
    /// long again (at least a second), and the platform's lag is learnt and
    /// added to its later EXPIREs (see the `lag` module: Augur's workers give
    /// reset times on the platform's clock and no `Date`). A refresh time
    /// further back changes nothing.
    pub fn expire(
        &mut self,
        now: Timestamp,
        platform: &str,
        key: &str,
        refresh_at: Timestamp,
    ) -> Expired {
        let refresh_at = if self.config.learn_lag
            && self
                .pool
                .state(platform, key, now)
                .is_some_and(|s| s != KeyState::Invalid)
        {
            let (refresh_at, grew) = self.lags.refresh_at(now, platform, refresh_at);
            if let Some(lag) = grew {
                self.events.push_back(Event::ClockLag {
                    platform: platform.to_owned(),
                    lag,
                });
            }
            refresh_at
        } else {
            refresh_at
        };
        let refresh_at = refresh_at.min(now.saturating_add(self.config.max_expiry));
        let outcome = self.pool.expire(platform, key, refresh_at, now);
        if outcome != Expired::Unchanged {
            self.key_event(platform, key, KeyEvent::Expired { refresh_at });
            self.probe_expired(now, platform, key, refresh_at);
        }
        self.expire_account_siblings(now, platform, key, refresh_at);
        outcome
    }

    /// Marks `key` permanently invalid; only a publish brings it back. Held
    /// requests of a platform left without usable keys are answered.
    pub fn invalidate(&mut self, now: Timestamp, platform: &str, key: &str) -> Invalidated {
        let outcome = self.pool.invalidate(platform, key, now);
        if outcome == Invalidated::Invalidated {
            // An invalid key is not probed (a publish brings it back).
            self.probe_unpublished(platform, key);
            self.key_event(platform, key, KeyEvent::Invalidated);
            self.serve_held_after_change(now);
        }
        outcome
    }

    /// Adds `key` to `platform`: a new key is fresh ([`KeyEvent::Published`]),
    /// an invalid one is fresh again ([`KeyEvent::Revived`]), a fresh or expired
    /// one is left as it is (publishing is idempotent and does not cut a rate
    /// limit short). Held requests of the platform get the key.
    ///
    /// A key or platform name longer than its
    /// [limit](crate::protocol#limits), a new platform beyond
    /// [`EngineConfig::max_platforms`] and a new key beyond
    /// [`EngineConfig::max_keys_per_platform`] are [`Published::Refused`],
    /// reported as an [`Event::Rejected`] on the announce channel.
    pub fn publish(&mut self, now: Timestamp, platform: &str, key: &str) -> Published {
        let outcome = self.publish_unserved(now, platform, key);
        if matches!(outcome, Published::Added | Published::Revived) {
            self.serve_held_after_change(now);
        }
        outcome
    }

    /// [`publish`](Self::publish), leaving the held requests to the caller.
    fn publish_unserved(&mut self, now: Timestamp, platform: &str, key: &str) -> Published {
        if let Err(error) = self.check_publish(platform, key) {
            self.stats.rejected += 1;
            self.events.push_back(Event::Rejected {
                channel: self.config.channels.announce.clone(),
                error,
            });
            return Published::Refused;
        }
        let outcome = self.pool.publish(platform, key);
        // A new key is withheld before anyone can be handed it.
        self.probe_published(now, platform, key, outcome);
        let what = match outcome {
            Published::Added => KeyEvent::Published,
            Published::Revived => KeyEvent::Revived,
            Published::Unchanged | Published::Refused => return outcome,
        };
        self.key_event(platform, key, what);
        outcome
    }

    /// Whether a publish of `key` to `platform` stays within the limits.
    /// Whether [`publish`](Self::publish) would refuse `key` on `platform`,
    /// and why: a name longer than its [limit](crate::protocol#limits), or a
    /// cap of the [`EngineConfig`] reached.
    pub fn check_publish(&self, platform: &str, key: &str) -> Result<(), DecodeError> {
        for (field, text, max) in [
            ("key_str", key, MAX_KEY_LEN),
            ("key_platform", platform, MAX_PLATFORM_LEN),
        ] {
            if text.len() > max {
                return Err(DecodeError::TooLong {
                    field,
                    len: text.len(),
                    max,
                });
            }
        }
        match self.pool.key_count(platform) {
            None if self.pool.platform_count() >= self.config.max_platforms => {
                Err(DecodeError::LimitReached {
                    limit: "platforms",
                    max: self.config.max_platforms,
                })
            }
            Some(n)
                if n >= self.config.max_keys_per_platform && !self.pool.contains(platform, key) =>
            {
                Err(DecodeError::LimitReached {
                    limit: "keys per platform",
                    max: self.config.max_keys_per_platform,
                })
            }
            _ => Ok(()),
        }
    }

    /// Removes `key` from `platform`, whatever its state; returns whether it was
    /// there. The platform stays known.
    pub fn unpublish(&mut self, now: Timestamp, platform: &str, key: &str) -> bool {
        let removed = self.pool.unpublish(platform, key);
        self.quota.forget_key(platform, key);
        self.probe_unpublished(platform, key);
        if removed {
            self.key_event(platform, key, KeyEvent::Unpublished);
            self.serve_held_after_change(now);
        }
        removed
    }

    /// Stops the engine (SHUTDOWN): held requests get a key if one is fresh
    /// now, else the `wait` they would have had without holding; afterwards
    /// [`is_shutdown`](Self::is_shutdown) is true and input is ignored.
    pub fn shutdown(&mut self, now: Timestamp) {
        if self.shutdown {
            return;
        }
        if self.held.len() > 0 {
            self.serve_held_everything(now);
        }
        self.release_held(now);
        self.shutdown = true;
        self.events.push_back(Event::Shutdown);
    }

    /// The platform names, in the order of their first publish.
    pub fn platforms(&self) -> Vec<String> {
        self.pool.platforms().map(str::to_string).collect()
    }

    /// The fresh and expired keys of `platform` at `now`; `None` for an unknown
    /// platform.
    pub fn keys(&mut self, now: Timestamp, platform: &str) -> Option<Vec<String>> {
        self.pool.keys(platform, now)
    }

    /// The invalid keys of `platform`, sorted; `None` for an unknown platform.
    pub fn invalid_keys(&self, platform: &str) -> Option<Vec<String>> {
        self.pool.invalid_keys(platform)
    }

    /// Key counts and the next refresh time of every platform at `now`.
    pub fn status(&mut self, now: Timestamp) -> Vec<PlatformStatus> {
        let mut status = self.pool.status(now);
        self.add_forecasts(now, &mut status);
        self.add_probe_status(now, &mut status);
        for p in &mut status {
            p.clock_lag_ms = self
                .lags
                .lag(now, &p.platform)
                .filter(|&lag| lag >= crate::quota::MEASURABLE_SKEW)
                .map(|lag| u64::try_from(lag.as_millis()).unwrap_or(u64::MAX));
        }
        status
    }

    /// How many keys of `platform` are in each state at `now`; `None` for an
    /// unknown platform.
    pub fn counts(&mut self, now: Timestamp, platform: &str) -> Option<Counts> {
        self.pool.counts(platform, now)
    }

    /// Answers the held requests that a change of the pool may serve.
    fn serve_held_after_change(&mut self, now: Timestamp) {
        if self.held.len() > 0 {
            self.serve_held(now, false);
        }
    }

    fn key_event(&mut self, platform: &str, key: &str, what: KeyEvent) {
        self.stats.changes += 1;
        self.events.push_back(Event::Key {
            platform: platform.to_string(),
            key: Masked(key).to_string(),
            what,
        });
    }
}

/// Whole seconds from `now` until `refresh_at`, rounded up, never 0: the
/// `{"wait": n}` hint.
pub fn wait_seconds(now: Timestamp, refresh_at: Timestamp) -> u64 {
    refresh_at
        .as_millis()
        .saturating_sub(now.as_millis())
        .div_ceil(1000)
        .max(1)
}
