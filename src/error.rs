//! [`KeyError`]: why a worker or admin call did not succeed.

use std::time::Duration;

/// Why a call of a key client (remote or embedded) failed. Each cause is its own
/// variant, so a caller can tell "no such platform" from "timed out" from
/// "disconnected" by type. No message contains a whole key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// No key was ever published for this platform.
    #[error("unknown platform: {0}")]
    UnknownPlatform(String),
    /// The platform has no fresh and no expired key: all are invalid or unpublished.
    #[error("no usable keys for platform {0}: all are invalid or unpublished")]
    NoKeys(String),
    /// No answer (or no fresh key) within the deadline.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The transport lost its connection to the broker and the call could not complete.
    #[error("disconnected: {0}")]
    Disconnected(String),
    /// Nobody serves the request channel (NATS reports it at once).
    #[error("no orchestrator is listening on {0}")]
    NoOrchestrator(String),
    /// The orchestrator rejected the request as malformed.
    #[error("the orchestrator rejected the request: {0}")]
    Rejected(String),
    /// The orchestrator answered a list request with `{"status": ...}`.
    #[error("orchestrator error: {0}")]
    Orchestrator(String),
    /// The answer was of no shape the protocol has.
    #[error("unexpected reply: {0}")]
    Protocol(String),
    /// The orchestrator (or embedded pool) has shut down.
    #[error("the orchestrator has shut down")]
    ShutDown,
    /// An argument is unusable (an empty key or platform name, for example).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}
