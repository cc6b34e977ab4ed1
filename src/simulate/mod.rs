//! `keyman simulate`: the real [`Engine`](crate::Engine) in virtual time against
//! a simulated rate-limited API.
//!
//! The simulation answers "what will keyman do for my throughput?" before
//! anything is deployed. It runs the very engine `keyman serve` runs, feeding it
//! the encoded messages Augur's workers send (PUBLISH, NEW, EXPIRE, INVALIDATE,
//! STATUS) through [`Engine::handle`](crate::Engine::handle) and decoding its
//! answers with [`Reply::decode`](crate::Reply::decode). Around it:
//!
//! - **a simulated API that behaves like GitHub's**: each key has a quota per
//!   window; the window starts with the first call after the previous one ended
//!   and resets at a whole second (GitHub's `x-ratelimit-reset`); every answer
//!   carries the remaining count and the reset time; a call over quota gets a 403
//!   with the reset time; a bad key gets a 401.
//! - **workers that behave like Augur's**: take a key (NEW; on `{"wait": n}`
//!   sleep `n` seconds and ask again; on any other answer without a key, ask again
//!   after 20 s), call the API at a fixed rate until a 403 (or, with a floor, until
//!   the remaining count falls under it), then report the key with EXPIRE and the
//!   reset time, sleep 0.1 s and ask again; on a 401 report it with INVALIDATE.
//! - or, with [`ClientBehaviour::Keyman`], **keyman-aware workers**: they
//!   ask for a lease (NEW with `lease`: the calls they make in
//!   [`LEASE_SPAN`], and `hold_ms`: the engine holds the request until a key
//!   can lend, and its answer is delivered to the worker when it comes), make
//!   the calls lent, and end the lease with a REPORT (the quota extension's)
//!   of what the last response's rate-limit headers said
//!   ([`RateLimit`](crate::ratelimit::RateLimit)) and the calls made; they stop
//!   early, with EXPIRE or INVALIDATE as well, when the headers' verdict says
//!   the key is spent, limited or bad. Given a key without a lease (the model
//!   of Augur's orchestrator), they fall back to the headers alone and send no
//!   REPORT: give the key up (EXPIRE with the skew-corrected reset) as soon as
//!   the verdict says so or the remaining count would not last another round of
//!   the calls of the key's holders (above the floor).
//!
//! Scenarios ([`SimConfig`]): a model of Augur's orchestrator
//! ([`Orchestrator::Augur`]: the same engine with uniform choice, wait hints
//! for the earliest refresh and 5 s more, no holds, no leases), a
//! donor using their key outside keyman (their calls spend the quota; the
//! workers' 403s they cause are counted apart), keys grouped in accounts that
//! share one quota, the platform's clock skewed from ours (its `Date` and
//! `x-ratelimit-reset` headers in its clock), and a secondary limit on calls in
//! flight per account (403 with `Retry-After`). Any of them, or keyman-aware
//! clients, make every call its own event (no batches), which gives the same
//! figures as the batches where both apply.
//!
//! With [`SimConfig::probe`] the engine probes the simulated API as `keyman
//! serve --probe` probes GitHub: the API answers each probe after
//! [`PROBE_LATENCY`] with what its `/rate_limit` would say at that moment (the
//! key's window, settled up to then; 401 for a bad key), in virtual time.
//!
//! Time is virtual: a discrete-event simulation over a priority queue, with no
//! sleeping and no clock. Calls are not events one by one: while the holders of
//! a key make calls that change nothing (2xx with the remaining count at or over
//! the floor), those calls are served in one batch, in time order across the
//! holders; the next call with a consequence (the 403, the 401, the first call
//! under the floor) is an event at exactly the time the worker makes it, and any
//! change to a key's holders first settles the calls made before it. The
//! simulated API checks every batch against the quota independently and counts
//! any call served over quota ([`Report::over_quota_successes`]), which stays 0.
//!
//! Everything is deterministic for a given [`SimConfig::seed`]: the engine and the
//! workers draw from seeded [`SplitMix64`](crate::SplitMix64) generators, and no
//! decision depends on the iteration order of a hash map. [`run`] does no I/O and
//! reads no clock.
//!
//! The parts, one a file: `config` (what to simulate, [`SimConfig`]), `api` (the
//! simulated API), `holders` (the calls of a key's holders in time order, for
//! the batches), `workers` (what a worker does: asking, calling, giving a key
//! up; Augur's behaviour), `keyman_client` (what a keyman-aware worker does
//! with a key), `run` (the event loop,
//! [`run`]) and `report` (what comes out, [`Report`]). The command line's
//! formatting (durations, tables, charts) is the CLI's, not this module's.

mod api;
mod config;
mod holders;
mod keyman_client;
mod report;
mod run;
mod setup;
mod workers;

pub use config::{
    AUGUR_WAIT_EXTRA, ClientBehaviour, ConfigError, DEFAULT_SEED, Orchestrator, PLATFORM,
    PROBE_LATENCY, START, SimConfig,
};
pub use report::{Report, Sample, Settings, selection_name};
pub use run::run;
pub use workers::{ERROR_RETRY, HOLD, LEASE_SPAN, REASK_DELAY};
