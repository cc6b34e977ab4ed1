//! How a request waits for a fresh key without polling: it looks at the pool,
//! and while no key is fresh sleeps until the earliest refresh time (never past
//! its deadline), woken at once when the pool changes.

use super::shared::{Shared, State};
use crate::engine::{Engine, Leased};
use crate::pool::Assignment;
use crate::protocol::ReplyTo;
use crate::ratelimit::{LeaseTerms, LeasedKey};
use crate::rng::SplitMix64;
use crate::service::KeyError;
use crate::time::Timestamp;
use std::time::Duration;

/// What one look at the pool gave a request.
enum Look {
    /// A key (boxed: it is much larger than a sleep).
    Key(Box<LeasedKey>),
    /// No key is fresh: sleep this long (or until woken), then look again.
    Sleep(Duration),
}

/// What a request asks the engine for: a key (NEW), or a key and up to this
/// many calls (NEW with `lease`).
#[derive(Debug, Clone, Copy)]
pub(super) enum Want {
    Key,
    Lease(u64),
}

impl Want {
    fn ask(
        self,
        engine: &mut Engine<SplitMix64>,
        now: Timestamp,
        platform: &str,
        waiter: &ReplyTo,
    ) -> Leased {
        match self {
            Want::Key => match engine.assign_for(now, platform, waiter) {
                Assignment::Key(k) => Leased::Key(k.to_string()),
                Assignment::Wait { refresh_at } => Leased::Wait { refresh_at },
                Assignment::UnknownPlatform => Leased::UnknownPlatform,
                Assignment::NoKeys => Leased::NoKeys,
            },
            Want::Lease(calls) => engine.lease(now, platform, calls.max(1)),
        }
    }

    fn wanted(self) -> u64 {
        match self {
            Want::Key => 0,
            Want::Lease(calls) => calls,
        }
    }
}

impl Shared {
    /// Wakes every waiting request, async and blocking, to look at the pool again.
    pub(super) fn wake_all(&self) {
        self.changed.notify_waiters();
        self.changed_blocking.notify_all();
    }

    /// Looks at the pool for a fresh key of `platform`. While none is fresh,
    /// the sleep lasts until the earliest refresh time by the pool's clock, but
    /// never past `give_up`; once that has passed, [`KeyError::Timeout`]`(deadline)`.
    fn look(
        &self,
        state: &mut State,
        platform: &str,
        want: Want,
        waiter: &ReplyTo,
        give_up: std::time::Instant,
        deadline: Duration,
    ) -> Result<Look, KeyError> {
        if state.engine.is_shutdown() {
            return Err(KeyError::ShutDown);
        }
        let now = self.clock.now();
        // Leases due by now end first: their calls count, and their account
        // may lend again.
        state.catch_up(now);
        let look = match want.ask(&mut state.engine, now, platform, waiter) {
            Leased::Key(k) => Ok(Look::Key(Box::new(LeasedKey::new(
                platform,
                k,
                want.wanted(),
                None,
            )))),
            Leased::Granted { key, lease } => {
                let terms = LeaseTerms {
                    id: lease.id,
                    calls: lease.calls,
                    until: lease.until,
                };
                Ok(Look::Key(Box::new(LeasedKey::new(
                    platform,
                    key,
                    want.wanted(),
                    Some(terms),
                ))))
            }
            Leased::Wait { refresh_at } => {
                let left = give_up.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    Err(KeyError::Timeout(deadline))
                } else {
                    Ok(Look::Sleep(
                        refresh_at.saturating_since(self.clock.now()).min(left),
                    ))
                }
            }
            Leased::UnknownPlatform => Err(KeyError::UnknownPlatform(platform.to_string())),
            Leased::NoKeys => Err(KeyError::NoKeys(platform.to_string())),
        };
        state.log_events();
        look
    }

    /// A name for one request while it waits for a key.
    fn waiter(&self) -> ReplyTo {
        let n = self
            .next_request
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ReplyTo::new("embedded").with_request_id(n)
    }

    pub(super) fn request_blocking(
        &self,
        platform: &str,
        want: Want,
        deadline: Duration,
    ) -> Result<LeasedKey, KeyError> {
        crate::service::require_non_empty("platform", platform)?;
        let give_up = crate::service::instant_after(deadline);
        let waiter = self.waiter();
        let mut state = self.lock();
        loop {
            let sleep = match self.look(&mut state, platform, want, &waiter, give_up, deadline)? {
                Look::Key(k) => return Ok(*k),
                Look::Sleep(sleep) => sleep,
            };
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
        want: Want,
        deadline: Duration,
    ) -> Result<LeasedKey, KeyError> {
        crate::service::require_non_empty("platform", platform)?;
        let give_up = crate::service::instant_after(deadline);
        let waiter = self.waiter();
        loop {
            // Register for wake-ups before looking at the pool, so that a publish
            // between the look and the wait is not missed.
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let look = self.look(&mut self.lock(), platform, want, &waiter, give_up, deadline)?;
            let sleep = match look {
                Look::Key(k) => return Ok(*k),
                Look::Sleep(sleep) => sleep,
            };
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep(sleep) => {}
            }
        }
    }
}
