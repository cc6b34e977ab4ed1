//! The transport layer of keyman: a [`Bus`] only moves bytes between channels.
//!
//! It knows nothing about keys. The orchestrator and the clients of `keyman` are
//! written against this trait, so the same code runs over Redis, NATS or memory.

#![warn(missing_docs)]

use async_trait::async_trait;
use std::time::Duration;

pub mod adapter;
mod backoff;
mod error;
mod lease;
mod memory;
mod options;
mod queue;
mod store;
#[cfg(feature = "testing")]
pub mod testing;

pub use backoff::Backoff;
pub use error::{BusError, ErrorDetail};
pub use lease::{Lease, MemoryLease};
pub use memory::MemoryBus;
pub use options::ConnectionOptions;
pub use queue::{DEFAULT_QUEUE_CAPACITY, Delivery, SubscriptionSender};
pub use store::{FileStore, MemoryStore, Records, Saved, StateStore, StateWrite};

/// One message received from a [`Bus`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The channel (Redis) or subject (NATS) it was published on.
    pub channel: String,
    /// The payload, as published.
    pub payload: Vec<u8>,
    /// Where the sender waits for a direct answer, on transports with native
    /// request/reply (NATS); `None` elsewhere.
    pub reply_to: Option<String>,
}

/// What a [`Subscription`] yields: messages and changes of the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusEvent {
    /// A message on one of the subscribed channels.
    Message(Message),
    /// The connection to the broker was lost; messages published meanwhile may be lost.
    Disconnected {
        /// Why, for logs.
        reason: String,
    },
    /// The connection is back and every channel of the subscription is subscribed again.
    /// Whoever waits for an answer should send its request again.
    Reconnected,
}

/// A stream of [`BusEvent`]s for a set of channels. Dropping it unsubscribes.
pub struct Subscription {
    rx: tokio::sync::mpsc::Receiver<BusEvent>,
    /// Dropped together with the subscription; transports use it to unsubscribe.
    guard: Option<Box<dyn Send + Sync>>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("rx", &self.rx)
            .field("guard", &self.guard.is_some())
            .finish()
    }
}

impl Subscription {
    /// Wraps the receiving end of a channel that a transport fills.
    pub fn new(rx: tokio::sync::mpsc::Receiver<BusEvent>) -> Self {
        Self { rx, guard: None }
    }

    /// Attaches a value that is dropped when the subscription is dropped, such as
    /// a handle that unsubscribes or stops the task feeding it. Replaces an
    /// earlier one, which is dropped.
    #[must_use]
    pub fn with_guard(mut self, guard: impl Send + Sync + 'static) -> Self {
        self.guard = Some(Box::new(guard));
        self
    }

    /// The next event; `None` once the bus is closed for good.
    pub async fn next(&mut self) -> Option<BusEvent> {
        self.rx.recv().await
    }

    /// The next event if one is queued now, without waiting; `None` if none is
    /// (or the bus is closed).
    pub fn try_next(&mut self) -> Option<BusEvent> {
        self.rx.try_recv().ok()
    }
}

/// A pub/sub transport: publish bytes on a channel, subscribe to channels.
///
/// Implementations are cheap to share (`Arc<dyn Bus>`), deliver the messages of
/// one publisher on one channel in order, and report connection losses and
/// recoveries to every subscription as [`BusEvent`]s.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Publishes `payload` on `channel`. Returns once the broker took it (or failed);
    /// never blocks longer than the transport's operation timeout.
    async fn publish(&self, channel: &str, payload: &[u8]) -> Result<(), BusError>;

    /// Subscribes to `channels`; the subscription is live when this returns, so a
    /// message published afterwards on one of them is delivered. A channel listed
    /// twice is delivered once; an empty list is a [`BusError::Config`] error.
    async fn subscribe(&self, channels: &[String]) -> Result<Subscription, BusError>;

    /// Subscribes to `channels` and, in the same subscription, to every
    /// channel whose name starts with one of `prefixes` (a standby uses it to
    /// see the requests and the replies to them).
    ///
    /// Everything arrives through one connection, in the order the broker
    /// handled it: a message published on a matched channel by someone who
    /// had received a message of this subscription arrives after that message
    /// (a request always before its reply). After a lost connection the
    /// prefixes are subscribed again with the channels. A message is
    /// delivered once; a listed channel may not start with one of the prefixes,
    /// and a prefix may not be empty ([`BusError::Config`]).
    ///
    /// Transports implement [`Bus::subscribe_checked_prefixes`], which gets
    /// the arguments once checked; those that cannot subscribe by prefix
    /// return [`BusError::Unsupported`] (its default).
    async fn subscribe_with_prefixes(
        &self,
        channels: &[String],
        prefixes: &[String],
    ) -> Result<Subscription, BusError> {
        let (channels, prefixes) = adapter::subscribe_prefixes(channels, prefixes)?;
        self.subscribe_checked_prefixes(channels, prefixes).await
    }

    /// [`Bus::subscribe_with_prefixes`] once its arguments are checked: each
    /// channel and prefix once, at least one channel, no empty prefix, no
    /// channel that starts with a prefix. Callers use
    /// `subscribe_with_prefixes`; a transport that can subscribe by prefix
    /// implements this, and a wrapper around another bus forwards it.
    async fn subscribe_checked_prefixes(
        &self,
        channels: Vec<String>,
        prefixes: Vec<String>,
    ) -> Result<Subscription, BusError> {
        let _ = (channels, prefixes);
        Err(BusError::Unsupported("subscriptions to channel prefixes"))
    }

    /// Native request/reply: publishes `payload` on `channel` with a private reply
    /// address and waits up to `timeout` for the first answer. Transports without it
    /// return [`BusError::Unsupported`], and callers fall back to reply channels.
    async fn request(
        &self,
        channel: &str,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, BusError> {
        self.request_resending(channel, payload, timeout, timeout)
            .await
    }

    /// [`Bus::request`] that publishes `payload` again every `resend_every`
    /// while no answer came (a request lost on the way, or sent while nobody
    /// answered), with the same reply address: an answer to any of the sends
    /// is taken, so an answer that takes longer than `resend_every` to come
    /// (a large list) is never given up for a new one. Transports with native
    /// request/reply implement this; [`Bus::request`] calls it with no resend.
    async fn request_resending(
        &self,
        channel: &str,
        payload: &[u8],
        timeout: Duration,
        resend_every: Duration,
    ) -> Result<Vec<u8>, BusError> {
        let _ = (channel, payload, timeout, resend_every);
        Err(BusError::Unsupported("native request/reply"))
    }

    /// Whether [`Bus::request`] is supported.
    fn supports_request(&self) -> bool {
        false
    }
}
