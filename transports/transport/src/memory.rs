//! An in-process [`Bus`], for embedding keyman in one program and for tests.

use crate::adapter::ResendTimer;
use crate::queue::{DEFAULT_QUEUE_CAPACITY, Delivery, SubscriptionSender};
use crate::{Bus, BusError, BusEvent, Message, Subscription};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

/// The prefix of the private reply channels that [`MemoryBus::request`] makes up.
const INBOX_PREFIX: &str = "_INBOX.memory.";

/// A [`Bus`] inside one process. Cloning it is cheap and gives another handle to
/// the same bus.
///
/// `publish` delivers to every live subscription of the channel, in the order of
/// the calls. Each subscription has a bounded queue
/// ([`MemoryBus::with_queue_capacity`], default 4096 events); while a
/// subscriber's queue is full, `publish` waits for it to make room, so nothing
/// is ever lost (see [`SubscriptionSender`]). Dropping a [`Subscription`]
/// unsubscribes it at once (and releases a `publish` waiting for it).
///
/// It supports subscriptions to channel prefixes
/// ([`Bus::subscribe_with_prefixes`]) and native request/reply: [`MemoryBus::request`] delivers the message
/// with a private `reply_to` channel and waits for the first message published
/// there.
#[derive(Debug, Clone)]
pub struct MemoryBus {
    shared: Arc<BusShared>,
}

#[derive(Debug)]
struct BusShared {
    queue_capacity: usize,
    next_inbox: AtomicU64,
    state: Mutex<BusState>,
}

#[derive(Debug, Default)]
struct BusState {
    closed: bool,
    next_subscriber: u64,
    /// The live subscriptions of each channel that has any.
    channels: HashMap<String, Vec<Subscriber>>,
    /// The live subscriptions with channel prefixes ([`Bus::subscribe_with_prefixes`]).
    watchers: Vec<Watcher>,
}

/// A subscription to channels and channel prefixes.
#[derive(Debug)]
struct Watcher {
    id: u64,
    channels: Vec<String>,
    prefixes: Vec<String>,
    sender: SubscriptionSender,
}

impl Watcher {
    fn wants(&self, channel: &str) -> bool {
        self.channels.iter().any(|c| c == channel)
            || self
                .prefixes
                .iter()
                .any(|p| channel.starts_with(p.as_str()))
    }
}

/// Removes a subscription with prefixes when the [`Subscription`] is dropped.
struct Unwatch {
    bus: Weak<BusShared>,
    id: u64,
}

impl Drop for Unwatch {
    fn drop(&mut self) {
        if let Some(bus) = self.bus.upgrade() {
            bus.lock().watchers.retain(|watcher| watcher.id != self.id);
        }
    }
}

#[derive(Debug)]
struct Subscriber {
    id: u64,
    sender: SubscriptionSender,
}

/// Removes a subscription from its channels when the [`Subscription`] is dropped.
struct Unsubscribe {
    bus: Weak<BusShared>,
    id: u64,
    channels: Vec<String>,
}

impl Drop for Unsubscribe {
    fn drop(&mut self) {
        let Some(bus) = self.bus.upgrade() else {
            return;
        };
        let mut state = bus.lock();
        for channel in &self.channels {
            if let Some(subscribers) = state.channels.get_mut(channel) {
                subscribers.retain(|subscriber| subscriber.id != self.id);
                if subscribers.is_empty() {
                    state.channels.remove(channel);
                }
            }
        }
    }
}

impl BusShared {
    fn lock(&self) -> MutexGuard<'_, BusState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for MemoryBus {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryBus {
    /// A new, empty bus whose subscriptions queue up to 4096 events each.
    pub fn new() -> Self {
        Self::with_queue_capacity(DEFAULT_QUEUE_CAPACITY)
    }

    /// A new, empty bus whose subscriptions queue up to `capacity` events each (at least 8)
    /// before `publish` waits for them.
    pub fn with_queue_capacity(capacity: usize) -> Self {
        Self {
            shared: Arc::new(BusShared {
                queue_capacity: capacity,
                next_inbox: AtomicU64::new(0),
                state: Mutex::new(BusState::default()),
            }),
        }
    }

    /// How many live subscriptions `channel` has.
    pub fn subscriber_count(&self, channel: &str) -> usize {
        let state = self.shared.lock();
        state.channels.get(channel).map_or(0, |subscribers| {
            subscribers
                .iter()
                .filter(|subscriber| !subscriber.sender.is_closed())
                .count()
        })
    }

    /// Closes the bus: every subscription ends (its `next` returns `None`), and
    /// every later call on any handle returns [`BusError::Closed`].
    pub fn close(&self) {
        let mut state = self.shared.lock();
        state.closed = true;
        state.channels.clear();
        state.watchers.clear();
    }

    /// Registers a new subscription on `channels` (each once) while the state is locked.
    fn subscribe_locked(
        &self,
        state: &mut BusState,
        channels: &[String],
        capacity: usize,
    ) -> Subscription {
        let id = state.next_subscriber;
        state.next_subscriber += 1;
        let (sender, subscription) = Subscription::channel(capacity);
        let mut unique: Vec<String> = Vec::with_capacity(channels.len());
        for channel in channels {
            if !unique.contains(channel) {
                unique.push(channel.clone());
            }
        }
        for channel in &unique {
            state
                .channels
                .entry(channel.clone())
                .or_default()
                .push(Subscriber {
                    id,
                    sender: sender.clone(),
                });
        }
        subscription.with_guard(Unsubscribe {
            bus: Arc::downgrade(&self.shared),
            id,
            channels: unique,
        })
    }

    /// The live subscribers of `channel`, for a delivery outside the lock:
    /// first the subscriptions with prefixes that want it (so that a standby
    /// has a request queued before the leader can read and answer it), then
    /// those of the channel itself. Forgets those whose subscription was dropped.
    fn subscribers_locked(state: &mut BusState, channel: &str) -> Vec<SubscriptionSender> {
        state.watchers.retain(|watcher| !watcher.sender.is_closed());
        let mut senders: Vec<SubscriptionSender> = state
            .watchers
            .iter()
            .filter(|watcher| watcher.wants(channel))
            .map(|watcher| watcher.sender.clone())
            .collect();
        if let Some(subscribers) = state.channels.get_mut(channel) {
            subscribers.retain(|subscriber| !subscriber.sender.is_closed());
            if subscribers.is_empty() {
                state.channels.remove(channel);
            } else {
                senders.extend(
                    subscribers
                        .iter()
                        .map(|subscriber| subscriber.sender.clone()),
                );
            }
        }
        senders
    }

    /// Delivers a message to `subscribers`, waiting for room in each queue;
    /// returns to how many it was delivered.
    async fn deliver(
        subscribers: Vec<SubscriptionSender>,
        channel: &str,
        payload: &[u8],
        reply_to: Option<&str>,
    ) -> usize {
        let mut delivered = 0;
        for subscriber in subscribers {
            let message = Message {
                channel: channel.to_owned(),
                payload: payload.to_vec(),
                reply_to: reply_to.map(str::to_owned),
            };
            if subscriber.send_message(message).await == Delivery::Accepted {
                delivered += 1;
            }
        }
        delivered
    }
}

#[async_trait]
impl Bus for MemoryBus {
    async fn publish(&self, channel: &str, payload: &[u8]) -> Result<(), BusError> {
        let subscribers = {
            let mut state = self.shared.lock();
            if state.closed {
                return Err(BusError::Closed);
            }
            Self::subscribers_locked(&mut state, channel)
        };
        Self::deliver(subscribers, channel, payload, None).await;
        Ok(())
    }

    async fn subscribe(&self, channels: &[String]) -> Result<Subscription, BusError> {
        if channels.is_empty() {
            return Err(BusError::Config(
                "subscribe needs at least one channel".into(),
            ));
        }
        let mut state = self.shared.lock();
        if state.closed {
            return Err(BusError::Closed);
        }
        Ok(self.subscribe_locked(&mut state, channels, self.shared.queue_capacity))
    }

    async fn subscribe_checked_prefixes(
        &self,
        channels: Vec<String>,
        prefixes: Vec<String>,
    ) -> Result<Subscription, BusError> {
        let mut state = self.shared.lock();
        if state.closed {
            return Err(BusError::Closed);
        }
        let id = state.next_subscriber;
        state.next_subscriber += 1;
        let (sender, subscription) = Subscription::channel(self.shared.queue_capacity);
        state.watchers.push(Watcher {
            id,
            channels,
            prefixes,
            sender,
        });
        Ok(subscription.with_guard(Unwatch {
            bus: Arc::downgrade(&self.shared),
            id,
        }))
    }

    async fn request_resending(
        &self,
        channel: &str,
        payload: &[u8],
        timeout: Duration,
        resend_every: Duration,
    ) -> Result<Vec<u8>, BusError> {
        let (mut reply, inbox, subscribers) = {
            let mut state = self.shared.lock();
            if state.closed {
                return Err(BusError::Closed);
            }
            let inbox = format!(
                "{INBOX_PREFIX}{}",
                self.shared.next_inbox.fetch_add(1, Ordering::Relaxed)
            );
            let reply = self.subscribe_locked(&mut state, std::slice::from_ref(&inbox), 8);
            let subscribers = Self::subscribers_locked(&mut state, channel);
            (reply, inbox, subscribers)
        };
        if Self::deliver(subscribers, channel, payload, Some(&inbox)).await == 0 {
            // `reply` is dropped on return and unregisters the inbox.
            return Err(BusError::NoResponders(channel.to_owned()));
        }
        let mut resend = ResendTimer::new(resend_every, timeout);
        let answer = tokio::time::timeout(timeout, async {
            loop {
                tokio::select! {
                    event = reply.next() => match event {
                        Some(BusEvent::Message(message)) => return Ok(message.payload),
                        Some(_) => continue,
                        None => return Err(BusError::Closed),
                    },
                    () = resend.tick() => {
                        // Sent again with the same inbox; nobody there now is not an answer.
                        let subscribers = Self::subscribers_locked(&mut self.shared.lock(), channel);
                        Self::deliver(subscribers, channel, payload, Some(&inbox)).await;
                    }
                }
            }
        })
        .await;
        answer.unwrap_or(Err(BusError::Timeout(timeout)))
    }

    fn supports_request(&self) -> bool {
        true
    }
}
