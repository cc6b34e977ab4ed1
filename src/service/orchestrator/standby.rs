//! The lease calls: standing by until the lease is taken, renewing it while
//! serving (as [`Leadership`](super::leadership::Leadership) asks), and
//! releasing it on the way out.

use super::super::{BusError, Lease};
use super::leadership::Renewed;
use super::{Orchestrator, RELEASE_LIMIT};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// A renewal on its way: when it was sent, and its outcome.
pub(super) type Renewal = Pin<Box<dyn Future<Output = (Instant, Renewed)> + Send>>;

impl Orchestrator {
    /// Tries to take the lease every `ttl / 3` until it succeeds (returns when
    /// the successful attempt was sent) or `stop` completes (returns `None`).
    /// After stepping down it waits one interval before the first attempt.
    pub(super) async fn stand_by(
        &self,
        lease: &dyn Lease,
        ttl: Duration,
        wait_first: bool,
        mut stop: Pin<&mut impl Future<Output = ()>>,
    ) -> Option<Instant> {
        let every = ttl / 3;
        let mut attempts = tokio::time::interval_at(
            if wait_first {
                Instant::now() + every
            } else {
                Instant::now()
            },
            every,
        );
        attempts.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut told_held = false;
        let mut told_failing = false;
        loop {
            tokio::select! {
                () = stop.as_mut() => {
                    tracing::info!("stop requested while standing by");
                    return None;
                }
                _ = attempts.tick() => {}
            }
            let sent = Instant::now();
            let attempt = tokio::select! {
                () = stop.as_mut() => {
                    tracing::info!("stop requested while standing by");
                    return None;
                }
                attempt = tokio::time::timeout(every, lease.try_acquire(&self.holder, ttl)) => {
                    attempt.unwrap_or(Err(BusError::Timeout(every)))
                }
            };
            match attempt {
                Ok(true) => {
                    tracing::info!(lease = %lease.describe(), holder = %self.holder, "took the lease; serving");
                    return Some(sent);
                }
                Ok(false) => {
                    told_failing = false;
                    if !told_held {
                        tracing::info!(
                            "standing by: {} is held by another orchestrator",
                            lease.describe()
                        );
                        told_held = true;
                    }
                }
                Err(error) => {
                    if told_failing {
                        tracing::debug!(lease = %lease.describe(), %error, "could not try the lease");
                    } else {
                        tracing::warn!(lease = %lease.describe(), %error, "could not try the lease; standing by");
                        told_failing = true;
                    }
                }
            }
        }
    }

    /// Releases the lease if this orchestrator holds it, bounded by its time
    /// to live and by [`RELEASE_LIMIT`].
    pub(super) async fn release_lease(&self) {
        let Some((lease, ttl)) = &self.lease else {
            return;
        };
        let limit = (*ttl).min(RELEASE_LIMIT);
        match tokio::time::timeout(limit, lease.release(&self.holder)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(lease = %lease.describe(), %error, "could not release the lease; it expires by itself");
            }
            Err(_) => {
                tracing::warn!(lease = %lease.describe(), "releasing the lease timed out; it expires by itself");
            }
        }
    }
}

/// A renewal of `lease` for `holder`, kept for `ttl` and bounded by `limit`,
/// with the time it was sent. A failure is logged here.
pub(super) fn renew(
    lease: Arc<dyn Lease>,
    holder: String,
    ttl: Duration,
    limit: Duration,
) -> Renewal {
    Box::pin(async move {
        let sent = Instant::now();
        let renewed = tokio::time::timeout(limit, lease.try_acquire(&holder, ttl))
            .await
            .unwrap_or(Err(BusError::Timeout(limit)));
        let outcome = match renewed {
            Ok(true) => Renewed::Held,
            Ok(false) => Renewed::HeldByOther,
            Err(error) => {
                tracing::warn!(lease = %lease.describe(), %error, "could not renew the lease; trying again");
                Renewed::Failed
            }
        };
        (sent, outcome)
    })
}
