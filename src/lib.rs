//! keyman hands rate-limited API keys (GitHub, GitLab, any API with per-key
//! quotas) to many workers, tracks which keys are rate limited until when, and
//! never hands out a key that is known to be bad.
//!
//! The core of this crate is pure: [`KeyPool`] keeps the keys of every platform in
//! exactly one state, and [`Engine`] is the orchestrator as a sans-IO state
//! machine speaking the wire protocol of Augur's key orchestrator ([`protocol`]).
//! Neither reads a clock, draws from a global random generator or does I/O: time
//! is passed in as a [`Timestamp`] and randomness comes from a `rand_core`
//! generator the caller owns.
//!
//! ## Layers
//!
//! | layer | modules | what it is |
//! | --- | --- | --- |
//! | pure core (no I/O, no tokio; builds with `default-features = false`) | [`pool`], [`engine`], [`protocol`], [`time`], [`rng`], [`mask`] | the keys' states, every decision about them, the wire format |
//! | service (feature `tokio`) | `service` | drivers of the core: the orchestrator over a bus, the remote clients, the embedded pool, blocking wrappers; typed errors in [`error`] |
//! | application | [`simulate`] | a day of traffic against a modelled API, in virtual time, over the core |
//! | test and fuzz harness | `fuzzing` (hidden) | the engine driver and invariant checks the fuzz targets and property tests share |
//!
//! The transports (Redis, NATS, in memory) are their own crates below
//! `transports/`; the command-line program is `src/bin/keyman`.
//!
#![doc = include_str!("engine/run_loop.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod engine;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod mask;
pub mod pool;
pub mod protocol;
pub mod rng;
pub mod simulate;
pub mod time;

#[cfg(feature = "tokio")]
pub mod service;

pub use engine::{Engine, EngineConfig, Event, KeyEvent, Stats, Transmit};
pub use error::KeyError;
pub use mask::Masked;
pub use pool::{Assignment, Counts, KeyPool, KeyState, PlatformSnapshot, PoolSnapshot, Selection};
pub use protocol::{Channels, DecodeError, ErrorCode, Id, Reply, ReplyTo};
pub use rng::SplitMix64;
pub use time::{Clock, ManualClock, Timestamp};
