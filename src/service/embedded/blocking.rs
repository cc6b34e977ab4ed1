//! [`BlockingEmbeddedPool`]: the embedded pool for plain threads.

use super::EmbeddedPool;
use super::shared::Shared;
use super::waiting::Want;
use crate::protocol::PlatformStatus;
use crate::ratelimit::{LeasedKey, RateLimit, Step};
use crate::service::observe::Report;
#[cfg(doc)]
use crate::service::{KeyAdmin, KeySource};
use crate::service::{KeyError, Next};
use crate::time::Timestamp;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// The [`EmbeddedPool`] for plain threads: every call blocks the calling thread
/// (waiting on a condition variable, not polling) and needs no async runtime.
/// Cheap to clone; clones share one pool, and so do [`EmbeddedPool`] handles made
/// with [`EmbeddedPool::blocking`] or [`BlockingEmbeddedPool::as_async`].
///
/// Do not call it from inside an async task: it would block that task's thread.
#[derive(Clone)]
pub struct BlockingEmbeddedPool {
    pub(super) shared: Arc<Shared>,
}

impl fmt::Debug for BlockingEmbeddedPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockingEmbeddedPool")
            .field("deadline", &self.shared.deadline)
            .finish_non_exhaustive()
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
        self.request_within(platform, self.shared.deadline)
    }

    /// Like [`request`](Self::request) with an explicit deadline.
    pub fn request_within(&self, platform: &str, deadline: Duration) -> Result<String, KeyError> {
        let leased = self
            .shared
            .request_blocking(platform, Want::Key, deadline)?;
        Ok(leased.into_key())
    }

    /// A key and up to `calls` calls lent with it, blocking up to the pool's
    /// deadline while no key can lend a call. See [`KeySource::lease`].
    pub fn lease(&self, platform: &str, calls: u64) -> Result<LeasedKey, KeyError> {
        self.lease_within(platform, calls, self.shared.deadline)
    }

    /// Like [`lease`](Self::lease) with an explicit deadline.
    pub fn lease_within(
        &self,
        platform: &str,
        calls: u64,
        deadline: Duration,
    ) -> Result<LeasedKey, KeyError> {
        self.shared
            .request_blocking(platform, Want::Lease(calls), deadline)
    }

    /// Counts the call made with `leased` and keeps its lease, or returns it,
    /// reports the key where the platform refused it and takes a new lease.
    /// See [`KeySource::observe_lease`].
    pub fn observe_lease(
        &self,
        leased: &mut LeasedKey,
        status: u16,
        seen: &RateLimit,
    ) -> Result<Next, KeyError> {
        let now = self.shared.clock.now();
        let step = leased.after_response(status, seen, now);
        if step == Step::Keep {
            return Ok(Next::Keep);
        }
        let (platform, key) = (leased.platform().to_string(), leased.key().to_string());
        if let Some(report) = leased.report(true) {
            self.shared.report(report)?;
        }
        match step {
            Step::Expire { refresh_at, .. } => self.shared.expire(&platform, &key, refresh_at)?,
            Step::Invalidate => self.shared.invalidate(&platform, &key)?,
            Step::Keep | Step::Renew => {}
        }
        let next = self.lease(&platform, leased.wanted())?;
        let new_key = next.key().to_string();
        *leased = next;
        Ok(match step {
            Step::Expire {
                refresh_at,
                secondary,
            } => Next::Expired {
                key: new_key,
                refresh_at,
                secondary,
            },
            Step::Invalidate => Next::Invalidated { key: new_key },
            Step::Keep | Step::Renew => Next::Renewed { key: new_key },
        })
    }

    /// Returns the unused calls of `leased`'s lease. See [`KeySource::release`].
    pub fn release(&self, leased: LeasedKey) -> Result<(), KeyError> {
        match (leased.lease(), leased.report(true)) {
            (Some(_), Some(report)) => self.shared.report(report),
            _ => Ok(()),
        }
    }

    /// Marks `key` rate limited until `refresh_at` and returns another key. See
    /// [`KeySource::expire`].
    pub fn expire(
        &self,
        platform: &str,
        key: &str,
        refresh_at: Timestamp,
    ) -> Result<String, KeyError> {
        self.expire_within(platform, key, refresh_at, self.shared.deadline)
    }

    /// Marks `key` permanently invalid and returns another key. See
    /// [`KeySource::invalidate`].
    pub fn invalidate(&self, platform: &str, key: &str) -> Result<String, KeyError> {
        self.invalidate_within(platform, key, self.shared.deadline)
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
        self.request_within(platform, deadline)
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
        self.request_within(platform, deadline)
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
        self.observe_within(platform, key, status, seen, self.shared.deadline)
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
        let now = self.shared.clock.now();
        let Some(report) = Report::judge(platform, key, status, seen, now)? else {
            return Ok(Next::Keep);
        };
        match report {
            Report::Expire { refresh_at, .. } => self.shared.expire(platform, key, refresh_at)?,
            Report::Invalidate => self.shared.invalidate(platform, key)?,
        }
        let new_key = self.request_within(platform, deadline)?;
        Ok(report.next(new_key))
    }

    /// Adds `key` to `platform`. See [`KeyAdmin::publish`].
    pub fn publish(&self, platform: &str, key: &str) -> Result<(), KeyError> {
        self.shared.publish(platform, key)
    }

    /// Adds `key` to `platform` in `account`. See [`KeyAdmin::publish_account`].
    pub fn publish_account(
        &self,
        platform: &str,
        key: &str,
        account: Option<&str>,
        limit: Option<u64>,
    ) -> Result<(), KeyError> {
        self.shared.publish_account(platform, key, account, limit)
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
