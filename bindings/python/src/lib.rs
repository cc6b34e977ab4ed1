//! `keyman_client._native`: keyman's Rust key client for Python.
//!
//! One class, [`Connection`], holds a worker's or an admin's client together with
//! the tokio runtime that drives it. The Python package (`keyman_client`) wraps it
//! in Augur's `KeyClient` / `KeyPublisher` API; everything on the wire is done by
//! keyman's own client (`keyman::service`), not re-implemented here.
//!
//! - Every call takes a deadline and releases the GIL while it waits.
//! - A `Connection` may be used from any number of Python threads at once.
//! - After `os.fork()` the child notices the new process id on its next call and
//!   opens a runtime and connections of its own; the parent's are left untouched
//!   (never dropped in the child: their threads do not exist there).

#![warn(missing_docs)]

use keyman::protocol::{Channels, Request};
use keyman::service::{self, Bus, ClientConfig, KeyAdmin, KeyError, KeySource};
use keyman::time::Timestamp;
use pyo3::prelude::*;
use pyo3::types::PyType;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// The deadline given to keyman's clients themselves: the binding enforces the
/// caller's deadline around each call, so theirs only has to be longer.
const INNER_DEADLINE: Duration = Duration::from_secs(24 * 3600);

/// How long to wait before asking again while no orchestrator listens (NATS
/// says so at once) or the broker is unreachable.
const RETRY_STEP: Duration = Duration::from_millis(200);

/// Why a call failed, before it becomes a Python exception.
enum Failure {
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

    fn into_py(self, py: Python<'_>) -> PyErr {
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
fn secs(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

/// A deadline in seconds from Python: not negative, not NaN; infinity (or
/// anything beyond a century) means a century.
fn deadline(seconds: f64) -> Result<Duration, Failure> {
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
fn until_after(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d).unwrap_or(now)
}

/// Runs `call` with the time left until `until`, within it, asking again while
/// no orchestrator listens or the broker cannot be reached. `deadline` is the
/// caller's whole deadline, for the error.
async fn within<T, F, Fut>(until: Instant, deadline: Duration, mut call: F) -> Result<T, Failure>
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

/// Which of keyman's clients a [`Conn`] holds.
enum Role {
    Worker(service::KeyClient),
    Admin(service::KeyPublisher),
}

/// One process's runtime, broker connection and client.
struct Conn {
    rt: Option<tokio::runtime::Runtime>,
    bus: Option<Arc<dyn Bus>>,
    role: Option<Role>,
    channels: Channels,
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            {
                // The client and bus may need the runtime to let go of their tasks.
                let _inside = rt.enter();
                self.role = None;
                self.bus = None;
            }
            rt.shutdown_background();
        }
    }
}

impl Conn {
    /// Starts a runtime and connects a worker's (or, with `admin`, an admin's)
    /// client to the broker at `url` within `deadline`.
    fn open(url: &str, admin: bool, deadline: Duration) -> Result<Conn, Failure> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("keyman-client")
            .enable_all()
            .build()
            .map_err(|e| Failure::Key(KeyError::Runtime(e.into())))?;
        let channels = Channels::default();
        let config = ClientConfig {
            channels: channels.clone(),
            deadline: INNER_DEADLINE,
            ..ClientConfig::default()
        };
        let connected = rt.block_on(async {
            let until = until_after(deadline);
            let bus = within(until, deadline, |_| service::connect_url(url)).await?;
            let role = within(until, deadline, |_| {
                let (bus, config) = (bus.clone(), config.clone());
                async move {
                    Ok(if admin {
                        Role::Admin(service::KeyPublisher::connect(bus, config).await?)
                    } else {
                        Role::Worker(service::KeyClient::connect(bus, config).await?)
                    })
                }
            })
            .await?;
            Ok::<_, Failure>((bus, role))
        });
        match connected {
            Ok((bus, role)) => Ok(Conn {
                rt: Some(rt),
                bus: Some(bus),
                role: Some(role),
                channels,
            }),
            Err(e) => {
                rt.shutdown_background();
                Err(e)
            }
        }
    }

    fn block_on<T>(&self, fut: impl Future<Output = Result<T, Failure>>) -> Result<T, Failure> {
        match &self.rt {
            Some(rt) => rt.block_on(fut),
            None => Err(Failure::Closed),
        }
    }

    fn worker(&self) -> Result<&service::KeyClient, Failure> {
        match &self.role {
            Some(Role::Worker(c)) => Ok(c),
            _ => Err(Failure::Argument("this is an admin's connection".into())),
        }
    }

    fn admin(&self) -> Result<&service::KeyPublisher, Failure> {
        match &self.role {
            Some(Role::Admin(p)) => Ok(p),
            _ => Err(Failure::Argument("this is a worker's connection".into())),
        }
    }

    fn bus(&self) -> Result<&Arc<dyn Bus>, Failure> {
        self.bus.as_ref().ok_or(Failure::Closed)
    }

    fn requester_id(&self) -> &str {
        match &self.role {
            Some(Role::Worker(c)) => c.requester_id(),
            Some(Role::Admin(p)) => p.requester_id(),
            None => "",
        }
    }

    /// Publishes a report (EXPIRE or INVALIDATE) on the request channel, then
    /// asks for a new key, both within `deadline`.
    fn report_and_request(
        &self,
        report: Request,
        platform: &str,
        deadline: Duration,
    ) -> Result<String, Failure> {
        let client = self.worker()?;
        let bus = self.bus()?;
        let payload = report.encode();
        let channel = &self.channels.request;
        self.block_on(async {
            let until = until_after(deadline);
            within(until, deadline, |_| async {
                bus.publish(channel, &payload).await.map_err(KeyError::from)
            })
            .await?;
            within(until, deadline, |left| {
                client.request_within(platform, left)
            })
            .await
        })
    }
}

/// Where a [`Connection`] stands: open in the process that opened it, or closed.
enum State {
    Open { pid: u32, conn: Arc<Conn> },
    Closed,
}

/// A connection to keyman's broker: a worker's or an admin's client, with its
/// own runtime. Thread-safe; re-opened by itself in a forked child.
#[pyclass(frozen, module = "keyman_client._native")]
struct Connection {
    url: String,
    admin: bool,
    state: Mutex<State>,
}

impl Connection {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere; the state is intact.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// This process's connection: the open one, or a new one if this process
    /// is a fork of the one that opened it. Call without the GIL.
    fn conn(&self, deadline: Duration) -> Result<Arc<Conn>, Failure> {
        let pid = std::process::id();
        let mut state = self.state();
        match &*state {
            State::Closed => Err(Failure::Closed),
            State::Open { pid: owner, conn } if *owner == pid => Ok(conn.clone()),
            State::Open { .. } => {
                // Forked: the parent's runtime has no threads here, and its
                // sockets are the parent's. Leave them alone, forever.
                std::mem::forget(std::mem::replace(&mut *state, State::Closed));
                let conn = Arc::new(Conn::open(&self.url, self.admin, deadline)?);
                *state = State::Open {
                    pid,
                    conn: conn.clone(),
                };
                Ok(conn)
            }
        }
    }

    /// Runs `f` on this process's connection without the GIL.
    fn run<T: Send>(
        &self,
        py: Python<'_>,
        timeout: f64,
        f: impl FnOnce(&Conn, Duration) -> Result<T, Failure> + Send,
    ) -> PyResult<T> {
        let result = py.detach(|| {
            let d = deadline(timeout)?;
            let started = std::time::Instant::now();
            // A forked child opens its connection first, within the same deadline.
            let conn = self.conn(d)?;
            f(&conn, d.saturating_sub(started.elapsed()))
        });
        result.map_err(|e| e.into_py(py))
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let state = std::mem::replace(&mut *self.state(), State::Closed);
        if let State::Open { pid, conn } = state
            && pid != std::process::id()
        {
            // A forked child dropping the parent's connection: leave it alone.
            std::mem::forget(conn);
        }
    }
}

fn require(what: &str, value: &str) -> Result<(), Failure> {
    if value.is_empty() {
        Err(Failure::Argument(format!("{what} must not be empty")))
    } else {
        Ok(())
    }
}

#[pymethods]
impl Connection {
    /// Connects to the broker at `url` (`redis://`, `rediss://`, `nats://`)
    /// within `timeout` seconds: a worker's client, or an admin's with `admin`.
    #[new]
    #[pyo3(signature = (url, admin, timeout))]
    fn new(py: Python<'_>, url: String, admin: bool, timeout: f64) -> PyResult<Self> {
        let opened = py.detach(|| {
            let d = deadline(timeout)?;
            Conn::open(&url, admin, d)
        });
        let conn = opened.map_err(|e| e.into_py(py))?;
        Ok(Connection {
            url,
            admin,
            state: Mutex::new(State::Open {
                pid: std::process::id(),
                conn: Arc::new(conn),
            }),
        })
    }

    /// The requester id that names this process's reply channel (a new one
    /// after a fork, once the child has used the connection).
    #[getter]
    fn requester_id(&self) -> String {
        match &*self.state() {
            State::Open { pid, conn } if *pid == std::process::id() => {
                conn.requester_id().to_string()
            }
            _ => String::new(),
        }
    }

    /// Whether `close()` was called.
    #[getter]
    fn closed(&self) -> bool {
        matches!(&*self.state(), State::Closed)
    }

    /// A fresh key of `platform`, waiting while all its keys are rate limited.
    fn request(&self, py: Python<'_>, platform: String, timeout: f64) -> PyResult<String> {
        self.run(py, timeout, |conn, d| {
            require("platform", &platform)?;
            let client = conn.worker()?;
            conn.block_on(async {
                within(until_after(d), d, |left| {
                    client.request_within(&platform, left)
                })
                .await
            })
        })
    }

    /// Reports `key` as rate limited until `reset_ms` (Unix milliseconds) and
    /// returns a fresh key of `platform`.
    fn expire(
        &self,
        py: Python<'_>,
        platform: String,
        key: String,
        reset_ms: u64,
        timeout: f64,
    ) -> PyResult<String> {
        self.run(py, timeout, |conn, d| {
            require("platform", &platform)?;
            require("key", &key)?;
            let report = Request::Expire {
                key,
                platform: platform.clone(),
                refresh_time: Timestamp::from_millis(reset_ms),
                requester_id: Some(conn.requester_id().into()),
            };
            conn.report_and_request(report, &platform, d)
        })
    }

    /// Reports `key` as permanently invalid and returns a fresh key of `platform`.
    fn invalidate(
        &self,
        py: Python<'_>,
        platform: String,
        key: String,
        timeout: f64,
    ) -> PyResult<String> {
        self.run(py, timeout, |conn, d| {
            require("platform", &platform)?;
            require("key", &key)?;
            let report = Request::Invalidate {
                key,
                platform: platform.clone(),
                requester_id: Some(conn.requester_id().into()),
            };
            conn.report_and_request(report, &platform, d)
        })
    }

    /// Adds `key` to `platform`.
    fn publish(&self, py: Python<'_>, platform: String, key: String, timeout: f64) -> PyResult<()> {
        self.run(py, timeout, |conn, d| {
            let admin = conn.admin()?;
            conn.block_on(within(until_after(d), d, |_| {
                admin.publish(&platform, &key)
            }))
        })
    }

    /// Removes `key` from `platform`.
    fn unpublish(
        &self,
        py: Python<'_>,
        platform: String,
        key: String,
        timeout: f64,
    ) -> PyResult<()> {
        self.run(py, timeout, |conn, d| {
            let admin = conn.admin()?;
            conn.block_on(within(until_after(d), d, |_| {
                admin.unpublish(&platform, &key)
            }))
        })
    }

    /// Whether the orchestrator answered (having handled everything sent
    /// before) within `timeout` seconds.
    fn ping(&self, py: Python<'_>, timeout: f64) -> PyResult<bool> {
        self.run(py, timeout, |conn, d| {
            let admin = conn.admin()?;
            match conn.block_on(within(until_after(d), d, |left| admin.ping_within(left))) {
                Ok(()) => Ok(true),
                Err(Failure::Timeout(_) | Failure::NoOrchestrator(_)) => Ok(false),
                Err(e) => Err(e),
            }
        })
    }

    /// The platform names.
    fn platforms(&self, py: Python<'_>, timeout: f64) -> PyResult<Vec<String>> {
        self.run(py, timeout, |conn, d| {
            let admin = conn.admin()?;
            conn.block_on(within(until_after(d), d, |_| admin.platforms()))
        })
    }

    /// The fresh and expired keys of `platform`.
    fn keys(&self, py: Python<'_>, platform: String, timeout: f64) -> PyResult<Vec<String>> {
        self.run(py, timeout, |conn, d| {
            let admin = conn.admin()?;
            conn.block_on(within(until_after(d), d, |_| admin.keys(&platform)))
        })
    }

    /// The invalid keys of `platform`.
    fn invalid_keys(
        &self,
        py: Python<'_>,
        platform: String,
        timeout: f64,
    ) -> PyResult<Vec<String>> {
        self.run(py, timeout, |conn, d| {
            let admin = conn.admin()?;
            conn.block_on(within(until_after(d), d, |_| admin.invalid_keys(&platform)))
        })
    }

    /// Key counts per platform: `(platform, fresh, expired, invalid)`.
    fn status(&self, py: Python<'_>, timeout: f64) -> PyResult<Vec<(String, u64, u64, u64)>> {
        self.run(py, timeout, |conn, d| {
            let admin = conn.admin()?;
            let status = conn.block_on(within(until_after(d), d, |_| admin.status()))?;
            Ok(status
                .into_iter()
                .map(|s| (s.platform, s.fresh, s.expired, s.invalid))
                .collect())
        })
    }

    /// Asks the orchestrator to stop once it has handled everything sent before.
    fn shutdown(&self, py: Python<'_>, timeout: f64) -> PyResult<()> {
        self.run(py, timeout, |conn, d| {
            let admin = conn.admin()?;
            conn.block_on(within(until_after(d), d, |_| admin.shutdown()))
        })
    }

    /// Closes the connection; later calls raise `Disconnected`. Idempotent.
    fn close(&self, py: Python<'_>) {
        let state = py.detach(|| std::mem::replace(&mut *self.state(), State::Closed));
        if let State::Open { pid, conn } = state {
            if pid == std::process::id() {
                // Calls still running hold their own reference; the last one closes.
                py.detach(move || drop(conn));
            } else {
                std::mem::forget(conn);
            }
        }
    }
}

/// The native part of `keyman_client`.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Connection>()?;
    m.add("INNER_DEADLINE_SECONDS", INNER_DEADLINE.as_secs())?;
    Ok(())
}
