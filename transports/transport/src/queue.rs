//! The bounded event queue behind every [`Subscription`], and its policy for a
//! subscriber that reads too slowly.

use crate::{BusEvent, Message, Subscription};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::sync::mpsc;

/// How many events a subscription queues by default before it starts dropping messages.
pub const DEFAULT_QUEUE_CAPACITY: usize = 4096;

/// The smallest queue a subscription gets, whatever capacity is asked for.
const MIN_QUEUE_CAPACITY: usize = 8;

/// Slots kept free for the `Disconnected` / `Reconnected` pair that reports dropped messages.
const RESERVED_SLOTS: usize = 2;

/// The sending end of a [`Subscription`]: transports push [`BusEvent`]s into it.
///
/// It never waits for the subscriber. The queue is bounded; when a subscriber
/// falls so far behind that its queue is full, further messages for it are
/// dropped and counted, and as soon as it has read half of its queue it receives
/// `Disconnected { reason: "subscriber fell behind: N messages dropped" }`
/// followed by `Reconnected`, exactly where the dropped messages would have been.
/// A subscriber therefore handles a gap caused by its own slowness the same way
/// as a gap caused by a lost connection, and never loses a message silently.
/// If the connection itself is down when the gap is reported, the `Reconnected`
/// comes later, when the transport reports the connection back.
///
/// Cloning it gives another handle to the same queue.
#[derive(Debug, Clone)]
pub struct SubscriptionSender {
    shared: Arc<QueueShared>,
}

#[derive(Debug)]
struct QueueShared {
    tx: mpsc::Sender<BusEvent>,
    /// Free slots needed before a lagging subscriber is told about its gap and fed again.
    resume_room: usize,
    state: Mutex<QueueState>,
}

#[derive(Debug, Default)]
struct QueueState {
    /// Messages are being dropped because the queue was full.
    lagging: bool,
    /// Messages dropped since the queue became full.
    dropped: u64,
    /// The transport reported the connection lost and not yet back.
    link_down: bool,
    /// The last connection event queued for the subscriber is a `Disconnected`.
    announced_down: bool,
    /// Why the connection was lost, while that is not yet told to the subscriber.
    down_reason: Option<String>,
    /// A task waits for room to report the gap.
    recovery_pending: bool,
}

/// Whether the subscriber still listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The event was queued, or dropped and counted under the slow-subscriber policy.
    Accepted,
    /// The [`Subscription`] was dropped; the transport should stop feeding it.
    Closed,
}

impl Subscription {
    /// Makes a subscription with a queue of `capacity` events (at least 8) and the
    /// sender a transport fills it through.
    pub fn channel(capacity: usize) -> (SubscriptionSender, Subscription) {
        let capacity = capacity.max(MIN_QUEUE_CAPACITY);
        let (tx, rx) = mpsc::channel(capacity);
        // Room for the gap report and a few messages after it.
        let resume_room = (capacity / 2).max(RESERVED_SLOTS + 3);
        let sender = SubscriptionSender {
            shared: Arc::new(QueueShared {
                tx,
                resume_room,
                state: Mutex::new(QueueState::default()),
            }),
        };
        (sender, Subscription::new(rx))
    }
}

impl SubscriptionSender {
    /// Queues a message for the subscriber, or drops and counts it if the queue is full.
    pub fn send_message(&self, message: Message) -> Delivery {
        let mut state = self.lock();
        if self.shared.tx.is_closed() {
            return Delivery::Closed;
        }
        if state.lagging {
            self.try_recover(&mut state);
        }
        if state.lagging {
            state.dropped += 1;
            return Delivery::Accepted;
        }
        if self.shared.tx.capacity() > RESERVED_SLOTS
            && self.shared.tx.try_send(BusEvent::Message(message)).is_ok()
        {
            return Delivery::Accepted;
        }
        state.lagging = true;
        state.dropped = 1;
        self.spawn_recovery(&mut state);
        Delivery::Accepted
    }

    /// Tells the subscriber that the connection to the broker was lost.
    ///
    /// Repeated calls without a [`SubscriptionSender::send_reconnected`] between them
    /// are reported once.
    pub fn send_disconnected(&self, reason: impl Into<String>) -> Delivery {
        let mut state = self.lock();
        if self.shared.tx.is_closed() {
            return Delivery::Closed;
        }
        state.link_down = true;
        if state.announced_down {
            return Delivery::Accepted;
        }
        let reason = reason.into();
        if state.lagging {
            // The gap report will tell it.
            state.down_reason = Some(reason);
            return Delivery::Accepted;
        }
        match self.shared.tx.try_send(BusEvent::Disconnected { reason }) {
            Ok(()) => state.announced_down = true,
            Err(err) => {
                if let BusEvent::Disconnected { reason } = err.into_inner() {
                    state.down_reason = Some(reason);
                }
                state.lagging = true;
                self.spawn_recovery(&mut state);
            }
        }
        Delivery::Accepted
    }

    /// Tells the subscriber that the connection is back and every channel is subscribed again.
    ///
    /// Does nothing unless a disconnection was reported before.
    pub fn send_reconnected(&self) -> Delivery {
        let mut state = self.lock();
        if self.shared.tx.is_closed() {
            return Delivery::Closed;
        }
        state.link_down = false;
        state.down_reason = None;
        if state.lagging || !state.announced_down {
            return Delivery::Accepted;
        }
        if self.shared.tx.try_send(BusEvent::Reconnected).is_ok() {
            state.announced_down = false;
        } else {
            state.lagging = true;
            self.spawn_recovery(&mut state);
        }
        Delivery::Accepted
    }

    /// Whether the [`Subscription`] was dropped.
    pub fn is_closed(&self) -> bool {
        self.shared.tx.is_closed()
    }

    /// Completes when the [`Subscription`] is dropped.
    pub async fn closed(&self) {
        self.shared.tx.closed().await;
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Reports the gap of a lagging subscriber if its queue has room again.
    fn try_recover(&self, state: &mut QueueState) {
        if self.shared.tx.capacity() >= self.shared.resume_room {
            self.report_gap(state);
        }
    }

    /// Queues the `Disconnected` / `Reconnected` pair that closes a gap. Needs two free slots.
    fn report_gap(&self, state: &mut QueueState) {
        if !state.announced_down {
            let reason = match (state.dropped, state.down_reason.take()) {
                (0, Some(down)) => down,
                (dropped, None) => format!("subscriber fell behind: {dropped} messages dropped"),
                (dropped, Some(down)) => format!(
                    "subscriber fell behind: {dropped} messages dropped; then the connection was lost: {down}"
                ),
            };
            if self
                .shared
                .tx
                .try_send(BusEvent::Disconnected { reason })
                .is_err()
            {
                return;
            }
            state.announced_down = true;
        }
        if !state.link_down && self.shared.tx.try_send(BusEvent::Reconnected).is_ok() {
            state.announced_down = false;
        }
        state.lagging = false;
        state.dropped = 0;
    }

    /// Starts a task that reports the gap once the subscriber has read enough,
    /// even if nothing more is published. Without a tokio runtime the gap is
    /// reported by the next send that finds room.
    fn spawn_recovery(&self, state: &mut QueueState) {
        if state.recovery_pending {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        state.recovery_pending = true;
        let sender = self.clone();
        runtime.spawn(async move {
            let room = sender.shared.resume_room;
            let permits = sender.shared.tx.reserve_many(room).await;
            let mut state = sender.lock();
            state.recovery_pending = false;
            if let Ok(permits) = permits {
                // Give the room back first, then use it in order under the lock.
                drop(permits);
                if state.lagging {
                    sender.report_gap(&mut state);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(index: u8) -> Message {
        Message {
            channel: "c".to_owned(),
            payload: vec![index],
            reply_to: None,
        }
    }

    fn drain(subscription: &mut Subscription) -> Vec<BusEvent> {
        let mut events = Vec::new();
        while let Ok(event) = subscription.rx.try_recv() {
            events.push(event);
        }
        events
    }

    #[test]
    fn connection_events_are_reported_once_and_in_pairs() {
        let (sender, mut subscription) = Subscription::channel(8);
        assert_eq!(sender.send_reconnected(), Delivery::Accepted);
        sender.send_disconnected("lost");
        sender.send_disconnected("still lost");
        sender.send_reconnected();
        sender.send_reconnected();
        assert_eq!(
            drain(&mut subscription),
            [
                BusEvent::Disconnected {
                    reason: "lost".to_owned()
                },
                BusEvent::Reconnected
            ]
        );
    }

    #[test]
    fn a_connection_lost_while_lagging_is_reported_with_the_gap() {
        let (sender, mut subscription) = Subscription::channel(8);
        for index in 0..8 {
            sender.send_message(message(index));
        }
        sender.send_disconnected("server went away");
        let mut events = drain(&mut subscription);
        assert_eq!(events.len(), 6);
        // The queue has room again but the connection is still down: the gap
        // is reported, `Reconnected` waits for the connection.
        sender.send_message(message(100));
        events = drain(&mut subscription);
        assert_eq!(
            events,
            [
                BusEvent::Disconnected {
                    reason: "subscriber fell behind: 2 messages dropped; then the connection was lost: server went away".to_owned()
                },
                BusEvent::Message(message(100))
            ]
        );
        sender.send_reconnected();
        sender.send_message(message(101));
        assert_eq!(
            drain(&mut subscription),
            [BusEvent::Reconnected, BusEvent::Message(message(101))]
        );
    }

    #[test]
    fn a_dropped_subscription_is_reported_closed() {
        let (sender, subscription) = Subscription::channel(8);
        drop(subscription);
        assert!(sender.is_closed());
        assert_eq!(sender.send_message(message(0)), Delivery::Closed);
        assert_eq!(sender.send_disconnected("x"), Delivery::Closed);
        assert_eq!(sender.send_reconnected(), Delivery::Closed);
    }
}
