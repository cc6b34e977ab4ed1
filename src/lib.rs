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
//! | pure core (no I/O, no tokio; builds with `default-features = false`) | [`pool`], [`engine`], [`protocol`], [`quota`], [`ratelimit`], [`time`], [`rng`], [`mask`] | the keys' states, every decision about them, the wire format, the quota of each account, what an API's rate-limit headers say |
//! | service (feature `tokio`) | `service` | drivers of the core: the orchestrator over a bus, the remote clients, the embedded pool, blocking wrappers; their typed errors (`KeyError`) |
//! | application | [`simulate`] | a day of traffic against a modelled API, in virtual time, over the core |
//! | test and fuzz harness (not for programs that use keyman) | `harness` (hidden) | the one engine driver with a virtual clock, the invariant checker and the `Operation` type the fuzz targets and property tests share; the simulator drains the engine through it |
//!
//! The transports (Redis, NATS, in memory) are their own crates below
//! `transports/`; the command-line program is `src/bin/keyman`.
//!
//! ## Glossary
//!
//! - **key**: an API token, a secret: never logged or shown whole ([`Masked`]).
//! - **platform**: the API a key is for (`github_rest`, `gitlab`); a key belongs
//!   to one platform, and the same string may be a key of two.
//! - **worker**: a program that calls the API with keys. It uses a `KeySource`
//!   (`service::KeySource`), implemented by `KeyClient` (remote, over a bus)
//!   and `EmbeddedPool` (in process). On the wire it speaks on the **request
//!   channel** (Augur's `worker-oath-request`): NEW, EXPIRE, INVALIDATE.
//! - **admin**: a program or person that publishes and unpublishes keys and
//!   looks at the pool. It uses a `KeyAdmin` (`service::KeyAdmin`),
//!   implemented by `KeyPublisher` (remote) and `EmbeddedPool`. On the wire it
//!   speaks on the **announce channel** (Augur's `augur-oauth-announce`):
//!   PUBLISH, UNPUBLISH, LIST_*, STATUS, ACK, SHUTDOWN. See [`Channels`].
//! - **fresh**, **expired**, **invalid** ([`KeyState`]): a fresh key may be
//!   handed out; an expired one is rate limited until its refresh time; an
//!   invalid one (revoked, HTTP 401) is never handed out until published again.
//! - **refresh time** (`refresh_at`): when an expired key is fresh again, from
//!   the API's rate-limit reset header; cut to at most
//!   [`EngineConfig::max_expiry`] ahead. On the wire it is EXPIRE's
//!   `refresh_time` field (Unix seconds).
//! - **held request**: a NEW that found no fresh key and asked (`hold_ms`) to
//!   wait in the engine for one instead of getting `{"wait": n}` at once.
//!   [`Engine::held`] is how many are held now, [`Stats::holds_total`] how many
//!   were ever held.
//! - **requester id** (`requester_id`): who asks; the answer goes to the
//!   channel `{channel}-{requester_id}`. **request id** (`request_id`, ext):
//!   which of the requester's questions an answer is for; the reply echoes it.
//!   Both are an [`Id`].
//!
#![doc = include_str!("engine/run_loop.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod engine;
#[doc(hidden)]
pub mod harness;
pub mod mask;
pub mod pool;
pub mod protocol;
pub mod quota;
pub mod ratelimit;
pub mod rng;
pub mod simulate;
pub mod time;

#[cfg(feature = "tokio")]
pub mod service;

pub use engine::{Engine, EngineConfig, Event, KeyEvent, Leased, Level, Stats, Transmit};
pub use mask::Masked;
pub use pool::{Assignment, Counts, KeyPool, KeyState, PlatformSnapshot, PoolSnapshot, Selection};
pub use protocol::{Channels, DecodeError, ErrorCode, Id, Reply, ReplyTo};
pub use quota::{Account, LeaseGrant, Observation, QuotaConfig, QuotaSnapshot, QuotaView, Quotas};
pub use rng::SplitMix64;
#[cfg(feature = "tokio")]
pub use service::KeyError;
pub use time::{Clock, ManualClock, Timestamp};
