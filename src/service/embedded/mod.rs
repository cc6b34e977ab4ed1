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

use super::observe::LeaseWire;
use super::{DEFAULT_DEADLINE, KeyAdmin, KeyError, KeySource, Next, SystemClock};
use crate::engine::{Engine, EngineConfig};
use crate::pool::Selection;
use crate::protocol::{PlatformStatus, Request};
use crate::quota::QuotaConfig;
use crate::ratelimit::{LeasedKey, RateLimit};
use crate::rng::SplitMix64;
use crate::time::{Clock, Timestamp};
use async_trait::async_trait;
use shared::Shared;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use waiting::Want;

mod blocking;
mod shared;
mod waiting;

pub use blocking::BlockingEmbeddedPool;

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

/// How to build an [`EmbeddedPool`]: its clock, random seed, default deadline and
/// key selection. Start from [`EmbeddedPool::builder`].
pub struct EmbeddedPoolBuilder {
    clock: Arc<dyn Clock>,
    seed: Option<u64>,
    deadline: Duration,
    selection: Selection,
    quota: QuotaConfig,
}

impl Default for EmbeddedPoolBuilder {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            seed: None,
            deadline: DEFAULT_DEADLINE,
            selection: Selection::Uniform,
            quota: QuotaConfig::default(),
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

    /// Floors, choice strategies per platform, and how many calls may be lent
    /// for how long ([`QuotaConfig`]; by default no floor, at most 100 leases
    /// per account, of 10 minutes each).
    pub fn with_quota(mut self, quota: QuotaConfig) -> Self {
        self.quota = quota;
        self
    }

    /// An empty pool with these settings.
    pub fn build(self) -> EmbeddedPool {
        let seed = self.seed.unwrap_or_else(super::random_seed);
        let engine = Engine::new(
            EngineConfig {
                selection: self.selection,
                quota: self.quota,
                ..EngineConfig::default()
            },
            SplitMix64::new(seed),
        );
        EmbeddedPool {
            shared: Arc::new(Shared::new(engine, self.clock, self.deadline)),
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

/// Requests wait without polling (see the [module docs](self)); the other
/// operations return at once. Each costs the [`KeyPool`](crate::KeyPool) operation it wraps,
/// under one lock.
#[async_trait]
impl KeySource for EmbeddedPool {
    /// A fresh key of `platform`, waiting up to the pool's deadline while all its
    /// keys are rate limited. `O(1)` per look at the pool.
    async fn request(&self, platform: &str) -> Result<String, KeyError> {
        self.request_within(platform, self.shared.deadline).await
    }

    /// Like [`request`](KeySource::request) with an explicit deadline.
    async fn request_within(&self, platform: &str, deadline: Duration) -> Result<String, KeyError> {
        let leased = self.shared.request(platform, Want::Key, deadline).await?;
        Ok(leased.into_key())
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
        self.expire_within(platform, key, refresh_at, self.shared.deadline)
            .await
    }

    /// Marks `key` permanently invalid (an unknown key changes nothing), then
    /// requests another key. `O(log n)` plus a request.
    async fn invalidate(&self, platform: &str, key: &str) -> Result<String, KeyError> {
        self.invalidate_within(platform, key, self.shared.deadline)
            .await
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
        self.request_within(platform, deadline).await
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
        self.request_within(platform, deadline).await
    }

    /// The pool's [`Clock`] (the system clock unless one was injected).
    fn now(&self) -> Timestamp {
        self.shared.clock.now()
    }

    /// A key and up to `calls` calls lent with it ([`Engine::lease`]),
    /// waiting up to the pool's deadline while no key can lend a call.
    async fn lease(&self, platform: &str, calls: u64) -> Result<LeasedKey, KeyError> {
        self.lease_within(platform, calls, self.shared.deadline)
            .await
    }

    /// Like [`lease`](KeySource::lease) with an explicit deadline.
    async fn lease_within(
        &self,
        platform: &str,
        calls: u64,
        deadline: Duration,
    ) -> Result<LeasedKey, KeyError> {
        self.shared
            .request(platform, Want::Lease(calls), deadline)
            .await
    }

    /// Counts the call and keeps the lease, or returns it (with what the
    /// headers said), reports the key where the platform refused it, and
    /// takes a new lease. See [`KeySource::observe_lease`].
    async fn observe_lease(
        &self,
        leased: &mut LeasedKey,
        status: u16,
        seen: &RateLimit,
    ) -> Result<Next, KeyError> {
        let deadline = self.shared.deadline;
        super::observe::observe_lease(self, leased, status, seen, deadline).await
    }

    async fn observe_lease_within(
        &self,
        leased: &mut LeasedKey,
        status: u16,
        seen: &RateLimit,
        deadline: Duration,
    ) -> Result<Next, KeyError> {
        super::observe::observe_lease(self, leased, status, seen, deadline).await
    }

    /// Returns the lease's unused calls to its account.
    async fn release(&self, leased: LeasedKey) -> Result<(), KeyError> {
        super::observe::release(self, leased, self.shared.deadline).await
    }
}

/// The embedded pool's side of [`observe_lease`](KeySource::observe_lease):
/// REPORT, EXPIRE and INVALIDATE go straight to the engine.
#[async_trait]
impl LeaseWire for EmbeddedPool {
    async fn send_report(&self, report: Request, _until: Instant) -> Result<(), KeyError> {
        self.shared.report(report)
    }

    async fn mark_expired(
        &self,
        platform: &str,
        key: &str,
        refresh_at: Timestamp,
        _until: Instant,
    ) -> Result<(), KeyError> {
        self.shared.expire(platform, key, refresh_at)
    }

    async fn mark_invalid(
        &self,
        platform: &str,
        key: &str,
        _until: Instant,
    ) -> Result<(), KeyError> {
        self.shared.invalidate(platform, key)
    }
}

#[async_trait]
impl KeyAdmin for EmbeddedPool {
    /// Adds `key` to `platform` (idempotent; revives an invalid key) and wakes
    /// waiting requests. `O(1)`.
    async fn publish(&self, platform: &str, key: &str) -> Result<(), KeyError> {
        self.shared.publish(platform, key)
    }

    /// Adds `key` to `platform` in `account`, with `limit` calls per window
    /// as a hint ([`Engine::publish_account`]).
    async fn publish_account(
        &self,
        platform: &str,
        key: &str,
        account: Option<&str>,
        limit: Option<u64>,
    ) -> Result<(), KeyError> {
        self.shared.publish_account(platform, key, account, limit)
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
