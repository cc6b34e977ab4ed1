//! Reliability end to end ("nothing lost, nothing hangs"): bursts,
//! takeovers, split brain, unreadable state, brokers that are down, large
//! pools and floods, against real `redis-server` / `nats-server` processes and
//! real `keyman serve` processes that these tests start themselves. Every
//! body takes a [`Broker`](support::Broker) and runs once per broker where both
//! apply. Each test prints what it measured.

#![cfg(all(feature = "redis", feature = "nats", feature = "cli"))]

mod support;

#[path = "reliability/bounds.rs"]
mod bounds;
#[path = "reliability/bursts.rs"]
mod bursts;
#[path = "reliability/lifecycle.rs"]
mod lifecycle;
#[path = "reliability/quota_state.rs"]
mod quota_state;
#[path = "reliability/split_brain.rs"]
mod split_brain;
#[path = "reliability/state.rs"]
mod state;
#[path = "reliability/takeover.rs"]
mod takeover;
