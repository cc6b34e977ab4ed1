//! The event loop: the engine, the API and the workers in virtual time, over a
//! priority queue of actions, and the report made at the end.

use super::api::Api;
use super::config::{
    ClientBehaviour, ConfigError, Orchestrator, PLATFORM, PROBE_LATENCY, START, SimConfig, millis,
};
use super::report::{Report, Sample, Settings};
use super::workers::{Giving, KeySide, LeaseHeld, Seen, WorkerState};
use crate::engine::{Engine, Event, KeyEvent};
use crate::harness::drain_each;
use crate::probe::ProbeAnswer;
use crate::protocol::{Announce, Channels, DEFAULT_MAX_PAYLOAD, Reply, ReplyTo};
use crate::ratelimit::RateLimit;
use crate::rng::SplitMix64;
use crate::time::Timestamp;
use rand_core::Rng;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

/// The requester id of the simulation's admin (STATUS requests).
const ADMIN_ID: &str = "simulate-admin";

/// Simulates `config`, calling `progress` with the share of virtual time done
/// (from 0 to 1, about a hundred times). Costs `O(E log E)` in the number of
/// events `E`: key hand-outs, 403s, 401s and floor crossings, window resets and
/// samples, not the calls served, so a day of 17 M wanted calls takes well under
/// a second in an optimized build.
pub fn run(config: &SimConfig, progress: &mut dyn FnMut(f64)) -> Result<Report, ConfigError> {
    run_with(config, progress, true)
}

/// [`run`], with calls served in batches or (for checking the batches) each call
/// its own event.
fn run_with(
    config: &SimConfig,
    progress: &mut dyn FnMut(f64),
    batching: bool,
) -> Result<Report, ConfigError> {
    config.validate()?;
    // The scenarios of the quota extension make every call its own event.
    let mut sim = Simulation::new(config, batching && !config.is_extended());
    sim.run(progress);
    Ok(sim.report())
}

/// Something that happens at a point of virtual time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Action {
    /// The end of the simulation.
    End,
    /// A worker asks the engine for a key (NEW).
    Ask { worker: usize },
    /// A holder of `key` makes a call with a consequence, or the key's window
    /// resets. Stale unless `plan` is the key's current plan.
    KeyDue { key: usize, plan: u64 },
    /// Sample the key states.
    Sample,
    /// The engine asked to be woken (its `poll_timeout`).
    EngineTimeout,
    /// The donor calls the API with their key, outside keyman.
    Donor { key: usize },
    /// The engine's answer to a worker's held NEW is delivered to it.
    Deliver { worker: usize },
    /// A worker's last call with a lease is done: it returns the lease.
    /// `order` numbers the calls, so that the answers of calls made at the
    /// same moment come in the order the platform served them.
    ReturnLease { order: u64, worker: usize },
    /// The API answers the engine's probe `id` of `key`.
    ProbeAnswer { id: u64, key: usize },
}

/// One simulation: the engine, the API, the keys and workers as the workers see
/// them, the queue of actions and the counts for the report. What the workers do
/// (asking, calling, reporting) is in `workers`, in its own `impl` block.
pub(super) struct Simulation {
    pub(super) settings: Settings,
    /// Whether uneventful calls are served in batches (else each is an event).
    pub(super) batching: bool,
    pub(super) interval: u64,
    pub(super) floor: u64,
    pub(super) end: u64,
    pub(super) sample_every: u64,
    pub(super) engine: Engine<SplitMix64>,
    pub(super) channels: Channels,
    pub(super) api: Api,
    pub(super) key_text: Vec<String>,
    pub(super) key_index: HashMap<String, usize>,
    pub(super) keys: Vec<KeySide>,
    pub(super) workers: Vec<WorkerState>,
    pub(super) workers_waiting: u64,
    /// Workers waiting × milliseconds, summed up to `waiting_counted_to`.
    pub(super) waiting_area: u128,
    pub(super) waiting_counted_to: u64,
    /// `waiting_area` and the time at the previous sample.
    pub(super) last_sample: Option<(u128, u64)>,
    /// Actions by time; actions at the same time in the order of [`Action`], so
    /// that the order never depends on when an action was planned.
    pub(super) queue: BinaryHeap<Reverse<(u64, Action)>>,
    pub(super) engine_wake: Option<u64>,
    /// Worker time within the simulation, from each worker's first ask to the end.
    pub(super) worker_time: u64,
    pub(super) demand: u64,
    pub(super) capacity: u64,
    pub(super) waiting_total: u64,
    pub(super) calls_served: u64,
    pub(super) rate_limited: u64,
    pub(super) unauthorized: u64,
    pub(super) keys_handed_out: u64,
    pub(super) wait_replies: u64,
    pub(super) error_replies: u64,
    pub(super) expire_reports: u64,
    pub(super) invalidate_reports: u64,
    pub(super) keys_expired: u64,
    pub(super) keys_invalidated: u64,
    pub(super) invalid_handouts: u64,
    pub(super) samples: Vec<Sample>,
    pub(super) clients: ClientBehaviour,
    pub(super) orchestrator: Orchestrator,
    /// What each keyman-aware worker read in its previous answer with its key.
    pub(super) seen: Vec<Option<Seen>>,
    /// The donor's key and the interval between their calls, if there is a donor.
    pub(super) donor: Option<(usize, u64)>,
    pub(super) forbidden_own: u64,
    pub(super) forbidden_outside: u64,
    pub(super) secondary_limited: u64,
    pub(super) calls_below_floor: u64,
    pub(super) donor_calls_made: u64,
    pub(super) donor_calls_served: u64,
    pub(super) donor_forbidden: u64,
    pub(super) reports_sent: u64,
    pub(super) engine_rejected: u64,
    /// Per key, the reset time of the last window in which it ran out (a 403
    /// of the workers' own calls).
    pub(super) ran_out: Vec<Option<u64>>,
    /// How many workers held a key when it ran out, once per key and window.
    pub(super) holders_at_run_out: Vec<u64>,
    /// The lease each keyman-aware worker holds, if any.
    pub(super) leases: Vec<Option<LeaseHeld>>,
    /// Answers to held requests, waiting to be delivered to their worker.
    pub(super) mailbox: Vec<Option<Reply>>,
    /// What a worker ending its lease reports when its last call is done:
    /// the key, the headers of that call and what it does next.
    pub(super) returning: Vec<Option<(usize, RateLimit, Giving)>>,
    /// The calls a keyman-aware worker asks a lease for.
    pub(super) lease_size: u64,
    pub(super) leases_granted: u64,
    /// How many leases were returned (orders their returns).
    pub(super) returns: u64,
    pub(super) probes: u64,
}

/// The median of `values` (the mean of the middle two for an even count), 0
/// when there are none.
fn median(values: &mut [u64]) -> f64 {
    values.sort_unstable();
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2] as f64,
        n => (values[n / 2 - 1] + values[n / 2]) as f64 / 2.0,
    }
}

/// A uniform draw from `0..n`.
pub(super) fn below(rng: &mut SplitMix64, n: u64) -> u64 {
    ((u128::from(rng.next_u64()) * u128::from(n)) >> 64) as u64
}

impl Simulation {
    pub(super) fn push(&mut self, at: u64, action: Action) {
        self.queue.push(Reverse((at, action)));
    }

    fn run(&mut self, progress: &mut dyn FnMut(f64)) {
        let start = START.as_millis();
        let span = (self.end - start).max(1);
        let step = span.div_ceil(100).max(1);
        let mut next_report = start;
        progress(0.0);
        while let Some(Reverse((now, action))) = self.queue.pop() {
            if now >= next_report {
                progress((now - start) as f64 / span as f64);
                next_report = now.saturating_add(step);
            }
            match action {
                Action::End => {
                    self.finish();
                    break;
                }
                Action::Ask { worker } => self.ask(now, worker),
                Action::KeyDue { key, plan } => {
                    if self.keys[key].plan == plan {
                        self.key_due(now, key);
                    }
                }
                Action::Sample => self.sample(now),
                Action::Donor { key } => {
                    self.donor_call(now, key);
                    if let Some((_, every)) = self.donor {
                        self.push(now.saturating_add(every), Action::Donor { key });
                    }
                }
                Action::ProbeAnswer { id, key } => {
                    // The API's window includes every call made before now.
                    self.settle(key, now);
                    let outcome = self.api.probe(key, now);
                    self.engine
                        .handle_probe(Timestamp::from_millis(now), ProbeAnswer { id, outcome });
                    self.drain_engine(now, None);
                }
                Action::ReturnLease { worker, .. } => self.return_lease(now, worker),
                Action::Deliver { worker } => {
                    if let Some(reply) = self.mailbox[worker].take() {
                        self.on_reply(now, worker, reply);
                    }
                }
                Action::EngineTimeout => {
                    if self.engine_wake == Some(now) {
                        self.engine_wake = None;
                        self.engine.handle_timeout(Timestamp::from_millis(now));
                        self.drain_engine(now, None);
                    }
                }
            }
        }
        progress(1.0);
    }

    /// Drains the engine's outputs after a `handle` (through the harness's
    /// [`drain_each`], in the documented order): the reply addressed to
    /// `reply_channel`, if any, and counts its events. Schedules the engine's
    /// next wake-up.
    pub(super) fn drain_engine(
        &mut self,
        now: u64,
        reply_channel: Option<&str>,
    ) -> (Option<Reply>, bool) {
        let mut reply = None;
        let mut invalidated = false;
        let mut later: Vec<(usize, Reply)> = Vec::new();
        let prefix = format!("{}-", self.channels.request);
        let (keys_expired, keys_invalidated, engine_rejected) = (
            &mut self.keys_expired,
            &mut self.keys_invalidated,
            &mut self.engine_rejected,
        );
        drain_each(
            &mut self.engine,
            |tx| {
                let decoded = || {
                    Reply::decode(&tx.payload, DEFAULT_MAX_PAYLOAD)
                        .ok()
                        .map(|m| m.reply)
                };
                if reply_channel == Some(tx.channel.as_str()) {
                    reply = decoded();
                } else if let Some(worker) = tx
                    .channel
                    .strip_prefix(&prefix)
                    .and_then(|w| w.parse::<usize>().ok())
                    && let Some(r) = decoded()
                {
                    // The answer to a held request.
                    later.push((worker, r));
                }
            },
            |event| match event {
                Event::Key { what, .. } => match what {
                    KeyEvent::Expired { .. } => *keys_expired += 1,
                    KeyEvent::Invalidated => {
                        *keys_invalidated += 1;
                        invalidated = true;
                    }
                    _ => {}
                },
                Event::Rejected { .. } => *engine_rejected += 1,
                _ => {}
            },
        );
        for (worker, r) in later {
            if worker < self.mailbox.len() {
                self.mailbox[worker] = Some(r);
                self.push(now, Action::Deliver { worker });
            }
        }
        while let Some(probe) = self.engine.poll_probe() {
            self.probes += 1;
            if let Some(&key) = self.key_index.get(&probe.key) {
                let at = now.saturating_add(millis(PROBE_LATENCY));
                self.push(at, Action::ProbeAnswer { id: probe.id, key });
            }
        }
        if let Some(wake) = self.engine.poll_timeout() {
            let wake = wake.as_millis();
            if self.engine_wake.is_none_or(|w| wake < w) && wake < self.end {
                self.engine_wake = Some(wake.max(now));
                self.push(wake.max(now), Action::EngineTimeout);
            }
        }
        (reply, invalidated)
    }

    fn sample(&mut self, now: u64) {
        let msg = Announce::Status {
            reply: ReplyTo::new(ADMIN_ID),
        };
        let channel = self.channels.announce.clone();
        let reply_channel = self.channels.announce_reply(&ADMIN_ID.into());
        self.engine
            .handle(Timestamp::from_millis(now), &channel, &msg.encode());
        let (reply, _) = self.drain_engine(now, Some(&reply_channel));
        let status = match reply {
            Some(Reply::Status(platforms)) => {
                platforms.into_iter().find(|p| p.platform == PLATFORM)
            }
            _ => None,
        };
        let (fresh, expired, invalid) =
            status.map_or((0, 0, 0), |s| (s.fresh, s.expired, s.invalid));
        self.count_waiting(now);
        let workers_waiting_mean = match self.last_sample {
            Some((area, at)) if now > at => (self.waiting_area - area) as f64 / (now - at) as f64,
            _ => self.workers_waiting as f64,
        };
        self.last_sample = Some((self.waiting_area, now));
        self.samples.push(Sample {
            at_seconds: (now - START.as_millis()) / 1000,
            fresh,
            expired,
            invalid,
            workers_waiting: self.workers_waiting,
            workers_waiting_mean,
        });
    }

    fn finish(&mut self) {
        let end = self.end;
        for key in 0..self.keys.len() {
            self.settle(key, end);
        }
        for state in &self.workers {
            if let WorkerState::Waiting { since } = *state {
                self.waiting_total += end.saturating_sub(since);
            }
        }
        self.sample(end);
    }

    fn report(mut self) -> Report {
        let capacity = self.capacity;
        let possible = self.demand.min(capacity);
        let workers = self.workers.len().max(1) as f64;
        let waiting_seconds_total = self.waiting_total as f64 / 1000.0;
        Report {
            calls_served: self.calls_served,
            rate_limited: self.rate_limited,
            unauthorized: self.unauthorized,
            probes: self.probes,
            demand: self.demand,
            capacity,
            utilization: if possible == 0 {
                0.0
            } else {
                self.calls_served as f64 / possible as f64
            },
            waiting_seconds_total,
            waiting_seconds_per_worker: waiting_seconds_total / workers,
            waiting_share: if self.worker_time == 0 {
                0.0
            } else {
                self.waiting_total as f64 / self.worker_time as f64
            },
            keys_handed_out: self.keys_handed_out,
            wait_replies: self.wait_replies,
            error_replies: self.error_replies,
            expire_reports: self.expire_reports,
            invalidate_reports: self.invalidate_reports,
            keys_expired: self.keys_expired,
            keys_invalidated: self.keys_invalidated,
            invalid_handouts_after_invalidation: self.invalid_handouts,
            over_quota_successes: self.api.over_quota_successes,
            invalid_key_successes: self.api.invalid_key_successes,
            forbidden_own: self.forbidden_own,
            forbidden_outside: self.forbidden_outside,
            secondary_limited: self.secondary_limited,
            calls_below_floor: self.calls_below_floor,
            donor_calls_made: self.donor_calls_made,
            donor_calls_served: self.donor_calls_served,
            donor_forbidden: self.donor_forbidden,
            reports_sent: self.reports_sent,
            engine_rejected: self.engine_rejected,
            leases_granted: self.leases_granted,
            key_run_outs: self.holders_at_run_out.len() as u64,
            holders_at_run_out_median: median(&mut self.holders_at_run_out),
            samples: self.samples,
            settings: self.settings,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn batches_give_exactly_what_one_event_per_call_gives() {
        let hour = Duration::from_secs(3600);
        let configs = [
            SimConfig {
                keys: 1,
                invalid: 0,
                workers: 3,
                duration: 3 * hour,
                quota: 100,
                ..SimConfig::default()
            },
            SimConfig {
                keys: 4,
                invalid: 1,
                workers: 30,
                rate: 3.0,
                duration: 2 * hour,
                quota: 500,
                window: Duration::from_secs(600),
                seed: 9,
                ..SimConfig::default()
            },
            SimConfig {
                keys: 6,
                invalid: 1,
                workers: 9,
                duration: 2 * hour,
                quota: 900,
                floor: Some(50),
                seed: 11,
                ..SimConfig::default()
            },
            SimConfig {
                keys: 3,
                invalid: 0,
                workers: 60,
                rate: 2.0,
                duration: hour,
                quota: 1000,
                window: Duration::from_secs(600),
                floor: Some(20),
                seed: 13,
                ..SimConfig::default()
            },
        ];
        for config in configs {
            let batched = run_with(&config, &mut |_| {}, true).unwrap();
            let per_call = run_with(&config, &mut |_| {}, false).unwrap();
            assert_eq!(batched, per_call, "{config:?}");
            assert!(batched.calls_served > 0 && batched.rate_limited + batched.expire_reports > 0);
        }
    }
}
