//! `keyman serve`: connects to the broker (waiting for it), then runs the
//! orchestrator until SIGINT, SIGTERM or a SHUTDOWN message.

use crate::cli::{Connection, StateOptions};
use crate::exit::Failure;
use keyman::service::metrics::Metrics;
use keyman::service::{Backoff, Bus, BusError, FileStore, Lease, Orchestrator, StateStore};
use keyman::{EngineConfig, KeyError};
use std::sync::Arc;
use std::time::Duration;

/// `--connect-timeout` as a duration: `None` waits for the broker as long as
/// it takes.
pub(crate) fn connect_limit(secs: Option<f64>) -> Result<Option<Duration>, KeyError> {
    match secs {
        None => Ok(None),
        Some(secs) => match Duration::try_from_secs_f64(secs) {
            Ok(limit) => Ok(Some(limit)),
            Err(_) => Err(KeyError::InvalidArgument(
                "--connect-timeout must be a number of seconds, 0 or more".into(),
            )),
        },
    }
}

/// What `serve` connects to the broker for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Needs {
    /// Only the bus.
    Bus,
    /// The bus and the state store.
    Store,
    /// The bus, the state store and the lease.
    Lease,
}

/// The bus, and the store and lease [`Needs`] asks for.
type Connected = (
    Arc<dyn Bus>,
    Option<Arc<dyn StateStore>>,
    Option<Arc<dyn Lease>>,
);

/// The delays between attempts to reach the broker at start: 250 ms,
/// doubling up to 5 s.
const CONNECT_BACKOFF: Backoff = Backoff {
    initial: Duration::from_millis(250),
    max: Duration::from_secs(5),
};

/// The least time an attempt to reach the broker has, even at the deadline
/// of `--connect-timeout`.
const LAST_ATTEMPT: Duration = Duration::from_millis(200);

/// Connects to the broker at `url`, waiting for it while it cannot be reached
/// (trying again after each [`CONNECT_BACKOFF`] delay and logging each attempt),
/// at most `give_up` if given. A bad URL or refused credentials fail at
/// once. `None` when a signal came first.
async fn connect_waiting(
    url: &str,
    name: &str,
    needs: Needs,
    give_up: Option<Duration>,
    signals: &mut StopSignals,
) -> Result<Option<Connected>, KeyError> {
    let started = tokio::time::Instant::now();
    let deadline = give_up.map(|limit| started + limit);
    let mut attempt: u32 = 0;
    loop {
        attempt = attempt.saturating_add(1);
        let connecting = async {
            match needs {
                Needs::Bus => Ok((keyman::service::connect_url(url).await?, None, None)),
                Needs::Store => {
                    let (bus, store) = keyman::service::connect_url_with_store(url, name).await?;
                    Ok((bus, Some(store), None))
                }
                Needs::Lease => {
                    let (bus, store, lease) =
                        keyman::service::connect_url_with_lease(url, name).await?;
                    Ok((bus, Some(store), Some(lease)))
                }
            }
        };
        // An attempt ends at the deadline, but has at least a moment to get
        // its answer (a refused connection says so at once).
        let bounded = async {
            match deadline {
                Some(at) => {
                    let at = at.max(tokio::time::Instant::now() + LAST_ATTEMPT);
                    tokio::time::timeout_at(at, connecting)
                        .await
                        .unwrap_or(Err(KeyError::Timeout(at - started)))
                }
                None => connecting.await,
            }
        };
        let outcome = tokio::select! {
            outcome = bounded => outcome,
            () = signals.recv() => {
                tracing::info!("stop requested while waiting for the broker");
                return Ok(None);
            }
        };
        let error = match outcome {
            Ok(connected) => return Ok(Some(connected)),
            // Unreachable now: it may come up.
            Err(error @ (KeyError::Disconnected(_) | KeyError::Timeout(_))) => error,
            // A bad URL, refused credentials, an unsupported scheme: waiting does not help.
            Err(error) => return Err(error),
        };
        let mut delay = CONNECT_BACKOFF.delay(attempt);
        if let Some(at) = deadline {
            // The last attempt is made at the deadline.
            let left = at.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                tracing::error!(
                    url = %redact(url),
                    attempts = attempt,
                    %error,
                    "could not reach the broker within {:?}; giving up",
                    at - started
                );
                // A lost connection (exit 6), whatever the last error was.
                return Err(match error {
                    KeyError::Timeout(_) => KeyError::Disconnected(BusError::Disconnected(
                        format!(
                            "the broker at {} did not answer within {:?}",
                            redact(url),
                            at - started
                        )
                        .into(),
                    )),
                    error => error,
                });
            }
            delay = delay.min(left);
        }
        tracing::warn!(
            url = %redact(url),
            attempt,
            %error,
            retry_in = ?delay,
            "cannot reach the broker; trying again"
        );
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = signals.recv() => {
                tracing::info!("stop requested while waiting for the broker");
                return Ok(None);
            }
        }
    }
}

/// Runs the orchestrator of `keyman serve` with the given engine `config`
/// and `state` options until a signal or a SHUTDOWN message.
pub(crate) async fn serve(
    conn: Connection,
    config: EngineConfig,
    state: StateOptions,
    give_up: Option<Duration>,
    metrics_addr: Option<std::net::SocketAddr>,
) -> Result<(), Failure> {
    // From now on SIGINT and SIGTERM stop `serve` cleanly, even while it waits
    // for the broker.
    let mut signals = StopSignals::install();
    // The health endpoints answer from the start: alive, not ready.
    let metrics = match metrics_addr {
        Some(addr) => Some(start_metrics(addr).await?),
        None => None,
    };
    let lease_ttl = if state.standby {
        match Duration::try_from_secs_f64(state.lease_ttl) {
            Ok(ttl) if ttl >= keyman::service::MIN_LEASE_TTL => Some(ttl),
            _ => {
                return Err(KeyError::InvalidArgument(format!(
                    "--lease-ttl must be at least {} seconds",
                    keyman::service::MIN_LEASE_TTL.as_secs_f64()
                ))
                .into());
            }
        }
    } else {
        None
    };
    let name = state
        .state_name
        .as_deref()
        .unwrap_or(&config.channels.announce);
    let needs = if state.standby {
        Needs::Lease
    } else if state.no_state || state.state_file.is_some() {
        Needs::Bus
    } else {
        Needs::Store
    };
    let Some((bus, broker_store, lease)) =
        connect_waiting(conn.url(), name, needs, give_up, &mut signals).await?
    else {
        tracing::info!("bye");
        return Ok(());
    };
    let store: Option<Arc<dyn StateStore>> = if state.no_state {
        None
    } else if let Some(path) = &state.state_file {
        Some(Arc::new(FileStore::new(path.clone())))
    } else {
        broker_store
    };
    tracing::info!(url = %redact(conn.url()), "connected");
    let mut orchestrator =
        Orchestrator::new(bus, config).discard_unreadable_state(state.discard_unreadable_state);
    if let Some(store) = store {
        orchestrator = orchestrator.with_store(store);
    }
    if let Some(metrics) = metrics {
        orchestrator = orchestrator.with_metrics(metrics);
    }
    if let (Some(lease), Some(ttl)) = (lease, lease_ttl) {
        if state.no_state {
            tracing::warn!(
                "--standby with --no-state: a standby that takes over starts with no keys"
            );
        } else if state.state_file.is_some() {
            tracing::warn!(
                "--standby with --state-file: a standby sees the saved state only if it runs on the same host and file"
            );
        }
        tracing::info!(lease = %lease.describe(), ttl = ?ttl, holder = %orchestrator.holder(), "standby enabled");
        orchestrator = orchestrator.with_lease(lease, ttl);
    }
    let stopped = orchestrator
        .run_until(async move { signals.recv().await })
        .await?;
    tracing::info!(?stopped, "bye");
    Ok(())
}

/// Starts answering `/metrics`, `/healthz` and `/readyz` at `addr`.
async fn start_metrics(addr: std::net::SocketAddr) -> Result<Metrics, KeyError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| KeyError::InvalidArgument(format!("--metrics-addr {addr}: {e}")))?;
    let bound = listener.local_addr().unwrap_or(addr);
    let metrics = Metrics::new();
    tokio::spawn(keyman::service::metrics::serve_http(
        metrics.clone(),
        listener,
    ));
    tracing::info!(addr = %bound, "metrics at /metrics, health at /healthz and /readyz");
    Ok(metrics)
}

/// The URL without its password, for logs and messages: `user:password@`
/// becomes `user:***@`, and credentials without a `:` (a NATS token) become
/// `***@`.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}://{}:***@{}", &url[..s], user, &url[at + 1..]),
                None => format!("{}://***@{}", &url[..s], &url[at + 1..]),
            }
        }
        _ => url.to_string(),
    }
}

/// SIGINT and SIGTERM (Ctrl-C elsewhere), listened for from the moment they
/// are installed: a signal that comes while nobody waits is kept for the next
/// [`recv`](Self::recv).
struct StopSignals {
    #[cfg(unix)]
    unix: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl StopSignals {
    /// Installs the handlers (inside the runtime).
    fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            match (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) {
                (Ok(int), Ok(term)) => Self {
                    unix: Some((int, term)),
                },
                (Err(error), _) | (_, Err(error)) => {
                    tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops serve");
                    Self { unix: None }
                }
            }
        }
        #[cfg(not(unix))]
        {
            Self {}
        }
    }

    /// Waits for the next signal.
    async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some((int, term)) = self.unix.as_mut() {
            tokio::select! {
                _ = int.recv() => {},
                _ = term.recv() => {},
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}
