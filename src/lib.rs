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
#[cfg(feature = "tokio")]
pub use error::KeyError;
pub use mask::Masked;
pub use pool::{Assignment, Counts, KeyPool, KeyState, PlatformSnapshot, PoolSnapshot, Selection};
pub use protocol::{Channels, DecodeError, ErrorCode, Id, Reply, ReplyTo};
pub use rng::SplitMix64;
pub use time::{Clock, ManualClock, Timestamp};
