//! The embedded key pool: keyman in one process, without a server.
//!
//! [`EmbeddedPool`] is a handle over one shared [`Engine`]: cheap to clone
//! (an [`Arc`] inside), `Send + Sync`, usable from any number of tokio tasks.
//! It drives the engine through its typed methods, as the `quinn` crate drives
//! `quinn-proto`: the engine decides what a request gets, what an EXPIRE does
//! (refresh times are cut to [`EngineConfig::max_expiry`] ahead) and what is
//! logged at which level; this module only locks, waits and wakes.
//! [`BlockingEmbeddedPool`] is the same pool for plain threads with no async
//! runtime. Nothing is serialized and there is no bus: a call locks the pool for
//! the few microseconds the pool operation takes.
//!
//! Both implement the same operations with the same typed errors as the remote
//! clients ([`KeySource`] and [`KeyAdmin`]), so application code does not care
//! whether its keys come from this process, from Redis or from NATS:
//!
//! - [`KeyError::UnknownPlatform`] for a platform no key was ever published to;
//! - [`KeyError::NoKeys`] when all keys of a platform are invalid or unpublished;
//! - [`KeyError::Timeout`] when no key becomes fresh within the deadline;
//! - [`KeyError::ShutDown`] after [`KeyAdmin::shutdown`];
//! - [`KeyError::InvalidArgument`] for an empty platform name or key.
//!
//! A request that finds every key rate limited waits, without polling: it sleeps
//! until the platform's earliest refresh time (converted from the pool's
//! [`Clock`] to a sleep: `min(refresh - now, time left)`), and is woken at once
//! when a key is published, unpublished, revived or invalidated, or when
//! [`EmbeddedPool::wake_waiters`] is called (after moving an injected
//! [`ManualClock`](crate::ManualClock) forward, for example).
//!
//! Costs: every operation holds one lock for the cost of the
//! [`KeyPool`](crate::KeyPool)
//! operation it wraps (`O(1)` to hand out a key, `O(log n)` to expire or
//! invalidate one, `O(n)` to list `n` keys). Calls from many threads serialize on
//! that lock; there is no other contention.

use super::KeyError;
use super::log::log_event;
use super::{DEFAULT_DEADLINE, KeyAdmin, KeySource, Next, SystemClock};
use crate::engine::{Engine, EngineConfig};
use crate::pool::{Assignment, Selection};
use crate::protocol::PlatformStatus;
use crate::protocol::ReplyTo;
use crate::ratelimit::{RateLimit, Verdict};
use crate::rng::SplitMix64;
use crate::time::{Clock, Timestamp};
use async_trait::async_trait;
use std::fmt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;

/// An in-process key pool shared by every clone of this handle. See the
/// [module docs](self).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), keyman::KeyError> {
/// use keyman::service::{KeyAdmin, KeySource, embedded::EmbeddedPool};
///
/// let pool = EmbeddedPool::new();
/// pool.publish("github_rest", "ghp_example_token").await?;
/// let key = pool.request("github_rest").await?;
/// assert_eq!(key, "ghp_example_token");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct EmbeddedPool {
    shared: Arc<Shared>,
}

/// The [`EmbeddedPool`] for plain threads: every call blocks the calling thread
/// (waiting on a condition variable, not polling) and needs no async runtime.
/// Cheap to clone; clones share one pool, and so do [`EmbeddedPool`] handles made
/// with [`EmbeddedPool::blocking`] or [`BlockingEmbeddedPool::as_async`].
///
/// Do not call it from inside an async task: it would block that task's thread.
#[derive(Clone)]
pub struct BlockingEmbeddedPool {
    shared: Arc<Shared>,
}

/// How to build an [`EmbeddedPool`]: its clock, random seed, default deadline and
/// key selection. Start from [`EmbeddedPool::builder`].
pub struct EmbeddedPoolBuilder {
    clock: Arc<dyn Clock>,
    seed: Option<u64>,
    deadline: Duration,
    selection: Selection,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes async requests waiting for a fresh key.
    changed: Notify,
    /// Wakes blocking requests waiting for a fresh key (paired with `state`).
    changed_blocking: Condvar,
    clock: Arc<dyn Clock>,
    deadline: Duration,
    /// The number of the next request, which names it to the engine while it
    /// waits (so that each request waiting counts once among the waiters).
    next_request: std::sync::atomic::AtomicU64,
}

/// The pool's state: an [`Engine`] driven through its typed methods, which
/// decide everything (the answer to a request, the EXPIRE cap, the events).
struct State {
    engine: Engine<SplitMix64>,
}

impl State {
    /// Logs the events the engine reported.
    fn log_events(&mut self) {
        while let Some(event) = self.engine.poll_event() {
            log_event(&event);
        }
    }
}

/// What one look at the pool gave a request.
enum Attempt {
    Key(String),
    /// No key is fresh; the earliest refreshes at this time.
    WaitUntil(Timestamp),
}

impl Default for EmbeddedPoolBuilder {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            seed: None,
            deadline: DEFAULT_DEADLINE,
            selection: Selection::Uniform,
        }
    }
}

impl EmbeddedPoolBuilder {
    /// Reads the time from `clock` instead of the system's wall clock (a
    /// [`ManualClock`](crate::ManualClock) in tests and simulations). Refresh
    /// times given to [`KeySource::expire`] are compared with this clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Draws keys with a generator seeded by `seed`, so the sequence of keys
    /// handed out is reproducible. Without it the seed comes from the system time.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The deadline of [`KeySource::request`], [`KeySource::expire`] and
    /// [`KeySource::invalidate`] (default [`DEFAULT_DEADLINE`]).
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// How keys are chosen among the fresh ones (default uniformly at random, as
    /// Augur does).
    pub fn with_selection(mut self, selection: Selection) -> Self {
        self.selection = selection;
        self
    }

    /// An empty pool with these settings.
    pub fn build(self) -> EmbeddedPool {
        let seed = self.seed.unwrap_or_else(super::random_seed);
        EmbeddedPool {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    engine: Engine::new(
                        EngineConfig {
                            selection: self.selection,
                            ..EngineConfig::default()
                        },
                        SplitMix64::new(seed),
                    ),
                }),
                changed: Notify::new(),
                changed_blocking: Condvar::new(),
                clock: self.clock,
                deadline: self.deadline,
                next_request: std::sync::atomic::AtomicU64::new(0),
            }),
        }
    }
}

impl fmt::Debug for EmbeddedPoolBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedPoolBuilder")
            .field("seed", &self.seed)
            .field("deadline", &self.deadline)
            .field("selection", &self.selection)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Locks the pool state. A panic while the lock was held cannot leave the
    /// pool half-changed (its operations do not panic midway), so a poisoned lock
    /// is taken over.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes every waiting request, async and blocking, to look at the pool again.
    fn wake_all(&self) {
        self.changed.notify_waiters();
        self.changed_blocking.notify_all();
    }

    /// A name for one request while it waits for a key.
    fn waiter(&self) -> ReplyTo {
        let n = self
            .next_request
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ReplyTo::new("embedded").with_request_id(n)
    }

    fn attempt(
        &self,
        state: &mut State,
        platform: &str,
        waiter: &ReplyTo,
    ) -> Result<Attempt, KeyError> {
        if state.engine.is_shutdown() {
            return Err(KeyError::ShutDown);
        }
        let now = self.clock.now();
        let attempt = match state.engine.assign_for(now, platform, waiter) {
            Assignment::Key(k) => Ok(Attempt::Key(k.to_string())),
            Assignment::Wait { refresh_at } => Ok(Attempt::WaitUntil(refresh_at)),
            Assignment::UnknownPlatform => Err(KeyError::UnknownPlatform(platform.to_string())),
            Assignment::NoKeys => Err(KeyError::NoKeys(platform.to_string())),
        };
        state.log_events();
        attempt
    }

    /// How long to sleep before looking again: until the refresh time by the
    /// pool's clock, but never past the deadline. `None` once the deadline passed.
    fn sleep_for(&self, until: Timestamp, give_up: std::time::Instant) -> Option<Duration> {
        let left = give_up.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return None;
        }
        Some(until.saturating_since(self.clock.now()).min(left))
    }

    fn request_blocking(&self, platform: &str, deadline: Duration) -> Result<String, KeyError> {
        super::require_non_empty("platform", platform)?;
        let give_up = super::instant_after(deadline);
        let waiter = self.waiter();
        let mut state = self.lock();
        loop {
            let until = match self.attempt(&mut state, platform, &waiter)? {
                Attempt::Key(k) => return Ok(k),
                Attempt::WaitUntil(until) => until,
            };
            let sleep = self
                .sleep_for(until, give_up)
                .ok_or(KeyError::Timeout(deadline))?;
            state = self
                .changed_blocking
                .wait_timeout(state, sleep)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }

    async fn request(&self, platform: &str, deadline: Duration) -> Result<String, KeyError> {
        super::require_non_empty("platform", platform)?;
        let give_up = super::instant_after(deadline);
        let waiter = self.waiter();
        loop {
            // Register for wake-ups before looking at the pool, so that a publish
            // between the look and the wait is not missed.
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let until = {
                let mut state = self.lock();
                match self.attempt(&mut state, platform, &waiter)? {
                    Attempt::Key(k) => return Ok(k),
                    Attempt::WaitUntil(until) => until,
                }
            };
            let sleep = self
                .sleep_for(until, give_up)
                .ok_or(KeyError::Timeout(deadline))?;
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep(sleep) => {}
            }
        }
    }

    /// Applies one change of `key` of `platform` through the engine, logs its
    /// events and, when the pool changed, wakes the waiting requests to look
    /// again (a key may be fresh, or none usable any more).
    fn change(
        &self,
        platform: &str,
        key: &str,
        op: impl FnOnce(&mut Engine<SplitMix64>, Timestamp),
    ) -> Result<(), KeyError> {
        super::require_non_empty("platform", platform)?;
        super::require_non_empty("key", key)?;
        let mut state = self.lock();
        if state.engine.is_shutdown() {
            return Err(KeyError::ShutDown);
        }
        let before = state.engine.stats().changes;
        op(&mut state.engine, self.clock.now());
        state.log_events();
        if state.engine.stats().changes != before {
            self.wake_all();
        }
        Ok(())
    }

    fn expire(&self, platform: &str, key: &str, refresh_at: Timestamp) -> Result<(), KeyError> {
        self.change(platform, key, |engine, now| {
            engine.expire(now, platform, key, refresh_at);
        })
    }

    fn invalidate(&self, platform: &str, key: &str) -> Result<(), KeyError> {
        self.change(platform, key, |engine, now| {
            engine.invalidate(now, platform, key);
        })
    }

    /// The seam where the quota extension will update the pool's view of
    /// `key`'s quota from what a response said (remaining, limit, reset,
    /// server date) and renew or return a lease. It records nothing yet: the
    /// pool has no quota views to update.
    fn record_seen(&self, _platform: &str, _key: &str, _status: u16, _seen: &RateLimit) {}

    /// [`KeySource::observe`] for a plain thread: judges the response by the
    /// pool's clock and acts on the verdict, waiting at most `deadline` for
    /// another key.
    fn observe_blocking(
        &self,
        platform: &str,
        key: &str,
        status: u16,
        seen: &RateLimit,
        deadline: Duration,
    ) -> Result<Next, KeyError> {
        super::require_non_empty("platform", platform)?;
        super::require_non_empty("key", key)?;
        self.record_seen(platform, key, status, seen);
        match seen.verdict(status, self.clock.now()) {
            Verdict::Continue => Ok(Next::Keep),
            Verdict::Expire {
                refresh_at,
                secondary,
            } => {
                self.expire(platform, key, refresh_at)?;
                let key = self.request_blocking(platform, deadline)?;
                Ok(Next::Expired {
                    key,
                    refresh_at,
                    secondary,
                })
            }
            Verdict::Invalidate => {
                self.invalidate(platform, key)?;
                let key = self.request_blocking(platform, deadline)?;
                Ok(Next::Invalidated { key })
            }
        }
    }

    fn publish(&self, platform: &str, key: &str) -> Result<(), KeyError> {
        self.change(platform, key, |engine, now| {
            engine.publish(now, platform, key);
        })
    }

    fn unpublish(&self, platform: &str, key: &str) -> Result<(), KeyError> {
        self.change(platform, key, |engine, now| {
            engine.unpublish(now, platform, key);
        })
    }

    /// Answers a question about the pool at the current time, unless it was
    /// shut down.
    fn query<T>(
        &self,
        op: impl FnOnce(&mut Engine<SplitMix64>, Timestamp) -> T,
    ) -> Result<T, KeyError> {
        let mut state = self.lock();
        if state.engine.is_shutdown() {
            return Err(KeyError::ShutDown);
        }
        Ok(op(&mut state.engine, self.clock.now()))
    }

    fn ping(&self) -> Result<(), KeyError> {
        self.query(|_, _| ())
    }

    fn platforms(&self) -> Result<Vec<String>, KeyError> {
        self.query(|engine, _| engine.platforms())
    }

    fn keys(&self, platform: &str) -> Result<Vec<String>, KeyError> {
        super::require_non_empty("platform", platform)?;
        self.query(|engine, now| engine.keys(now, platform))?
            .ok_or_else(|| KeyError::UnknownPlatform(platform.to_string()))
    }

    fn invalid_keys(&self, platform: &str) -> Result<Vec<String>, KeyError> {
        super::require_non_empty("platform", platform)?;
        self.query(|engine, _| engine.invalid_keys(platform))?
            .ok_or_else(|| KeyError::UnknownPlatform(platform.to_string()))
    }

    fn status(&self) -> Result<Vec<PlatformStatus>, KeyError> {
        self.query(|engine, now| engine.status(now))
    }

    fn shutdown(&self) {
        let mut state = self.lock();
        let now = self.clock.now();
        state.engine.shutdown(now);
        state.log_events();
        drop(state);
        self.wake_all();
    }
}
impl EmbeddedPool {
    /// An empty pool on the system clock, with a seed from the system time, the
    /// default deadline and uniform selection.
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// A builder to choose the clock, seed, deadline and selection.
    pub fn builder() -> EmbeddedPoolBuilder {
        EmbeddedPoolBuilder::default()
    }

    /// A blocking handle on the same pool, for plain threads. `O(1)`.
    pub fn blocking(&self) -> BlockingEmbeddedPool {
        BlockingEmbeddedPool {
            shared: self.shared.clone(),
        }
    }

    /// The deadline of [`KeySource::request`], [`KeySource::expire`] and
    /// [`KeySource::invalidate`].
    pub fn deadline(&self) -> Duration {
        self.shared.deadline
    }

    /// Wakes every waiting request to look at the pool again. Publishing,
    /// unpublishing and invalidating do this by themselves, and a waiting request
    /// wakes by itself at the earliest refresh time; call it after moving an
    /// injected [`ManualClock`](crate::ManualClock) forward. `O(waiters)`.
    pub fn wake_waiters(&self) {
        self.shared.wake_all();
    }
}

impl Default for EmbeddedPool {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for EmbeddedPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedPool")
            .field("deadline", &self.shared.deadline)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for BlockingEmbeddedPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockingEmbeddedPool")
            .field("deadline", &self.shared.deadline)
            .finish_non_exhaustive()
    }
}

/// Requests wait without polling (see the [module docs](self)); the other
/// operations return at once. Each costs the [`KeyPool`](crate::KeyPool) operation it wraps,
/// under one lock.
#[async_trait]
impl KeySource for EmbeddedPool {
    /// A fresh key of `platform`, waiting up to the pool's deadline while all its
    /// keys are rate limited. `O(1)` per look at the pool.
    async fn request(&self, platform: &str) -> Result<String, KeyError> {
        self.shared.request(platform, self.shared.deadline).await
    }

    /// Like [`request`](KeySource::request) with an explicit deadline.
    async fn request_within(&self, platform: &str, deadline: Duration) -> Result<String, KeyError> {
        self.shared.request(platform, deadline).await
    }

    /// Marks `key` rate limited until `refresh_at` (the API's reset time), cut
    /// to the longest expiry ahead (the later of two refresh times wins; one not
    /// after now, an unknown or
    /// an invalid key change nothing), then requests another key. `O(log n)`
    /// plus a request.
    async fn expire(
        &self,
        platform: &str,
        key: &str,
        refresh_at: Timestamp,
    ) -> Result<String, KeyError> {
        self.shared.expire(platform, key, refresh_at)?;
        self.shared.request(platform, self.shared.deadline).await
    }

    /// Marks `key` permanently invalid (an unknown key changes nothing), then
    /// requests another key. `O(log n)` plus a request.
    async fn invalidate(&self, platform: &str, key: &str) -> Result<String, KeyError> {
        self.shared.invalidate(platform, key)?;
        self.shared.request(platform, self.shared.deadline).await
    }

    /// Like [`expire`](KeySource::expire), waiting at most `deadline` for
    /// another key (the report itself takes no time).
    async fn expire_within(
        &self,
        platform: &str,
        key: &str,
        refresh_at: Timestamp,
        deadline: Duration,
    ) -> Result<String, KeyError> {
        self.shared.expire(platform, key, refresh_at)?;
        self.shared.request(platform, deadline).await
    }

    /// Like [`invalidate`](KeySource::invalidate), waiting at most `deadline`
    /// for another key.
    async fn invalidate_within(
        &self,
        platform: &str,
        key: &str,
        deadline: Duration,
    ) -> Result<String, KeyError> {
        self.shared.invalidate(platform, key)?;
        self.shared.request(platform, deadline).await
    }

    /// The pool's [`Clock`] (the system clock unless one was injected).
    fn now(&self) -> Timestamp {
        self.shared.clock.now()
    }

    /// Judges the response by the pool's clock and expires, invalidates or
    /// keeps the key as [`KeySource::observe`] says, waiting up to the pool's
    /// deadline for another key. Updates no quota view yet.
    async fn observe(
        &self,
        platform: &str,
        key: &str,
        status: u16,
        seen: &RateLimit,
    ) -> Result<Next, KeyError> {
        self.observe_within(platform, key, status, seen, self.shared.deadline)
            .await
    }

    /// Like [`observe`](KeySource::observe), waiting at most `deadline` for
    /// another key.
    async fn observe_within(
        &self,
        platform: &str,
        key: &str,
        status: u16,
        seen: &RateLimit,
        deadline: Duration,
    ) -> Result<Next, KeyError> {
        super::require_non_empty("platform", platform)?;
        super::require_non_empty("key", key)?;
        self.shared.record_seen(platform, key, status, seen);
        let verdict = seen.verdict(status, self.shared.clock.now());
        super::settle(self, platform, key, verdict, Some(deadline)).await
    }
}

#[async_trait]
impl KeyAdmin for EmbeddedPool {
    /// Adds `key` to `platform` (idempotent; revives an invalid key) and wakes
    /// waiting requests. `O(1)`.
    async fn publish(&self, platform: &str, key: &str) -> Result<(), KeyError> {
        self.shared.publish(platform, key)
    }

    /// Removes `key` from `platform`, whatever its state. `O(log n)`.
    async fn unpublish(&self, platform: &str, key: &str) -> Result<(), KeyError> {
        self.shared.unpublish(platform, key)
    }

    /// Succeeds at once unless the pool was shut down: there is no server to wait for.
    async fn ping(&self) -> Result<(), KeyError> {
        self.shared.ping()
    }

    /// The platform names, in the order of their first publish. `O(P)`.
    async fn platforms(&self) -> Result<Vec<String>, KeyError> {
        self.shared.platforms()
    }

    /// The fresh and expired keys of `platform`. `O(n)`.
    async fn keys(&self, platform: &str) -> Result<Vec<String>, KeyError> {
        self.shared.keys(platform)
    }

    /// The invalid keys of `platform`, sorted. `O(n)`.
    async fn invalid_keys(&self, platform: &str) -> Result<Vec<String>, KeyError> {
        self.shared.invalid_keys(platform)
    }

    /// Key counts per platform, after refreshing due keys. `O(P)`.
    async fn status(&self) -> Result<Vec<PlatformStatus>, KeyError> {
        self.shared.status()
    }

    /// Stops the pool: waiting requests and every later call return
    /// [`KeyError::ShutDown`]. Idempotent.
    async fn shutdown(&self) -> Result<(), KeyError> {
        self.shared.shutdown();
        Ok(())
    }
}

impl BlockingEmbeddedPool {
    /// An async handle on the same pool. `O(1)`.
    pub fn as_async(&self) -> EmbeddedPool {
        EmbeddedPool {
            shared: self.shared.clone(),
        }
    }

    /// A fresh key of `platform`, blocking up to the pool's deadline while all its
    /// keys are rate limited. See [`KeySource::request`].
    pub fn request(&self, platform: &str) -> Result<String, KeyError> {
        self.shared.request_blocking(platform, self.shared.deadline)
    }

    /// Like [`request`](Self::request) with an explicit deadline.
    pub fn request_within(&self, platform: &str, deadline: Duration) -> Result<String, KeyError> {
        self.shared.request_blocking(platform, deadline)
    }

    /// Marks `key` rate limited until `refresh_at` and returns another key. See
    /// [`KeySource::expire`].
    pub fn expire(
        &self,
        platform: &str,
        key: &str,
        refresh_at: Timestamp,
    ) -> Result<String, KeyError> {
        self.shared.expire(platform, key, refresh_at)?;
        self.shared.request_blocking(platform, self.shared.deadline)
    }

    /// Marks `key` permanently invalid and returns another key. See
    /// [`KeySource::invalidate`].
    pub fn invalidate(&self, platform: &str, key: &str) -> Result<String, KeyError> {
        self.shared.invalidate(platform, key)?;
        self.shared.request_blocking(platform, self.shared.deadline)
    }

    /// Like [`expire`](Self::expire), blocking at most `deadline` for another
    /// key. See [`KeySource::expire_within`].
    pub fn expire_within(
        &self,
        platform: &str,
        key: &str,
        refresh_at: Timestamp,
        deadline: Duration,
    ) -> Result<String, KeyError> {
        self.shared.expire(platform, key, refresh_at)?;
        self.shared.request_blocking(platform, deadline)
    }

    /// Like [`invalidate`](Self::invalidate), blocking at most `deadline` for
    /// another key. See [`KeySource::invalidate_within`].
    pub fn invalidate_within(
        &self,
        platform: &str,
        key: &str,
        deadline: Duration,
    ) -> Result<String, KeyError> {
        self.shared.invalidate(platform, key)?;
        self.shared.request_blocking(platform, deadline)
    }

    /// The time by the pool's clock. See [`KeySource::now`].
    pub fn now(&self) -> Timestamp {
        self.shared.clock.now()
    }

    /// Keeps, expires or invalidates `key` after a response with `status` and
    /// the rate-limit headers `seen`, blocking up to the pool's deadline for
    /// another key. See [`KeySource::observe`].
    pub fn observe(
        &self,
        platform: &str,
        key: &str,
        status: u16,
        seen: &RateLimit,
    ) -> Result<Next, KeyError> {
        self.shared
            .observe_blocking(platform, key, status, seen, self.shared.deadline)
    }

    /// Like [`observe`](Self::observe), blocking at most `deadline` for another
    /// key. See [`KeySource::observe_within`].
    pub fn observe_within(
        &self,
        platform: &str,
        key: &str,
        status: u16,
        seen: &RateLimit,
        deadline: Duration,
    ) -> Result<Next, KeyError> {
        self.shared
            .observe_blocking(platform, key, status, seen, deadline)
    }

    /// Adds `key` to `platform`. See [`KeyAdmin::publish`].
    pub fn publish(&self, platform: &str, key: &str) -> Result<(), KeyError> {
        self.shared.publish(platform, key)
    }

    /// Removes `key` from `platform`. See [`KeyAdmin::unpublish`].
    pub fn unpublish(&self, platform: &str, key: &str) -> Result<(), KeyError> {
        self.shared.unpublish(platform, key)
    }

    /// The platform names. See [`KeyAdmin::platforms`].
    pub fn platforms(&self) -> Result<Vec<String>, KeyError> {
        self.shared.platforms()
    }

    /// The fresh and expired keys of `platform`. See [`KeyAdmin::keys`].
    pub fn keys(&self, platform: &str) -> Result<Vec<String>, KeyError> {
        self.shared.keys(platform)
    }

    /// The invalid keys of `platform`. See [`KeyAdmin::invalid_keys`].
    pub fn invalid_keys(&self, platform: &str) -> Result<Vec<String>, KeyError> {
        self.shared.invalid_keys(platform)
    }

    /// Key counts per platform. See [`KeyAdmin::status`].
    pub fn status(&self) -> Result<Vec<PlatformStatus>, KeyError> {
        self.shared.status()
    }

    /// Stops the pool. See [`KeyAdmin::shutdown`].
    pub fn shutdown(&self) {
        self.shared.shutdown();
    }

    /// Wakes every waiting request. See [`EmbeddedPool::wake_waiters`].
    pub fn wake_waiters(&self) {
        self.shared.wake_all();
    }
}
