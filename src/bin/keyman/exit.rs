//! Why a subcommand failed, and the exit code that tells scripts the cause.

use keyman::KeyError;
use keyman::service::{BusError, OrchestratorError};

/// The exit codes, as `keyman --help` shows them.
pub(crate) const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  any other failure (a rejected request, an unexpected reply, ...)
  2  usage: a bad argument or option, a broker URL that cannot be parsed or of
     an unsupported scheme, refused credentials, a command the broker's ACL
     denies to the URL's user
  3  unknown platform
  4  no usable keys: all keys of the platform are invalid or unpublished
  5  timed out
  6  disconnected: the broker cannot be reached (serve: within
     --connect-timeout; without it, serve waits) or was lost, no orchestrator
     is listening, or the orchestrator has shut down
  7  serve: the saved state could not be read from its store, or is unreadable
     (copied aside, left as it is; see --discard-unreadable-state)";

/// Why a subcommand failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Failure {
    /// A client call (or connecting to the broker) failed.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The orchestrator of `keyman serve` stopped with an error.
    #[error(transparent)]
    Orchestrator(#[from] OrchestratorError),
}

impl Failure {
    /// The exit code of this failure (see [`EXIT_CODES`]).
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            Failure::Key(e) => key_exit_code(e),
            Failure::Orchestrator(OrchestratorError::Subscribe(e)) => {
                key_exit_code(&KeyError::from(e.clone()))
            }
            Failure::Orchestrator(OrchestratorError::BusClosed) => {
                key_exit_code(&KeyError::Disconnected(BusError::Closed))
            }
            Failure::Orchestrator(
                OrchestratorError::LoadState { .. } | OrchestratorError::UnreadableState { .. },
            ) => 7,
            Failure::Orchestrator(_) => 1,
        }
    }
}

fn key_exit_code(e: &KeyError) -> u8 {
    match e {
        KeyError::InvalidArgument(_) | KeyError::Config(_) => 2,
        KeyError::UnknownPlatform(_) => 3,
        KeyError::NoKeys(_) => 4,
        KeyError::Timeout(_) => 5,
        KeyError::Disconnected(_) | KeyError::NoOrchestrator(_) | KeyError::ShutDown => 6,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn each_cause_has_its_exit_code() {
        let key = |e: KeyError| Failure::from(e).exit_code();
        assert_eq!(key(KeyError::InvalidArgument("x".into())), 2);
        assert_eq!(key(KeyError::Config(BusError::Config("bad URL".into()))), 2);
        assert_eq!(key(KeyError::UnknownPlatform("p".into())), 3);
        assert_eq!(key(KeyError::NoKeys("p".into())), 4);
        assert_eq!(key(KeyError::Timeout(Duration::from_secs(1))), 5);
        assert_eq!(key(KeyError::Disconnected(BusError::Closed)), 6);
        assert_eq!(key(KeyError::NoOrchestrator("c".into())), 6);
        assert_eq!(key(KeyError::ShutDown), 6);
        assert_eq!(key(KeyError::Rejected("no".into())), 1);

        let orchestrator = |e: OrchestratorError| Failure::from(e).exit_code();
        assert_eq!(orchestrator(OrchestratorError::BusClosed), 6);
        assert_eq!(
            orchestrator(OrchestratorError::Subscribe(BusError::Config(
                "bad subject".into()
            ))),
            2
        );
        assert_eq!(
            orchestrator(OrchestratorError::Subscribe(BusError::Disconnected(
                "refused".into()
            ))),
            6
        );
        assert_eq!(
            orchestrator(OrchestratorError::LoadState {
                store: "file".into(),
                error: BusError::Broker("permission denied".into()),
            }),
            7
        );
    }
}
