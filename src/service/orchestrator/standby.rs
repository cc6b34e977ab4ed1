//! Standing by until the lease is taken (watching the request channels and
//! their replies meanwhile, into a [`Window`]), catching up with the window
//! on takeover, renewing the lease while serving (as
//! [`Leadership`](super::leadership::Leadership) asks), and releasing it on
//! the way out.

use super::super::{BusError, BusEvent, Lease, Subscription};
use super::leadership::Renewed;
use super::window::{Limits, Window};
use super::{Orchestrator, RELEASE_LIMIT};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// A renewal on its way: when it was sent, and its outcome.
pub(super) type Renewal = Pin<Box<dyn Future<Output = (Instant, Renewed)> + Send>>;

/// How long a standby that took the lease waits for its own marker to come
/// back through its subscription (see [`Orchestrator::catch_up`]; it keeps
/// the lease meanwhile). Past it, a reply of the old holder still on its way
/// may be missed and its request answered a second time, so the wait is
/// long: the marker comes back within milliseconds unless the machine or the
/// broker is overloaded.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(5);

/// What a standby watches: one subscription to the request channels and
/// their reply channels, and the window it fills. On takeover the same
/// subscription goes on serving, so nothing falls between the two.
pub(super) struct Watch {
    /// The subscription ([`Bus::subscribe_with_prefixes`](super::super::Bus::subscribe_with_prefixes)).
    pub(super) sub: Subscription,
    /// What it has seen.
    pub(super) window: Window,
}

impl Watch {
    /// Takes in one event of the subscription; `false` if the bus is closed.
    fn observe(&mut self, event: Option<BusEvent>) -> bool {
        match event {
            Some(BusEvent::Message(message)) => {
                self.window.observe(Instant::now().into_std(), message);
            }
            Some(BusEvent::Disconnected { reason }) => {
                let pending = self.window.pending();
                let kept = self.window.len() - pending;
                tracing::warn!(%reason, pending, kept, "standing by: the watch of the request channels has a gap; the requests seen unanswered before it will not be answered on takeover");
                self.window.gap();
            }
            Some(BusEvent::Reconnected) => {
                tracing::info!("standing by: watching the request channels again");
            }
            None => return false,
        }
        true
    }
}

/// Whether the bus can watch request channels with their replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Watching {
    /// Try to open a [`Watch`] while standing by.
    Try,
    /// The bus cannot ([`BusError::Unsupported`]): a takeover answers only
    /// what is sent after it.
    Unsupported,
}

impl Orchestrator {
    /// Opens a [`Watch`] for a lease of `ttl`, within `limit`.
    async fn open_watch(&self, ttl: Duration, limit: Duration) -> Result<Watch, BusError> {
        let config = self.engine.config();
        let window = Window::new(
            config.channels.clone(),
            config.max_payload,
            Limits::for_lease(ttl),
        );
        let (channels, prefixes) = (window.channels(), window.prefixes());
        let subscribing = self.bus.subscribe_with_prefixes(&channels, &prefixes);
        let sub = tokio::time::timeout(limit, subscribing)
            .await
            .unwrap_or(Err(BusError::Timeout(limit)))?;
        Ok(Watch { sub, window })
    }

    /// Tries to take the lease every `ttl / 3` until it succeeds (returns when
    /// the successful attempt was sent) or `stop` completes (returns `None`).
    /// After stepping down it waits one interval before the first attempt.
    ///
    /// Before each attempt it opens a [`Watch`] into `watch` if there is none
    /// (and the bus can), and it feeds the watch's window all along. Once it
    /// has found the lease held, it makes no attempt while its watch is
    /// younger than `ttl + 2 ttl / 3`, so that a standby which has seen the
    /// whole gap takes over before one that started during it.
    pub(super) async fn stand_by(
        &self,
        lease: &dyn Lease,
        ttl: Duration,
        wait_first: bool,
        watch: &mut Option<Watch>,
        watching: &mut Watching,
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
        let mut told_watch_failing = false;
        // When the current watch opened: while it is young, and someone holds
        // the lease, leave the takeover to a standby that has seen more.
        let mut watching_since: Option<Instant> = watch.as_ref().map(|_| Instant::now());
        let defer = ttl + ttl * 2 / 3;
        loop {
            tokio::select! {
                () = stop.as_mut() => {
                    tracing::info!("stop requested while standing by");
                    return None;
                }
                _ = attempts.tick() => {}
                event = next_event(watch.as_mut()), if watch.is_some() => {
                    if !watch.as_mut().is_some_and(|w| w.observe(event)) {
                        *watch = None;
                        watching_since = None;
                    }
                    continue;
                }
            }
            match watch.as_mut() {
                Some(watch) => watch.window.expire(Instant::now().into_std()),
                None if *watching == Watching::Try => {
                    let opening = tokio::select! {
                        () = stop.as_mut() => {
                            tracing::info!("stop requested while standing by");
                            return None;
                        }
                        opening = self.open_watch(ttl, every) => opening,
                    };
                    match opening {
                        Ok(opened) => {
                            tracing::info!(
                                "standing by: watching the request channels and their replies"
                            );
                            told_watch_failing = false;
                            *watch = Some(opened);
                            watching_since = Some(Instant::now());
                        }
                        Err(BusError::Unsupported(what)) => {
                            tracing::warn!(%what, "this bus cannot watch the request channels with their replies; a takeover answers only the requests sent after it");
                            *watching = Watching::Unsupported;
                        }
                        Err(error) => {
                            if !told_watch_failing {
                                tracing::warn!(%error, "could not watch the request channels; trying again");
                                told_watch_failing = true;
                            }
                        }
                    }
                }
                None => {}
            }
            if told_held && watching_since.is_some_and(|since| since.elapsed() < defer) {
                // A standby that watched for less than `ttl + 2 ttl / 3` may
                // have missed requests sent while the last holder died; one
                // that watched longer takes over first (it tries within
                // `ttl + ttl / 3` of the holder's last renewal).
                continue;
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

    /// After taking the lease: publishes a marker on a reply channel that
    /// nobody else uses and takes in everything the watch receives before the
    /// marker comes back (at most [`CATCH_UP_LIMIT`]). Whatever the broker
    /// delivered before the lease was taken (a reply of the old holder among
    /// it) is then in the window.
    pub(super) async fn catch_up(&self, watch: &mut Watch) {
        let marker = format!(
            "{}-keyman-takeover-{}",
            self.engine.config().channels.request,
            self.holder
        );
        let deadline = Instant::now() + CATCH_UP_LIMIT;
        let published = tokio::time::timeout(CATCH_UP_LIMIT, self.bus.publish(&marker, b""))
            .await
            .unwrap_or(Err(BusError::Timeout(CATCH_UP_LIMIT)));
        if let Err(error) = published {
            tracing::warn!(%error, "taking over: could not publish the catch-up marker");
            while let Some(event) = watch.sub.try_next() {
                watch.observe(Some(event));
            }
            return;
        }
        loop {
            let event = match tokio::time::timeout_at(deadline, watch.sub.next()).await {
                Ok(event) => event,
                Err(_) => {
                    // Published or not: what is queued now is what we have.
                    while let Some(event) = watch.sub.try_next() {
                        watch.observe(Some(event));
                    }
                    tracing::warn!(
                        "taking over: the catch-up marker did not come back within {CATCH_UP_LIMIT:?}"
                    );
                    return;
                }
            };
            if matches!(&event, Some(BusEvent::Message(m)) if m.channel == marker) {
                return;
            }
            if !watch.observe(event) {
                return;
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

/// The next event of `watch`'s subscription (never, without one).
async fn next_event(watch: Option<&mut Watch>) -> Option<BusEvent> {
    match watch {
        Some(watch) => watch.sub.next().await,
        None => std::future::pending().await,
    }
}
