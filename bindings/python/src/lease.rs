//! [`Lease`]: a key lent to a Python worker with a number of calls, and what
//! the binding does with it: take one, count each response with
//! `observe_lease` (which returns it and takes another when its calls are used
//! up, or the platform refused the key), release it.
//!
//! The lease itself is keyman's [`LeasedKey`]; everything on the wire is done
//! by keyman's client. A lease belongs to the process that took it: in a
//! forked child it has ended (the parent may still use it, and only the parent
//! may return it).

use crate::call::{Failure, until_after, within};
use crate::conn::Conn;
use keyman::Masked;
use keyman::ratelimit::{LeasedKey, RateLimit};
use keyman::service::{KeyError, KeySource};
use pyo3::prelude::*;
use std::sync::{Mutex, TryLockError};
use std::time::Duration;

/// What Python reads of a lease: a copy, replaced whenever the lease changes,
/// so that reading never waits for a call in progress.
#[derive(Clone)]
struct View {
    key: String,
    calls: Option<u64>,
    used: u64,
    until: Option<u64>,
    ended: bool,
}

impl View {
    fn of(leased: &LeasedKey) -> View {
        View {
            key: leased.key().to_string(),
            calls: leased.lease().map(|l| l.calls),
            used: leased.used(),
            until: leased.lease().map(|l| l.until.as_secs()),
            ended: false,
        }
    }
}

/// A key lent with up to a number of calls (`keyman_client.Lease` wraps it).
/// Thread-safe: calls that change it (observe, release) take turns; reading it
/// never waits.
#[pyclass(frozen, module = "keyman_client._native")]
pub(crate) struct Lease {
    /// The process that took it.
    pid: u32,
    platform: String,
    wanted: u64,
    /// The lease, `None` once it has ended; held by the call that changes it.
    slot: tokio::sync::Mutex<Option<LeasedKey>>,
    view: Mutex<View>,
}

impl Lease {
    fn new(leased: LeasedKey) -> Lease {
        Lease {
            pid: std::process::id(),
            platform: leased.platform().to_string(),
            wanted: leased.wanted(),
            view: Mutex::new(View::of(&leased)),
            slot: tokio::sync::Mutex::new(Some(leased)),
        }
    }

    fn view(&self) -> View {
        if !self.ours() {
            // A forked child: a thread of the parent may have held the lock
            // at the fork, and it would never be released here. The lease
            // has ended for this process anyway.
            let last = match self.view.try_lock() {
                Ok(view) => Some(view.clone()),
                Err(TryLockError::Poisoned(e)) => Some(e.into_inner().clone()),
                Err(TryLockError::WouldBlock) => None,
            };
            return View {
                ended: true,
                ..last.unwrap_or(View {
                    key: String::new(),
                    calls: None,
                    used: 0,
                    until: None,
                    ended: true,
                })
            };
        }
        // A poisoned lock only means a panic elsewhere; the view is whole.
        self.view.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Shows `leased` to Python, or (with `None`) that the lease has ended.
    fn show(&self, leased: Option<&LeasedKey>) {
        let mut view = self.view.lock().unwrap_or_else(|e| e.into_inner());
        match leased {
            Some(l) => *view = View::of(l),
            None => view.ended = true,
        }
    }

    /// Whether this process took it.
    fn ours(&self) -> bool {
        self.pid == std::process::id()
    }
}

/// A `Timeout` of keyman's client (its own, longer deadline) as the caller's.
fn failure(e: KeyError, deadline: Duration) -> Failure {
    match e {
        KeyError::Timeout(_) => Failure::Timeout(deadline),
        e => Failure::from(e),
    }
}

/// Takes a lease of up to `calls` calls on a key of `platform` within
/// `deadline`, waiting while no key can lend a call (a plain key, without a
/// lease, from an orchestrator that lends none).
pub(crate) fn take(
    conn: &Conn,
    platform: &str,
    calls: u64,
    deadline: Duration,
) -> Result<Lease, Failure> {
    let client = conn.worker()?;
    let leased = conn.block_on(within(until_after(deadline), deadline, |left| {
        client.lease_within(platform, calls, left)
    }))?;
    Ok(Lease::new(leased))
}

/// Counts one response made with `lease` (its `status` and the rate-limit
/// headers `seen`) and returns the key for the next call: keyman's
/// `observe_lease`, within `deadline`. If it fails, the lease has ended (it
/// may have been returned already): the caller takes a new one.
pub(crate) fn observe(
    conn: &Conn,
    lease: &Lease,
    status: u16,
    seen: &RateLimit,
    deadline: Duration,
) -> Result<String, Failure> {
    let client = conn.worker()?;
    if !lease.ours() {
        return Err(Failure::Argument(
            "the lease was taken by another process (before a fork): take a new one".into(),
        ));
    }
    conn.block_on(async {
        let until = until_after(deadline);
        let mut slot = tokio::time::timeout_at(until, lease.slot.lock())
            .await
            .map_err(|_| Failure::Timeout(deadline))?;
        let Some(current) = slot.as_ref() else {
            return Err(Failure::Argument(
                "the lease has ended (released, or its renewal failed): take a new one".into(),
            ));
        };
        let mut leased = current.clone();
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        let outcome = tokio::time::timeout_at(
            until,
            client.observe_lease_within(&mut leased, status, seen, left),
        )
        .await;
        match outcome {
            Ok(Ok(_)) => {
                let key = leased.key().to_string();
                lease.show(Some(&leased));
                *slot = Some(leased);
                Ok(key)
            }
            Ok(Err(e)) => {
                *slot = None;
                lease.show(None);
                Err(failure(e, deadline))
            }
            Err(_) => {
                *slot = None;
                lease.show(None);
                Err(Failure::Timeout(deadline))
            }
        }
    })
}

/// Returns the unused calls of `lease` within `deadline`; it has ended
/// afterwards, even if the return failed (then its calls count as used until
/// it ends by itself). Nothing to do for a lease that has ended, or that
/// another process took.
pub(crate) fn release(conn: &Conn, lease: &Lease, deadline: Duration) -> Result<(), Failure> {
    if !lease.ours() {
        return Ok(());
    }
    let client = conn.worker()?;
    conn.block_on(async {
        let until = until_after(deadline);
        let mut slot = tokio::time::timeout_at(until, lease.slot.lock())
            .await
            .map_err(|_| Failure::Timeout(deadline))?;
        let Some(leased) = slot.take() else {
            return Ok(());
        };
        lease.show(None);
        within(until, deadline, |_| client.release(leased.clone())).await
    })
}

#[pymethods]
impl Lease {
    /// The key, for the next call.
    #[getter]
    fn key(&self) -> String {
        self.view().key
    }

    /// The platform it is a key of.
    #[getter]
    fn platform(&self) -> String {
        self.platform.clone()
    }

    /// The calls asked for with each lease.
    #[getter]
    fn wanted(&self) -> u64 {
        self.wanted
    }

    /// The calls lent with the key; `None` for a key without a lease.
    #[getter]
    fn calls(&self) -> Option<u64> {
        self.view().calls
    }

    /// Calls observed with the key since it was lent.
    #[getter]
    fn used(&self) -> u64 {
        self.view().used
    }

    /// Calls the lease still allows (0 once it has ended); `None` for a key
    /// without a lease.
    #[getter]
    fn calls_left(&self) -> Option<u64> {
        let view = self.view();
        let ended = view.ended || !self.ours();
        view.calls.map(|c| {
            if ended {
                0
            } else {
                c.saturating_sub(view.used)
            }
        })
    }

    /// When the lease ends (Unix seconds, the orchestrator's clock); `None`
    /// for a key without a lease.
    #[getter]
    fn until(&self) -> Option<u64> {
        self.view().until
    }

    /// Whether it has ended: released, its renewal failed, or taken by
    /// another process.
    #[getter]
    fn ended(&self) -> bool {
        self.view().ended || !self.ours()
    }

    /// The lease with its key masked.
    fn __repr__(&self) -> String {
        let view = self.view();
        let opt = |v: Option<u64>| v.map_or_else(|| "None".to_string(), |n| n.to_string());
        format!(
            "Lease(platform='{}', key='{}', calls={}, used={}, until={}, ended={})",
            self.platform,
            Masked(&view.key),
            opt(view.calls),
            view.used,
            opt(view.until),
            if view.ended || !self.ours() {
                "True"
            } else {
                "False"
            },
        )
    }
}
