//! keyman's Redis transport: [`RedisBus`] moves bytes over Redis pub/sub
//! (`PUBLISH` / `SUBSCRIBE`).
//!
//! Publishing goes over one connection per bus, opened on first use and opened
//! again after it fails; every publish is bounded by
//! [`ConnectionOptions::operation_timeout`](keyman_transport::ConnectionOptions::operation_timeout). Every [`Bus::subscribe`](keyman_transport::Bus::subscribe) gets a pub/sub
//! connection of its own, driven by a background task that notices a lost
//! connection, reports [`BusEvent::Disconnected`](keyman_transport::BusEvent),
//! reconnects with capped exponential backoff, subscribes again, and reports
//! [`BusEvent::Reconnected`](keyman_transport::BusEvent). The task ends when the
//! [`Subscription`](keyman_transport::Subscription) is dropped, which closes its connection.
//!
//! **Backpressure.** A subscription's connection is keyman's own (the Redis
//! client's pub/sub connection reads the socket in a task of its own into an
//! unbounded queue): it is read one value at a time, with the client's RESP
//! parser, and only while the subscription's queue
//! ([`ConnectionOptions::queue_capacity`](keyman_transport::ConnectionOptions::queue_capacity)) has room. A subscriber that falls behind
//! leaves the rest in the kernel's socket buffers and in Redis's output buffer
//! for it, so keyman's memory is bounded by the queue, whatever the burst.
//! Redis keeps up to its `client-output-buffer-limit pubsub` (by default
//! `32mb 8mb 60`); beyond it Redis closes the connection, and the
//! subscription reports `Disconnected` (with how many messages came, that its
//! reading was held back, and that the limit was most likely hit), reconnects
//! and reports `Reconnected`; what was published in between is lost for it.
//! The subscription connection speaks RESP2 and authenticates with the URL's
//! user and password.
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
//! - `subscription`: the task behind each subscription (messages read at the
//!   subscriber's pace, `PING`, reconnecting), its connection, and the TCP or
//!   TLS stream under it.
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
