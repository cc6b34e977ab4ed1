//! The bounded event queue behind every [`Subscription`], and its policy for a
//! subscriber that reads too slowly: the transport waits for room.

use crate::{BusEvent, Message, Subscription};
use std::sync::Arc;
use tokio::sync::mpsc;

/// How many events a subscription queues by default; a transport waits for room beyond it.
pub const DEFAULT_QUEUE_CAPACITY: usize = 4096;

/// The smallest queue a subscription gets, whatever capacity is asked for.
const MIN_QUEUE_CAPACITY: usize = 8;

/// The sending end of a [`Subscription`]: transports push [`BusEvent`]s into it.
///
/// The queue is bounded and never drops anything: when the subscriber falls so
/// far behind that its queue is full, every `send_*` waits until it has read
/// enough to make room. A transport feeds a subscription from one task that
/// reads the broker's connection, so while it waits it stops reading, and the
/// broker buffers what comes meanwhile (up to its own limits; a broker that
/// then cuts the connection causes a gap the transport reports with
/// [`SubscriptionSender::send_disconnected`]).
///
/// Connection events are reported once and in pairs: repeated
/// `send_disconnected` calls without a `send_reconnected` between them queue
/// one `Disconnected`, and `send_reconnected` queues `Reconnected` only after a
/// `Disconnected`.
///
/// Cloning it gives another handle to the same queue.
#[derive(Debug, Clone)]
pub struct SubscriptionSender {
    shared: Arc<QueueShared>,
}

#[derive(Debug)]
struct QueueShared {
    tx: mpsc::Sender<BusEvent>,
    /// The last connection event queued for the subscriber is a `Disconnected`.
    /// Held while a connection event is queued, so events keep their order.
    announced_down: tokio::sync::Mutex<bool>,
}

/// Whether the subscriber still listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The event was queued (or, for a repeated connection event, had been already).
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
        let sender = SubscriptionSender {
            shared: Arc::new(QueueShared {
                tx,
                announced_down: tokio::sync::Mutex::new(false),
            }),
        };
        (sender, Subscription::new(rx))
    }
}

impl SubscriptionSender {
    /// Queues a message for the subscriber, waiting for room while its queue is full.
    pub async fn send_message(&self, message: Message) -> Delivery {
        self.send(BusEvent::Message(message)).await
    }

    /// Queues a message if there is room now; gives it back if the queue is full.
    ///
    /// # Errors
    ///
    /// The message, when the queue is full; the caller may wait with
    /// [`SubscriptionSender::send_message`] instead.
    pub fn try_send_message(&self, message: Message) -> Result<Delivery, Message> {
        match self.shared.tx.try_send(BusEvent::Message(message)) {
            Ok(()) => Ok(Delivery::Accepted),
            Err(mpsc::error::TrySendError::Closed(_)) => Ok(Delivery::Closed),
            Err(mpsc::error::TrySendError::Full(event)) => match event {
                BusEvent::Message(message) => Err(message),
                _ => Ok(Delivery::Accepted),
            },
        }
    }

    /// Tells the subscriber that the connection to the broker was lost (and
    /// messages may have been missed), waiting for room while its queue is full.
    ///
    /// Repeated calls without a [`SubscriptionSender::send_reconnected`] between them
    /// are reported once.
    pub async fn send_disconnected(&self, reason: impl Into<String>) -> Delivery {
        let mut announced_down = self.shared.announced_down.lock().await;
        if self.shared.tx.is_closed() {
            return Delivery::Closed;
        }
        if *announced_down {
            return Delivery::Accepted;
        }
        let delivery = self
            .send(BusEvent::Disconnected {
                reason: reason.into(),
            })
            .await;
        if delivery == Delivery::Accepted {
            *announced_down = true;
        }
        delivery
    }

    /// Tells the subscriber that the connection is back and every channel is
    /// subscribed again, waiting for room while its queue is full.
    ///
    /// Does nothing unless a disconnection was reported before.
    pub async fn send_reconnected(&self) -> Delivery {
        let mut announced_down = self.shared.announced_down.lock().await;
        if self.shared.tx.is_closed() {
            return Delivery::Closed;
        }
        if !*announced_down {
            return Delivery::Accepted;
        }
        let delivery = self.send(BusEvent::Reconnected).await;
        if delivery == Delivery::Accepted {
            *announced_down = false;
        }
        delivery
    }

    /// Whether the [`Subscription`] was dropped.
    pub fn is_closed(&self) -> bool {
        self.shared.tx.is_closed()
    }

    /// Completes when the [`Subscription`] is dropped.
    pub async fn closed(&self) {
        self.shared.tx.closed().await;
    }

    async fn send(&self, event: BusEvent) -> Delivery {
        match self.shared.tx.send(event).await {
            Ok(()) => Delivery::Accepted,
            Err(_) => Delivery::Closed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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

    #[tokio::test]
    async fn connection_events_are_reported_once_and_in_pairs() {
        let (sender, mut subscription) = Subscription::channel(8);
        assert_eq!(sender.send_reconnected().await, Delivery::Accepted);
        sender.send_disconnected("lost").await;
        sender.send_disconnected("still lost").await;
        sender.send_reconnected().await;
        sender.send_reconnected().await;
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

    #[tokio::test]
    async fn a_full_queue_makes_the_sender_wait_and_loses_nothing() {
        let (sender, mut subscription) = Subscription::channel(8);
        for index in 0..8 {
            assert_eq!(
                sender.send_message(message(index)).await,
                Delivery::Accepted
            );
        }
        assert_eq!(sender.try_send_message(message(8)), Err(message(8)));
        let feeding = tokio::spawn({
            let sender = sender.clone();
            async move {
                for index in 8..20 {
                    sender.send_message(message(index)).await;
                }
                sender.send_disconnected("server went away").await;
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!feeding.is_finished(), "the sender waits for room");
        let mut events = Vec::new();
        while events.len() < 21 {
            events.extend(drain(&mut subscription));
            tokio::task::yield_now().await;
        }
        feeding.await.expect("feeder");
        let mut expected: Vec<BusEvent> = (0..20).map(|i| BusEvent::Message(message(i))).collect();
        expected.push(BusEvent::Disconnected {
            reason: "server went away".to_owned(),
        });
        assert_eq!(events, expected);
    }

    #[tokio::test]
    async fn a_dropped_subscription_is_reported_closed() {
        let (sender, subscription) = Subscription::channel(8);
        drop(subscription);
        assert!(sender.is_closed());
        assert_eq!(sender.send_message(message(0)).await, Delivery::Closed);
        assert_eq!(sender.try_send_message(message(0)), Ok(Delivery::Closed));
        assert_eq!(sender.send_disconnected("x").await, Delivery::Closed);
        assert_eq!(sender.send_reconnected().await, Delivery::Closed);
    }

    #[tokio::test]
    async fn a_waiting_sender_is_released_when_the_subscription_is_dropped() {
        let (sender, subscription) = Subscription::channel(8);
        for index in 0..8 {
            sender.send_message(message(index)).await;
        }
        let waiting = tokio::spawn(async move { sender.send_message(message(9)).await });
        tokio::task::yield_now().await;
        drop(subscription);
        assert_eq!(waiting.await.expect("sender"), Delivery::Closed);
    }
}
