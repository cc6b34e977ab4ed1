//! keyman's NATS transport: [`NatsBus`] moves bytes over NATS core pub/sub,
//! with native request/reply.
//!
//! Channel ids are NATS subjects, byte for byte (so `*` and `>` in a channel id
//! are wildcards). One connection per bus carries everything. The NATS client
//! reconnects and subscribes again by itself; [`NatsBus`] turns its connection
//! events into [`BusEvent::Disconnected`](keyman_transport::BusEvent) and
//! [`BusEvent::Reconnected`](keyman_transport::BusEvent) on every live
//! subscription. `Reconnected` is sent only after a round trip through the
//! server has shown that the subscriptions are in place again.
//!
//! # Publishing while disconnected
//!
//! The NATS client buffers outgoing messages while it reconnects. To keep a
//! caller from waiting on that, [`Bus::publish`] fails at once with
//! [`BusError::Disconnected`] while the client knows it is disconnected, and
//! otherwise waits until the message is written to the server's connection,
//! at most [`ConnectionOptions::operation_timeout`](keyman_transport::ConnectionOptions::operation_timeout). A publish that fails with
//! [`BusError::Timeout`] because the connection broke meanwhile stays in the
//! client's buffer and may still be delivered after the reconnection.
//!
//! # Large payloads
//!
//! A payload larger than the server takes (its `max_payload`, 1 MiB unless
//! configured) is split into chunks marked with a `Keyman-Chunk` header;
//! subscriptions and [`Bus::request`] of a [`NatsBus`] put them together again
//! (up to [`NatsOptions::max_message`], within 30 s), so the layers above never
//! see the server's limit. Other NATS clients see the chunks as they are.
//!
//! # Modules
//!
//! - `bus`: [`NatsBus`], connecting, publishing, requests and subscribing.
//! - `link`: the connection's state as subscriptions see it, and the task feeding each one.
//! - `chunk`: payloads larger than the server takes, split and put together again.
//! - `options`: [`NatsOptions`].
//! - `store`: [`NatsStore`], state in JetStream key-value entries (`store::entries`: the
//!   JetStream API calls it is made of); `layout`: how they are laid out, as pure rules.
//! - `lease`: [`NatsLease`], the serving orchestrator's lease in such an entry.
//! - `url`: server URLs and the credentials in them; `base64`: what JetStream returns values in.

#![warn(missing_docs)]

#[cfg(doc)]
use keyman_transport::{Bus, BusError};

mod base64;
mod bus;
mod chunk;
mod layout;
mod lease;
mod link;
mod options;
mod store;
mod url;

pub use bus::NatsBus;
pub use lease::NatsLease;
pub use options::NatsOptions;
pub use store::NatsStore;
