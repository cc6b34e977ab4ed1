//! Glue that every broker adapter needs, written once: for the crates that
//! implement [`Bus`](crate::Bus) over a real broker (keyman-redis,
//! keyman-nats), not for users of a bus.
//!
//! - [`subscribe_channels`]: the channel list of a `subscribe` as the
//!   [`Bus::subscribe`](crate::Bus::subscribe) contract wants it (each channel
//!   once, never empty).
//! - [`spawn_subscription`]: a [`Subscription`] fed by a task of its own, which
//!   stops when the subscription is dropped ([`StopOnDrop`]).
//! - [`bounded`]: an operation limited in time, failing with
//!   [`BusError::Timeout`].
//! - [`ResendTimer`]: when a native request is sent again.

use crate::{BusError, Subscription, SubscriptionSender};
use std::future::Future;
use std::time::Duration;

/// Aborts a tokio task when dropped: attached to a [`Subscription`] with
/// [`Subscription::with_guard`], it stops the task that feeds it.
#[derive(Debug)]
pub struct StopOnDrop(tokio::task::AbortHandle);

impl StopOnDrop {
    /// Aborts the task of `handle` when this is dropped.
    pub fn new(handle: tokio::task::AbortHandle) -> Self {
        Self(handle)
    }
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The channels of a `subscribe` call, each once and in their first order;
/// [`BusError::Config`] if there are none.
pub fn subscribe_channels(channels: &[String]) -> Result<Vec<String>, BusError> {
    let mut unique: Vec<String> = Vec::with_capacity(channels.len());
    for channel in channels {
        if !unique.contains(channel) {
            unique.push(channel.clone());
        }
    }
    if unique.is_empty() {
        return Err(BusError::Config(
            "subscribe needs at least one channel".into(),
        ));
    }
    Ok(unique)
}

/// The channels and prefixes of a
/// [`Bus::subscribe_with_prefixes`](crate::Bus::subscribe_with_prefixes) call, each
/// once: [`BusError::Config`] if there is no channel, a prefix is empty, or a
/// channel starts with a prefix (it would be delivered twice on some brokers).
pub fn subscribe_prefixes(
    channels: &[String],
    prefixes: &[String],
) -> Result<(Vec<String>, Vec<String>), BusError> {
    let channels = subscribe_channels(channels)?;
    let mut unique: Vec<String> = Vec::with_capacity(prefixes.len());
    for prefix in prefixes {
        if prefix.is_empty() {
            return Err(BusError::Config("a channel prefix may not be empty".into()));
        }
        if let Some(channel) = channels.iter().find(|c| c.starts_with(prefix.as_str())) {
            return Err(BusError::Config(
                format!("channel {channel:?} starts with the prefix {prefix:?}").into(),
            ));
        }
        if !unique.contains(prefix) {
            unique.push(prefix.clone());
        }
    }
    Ok((channels, unique))
}

/// Makes a [`Subscription`] with a queue of `capacity` events and spawns
/// `feed(sender)` to fill it; the task is aborted when the subscription is
/// dropped. Needs a tokio runtime.
pub fn spawn_subscription<F, Fut>(capacity: usize, feed: F) -> Subscription
where
    F: FnOnce(SubscriptionSender) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (sender, subscription) = Subscription::channel(capacity);
    let task = tokio::spawn(feed(sender));
    subscription.with_guard(StopOnDrop::new(task.abort_handle()))
}

/// Runs `operation` for at most `timeout`; fails with
/// [`BusError::Timeout`]`(timeout)` if it takes longer.
pub async fn bounded<T>(
    timeout: Duration,
    operation: impl Future<Output = Result<T, BusError>>,
) -> Result<T, BusError> {
    tokio::time::timeout(timeout, operation)
        .await
        .unwrap_or(Err(BusError::Timeout(timeout)))
}

/// The re-sends of one native request ([`Bus::request_resending`](crate::Bus::request_resending)).
pub struct ResendTimer(Option<tokio::time::Interval>);

impl ResendTimer {
    /// Ticks every `resend_every` (at least 1 ms), first after one period;
    /// never when that is not shorter than the request's `timeout`.
    pub fn new(resend_every: Duration, timeout: Duration) -> Self {
        let resend_every = resend_every.max(Duration::from_millis(1));
        if resend_every >= timeout {
            return Self(None);
        }
        Self(
            tokio::time::Instant::now()
                .checked_add(resend_every)
                .map(|first| {
                    let mut timer = tokio::time::interval_at(first, resend_every);
                    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    timer
                }),
        )
    }

    /// Waits until the next re-send is due (forever when there is none).
    pub async fn tick(&mut self) {
        match self.0.as_mut() {
            Some(timer) => {
                timer.tick().await;
            }
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_are_listed_once_and_never_empty() {
        let channels = ["a", "b", "a", "c", "b"].map(String::from);
        assert_eq!(
            subscribe_channels(&channels),
            Ok(["a", "b", "c"].map(String::from).to_vec())
        );
        assert!(matches!(subscribe_channels(&[]), Err(BusError::Config(_))));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_operation_times_out() {
        let limit = Duration::from_secs(1);
        let slow = async {
            tokio::time::sleep(limit * 2).await;
            Ok(())
        };
        assert_eq!(bounded(limit, slow).await, Err(BusError::Timeout(limit)));
        assert_eq!(bounded(limit, async { Ok(7) }).await, Ok(7));
    }

    #[tokio::test]
    async fn dropping_the_subscription_stops_its_task() {
        let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel::<()>();
        let subscription = spawn_subscription(8, |sender| async move {
            let _stopped = stopped_tx;
            sender.closed().await;
            std::future::pending::<()>().await;
        });
        drop(subscription);
        // The task is aborted, so its end of the channel is dropped.
        assert!(stopped_rx.await.is_err());
    }
}
