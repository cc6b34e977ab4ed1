//! How a request waits for a fresh key without polling: it looks at the pool,
//! and while no key is fresh sleeps until the earliest refresh time (never past
//! its deadline), woken at once when the pool changes.

use super::shared::{Shared, State};
use crate::pool::Assignment;
use crate::service::KeyError;
use crate::time::Timestamp;
use std::time::Duration;

/// What one look at the pool gave a request.
enum Attempt {
    Key(String),
    /// No key is fresh; the earliest refreshes at this time.
    WaitUntil(Timestamp),
}

impl Shared {
    /// Wakes every waiting request, async and blocking, to look at the pool again.
    pub(super) fn wake_all(&self) {
        self.changed.notify_waiters();
        self.changed_blocking.notify_all();
    }

    fn attempt(&self, state: &mut State, platform: &str) -> Result<Attempt, KeyError> {
        if state.engine.is_shutdown() {
            return Err(KeyError::ShutDown);
        }
        let now = self.clock.now();
        let attempt = match state.engine.assign(now, platform) {
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

    pub(super) fn request_blocking(
        &self,
        platform: &str,
        deadline: Duration,
    ) -> Result<String, KeyError> {
        crate::service::require_non_empty("platform", platform)?;
        let give_up = crate::service::instant_after(deadline);
        let mut state = self.lock();
        loop {
            let until = match self.attempt(&mut state, platform)? {
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

    pub(super) async fn request(
        &self,
        platform: &str,
        deadline: Duration,
    ) -> Result<String, KeyError> {
        crate::service::require_non_empty("platform", platform)?;
        let give_up = crate::service::instant_after(deadline);
        loop {
            // Register for wake-ups before looking at the pool, so that a publish
            // between the look and the wait is not missed.
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let until = {
                let mut state = self.lock();
                match self.attempt(&mut state, platform)? {
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
}
