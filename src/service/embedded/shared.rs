//! The state every handle of one embedded pool shares: the engine under one
//! lock, the clock and the default deadline, and the operations that change
//! or read the pool.

use super::super::log::log_event;
use crate::engine::Engine;
use crate::protocol::{PlatformStatus, Request};
use crate::rng::SplitMix64;
use crate::service::KeyError;
use crate::time::{Clock, Timestamp};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;

pub(super) struct Shared {
    pub(super) state: Mutex<State>,
    /// Wakes async requests waiting for a fresh key.
    pub(super) changed: Notify,
    /// Wakes blocking requests waiting for a fresh key (paired with `state`).
    pub(super) changed_blocking: Condvar,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) deadline: Duration,
    /// The number of the next request, which names it to the engine while it
    /// waits (so that each waiting request counts once among the waiters).
    pub(super) next_request: std::sync::atomic::AtomicU64,
}

/// The pool's state: an [`Engine`] driven through its typed methods, which
/// decide everything (the answer to a request, the EXPIRE cap, the events).
pub(super) struct State {
    pub(super) engine: Engine<SplitMix64>,
}

impl State {
    /// Handles the engine's timers due by `now` (leases that end, held
    /// requests), which an embedded pool has no loop for: every look at the
    /// pool catches up first.
    pub(super) fn catch_up(&mut self, now: Timestamp) {
        if self.engine.poll_timeout().is_some_and(|t| t <= now) {
            self.engine.handle_timeout(now);
        }
    }

    /// Logs the events the engine reported.
    pub(super) fn log_events(&mut self) {
        while let Some(event) = self.engine.poll_event() {
            log_event(&event);
        }
    }
}

impl Shared {
    /// The shared state of a new pool around `engine`.
    pub(super) fn new(
        engine: Engine<SplitMix64>,
        clock: Arc<dyn Clock>,
        deadline: Duration,
    ) -> Self {
        Self {
            state: Mutex::new(State { engine }),
            changed: Notify::new(),
            changed_blocking: Condvar::new(),
            next_request: std::sync::atomic::AtomicU64::new(0),
            clock,
            deadline,
        }
    }

    /// Locks the pool state. A panic while the lock was held cannot leave the
    /// pool half-changed (its operations do not panic midway), so a poisoned lock
    /// is taken over.
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies one change of `key` of `platform` through the engine, logs its
    /// events and, when the pool changed, wakes the waiting requests to look
    /// again (a key may be fresh, or none usable any more).
    pub(super) fn change(
        &self,
        platform: &str,
        key: &str,
        op: impl FnOnce(&mut Engine<SplitMix64>, Timestamp),
    ) -> Result<(), KeyError> {
        crate::service::require_non_empty("platform", platform)?;
        crate::service::require_non_empty("key", key)?;
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

    pub(super) fn expire(
        &self,
        platform: &str,
        key: &str,
        refresh_at: Timestamp,
    ) -> Result<(), KeyError> {
        self.change(platform, key, |engine, now| {
            engine.expire(now, platform, key, refresh_at);
        })
    }

    pub(super) fn invalidate(&self, platform: &str, key: &str) -> Result<(), KeyError> {
        self.change(platform, key, |engine, now| {
            engine.invalidate(now, platform, key);
        })
    }

    /// Publishes `key`; a publish the engine refuses (a name too long, a cap
    /// reached) is [`KeyError::Rejected`], with the reason.
    pub(super) fn publish(&self, platform: &str, key: &str) -> Result<(), KeyError> {
        let mut refused = None;
        self.change(platform, key, |engine, now| {
            refused = engine.check_publish(platform, key).err();
            engine.publish(now, platform, key);
        })?;
        refused.map_or(Ok(()), |reason| Err(KeyError::Rejected(reason.to_string())))
    }

    pub(super) fn publish_account(
        &self,
        platform: &str,
        key: &str,
        account: Option<&str>,
        limit: Option<u64>,
    ) -> Result<(), KeyError> {
        if account.is_some_and(str::is_empty) {
            return Err(KeyError::InvalidArgument(
                "account must not be empty".to_string(),
            ));
        }
        let mut refused = None;
        self.change(platform, key, |engine, now| {
            refused = engine.check_publish(platform, key).err();
            engine.publish_account(now, platform, key, account, limit);
        })?;
        refused.map_or(Ok(()), |reason| Err(KeyError::Rejected(reason.to_string())))
    }

    /// Takes in a REPORT (what a response said of `key`'s quota, and the
    /// lease it returns), as the orchestrator does.
    pub(super) fn report(&self, report: Request) -> Result<(), KeyError> {
        let Request::Report {
            key,
            platform,
            observation,
            lease,
            ..
        } = report
        else {
            return Ok(());
        };
        self.change(&platform, &key, |engine, now| {
            engine.report(now, &platform, &key, &observation, lease);
        })
    }

    pub(super) fn unpublish(&self, platform: &str, key: &str) -> Result<(), KeyError> {
        self.change(platform, key, |engine, now| {
            engine.unpublish(now, platform, key);
        })
    }

    /// Answers a question about the pool at the current time, unless it was
    /// shut down.
    pub(super) fn query<T>(
        &self,
        op: impl FnOnce(&mut Engine<SplitMix64>, Timestamp) -> T,
    ) -> Result<T, KeyError> {
        let mut state = self.lock();
        if state.engine.is_shutdown() {
            return Err(KeyError::ShutDown);
        }
        Ok(op(&mut state.engine, self.clock.now()))
    }

    pub(super) fn ping(&self) -> Result<(), KeyError> {
        self.query(|_, _| ())
    }

    pub(super) fn platforms(&self) -> Result<Vec<String>, KeyError> {
        self.query(|engine, _| engine.platforms())
    }

    pub(super) fn keys(&self, platform: &str) -> Result<Vec<String>, KeyError> {
        crate::service::require_non_empty("platform", platform)?;
        self.query(|engine, now| engine.keys(now, platform))?
            .ok_or_else(|| KeyError::UnknownPlatform(platform.to_string()))
    }

    pub(super) fn invalid_keys(&self, platform: &str) -> Result<Vec<String>, KeyError> {
        crate::service::require_non_empty("platform", platform)?;
        self.query(|engine, _| engine.invalid_keys(platform))?
            .ok_or_else(|| KeyError::UnknownPlatform(platform.to_string()))
    }

    pub(super) fn status(&self) -> Result<Vec<PlatformStatus>, KeyError> {
        self.query(|engine, now| engine.status(now))
    }

    pub(super) fn shutdown(&self) {
        let mut state = self.lock();
        let now = self.clock.now();
        state.engine.shutdown(now);
        state.log_events();
        drop(state);
        self.wake_all();
    }
}
