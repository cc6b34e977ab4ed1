//! Test support for transports (feature `testing`): throwaway brokers
//! ([`TestServer`]), the conformance suite every [`Bus`](crate::Bus) must pass,
//! and the [`suite`] of server tests every networked transport runs
//! ([`TransportUnderTest`], [`transport_suite!`](crate::transport_suite)).
//!
//! ```no_run
//! # async fn example() {
//! use keyman_transport::testing::{conformance, RedisServer};
//! let server = RedisServer::start().expect("redis-server starts");
//! let url = server.url();
//! // conformance::run_all(|| async { MyBus::connect(&url).await.unwrap() }).await;
//! # let _ = url;
//! # }
//! ```

pub mod conformance;
mod servers;
pub mod suite;
mod support;

pub use servers::{
    Broker, NATS_SERVER_BINARY, NatsBroker, NatsServer, REDIS_SERVER_BINARY, RedisBroker,
    RedisServer, TestServer,
};
pub use suite::{TransportUnderTest, WhileDown};
pub use support::{
    QUICK_BACKOFF, QUICK_TIMEOUT, next_event, next_payload, signal, subscribe_to, unused_port,
};
