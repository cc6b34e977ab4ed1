//! The service layer (feature `tokio`): an orchestrator that drives an
//! [`Engine`](crate::Engine) over any [`Bus`], the clients that talk to it, and an
//! embedded pool for programs that need no server at all.
//!
//! Application code is written against [`KeySource`] (workers) and [`KeyAdmin`]
//! (admins), so it does not care whether keys come from the same process, from
//! Redis or from NATS.

use crate::protocol::PlatformStatus;
use crate::ratelimit::{LeasedKey, RateLimit};
use crate::time::Timestamp;
use async_trait::async_trait;
use std::time::Duration;

pub use keyman_transport::{
    Backoff, Bus, BusError, BusEvent, FileStore, Lease, MemoryLease, MemoryStore, Message, Records,
    Saved, StateStore, StateWrite, Subscription,
};

/// The default deadline of a client call.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(30);

/// Where workers get keys: request one, report one as rate limited or invalid and
/// get another, or hand over what a response said and let the source decide
/// ([`observe`](Self::observe)). Every call returns within its deadline.
///
/// An implementation must provide [`request`](Self::request),
/// [`request_within`](Self::request_within), [`expire`](Self::expire) and
/// [`invalidate`](Self::invalidate); the other calls have default bodies built
/// on those (the `_within` ones bound the call with a timer, `observe` applies
/// [`RateLimit::verdict`] at [`now`](Self::now)). [`KeyClient`] and
/// [`EmbeddedPool`] override the `_within` calls (and the pool [`now`](Self::now),
/// with its clock); `observe` is the same for every source.
#[async_trait]
pub trait KeySource: Send + Sync {
    /// A fresh key of `platform`, waiting (up to the source's deadline) while all
    /// its keys are rate limited.
    async fn request(&self, platform: &str) -> Result<String, KeyError>;

    /// Like [`request`](Self::request) with an explicit deadline.
    async fn request_within(&self, platform: &str, deadline: Duration) -> Result<String, KeyError>;

    /// Reports `key` as rate limited until `reset` (from the API's reset header)
    /// and returns another key of `platform`.
    async fn expire(&self, platform: &str, key: &str, reset: Timestamp)
    -> Result<String, KeyError>;

    /// Reports `key` as permanently invalid (HTTP 401) and returns another key.
    async fn invalidate(&self, platform: &str, key: &str) -> Result<String, KeyError>;

    /// Like [`expire`](Self::expire), with `deadline` for the whole call (the
    /// report and the wait for another key): [`KeyError::Timeout`]`(deadline)`
    /// when no key comes in time. The report may have been made even then.
    async fn expire_within(
        &self,
        platform: &str,
        key: &str,
        reset: Timestamp,
        deadline: Duration,
    ) -> Result<String, KeyError> {
        within(deadline, self.expire(platform, key, reset)).await
    }

    /// Like [`invalidate`](Self::invalidate), with `deadline` for the whole
    /// call, as [`expire_within`](Self::expire_within).
    async fn invalidate_within(
        &self,
        platform: &str,
        key: &str,
        deadline: Duration,
    ) -> Result<String, KeyError> {
        within(deadline, self.invalidate(platform, key)).await
    }

    /// The time by the clock this source compares refresh times with: the wall
    /// clock by default (a remote orchestrator reads its own), the injected
    /// [`Clock`](crate::Clock) of an [`EmbeddedPool`].
    fn now(&self) -> Timestamp {
        wall_clock()
    }

    /// What a worker calls after every response of the API it used `key` for:
    /// given the response's `status` and what its headers said (`seen`, from
    /// [`RateLimit::from_headers`] or, with feature `http`,
    /// `RateLimit::from_header_map`), it applies
    /// [`RateLimit::verdict`] at [`now`](Self::now) and
    ///
    /// - carries on: [`Next::Keep`];
    /// - reports `key` rate limited until the refresh time (corrected for the
    ///   skew between the platform's clock and ours with the `Date` header) and
    ///   returns another key: [`Next::Expired`]; this also happens on a 200
    ///   whose headers say no call remains, before the platform refuses one;
    /// - reports `key` invalid (HTTP 401) and returns another key:
    ///   [`Next::Invalidated`].
    ///
    /// On the wire this is EXPIRE or INVALIDATE followed by NEW, exactly what a
    /// worker of Augur's does after a 403 or a 401, so it works against Augur's
    /// orchestrator too. It does not send the rate-limit figures themselves to
    /// the orchestrator: a worker that borrows calls with
    /// [`lease`](Self::lease) and calls [`observe_lease`](Self::observe_lease)
    /// does (a REPORT of what the headers said whenever a lease goes back),
    /// so that the orchestrator knows every account's remaining calls.
    /// Errors are those of [`expire`](Self::expire) and
    /// [`invalidate`](Self::invalidate); after an error the old key may already
    /// have been reported, so the worker should [`request`](Self::request) a
    /// new one rather than keep it.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), keyman::KeyError> {
    /// use keyman::ratelimit::RateLimit;
    /// use keyman::service::{KeyAdmin, KeySource, Next, embedded::EmbeddedPool};
    /// use keyman::{ManualClock, Timestamp};
    /// use std::sync::Arc;
    ///
    /// let clock = Arc::new(ManualClock::new(Timestamp::from_secs(1_767_225_000)));
    /// let pool = EmbeddedPool::builder().with_clock(clock).build();
    /// pool.publish("github_rest", "ghp_one").await?;
    /// pool.publish("github_rest", "ghp_two").await?;
    ///
    /// let key = pool.request("github_rest").await?;
    /// // The response to the call made with `key` said: no call left until midnight UTC.
    /// let headers = [("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "1767225600")];
    /// let seen = RateLimit::from_headers(headers.iter().map(|(n, v)| (*n, v.as_bytes())));
    /// let next = pool.observe("github_rest", &key, 200, &seen).await?;
    /// assert!(matches!(&next, Next::Expired { key: other, .. } if *other != key));
    /// let key = next.into_key(key); // the key for the next call
    /// # let _ = key;
    /// # Ok(()) }
    /// ```
    async fn observe(
        &self,
        platform: &str,
        key: &str,
        status: u16,
        seen: &RateLimit,
    ) -> Result<Next, KeyError> {
        observe::observe(self, platform, key, status, seen, None).await
    }

    /// Like [`observe`](Self::observe), with `deadline` for the whole call.
    async fn observe_within(
        &self,
        platform: &str,
        key: &str,
        status: u16,
        seen: &RateLimit,
        deadline: Duration,
    ) -> Result<Next, KeyError> {
        observe::observe(self, platform, key, status, seen, Some(deadline)).await
    }

    /// Lends a key of `platform` with up to `calls` calls (at least 1): the
    /// worker makes at most [`LeasedKey::calls_left`] calls with it, and
    /// [`observe_lease`](Self::observe_lease) returns the lease and takes
    /// another when they are used up. The orchestrator never lends more than
    /// the key's account has left above its floor, less what it lent already,
    /// so workers with leases never overdraw a key together. Waits, like
    /// [`request`](Self::request), up to the source's deadline while no key
    /// can lend a call.
    ///
    /// Where calls are not lent (Augur's orchestrator, an orchestrator with
    /// leases switched off, or a source that knows no quotas: the default
    /// body), the key comes without a lease ([`LeasedKey::lease`] is `None`)
    /// and is used until the platform refuses a call, as with
    /// [`request`](Self::request).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), keyman::KeyError> {
    /// use keyman::ratelimit::RateLimit;
    /// use keyman::service::{KeyAdmin, KeySource, Next, embedded::EmbeddedPool};
    ///
    /// let pool = EmbeddedPool::new();
    /// pool.publish("github_rest", "ghp_one").await?;
    /// let mut leased = pool.lease("github_rest", 50).await?;
    /// for _ in 0..3 {
    ///     // call the API with leased.key(), then hand over what it answered:
    ///     let headers = [("x-ratelimit-remaining", "4000"), ("x-ratelimit-limit", "5000")];
    ///     let seen = RateLimit::from_headers(headers.iter().map(|(n, v)| (*n, v.as_bytes())));
    ///     let next = pool.observe_lease(&mut leased, 200, &seen).await?;
    ///     assert!(matches!(next, Next::Keep | Next::Renewed { .. }));
    /// }
    /// pool.release(leased).await?; // the unused calls go back
    /// # Ok(()) }
    /// ```
    async fn lease(&self, platform: &str, calls: u64) -> Result<LeasedKey, KeyError> {
        let key = self.request(platform).await?;
        Ok(LeasedKey::new(platform, key, calls, None))
    }

    /// Like [`lease`](Self::lease) with an explicit deadline.
    async fn lease_within(
        &self,
        platform: &str,
        calls: u64,
        deadline: Duration,
    ) -> Result<LeasedKey, KeyError> {
        let key = self.request_within(platform, deadline).await?;
        Ok(LeasedKey::new(platform, key, calls, None))
    }

    /// What a worker with a [`LeasedKey`] calls after every response of the
    /// API: the call is counted, and as [`LeasedKey::after_response`] decides
    /// at [`now`](Self::now)
    ///
    /// - the worker carries on: [`Next::Keep`];
    /// - the lease is used up or about to end: it is returned (a REPORT that
    ///   also says what the last response's headers said), a new one is taken
    ///   into `leased`: [`Next::Renewed`] (maybe the same key);
    /// - the platform rate limited or rejected the key: the lease is
    ///   returned, the key reported expired or invalid, and a new lease taken
    ///   into `leased`: [`Next::Expired`] or [`Next::Invalidated`].
    ///
    /// For a key without a lease it is [`observe`](Self::observe). Within the
    /// source's deadline. After an error the lease may have been returned
    /// already: take a new one with [`lease`](Self::lease).
    async fn observe_lease(
        &self,
        leased: &mut LeasedKey,
        status: u16,
        seen: &RateLimit,
    ) -> Result<Next, KeyError> {
        let (platform, key) = (leased.platform().to_string(), leased.key().to_string());
        leased.after_response(status, seen, self.now());
        let next = self.observe(&platform, &key, status, seen).await?;
        if let Some(new_key) = next.new_key() {
            *leased = LeasedKey::new(platform, new_key, leased.wanted(), None);
        }
        Ok(next)
    }

    /// Like [`observe_lease`](Self::observe_lease), with `deadline` for the
    /// whole call (returning the lease, reporting the key, and waiting for
    /// the next lease, which the orchestrator may hold until a key can lend):
    /// [`KeyError::Timeout`]`(deadline)` after it.
    async fn observe_lease_within(
        &self,
        leased: &mut LeasedKey,
        status: u16,
        seen: &RateLimit,
        deadline: Duration,
    ) -> Result<Next, KeyError> {
        within(deadline, self.observe_lease(leased, status, seen)).await
    }

    /// Returns the unused calls of `leased`'s lease (a REPORT with `done`,
    /// carrying what the last response said), for a worker that stops before
    /// they are used. Over a bus it waits until the orchestrator says it has
    /// them back (keyman's orchestrator answers such a REPORT), so that a
    /// STATUS or a lease asked for afterwards, from any process, counts them. Nothing to do for a key without a lease. A lease never
    /// returned ends at its deadline, counted as fully used.
    async fn release(&self, leased: LeasedKey) -> Result<(), KeyError> {
        let _ = leased;
        Ok(())
    }
}

/// Runs `call` for at most `deadline`: [`KeyError::Timeout`]`(deadline)` if it
/// takes longer. The default bodies of the `_within` calls of [`KeySource`].
async fn within<T>(
    deadline: Duration,
    call: impl std::future::Future<Output = Result<T, KeyError>>,
) -> Result<T, KeyError> {
    match tokio::time::timeout_at(deadline_after(deadline), call).await {
        Ok(outcome) => outcome,
        Err(_) => Err(KeyError::Timeout(deadline)),
    }
}

/// What admins do: publish and unpublish keys, look at the pool, stop the service.
#[async_trait]
pub trait KeyAdmin: Send + Sync {
    /// Adds `key` to `platform` (idempotent; revives an invalid key). A key
    /// or platform name over its [limit](crate::protocol#limits), or a cap
    /// of the pool reached, is refused: the embedded pool returns
    /// [`KeyError::Rejected`] with the reason; over a broker PUBLISH has no
    /// reply, so the orchestrator logs the refusal and the call returns `Ok`.
    async fn publish(&self, platform: &str, key: &str) -> Result<(), KeyError>;
    /// Adds `key` to `platform` as a key of `account` (ext): the keys of one
    /// account share one quota (the personal access tokens of one GitHub user
    /// share that user's 5 000 calls an hour), and a rate limit of one is a
    /// rate limit of all. With `None` the key stays in the account it has (its
    /// own, unless it was published to one). `limit` is the account's calls per window, a hint until a worker's
    /// report says otherwise. Augur's orchestrator ignores both and publishes
    /// the key.
    async fn publish_account(
        &self,
        platform: &str,
        key: &str,
        account: Option<&str>,
        limit: Option<u64>,
    ) -> Result<(), KeyError>;
    /// Removes `key` from `platform`.
    async fn unpublish(&self, platform: &str, key: &str) -> Result<(), KeyError>;
    /// Waits until the orchestrator answers, having handled everything sent before.
    async fn ping(&self) -> Result<(), KeyError>;
    /// The platform names.
    async fn platforms(&self) -> Result<Vec<String>, KeyError>;
    /// The fresh and expired keys of `platform`.
    async fn keys(&self, platform: &str) -> Result<Vec<String>, KeyError>;
    /// The invalid keys of `platform`.
    async fn invalid_keys(&self, platform: &str) -> Result<Vec<String>, KeyError>;
    /// Key counts per platform.
    async fn status(&self) -> Result<Vec<PlatformStatus>, KeyError>;
    /// Stops the orchestrator once it has handled everything sent before.
    async fn shutdown(&self) -> Result<(), KeyError>;
}

/// The current wall-clock time, for the service layer (the core never reads it).
pub fn wall_clock() -> Timestamp {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    Timestamp::from_millis(ms)
}

/// A random seed from the operating system's hash keys and the clock, for the
/// generators of services that were given no seed.
pub(crate) fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

/// The instant `d` from now, or a century from now if `d` is longer: a
/// deadline given by a user never overflows the clock.
pub(crate) fn instant_after(d: Duration) -> std::time::Instant {
    let now = std::time::Instant::now();
    now.checked_add(d)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
        .unwrap_or(now)
}

/// Like [`instant_after`], on tokio's clock (which tests may pause): the
/// deadlines of the async clients.
pub(crate) fn deadline_after(d: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(d)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
        .unwrap_or(now)
}

/// `InvalidArgument` when a platform name or key is empty.
pub(crate) fn require_non_empty(what: &str, value: &str) -> Result<(), KeyError> {
    if value.is_empty() {
        Err(KeyError::InvalidArgument(format!(
            "{what} must not be empty"
        )))
    } else {
        Ok(())
    }
}

/// A [`Clock`](crate::Clock) that reads the system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl crate::time::Clock for SystemClock {
    fn now(&self) -> Timestamp {
        wall_clock()
    }
}

pub mod blocking;
mod client;
pub mod embedded;
mod error;
mod log;
pub mod metrics;
mod observe;
mod orchestrator;
pub mod probe;
mod rpc;

pub use client::{ClientConfig, KeyClient, KeyPublisher};
pub use embedded::{BlockingEmbeddedPool, EmbeddedPool, EmbeddedPoolBuilder};
pub use error::{IoError, KeyError};
pub use observe::Next;
pub use orchestrator::{
    DEFAULT_SAVE_INTERVAL, MAX_LEASE_TTL, MIN_LEASE_TTL, Orchestrator, OrchestratorError, Stopped,
};

/// Connects to the broker named by `url`, choosing the transport by its scheme:
/// `redis://` and `rediss://` (feature `redis`), `nats://` and `tls://` (feature
/// `nats`).
pub async fn connect_url(url: &str) -> Result<std::sync::Arc<dyn Bus>, KeyError> {
    let (bus, _, _) = connect_url_with_lease(url, "").await?;
    Ok(bus)
}

/// Connects like [`connect_url`] and also returns a [`StateStore`] on the same
/// broker, named after `name`: the Redis key `keyman:state:{name}` (in the URL's
/// database), or entry `state.{name}` of the NATS JetStream key-value bucket
/// `keyman`.
pub async fn connect_url_with_store(
    url: &str,
    name: &str,
) -> Result<(std::sync::Arc<dyn Bus>, std::sync::Arc<dyn StateStore>), KeyError> {
    let (bus, store, _) = connect_url_with_lease(url, name).await?;
    Ok((bus, store))
}

/// Connects like [`connect_url_with_store`] and also returns the [`Lease`]
/// that decides which of several orchestrators serves, named after `name`: the
/// Redis key `keyman:leader:{name}`, or entry `leader.{name}` of the NATS
/// JetStream key-value bucket `keyman` (characters a key may not have become
/// `_`). Neither the store nor the lease touches the broker until it is used.
pub async fn connect_url_with_lease(
    url: &str,
    name: &str,
) -> Result<
    (
        std::sync::Arc<dyn Bus>,
        std::sync::Arc<dyn StateStore>,
        std::sync::Arc<dyn Lease>,
    ),
    KeyError,
> {
    let scheme = url.split("://").next().unwrap_or("");
    // Unused in a build with neither transport.
    let _ = name;
    match scheme {
        #[cfg(feature = "redis")]
        "redis" | "rediss" => {
            let bus = keyman_redis::RedisBus::connect(url, keyman_redis::RedisOptions::default())
                .await
                .map_err(KeyError::from)?;
            let lease = bus.lease(format!("keyman:leader:{name}"));
            // Fenced: a save with a holder lands only while it holds the lease.
            let store = bus
                .state_store(format!("keyman:state:{name}"))
                .fenced_by(&lease);
            Ok((
                std::sync::Arc::new(bus),
                std::sync::Arc::new(store),
                std::sync::Arc::new(lease),
            ))
        }
        #[cfg(feature = "nats")]
        "nats" | "tls" => {
            let bus = keyman_nats::NatsBus::connect(url, keyman_nats::NatsOptions::default())
                .await
                .map_err(KeyError::from)?;
            let key = kv_key(name);
            let lease = bus.lease("keyman", format!("leader.{key}"));
            // Fenced: a save with a holder lands only while it holds the lease.
            let store = bus
                .state_store("keyman", format!("state.{key}"))
                .fenced_by(&lease);
            Ok((
                std::sync::Arc::new(bus),
                std::sync::Arc::new(store),
                std::sync::Arc::new(lease),
            ))
        }
        _ => Err(KeyError::InvalidArgument(format!(
            "unsupported broker URL scheme {scheme:?} (this build supports: {})",
            supported_schemes()
        ))),
    }
}

/// `name` as a JetStream key-value key, which allows letters, digits and `-/_=.`.
#[cfg(feature = "nats")]
fn kv_key(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-/_=.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn supported_schemes() -> &'static str {
    match (cfg!(feature = "redis"), cfg!(feature = "nats")) {
        (true, true) => "redis://, rediss://, nats://, tls://",
        (true, false) => "redis://, rediss://",
        (false, true) => "nats://, tls://",
        (false, false) => "none: enable the redis or nats feature",
    }
}
