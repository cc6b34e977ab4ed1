//! `keyman simulate`: the real [`Engine`] in virtual time against a simulated
//! rate-limited API.
//!
//! The simulation answers "what will keyman do for my throughput?" before
//! anything is deployed. It runs the very engine `keyman serve` runs, feeding it
//! the encoded messages Augur's workers send (PUBLISH, NEW, EXPIRE, INVALIDATE,
//! STATUS) through [`Engine::handle`] and decoding its answers with
//! [`Reply::decode`]. Around it:
//!
//! - **a simulated API that behaves like GitHub's**: each key has a quota per
//!   window; the window starts with the first call after the previous one ended
//!   and resets at a whole second (GitHub's `x-ratelimit-reset`); every answer
//!   carries the remaining count and the reset time; a call over quota gets a 403
//!   with the reset time; a bad key gets a 401.
//! - **workers that behave like Augur's**: take a key (NEW; on `{"wait": n}`
//!   sleep `n` seconds and ask again; on any other answer without a key, ask again
//!   after 20 s), call the API at a fixed rate until a 403 (or, with a floor, until
//!   the remaining count falls under it), then report the key with EXPIRE and the
//!   reset time, sleep 0.1 s and ask again; on a 401 report it with INVALIDATE.
//!
//! Time is virtual: a discrete-event simulation over a priority queue, with no
//! sleeping and no clock. Calls are not events one by one: while the holders of
//! a key make calls that change nothing (2xx with the remaining count at or over
//! the floor), those calls are served in one batch, in time order across the
//! holders; the next call with a consequence (the 403, the 401, the first call
//! under the floor) is an event at exactly the time the worker makes it, and any
//! change to a key's holders first settles the calls made before it. The
//! simulated API checks every batch against the quota independently and counts
//! any call served over quota ([`Report::over_quota_successes`]), which stays 0.
//!
//! Everything is deterministic for a given [`SimConfig::seed`]: the engine and the
//! workers draw from seeded [`SplitMix64`] generators, and no decision depends on
//! the iteration order of a hash map. [`run`] does no I/O and reads no clock.

use crate::engine::{Engine, EngineConfig, Event, KeyEvent};
use crate::protocol::{Announce, Channels, DEFAULT_MAX_PAYLOAD, Reply, ReplyTo, Request};
use crate::rng::SplitMix64;
use crate::time::Timestamp;
use rand_core::Rng;
use serde::Serialize;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::Duration;

/// The platform the simulated keys are published to.
pub const PLATFORM: &str = "github_rest";

/// How long an Augur worker sleeps between reporting a key (EXPIRE or
/// INVALIDATE) and asking for the next (NEW).
pub const REASK_DELAY: Duration = Duration::from_millis(100);

/// How long an Augur worker sleeps after an answer with neither a key nor a wait
/// hint (an error) before asking again.
pub const ERROR_RETRY: Duration = Duration::from_secs(20);

/// The seed used when none is given.
pub const DEFAULT_SEED: u64 = 42;

/// The virtual wall-clock time at which every simulation starts:
/// 2026-01-01T00:00:00Z. Reported times are relative to it.
pub const START: Timestamp = Timestamp::from_secs(1_767_225_600);

/// The requester id of the simulation's admin (STATUS requests).
const ADMIN_ID: &str = "simulate-admin";

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
    /// How often the key states are sampled for [`Report::samples`].
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
        }
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
    /// API calls answered with a 403 (over quota).
    pub rate_limited: u64,
    /// API calls answered with a 401 (bad key).
    pub unauthorized: u64,
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
    let mut sim = Simulation::new(config, batching);
    sim.run(progress);
    Ok(sim.report())
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Rounds a time in milliseconds up to a whole second.
fn ceil_to_second(ms: u64) -> u64 {
    ms.div_ceil(1000).saturating_mul(1000)
}

/// What the simulated API answers one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Response {
    /// 2xx, with the calls remaining in the window and the window's reset time.
    Served { remaining: u64, reset: u64 },
    /// 403: over quota until `reset`.
    RateLimited { reset: u64 },
    /// 401: the key is bad.
    Unauthorized,
}

/// One key as the API sees it.
#[derive(Debug, Clone)]
struct ApiKey {
    valid: bool,
    /// The reset time of the current window, if one was opened.
    reset: Option<u64>,
    /// Calls served in the current window.
    used: u64,
}

/// The simulated rate-limited API.
#[derive(Debug)]
struct Api {
    keys: Vec<ApiKey>,
    quota: u64,
    window_ms: u64,
    over_quota_successes: u64,
    invalid_key_successes: u64,
}

impl Api {
    /// The window a call at `at` falls in, opened (GitHub-style, at the first call
    /// after the previous window's reset) if needed.
    fn window_at(&mut self, key: usize, at: u64) -> &mut ApiKey {
        let window_ms = self.window_ms;
        let k = &mut self.keys[key];
        if k.reset.is_none_or(|reset| at >= reset) {
            k.reset = Some(ceil_to_second(at.saturating_add(window_ms)));
            k.used = 0;
        }
        k
    }

    /// One call with `key` at `at`.
    fn call(&mut self, key: usize, at: u64) -> Response {
        if !self.keys[key].valid {
            return Response::Unauthorized;
        }
        let quota = self.quota;
        let k = self.window_at(key, at);
        let reset = k.reset.unwrap_or(at);
        if k.used >= quota {
            return Response::RateLimited { reset };
        }
        k.used += 1;
        Response::Served {
            remaining: quota - k.used,
            reset,
        }
    }

    /// Serves `count` calls with `key`, the first at `first` and the last at
    /// `last`, all of them successes in the caller's view. Counts every call that
    /// is over quota in its window, or made with a bad key.
    fn serve_batch(&mut self, key: usize, first: u64, last: u64, count: u64) {
        if !self.keys[key].valid {
            self.invalid_key_successes += count;
            return;
        }
        let quota = self.quota;
        let k = self.window_at(key, first);
        debug_assert!(k.reset.is_some_and(|reset| last < reset));
        let before = k.used;
        k.used = k.used.saturating_add(count);
        let over = k.used.saturating_sub(quota.max(before));
        self.over_quota_successes += over;
    }
}

/// The workers holding one key, in the order of their next calls, each with the
/// time of its next call. All next calls lie within one call interval of each
/// other, so the calls of all holders, in time order, are those of the holders
/// in this order, round after round.
#[derive(Debug, Default, Clone)]
struct Holders {
    /// `(next call, worker)`, sorted by next call.
    queue: VecDeque<(u64, usize)>,
}

impl Holders {
    fn len(&self) -> u64 {
        self.queue.len() as u64
    }

    fn first_call(&self) -> Option<u64> {
        self.queue.front().map(|&(at, _)| at)
    }

    /// How many calls the holders make before `limit`. `O(log h)`: of the rounds
    /// of calls that start before `limit`, all but the last are complete, since
    /// the holders' next calls lie within one interval of the first.
    fn calls_before(&self, limit: u64, interval: u64) -> u64 {
        let Some(first) = self.first_call().filter(|&at| at < limit) else {
            return 0;
        };
        let rounds = (limit - 1 - first) / interval + 1;
        let last_round_limit = limit - (rounds - 1) * interval;
        let in_last_round = self.queue.partition_point(|&(at, _)| at < last_round_limit) as u64;
        self.len() * (rounds - 1) + in_last_round
    }

    /// The time of call number `n` (from 0) of all holders, in time order.
    fn call_time(&self, n: u64, interval: u64) -> u64 {
        let h = self.len();
        let (round, idx) = (n / h, n % h);
        self.queue[idx as usize].0 + round * interval
    }

    /// Moves past the next `n` calls in time order.
    fn advance(&mut self, n: u64, interval: u64) {
        let h = self.len();
        let (rounds, rest) = (n / h, (n % h) as usize);
        for (i, (at, _)) in self.queue.iter_mut().enumerate() {
            *at += rounds * interval;
            if i < rest {
                *at += interval;
            }
        }
        self.queue.rotate_left(rest);
    }

    /// Adds `worker` making its first call at `at`, which is no later than any
    /// other holder's next call.
    fn join(&mut self, at: u64, worker: usize) {
        let pos = self.queue.partition_point(|&(t, _)| t <= at);
        self.queue.insert(pos, (at, worker));
    }
}

/// One key as the simulation's workers see it.
#[derive(Debug, Default, Clone)]
struct KeySide {
    holders: Holders,
    /// Bumped whenever the key's next event is planned again; older events are stale.
    plan: u64,
    /// When the engine invalidated the key, if it did.
    invalidated: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WorkerState {
    /// Without a key since the given time.
    Waiting { since: u64 },
    /// Holding a key (and listed among its holders).
    Holding,
}

/// Something that happens at a point of virtual time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Action {
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
}

/// How a worker reports the key it gives up.
enum Giving {
    Expire { reset: u64 },
    Invalidate,
}

struct Simulation {
    settings: Settings,
    /// Whether uneventful calls are served in batches (else each is an event).
    batching: bool,
    interval: u64,
    floor: u64,
    end: u64,
    sample_every: u64,
    engine: Engine<SplitMix64>,
    channels: Channels,
    api: Api,
    key_text: Vec<String>,
    key_index: HashMap<String, usize>,
    keys: Vec<KeySide>,
    workers: Vec<WorkerState>,
    workers_waiting: u64,
    /// Workers waiting × milliseconds, summed up to `waiting_counted_to`.
    waiting_area: u128,
    waiting_counted_to: u64,
    /// `waiting_area` and the time at the previous sample.
    last_sample: Option<(u128, u64)>,
    /// Actions by time; actions at the same time in the order of [`Action`], so
    /// that the order never depends on when an action was planned.
    queue: BinaryHeap<Reverse<(u64, Action)>>,
    engine_wake: Option<u64>,
    /// Worker time within the simulation, from each worker's first ask to the end.
    worker_time: u64,
    demand: u64,
    capacity: u64,
    waiting_total: u64,
    calls_served: u64,
    rate_limited: u64,
    unauthorized: u64,
    keys_handed_out: u64,
    wait_replies: u64,
    error_replies: u64,
    expire_reports: u64,
    invalidate_reports: u64,
    keys_expired: u64,
    keys_invalidated: u64,
    invalid_handouts: u64,
    samples: Vec<Sample>,
}

/// Characters of the simulated keys.
const KEY_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

fn random_key(rng: &mut SplitMix64) -> String {
    let mut key = String::from("ghp_");
    for _ in 0..36 {
        let idx = ((u128::from(rng.next_u64()) * KEY_ALPHABET.len() as u128) >> 64) as usize;
        key.push(char::from(KEY_ALPHABET[idx]));
    }
    key
}

fn below(rng: &mut SplitMix64, n: u64) -> u64 {
    ((u128::from(rng.next_u64()) * u128::from(n)) >> 64) as u64
}

impl Simulation {
    fn new(config: &SimConfig, batching: bool) -> Self {
        let start = START.as_millis();
        let interval = config.call_interval_ms();
        let end = start.saturating_add(millis(config.duration));
        let mut rng = SplitMix64::new(config.seed ^ 0x5157_4f52_4b45_5253);

        // Keys: random texts, some of them bad.
        let mut key_text = Vec::with_capacity(config.keys);
        let mut key_index = HashMap::with_capacity(config.keys);
        while key_text.len() < config.keys {
            let key = random_key(&mut rng);
            if !key_index.contains_key(&key) {
                key_index.insert(key.clone(), key_text.len());
                key_text.push(key);
            }
        }
        let mut order: Vec<usize> = (0..config.keys).collect();
        for i in 0..config.invalid.min(config.keys) {
            let j = i + below(&mut rng, (config.keys - i) as u64) as usize;
            order.swap(i, j);
        }
        let mut api_keys = vec![
            ApiKey {
                valid: true,
                reset: None,
                used: 0,
            };
            config.keys
        ];
        for &bad in &order[..config.invalid.min(config.keys)] {
            api_keys[bad].valid = false;
        }

        let mut sim = Self {
            settings: Settings::from(config),
            batching,
            interval,
            floor: config.floor.unwrap_or(0),
            end,
            sample_every: millis(config.sample_every).max(1),
            engine: Engine::new(EngineConfig::default(), SplitMix64::new(config.seed)),
            channels: Channels::default(),
            api: Api {
                keys: api_keys,
                quota: config.quota,
                window_ms: millis(config.window),
                over_quota_successes: 0,
                invalid_key_successes: 0,
            },
            key_text,
            key_index,
            keys: vec![KeySide::default(); config.keys],
            workers: Vec::with_capacity(config.workers),
            workers_waiting: 0,
            waiting_area: 0,
            waiting_counted_to: start,
            last_sample: None,
            queue: BinaryHeap::new(),
            engine_wake: None,
            worker_time: 0,
            demand: 0,
            capacity: config.capacity(),
            waiting_total: 0,
            calls_served: 0,
            rate_limited: 0,
            unauthorized: 0,
            keys_handed_out: 0,
            wait_replies: 0,
            error_replies: 0,
            expire_reports: 0,
            invalidate_reports: 0,
            keys_expired: 0,
            keys_invalidated: 0,
            invalid_handouts: 0,
            samples: Vec::new(),
        };

        sim.push(end, Action::End);
        for i in 0..config.keys {
            let msg = Announce::Publish {
                key: sim.key_text[i].clone(),
                platform: PLATFORM.to_string(),
            };
            sim.engine.handle(
                Timestamp::from_millis(start),
                &sim.channels.announce,
                &msg.encode(),
            );
            sim.drain_engine(start, None);
        }
        // Workers start one after another within the first call interval.
        for w in 0..config.workers {
            let first = start + below(&mut rng, interval);
            sim.workers.push(WorkerState::Waiting { since: first });
            sim.workers_waiting += 1;
            sim.worker_time += end.saturating_sub(first);
            sim.demand += end.saturating_sub(first).div_ceil(interval);
            sim.push(first, Action::Ask { worker: w });
        }
        let mut at = start;
        while at < end {
            sim.push(at, Action::Sample);
            at = at.saturating_add(sim.sample_every);
        }
        sim
    }

    fn push(&mut self, at: u64, action: Action) {
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

    /// Drains the engine's outputs after a `handle`: the reply addressed to
    /// `reply_channel`, if any, and counts its events. Schedules the engine's
    /// next wake-up.
    fn drain_engine(&mut self, now: u64, reply_channel: Option<&str>) -> (Option<Reply>, bool) {
        let mut reply = None;
        while let Some(tx) = self.engine.poll_transmit() {
            if reply_channel == Some(tx.channel.as_str()) {
                reply = Reply::decode(&tx.payload, DEFAULT_MAX_PAYLOAD)
                    .ok()
                    .map(|m| m.reply);
            }
        }
        let mut invalidated = false;
        while let Some(event) = self.engine.poll_event() {
            if let Event::Key { what, .. } = event {
                match what {
                    KeyEvent::Expired { .. } => self.keys_expired += 1,
                    KeyEvent::Invalidated => {
                        self.keys_invalidated += 1;
                        invalidated = true;
                    }
                    _ => {}
                }
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

    /// Sends a worker's message and returns the engine's answer to it.
    fn send(&mut self, now: u64, worker: usize, request: Request) -> (Option<Reply>, bool) {
        let reply_channel = matches!(request, Request::New { .. })
            .then(|| self.channels.request_reply(&(worker as u64).into()));
        let channel = self.channels.request.clone();
        self.engine
            .handle(Timestamp::from_millis(now), &channel, &request.encode());
        self.drain_engine(now, reply_channel.as_deref())
    }

    /// A worker without a key asks for one.
    fn ask(&mut self, now: u64, worker: usize) {
        let request = Request::New {
            platform: PLATFORM.to_string(),
            reply: ReplyTo::new(worker as u64),
            hold_ms: None,
        };
        match self.send(now, worker, request).0 {
            Some(Reply::Key(text)) => match self.key_index.get(&text).copied() {
                Some(key) => {
                    self.keys_handed_out += 1;
                    if self.keys[key].invalidated {
                        self.invalid_handouts += 1;
                    }
                    self.join(now, worker, key);
                }
                None => {
                    self.error_replies += 1;
                    self.push(now + millis(ERROR_RETRY), Action::Ask { worker });
                }
            },
            Some(Reply::Wait(secs)) => {
                self.wait_replies += 1;
                let at = now.saturating_add(secs.max(1).saturating_mul(1000));
                self.push(at, Action::Ask { worker });
            }
            _ => {
                self.error_replies += 1;
                self.push(now + millis(ERROR_RETRY), Action::Ask { worker });
            }
        }
    }

    fn join(&mut self, now: u64, worker: usize, key: usize) {
        self.settle(key, now);
        self.keys[key].holders.join(now, worker);
        if let WorkerState::Waiting { since } = self.workers[worker] {
            self.waiting_total += now - since;
            self.count_waiting(now);
            self.workers_waiting -= 1;
        }
        self.workers[worker] = WorkerState::Holding;
        self.plan(key, now);
    }

    /// A worker gives its key up: reports it and asks again after Augur's pause.
    fn give_up(&mut self, now: u64, worker: usize, key: usize, giving: Giving) {
        let text = self.key_text[key].clone();
        let requester_id = Some((worker as u64).into());
        let request = match giving {
            Giving::Expire { reset } => {
                self.expire_reports += 1;
                Request::Expire {
                    key: text,
                    platform: PLATFORM.to_string(),
                    refresh_time: Timestamp::from_millis(reset),
                    requester_id,
                }
            }
            Giving::Invalidate => {
                self.invalidate_reports += 1;
                Request::Invalidate {
                    key: text,
                    platform: PLATFORM.to_string(),
                    requester_id,
                }
            }
        };
        if self.send(now, worker, request).1 {
            self.keys[key].invalidated = true;
        }
        self.workers[worker] = WorkerState::Waiting { since: now };
        self.count_waiting(now);
        self.workers_waiting += 1;
        self.push(now + millis(REASK_DELAY), Action::Ask { worker });
    }

    /// Serves, in batches, every call the holders of `key` make before `until`.
    /// The planner guarantees these calls change nothing (each is a 2xx with the
    /// remaining count at or over the floor); the API checks the quota itself.
    fn settle(&mut self, key: usize, until: u64) {
        let interval = self.interval;
        loop {
            let holders = &self.keys[key].holders;
            let Some(first) = holders.first_call().filter(|&at| at < until) else {
                return;
            };
            let api_key = &self.api.keys[key];
            let window_end = match api_key.reset.filter(|&reset| reset > first) {
                Some(reset) => reset,
                None => ceil_to_second(first.saturating_add(self.api.window_ms)),
            };
            let limit = until.min(window_end);
            let count = holders.calls_before(limit, interval);
            let last = holders.call_time(count - 1, interval);
            self.api.serve_batch(key, first, last, count);
            self.calls_served += count;
            self.keys[key].holders.advance(count, interval);
        }
    }

    /// Plans the next event of `key`: the next call with a consequence, or its
    /// window's reset, whichever comes first (nothing if it is past the end).
    fn plan(&mut self, key: usize, now: u64) {
        self.keys[key].plan += 1;
        let plan = self.keys[key].plan;
        let holders = &self.keys[key].holders;
        let Some(first) = holders.first_call() else {
            return;
        };
        let api_key = &self.api.keys[key];
        let at = if !api_key.valid {
            first
        } else {
            let quota_left = if self.batching {
                self.api.quota.saturating_sub(self.floor)
            } else {
                0
            };
            let (uneventful, window_end) = match api_key.reset.filter(|&reset| reset > first) {
                Some(reset) => (quota_left.saturating_sub(api_key.used), reset),
                None => (
                    quota_left,
                    ceil_to_second(first.saturating_add(self.api.window_ms)),
                ),
            };
            if uneventful < holders.calls_before(window_end, self.interval) {
                holders.call_time(uneventful, self.interval)
            } else {
                window_end
            }
        };
        if at < self.end {
            self.push(at.max(now), Action::KeyDue { key, plan });
        }
    }

    /// The next call with a consequence on `key` is due (or its window resets):
    /// settle what came before, make the calls due now one by one, plan again.
    fn key_due(&mut self, now: u64, key: usize) {
        self.settle(key, now);
        while let Some(&(at, worker)) = self.keys[key].holders.queue.front() {
            if at != now {
                break;
            }
            self.keys[key].holders.queue.pop_front();
            match self.api.call(key, now) {
                Response::Served { remaining, reset } => {
                    self.calls_served += 1;
                    if remaining < self.floor {
                        self.give_up(now, worker, key, Giving::Expire { reset });
                    } else {
                        self.keys[key]
                            .holders
                            .queue
                            .push_back((now + self.interval, worker));
                    }
                }
                Response::RateLimited { reset } => {
                    self.rate_limited += 1;
                    self.give_up(now, worker, key, Giving::Expire { reset });
                }
                Response::Unauthorized => {
                    self.unauthorized += 1;
                    self.give_up(now, worker, key, Giving::Invalidate);
                }
            }
        }
        self.plan(key, now);
    }

    /// Adds the waiting workers' time up to `now`, before their number changes.
    fn count_waiting(&mut self, now: u64) {
        let span = now.saturating_sub(self.waiting_counted_to);
        self.waiting_area += u128::from(self.workers_waiting) * u128::from(span);
        self.waiting_counted_to = self.waiting_counted_to.max(now);
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

    fn report(self) -> Report {
        let capacity = self.capacity;
        let possible = self.demand.min(capacity);
        let workers = self.workers.len().max(1) as f64;
        let waiting_seconds_total = self.waiting_total as f64 / 1000.0;
        Report {
            calls_served: self.calls_served,
            rate_limited: self.rate_limited,
            unauthorized: self.unauthorized,
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
            samples: self.samples,
            settings: self.settings,
        }
    }
}

/// Why a duration text could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// The text is empty.
    #[error("empty duration")]
    Empty,
    /// The text is not numbers with units.
    #[error("invalid duration {0:?}: expected e.g. 24h, 90m, 3600s, 1h30m or 2d")]
    Invalid(String),
    /// The duration does not fit.
    #[error("duration {0:?} is too long")]
    TooLong(String),
}

/// Reads a duration such as `24h`, `90m`, `3600s`, `250ms`, `2d` or `1h30m`; a
/// number alone is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    let invalid = || DurationError::Invalid(crate::mask::truncate(text, 40));
    let too_long = || DurationError::TooLong(crate::mask::truncate(text, 40));
    let mut total_ms: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return Err(invalid());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| too_long())?;
        rest = &rest[digits..];
        let unit_len = rest.len()
            - rest
                .trim_start_matches(|c: char| c.is_ascii_alphabetic())
                .len();
        let unit_ms: u64 = match &rest[..unit_len] {
            "" | "s" => 1000,
            "ms" => 1,
            "m" | "min" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(invalid()),
        };
        // A number without a unit is seconds, and only on its own.
        if unit_len == 0 && rest.len() != text.len() - digits {
            return Err(invalid());
        }
        rest = &rest[unit_len..];
        let part = number.checked_mul(unit_ms).ok_or_else(too_long)?;
        total_ms = total_ms.checked_add(part).ok_or_else(too_long)?;
    }
    Ok(Duration::from_millis(total_ms))
}

/// Formats a duration the way [`parse_duration`] reads it, in hours, minutes and
/// seconds: `24h`, `1h30m`, `90s`.
pub fn format_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    let ms = d.subsec_millis();
    if secs == 0 && ms == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (unit, len) in [("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= len {
            out.push_str(&format!("{}{unit}", secs / len));
            secs %= len;
        }
    }
    if ms > 0 {
        out.push_str(&format!("{ms}ms"));
    }
    out
}

/// A one-line chart of `values` between 0 and `max`, at most `width` characters
/// wide (neighbouring values are averaged when there are more). Zero is a space;
/// any value above zero shows at least the lowest bar.
pub fn sparkline(values: &[u64], max: u64, width: usize) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    if values.is_empty() || width == 0 {
        return String::new();
    }
    let columns = values.len().min(width);
    (0..columns)
        .map(|c| {
            let from = c * values.len() / columns;
            let to = ((c + 1) * values.len() / columns).max(from + 1);
            let bucket = &values[from..to];
            let sum: u128 = bucket.iter().map(|&v| u128::from(v)).sum();
            let mean = sum as f64 / bucket.len() as f64;
            if mean <= 0.0 || max == 0 {
                ' '
            } else {
                let level = (mean / max as f64 * BARS.len() as f64).ceil() as usize;
                BARS[level.clamp(1, BARS.len()) - 1]
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every call of the holders in time order, by brute force.
    fn all_calls(holders: &Holders, interval: u64, limit: u64) -> Vec<(u64, usize)> {
        let mut calls = Vec::new();
        for &(at, w) in &holders.queue {
            let mut t = at;
            while t < limit {
                calls.push((t, w));
                t += interval;
            }
        }
        calls.sort_by_key(|&(t, _)| t);
        calls
    }

    fn holders(rng: &mut SplitMix64, interval: u64) -> Holders {
        let mut h = Holders::default();
        let base = 10_000 + below(rng, 5000);
        for w in 0..1 + below(rng, 12) as usize {
            let at = base + below(rng, interval + 1);
            h.queue.push_back((at, w));
        }
        h.queue.make_contiguous().sort();
        h
    }

    #[test]
    fn batched_call_arithmetic_matches_counting_calls_one_by_one() {
        let mut rng = SplitMix64::new(3);
        for _ in 0..500 {
            let interval = 1 + below(&mut rng, 2000);
            let mut h = holders(&mut rng, interval);
            let limit = 10_000 + below(&mut rng, 40_000);
            let calls = all_calls(&h, interval, limit);
            assert_eq!(h.calls_before(limit, interval), calls.len() as u64);
            for (n, &(t, _)) in calls.iter().enumerate() {
                assert_eq!(h.call_time(n as u64, interval), t);
            }
            // Advancing past n calls leaves exactly the later calls.
            let n = below(&mut rng, calls.len() as u64 + 1);
            let mut later: Vec<u64> = all_calls(&h, interval, limit + 100 * interval)
                .into_iter()
                .skip(n as usize)
                .map(|(t, _)| t)
                .collect();
            h.advance(n, interval);
            let mut after: Vec<u64> = all_calls(&h, interval, limit + 100 * interval)
                .into_iter()
                .map(|(t, _)| t)
                .collect();
            later.sort();
            after.sort();
            assert_eq!(after, later);
            assert!(
                h.queue
                    .iter()
                    .zip(h.queue.iter().skip(1))
                    .all(|(a, b)| a.0 <= b.0)
            );
        }
    }

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

    #[test]
    fn the_api_counts_calls_over_quota_and_answers_403_then_resets() {
        let mut api = Api {
            keys: vec![ApiKey {
                valid: true,
                reset: None,
                used: 0,
            }],
            quota: 3,
            window_ms: 3_600_000,
            over_quota_successes: 0,
            invalid_key_successes: 0,
        };
        assert_eq!(
            api.call(0, 500),
            Response::Served {
                remaining: 2,
                reset: 3_601_000
            }
        );
        api.serve_batch(0, 600, 700, 2);
        assert_eq!(api.over_quota_successes, 0);
        assert_eq!(api.call(0, 800), Response::RateLimited { reset: 3_601_000 });
        api.serve_batch(0, 900, 900, 1);
        assert_eq!(api.over_quota_successes, 1);
        assert_eq!(
            api.call(0, 3_601_000),
            Response::Served {
                remaining: 2,
                reset: 7_201_000
            }
        );
        api.keys[0].valid = false;
        assert_eq!(api.call(0, 3_602_000), Response::Unauthorized);
        api.serve_batch(0, 3_603_000, 3_603_000, 1);
        assert_eq!(api.invalid_key_successes, 1);
    }

    #[test]
    fn durations_are_read_and_written_with_units() {
        let h = Duration::from_secs(3600);
        assert_eq!(parse_duration("24h"), Ok(24 * h));
        assert_eq!(parse_duration("90m"), Ok(Duration::from_secs(90 * 60)));
        assert_eq!(parse_duration("3600s"), Ok(h));
        assert_eq!(parse_duration("3600"), Ok(h));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2d"), Ok(48 * h));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        for bad in ["h", "12x", "1.5h", "-3s", "3 s", "10s5"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(matches!(
            parse_duration("99999999999999999999d"),
            Err(DurationError::TooLong(_))
        ));
        assert_eq!(format_duration(24 * h), "24h");
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1s500ms");
    }

    #[test]
    fn sparklines_scale_to_the_maximum_and_fit_the_width() {
        assert_eq!(sparkline(&[0, 1, 4, 8], 8, 10), " ▁▄█");
        assert_eq!(sparkline(&[8; 100], 8, 10).chars().count(), 10);
        assert_eq!(sparkline(&[], 8, 10), "");
    }

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
