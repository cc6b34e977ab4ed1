//! [`OrchestratorError`]: why an orchestrator stopped with an error.

use super::super::BusError;

/// Why [`Orchestrator::run`](super::Orchestrator::run) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OrchestratorError {
    /// The request channels could not be subscribed (the transport's error).
    #[error("could not subscribe the request channels: {0}")]
    Subscribe(#[source] BusError),
    /// The bus was closed under the orchestrator.
    #[error("the bus was closed")]
    BusClosed,
    /// The saved state could not be read (the store is unreachable); starting
    /// empty would overwrite it, so the orchestrator does not start.
    #[error("could not load the saved state from {store}: {error}")]
    LoadState {
        /// Where the state is kept.
        store: String,
        /// Why it could not be read.
        #[source]
        error: BusError,
    },
    /// The saved state is there but cannot be read: it is not keyman's, is
    /// cut short, or was written by a newer keyman. It was copied aside to
    /// `copy` and left as it is; the orchestrator does not serve (it would
    /// overwrite it) unless told to discard it
    /// ([`Orchestrator::discard_unreadable_state`](super::Orchestrator::discard_unreadable_state)).
    #[error(
        "the saved state in {store} is unreadable ({reason}); it was left as it is and copied to {copy}; not serving (start with --discard-unreadable-state to start empty)"
    )]
    UnreadableState {
        /// Where the state is kept.
        store: String,
        /// Why it cannot be read (no key in it).
        reason: String,
        /// Where the copy is.
        copy: String,
    },
}
