//! keyman's Redis transport: [`RedisBus`] moves bytes over Redis pub/sub
//! (`PUBLISH` / `SUBSCRIBE`).
//!
//! Publishing goes over one connection per bus, opened on first use and opened
//! again after it fails; every publish is bounded by
//! [`RedisOptions::operation_timeout`]. Every [`Bus::subscribe`](keyman_transport::Bus::subscribe) gets a pub/sub
//! connection of its own, driven by a background task that notices a lost
//! connection, reports [`BusEvent::Disconnected`](keyman_transport::BusEvent),
//! reconnects with capped exponential backoff, subscribes again, and reports
//! [`BusEvent::Reconnected`](keyman_transport::BusEvent). The task ends when the
//! [`Subscription`](keyman_transport::Subscription) is dropped, which closes its connection.
//!
//! Redis pub/sub keeps nothing: a message published while a subscriber is
//! disconnected is lost for it. Pub/sub channels are global, so the database
//! number of the URL does not matter to them.
//!
//! `rediss://` (TLS) URLs need the crate feature `tls`, which is off by default
//! because it builds a TLS stack (rustls with ring).
//!
//! # Modules
//!
//! - `bus`: [`RedisBus`], its publishing connection and commands, and subscribing.
//! - `subscription`: the task behind each subscription (messages, `PING`, reconnecting).
//! - `options`: [`RedisOptions`].
//! - `store`: [`RedisStore`], state in one Redis key.
//! - `lease`: [`RedisLease`], the serving orchestrator's lease in one Redis key.
//! - `url`: which URLs this build accepts (`rediss://` needs the feature `tls`).

#![warn(missing_docs)]

mod bus;
mod lease;
mod options;
mod store;
mod subscription;
mod url;

pub use bus::RedisBus;
pub use lease::RedisLease;
pub use options::RedisOptions;
pub use store::RedisStore;
