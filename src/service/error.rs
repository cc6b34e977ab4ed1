//! [`KeyError`]: why a worker or admin call did not succeed.

use super::BusError;
use crate::protocol::DecodeError;
use std::sync::Arc;
use std::time::Duration;

/// Why a call of a key client (remote or embedded) failed. Each cause is its own
/// variant, so a caller can tell "no such platform" from "timed out" from
/// "disconnected" from "bad URL" by type; where an underlying error caused it,
/// it is kept as the [`source`](std::error::Error::source). No message
/// contains a whole key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// No key was ever published for this platform (the platform's name).
    #[error("unknown platform: {0}")]
    UnknownPlatform(String),
    /// The platform has no fresh and no expired key: all are invalid or
    /// unpublished (the platform's name).
    #[error("no usable keys for platform {0}: all are invalid or unpublished")]
    NoKeys(String),
    /// No answer (or no fresh key) within the deadline (the deadline).
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The call could not complete on the broker: the connection was lost or
    /// refused, the bus was closed, or the broker failed the call (the
    /// transport's error: [`BusError::Disconnected`], [`BusError::Closed`] or
    /// [`BusError::Broker`]).
    #[error("disconnected: {0}")]
    Disconnected(#[source] BusError),
    /// Nobody serves the request channel (NATS reports it at once; the channel).
    #[error("no orchestrator is listening on {0}")]
    NoOrchestrator(String),
    /// The orchestrator rejected the request as malformed (its message).
    #[error("the orchestrator rejected the request: {0}")]
    Rejected(String),
    /// The orchestrator answered a list request with `{"status": ...}` (the status).
    #[error("orchestrator error: {0}")]
    Orchestrator(String),
    /// The answer was of no shape the call expects (what it was).
    #[error("unexpected reply: {0}")]
    Protocol(String),
    /// The answer could not be decoded at all.
    #[error("unexpected reply: {0}")]
    Decode(#[from] DecodeError),
    /// The orchestrator (or embedded pool) has shut down.
    #[error("the orchestrator has shut down")]
    ShutDown,
    /// An argument is unusable (an empty key or platform name, or a broker URL
    /// of a scheme this build does not support, for example).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The transport's configuration is wrong: a broker URL that cannot be
    /// parsed, refused credentials, an invalid channel name, or an operation
    /// the transport does not offer ([`BusError::Config`] or
    /// [`BusError::Unsupported`]). Trying again does not help.
    #[error("{0}")]
    Config(#[source] BusError),
    /// The runtime of a blocking client could not be started.
    #[error("could not start the client runtime: {0}")]
    Runtime(#[source] IoError),
}

impl From<BusError> for KeyError {
    /// The transport's error as the cause of a failed call:
    /// [`Timeout`](KeyError::Timeout) and
    /// [`NoOrchestrator`](KeyError::NoOrchestrator) for a timeout and no
    /// responders, [`Config`](KeyError::Config) for a bad configuration or an
    /// unsupported operation, [`Disconnected`](KeyError::Disconnected) for
    /// the rest.
    fn from(e: BusError) -> Self {
        match e {
            BusError::Timeout(d) => KeyError::Timeout(d),
            BusError::NoResponders(channel) => KeyError::NoOrchestrator(channel),
            e @ (BusError::Config(_) | BusError::Unsupported(_)) => KeyError::Config(e),
            // Disconnected, Closed, Broker, and causes added later.
            e => KeyError::Disconnected(e),
        }
    }
}

/// An I/O error that can be cloned and compared, so that [`KeyError`] can be
/// both: two are equal when their kinds and messages are.
#[derive(Debug, Clone)]
pub struct IoError(Arc<std::io::Error>);

impl IoError {
    /// The I/O error.
    pub fn get(&self) -> &std::io::Error {
        &self.0
    }
}

impl From<std::io::Error> for IoError {
    fn from(e: std::io::Error) -> Self {
        Self(Arc::new(e))
    }
}

impl PartialEq for IoError {
    fn eq(&self, other: &Self) -> bool {
        self.0.kind() == other.0.kind() && self.0.to_string() == other.0.to_string()
    }
}

impl Eq for IoError {}

impl std::fmt::Display for IoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for IoError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn bus_errors_become_the_key_error_of_their_cause() {
        let d = Duration::from_secs(1);
        assert_eq!(KeyError::from(BusError::Timeout(d)), KeyError::Timeout(d));
        assert_eq!(
            KeyError::from(BusError::NoResponders("c".into())),
            KeyError::NoOrchestrator("c".into())
        );
        for e in [
            BusError::Config("bad URL".into()),
            BusError::Unsupported("native request/reply"),
        ] {
            assert_eq!(KeyError::from(e.clone()), KeyError::Config(e));
        }
        for e in [
            BusError::Disconnected("refused".into()),
            BusError::Closed,
            BusError::Broker("WRONGTYPE".into()),
        ] {
            assert_eq!(KeyError::from(e.clone()), KeyError::Disconnected(e));
        }
    }

    #[test]
    fn the_cause_is_kept_as_the_source() {
        let e = KeyError::from(BusError::Config("bad Redis URL: nope".into()));
        assert_eq!(
            e.to_string(),
            "bad transport configuration: bad Redis URL: nope"
        );
        let source = e.source().map(|s| s.to_string());
        assert_eq!(
            source.as_deref(),
            Some("bad transport configuration: bad Redis URL: nope")
        );
        let io = KeyError::Runtime(IoError::from(std::io::Error::other("no threads")));
        assert_eq!(io.clone(), io);
        assert!(io.source().is_some());
    }
}
