//! Prometheus metrics and health endpoints of an [`Orchestrator`](super::Orchestrator)
//! (feature `metrics`).
//!
//! The orchestrator feeds a [`Metrics`] from what it already has: the
//! messages it hands to its engine, the engine's events and replies, and its
//! key counts; the core stays pure. [`serve_http`] answers `/metrics` (the
//! Prometheus text format), `/healthz` and `/readyz` on a listener of its own.
//! Label values are platform names (only those in the pool, at most
//! [`MAX_PLATFORM_LABELS`] of them) and fixed words, never keys.
//!
//! The parts: `registry` ([`Metrics`], what is counted and how it is shown),
//! `tracking` (which reply answers which request), `wrap` (the bus and store
//! seen by the orchestrator, which time replies and note saves), `http` (the
//! endpoints), and `meter` (the orchestrator's hooks, nothing without the
//! feature).

#[cfg(feature = "metrics")]
mod http;
mod meter;
#[cfg(feature = "metrics")]
mod registry;
#[cfg(feature = "metrics")]
mod tracking;
#[cfg(feature = "metrics")]
mod wrap;

#[cfg(feature = "metrics")]
pub use http::serve_http;
pub(crate) use meter::Meter;
#[cfg(feature = "metrics")]
pub use registry::{MAX_PLATFORM_LABELS, Metrics};
