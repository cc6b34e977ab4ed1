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
//!   (never dropped in the child: their threads do not exist there), and no
//!   lock of the parent is taken ([`PerProcess`](process::PerProcess)).
//! - [`Lease`](lease::Lease): a key lent with calls, counted by `observe_lease`.

#![warn(missing_docs)]

mod call;
mod conn;
mod lease;
mod process;

use call::{Failure, INNER_DEADLINE, deadline, until_after, within};
use conn::Conn;
use keyman::protocol::Request;
use keyman::ratelimit::RateLimit;
use keyman::service::{KeyAdmin, KeySource};
use keyman::time::Timestamp;
use process::PerProcess;
use pyo3::prelude::*;
use std::sync::Arc;
use std::time::Duration;

/// A row of `Connection.status()`.
type StatusRow = (
    String,
    u64,
    u64,
    u64,
    Option<u64>,
    Option<u64>,
    Option<u64>,
    Option<u64>,
    Option<u64>,
    Option<u64>,
);

/// What `(name, value)` header pairs say about the key's quota.
fn rate_limit(headers: &[(String, String)]) -> RateLimit {
    RateLimit::from_headers(headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes())))
}

/// A connection to keyman's broker: a worker's or an admin's client, with its
/// own runtime. Thread-safe; re-opened by itself in a forked child.
#[pyclass(frozen, module = "keyman_client._native")]
struct Connection {
    url: String,
    admin: bool,
    state: PerProcess,
}

impl Connection {
    /// This process's connection: the open one, or a new one if this process
    /// is a fork of the one that opened it. Call without the GIL.
    fn conn(&self, deadline: Duration) -> Result<Arc<Conn>, Failure> {
        self.state.conn(&self.url, self.admin, deadline)
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
            state: PerProcess::new(conn),
        })
    }

    /// The requester id that names this process's reply channel (a new one
    /// after a fork, once the child has used the connection).
    #[getter]
    fn requester_id(&self) -> String {
        self.state
            .opened()
            .map(|conn| conn.requester_id().to_string())
            .unwrap_or_default()
    }

    /// Whether `close()` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.state.is_closed()
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

    /// Adds `key` to `platform` as a key of `account` (whose keys share one
    /// quota) with `limit` calls per window as a hint.
    #[pyo3(signature = (platform, key, account, limit, timeout))]
    fn publish_account(
        &self,
        py: Python<'_>,
        platform: String,
        key: String,
        account: Option<String>,
        limit: Option<u64>,
        timeout: f64,
    ) -> PyResult<()> {
        self.run(py, timeout, |conn, d| {
            let admin = conn.admin()?;
            conn.block_on(within(until_after(d), d, |_| {
                admin.publish_account(&platform, &key, account.as_deref(), limit)
            }))
        })
    }

    /// A key of `platform` lent with up to `calls` calls.
    fn lease(
        &self,
        py: Python<'_>,
        platform: String,
        calls: u64,
        timeout: f64,
    ) -> PyResult<lease::Lease> {
        self.run(py, timeout, |conn, d| {
            require("platform", &platform)?;
            if calls == 0 {
                return Err(Failure::Argument("calls must be at least 1".into()));
            }
            lease::take(conn, &platform, calls, d)
        })
    }

    /// What a response made with the plain `key` of `platform` said
    /// (`status`, `headers` as `(name, value)` pairs): the key for the next
    /// call, the same or another after EXPIRE or INVALIDATE.
    fn observe(
        &self,
        py: Python<'_>,
        platform: String,
        key: String,
        status: u16,
        headers: Vec<(String, String)>,
        timeout: f64,
    ) -> PyResult<String> {
        let seen = rate_limit(&headers);
        self.run(py, timeout, |conn, d| {
            require("platform", &platform)?;
            require("key", &key)?;
            let client = conn.worker()?;
            let next = conn.block_on(within(until_after(d), d, |left| {
                client.observe_within(&platform, &key, status, &seen, left)
            }))?;
            Ok(next.into_key(key))
        })
    }

    /// Counts one response made with `lease` (`status`, `headers` as
    /// `(name, value)` pairs) and returns the key for the next call; the
    /// lease is renewed, or the key reported and another leased, as the
    /// response says. If this fails, the lease has ended.
    fn observe_lease(
        &self,
        py: Python<'_>,
        lease: Py<lease::Lease>,
        status: u16,
        headers: Vec<(String, String)>,
        timeout: f64,
    ) -> PyResult<String> {
        let seen = rate_limit(&headers);
        self.run(py, timeout, |conn, d| {
            lease::observe(conn, lease.get(), status, &seen, d)
        })
    }

    /// Returns the unused calls of `lease`; it has ended afterwards.
    fn release(&self, py: Python<'_>, lease: Py<lease::Lease>, timeout: f64) -> PyResult<()> {
        self.run(py, timeout, |conn, d| lease::release(conn, lease.get(), d))
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

    /// Key counts and quota figures per platform: `(platform, fresh,
    /// expired, invalid, next_refresh, remaining, leased, burn_per_hour,
    /// dry_at, clock_lag_ms)`, the last six `None` when unknown.
    fn status(&self, py: Python<'_>, timeout: f64) -> PyResult<Vec<StatusRow>> {
        self.run(py, timeout, |conn, d| {
            let admin = conn.admin()?;
            let status = conn.block_on(within(until_after(d), d, |_| admin.status()))?;
            Ok(status
                .into_iter()
                .map(|s| {
                    (
                        s.platform,
                        s.fresh,
                        s.expired,
                        s.invalid,
                        s.next_refresh,
                        s.remaining,
                        s.leased,
                        s.burn_per_hour,
                        s.dry_at,
                        s.clock_lag_ms,
                    )
                })
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
        // Calls still running hold their own reference; the last one closes.
        py.detach(|| drop(self.state.close()));
    }
}

/// The native part of `keyman_client`.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Connection>()?;
    m.add_class::<lease::Lease>()?;
    m.add("INNER_DEADLINE_SECONDS", INNER_DEADLINE.as_secs())?;
    Ok(())
}
