//! How one call of the binding runs: the caller's deadline, the retries while
//! no orchestrator listens, and the failures that become Python exceptions.

use keyman::service::KeyError;
use pyo3::prelude::*;
use pyo3::types::PyType;
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

/// The deadline given to keyman's clients themselves: the binding enforces the
/// caller's deadline around each call, so theirs only has to be longer.
pub(crate) const INNER_DEADLINE: Duration = Duration::from_secs(24 * 3600);

/// How long to wait before asking again while no orchestrator listens (NATS
/// says so at once) or the broker is unreachable.
pub(crate) const RETRY_STEP: Duration = Duration::from_millis(200);

/// Why a call failed, before it becomes a Python exception.
pub(crate) enum Failure {
    /// keyman's client said no.
    Key(KeyError),
    /// The caller's deadline passed (the deadline).
    Timeout(Duration),
    /// No orchestrator answered until the deadline (the deadline).
    NoOrchestrator(Duration),
    /// `close()` was called.
    Closed,
    /// A Python argument is unusable.
    Argument(String),
}

impl From<KeyError> for Failure {
    fn from(e: KeyError) -> Self {
        match e {
            KeyError::Timeout(d) => Failure::Timeout(d),
            e => Failure::Key(e),
        }
    }
}

impl Failure {
    /// The exception class (in `keyman_client._errors`) and message. No
    /// message contains a key: keyman's errors never do.
    fn class_and_message(&self) -> (&'static str, String) {
        match self {
            Failure::Timeout(d) => ("Timeout", format!("timed out after {}", secs(*d))),
            Failure::NoOrchestrator(d) => (
                "Timeout",
                format!("no orchestrator answered within {}", secs(*d)),
            ),
            Failure::Closed => ("Disconnected", "the client is closed".to_string()),
            Failure::Argument(m) => ("InvalidArgument", m.clone()),
            Failure::Key(e) => {
                let class = match e {
                    KeyError::UnknownPlatform(_) => "UnknownPlatform",
                    KeyError::NoKeys(_) => "NoKeys",
                    KeyError::Timeout(_) => "Timeout",
                    KeyError::Disconnected(_) | KeyError::ShutDown => "Disconnected",
                    KeyError::NoOrchestrator(_) => "Disconnected",
                    KeyError::Rejected(_)
                    | KeyError::Orchestrator(_)
                    | KeyError::Protocol(_)
                    | KeyError::Decode(_) => "OrchestratorError",
                    KeyError::InvalidArgument(_) | KeyError::Config(_) => "InvalidArgument",
                    _ => "KeymanError",
                };
                (class, e.to_string())
            }
        }
    }

    pub(crate) fn into_py(self, py: Python<'_>) -> PyErr {
        let (class, message) = self.class_and_message();
        let ty = py
            .import("keyman_client._errors")
            .and_then(|m| m.getattr(class))
            .and_then(|c| c.cast_into::<PyType>().map_err(PyErr::from));
        match ty {
            Ok(ty) => PyErr::from_type(ty, message),
            Err(e) => e,
        }
    }
}

/// A duration as people write it: `1.5 s`.
pub(crate) fn secs(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

/// A deadline in seconds from Python: not negative, not NaN; infinity (or
/// anything beyond a century) means a century.
pub(crate) fn deadline(seconds: f64) -> Result<Duration, Failure> {
    if seconds.is_nan() || seconds < 0.0 {
        return Err(Failure::Argument(format!(
            "timeout must be a number of seconds >= 0, not {seconds}"
        )));
    }
    let century = Duration::from_secs(100 * 365 * 24 * 3600);
    Ok(Duration::try_from_secs_f64(seconds)
        .unwrap_or(century)
        .min(century))
}

/// The instant `d` from now on tokio's clock, saturating.
pub(crate) fn until_after(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d).unwrap_or(now)
}

/// Runs `call` with the time left until `until`, within it, asking again while
/// no orchestrator listens or the broker cannot be reached. `deadline` is the
/// caller's whole deadline, for the error.
pub(crate) async fn within<T, F, Fut>(
    until: Instant,
    deadline: Duration,
    mut call: F,
) -> Result<T, Failure>
where
    F: FnMut(Duration) -> Fut,
    Fut: Future<Output = Result<T, KeyError>>,
{
    let mut last: Option<KeyError> = None;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(match last {
                Some(KeyError::NoOrchestrator(_)) => Failure::NoOrchestrator(deadline),
                Some(e) => Failure::Key(e),
                None => Failure::Timeout(deadline),
            });
        }
        match tokio::time::timeout_at(until, call(left)).await {
            Err(_) | Ok(Err(KeyError::Timeout(_))) => {
                return Err(match last {
                    Some(KeyError::NoOrchestrator(_)) => Failure::NoOrchestrator(deadline),
                    _ => Failure::Timeout(deadline),
                });
            }
            Ok(Err(e @ (KeyError::NoOrchestrator(_) | KeyError::Disconnected(_)))) => {
                last = Some(e);
                let wake = until_after(RETRY_STEP).min(until);
                tokio::time::sleep_until(wake).await;
            }
            Ok(r) => return r.map_err(Failure::from),
        }
    }
}
