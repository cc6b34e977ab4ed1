//! [`PerProcess`]: a connection's state, kept per process so that a forked
//! child never waits on a lock of its parent.
//!
//! `fork()` copies only the thread that called it. A lock that another
//! thread of the parent held at that moment (a thread in the middle of a
//! call) stays locked in the child forever, and a child that takes it hangs:
//! Celery's prefork pool forks workers from a parent whose threads may be
//! using the client. So each process has a cell of its own, with a lock only
//! its own threads take; the cell in use is found without a lock (an atomic
//! pointer and the process id), and a child that finds its parent's cell
//! installs a new one, leaving the parent's untouched (its runtime has no
//! threads in the child, and its sockets are the parent's).

use crate::call::Failure;
use crate::conn::Conn;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Where one process's connection stands.
enum State {
    /// Open in this process.
    Open(Arc<Conn>),
    /// Not opened yet in this process (a forked child before its first call).
    Unopened,
    /// `close()` was called.
    Closed,
}

/// One process's state.
struct Cell {
    pid: u32,
    state: Mutex<State>,
}

impl Cell {
    fn state(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere; the state is intact.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A connection's state in each process that uses it.
pub(crate) struct PerProcess {
    /// The cell of the process that last installed one (owned: from
    /// `Box::into_raw`; freed only by that process).
    current: AtomicPtr<Cell>,
    /// Whether `close()` was called (in this process, or before the fork).
    closed: AtomicBool,
}

impl PerProcess {
    /// The state of a connection opened in this process.
    pub(crate) fn new(conn: Conn) -> Self {
        let cell = Cell {
            pid: std::process::id(),
            state: Mutex::new(State::Open(Arc::new(conn))),
        };
        Self {
            current: AtomicPtr::new(Box::into_raw(Box::new(cell))),
            closed: AtomicBool::new(false),
        }
    }

    /// This process's cell, installing one if this is a forked child.
    fn cell(&self) -> &Cell {
        let pid = std::process::id();
        loop {
            let current = self.current.load(Ordering::Acquire);
            // SAFETY: `current` always points to a live cell: cells are freed
            // only in `Drop`, which has `&mut self`.
            let cell = unsafe { &*current };
            if cell.pid == pid {
                return cell;
            }
            let state = if self.closed.load(Ordering::Acquire) {
                State::Closed
            } else {
                State::Unopened
            };
            let mine = Box::into_raw(Box::new(Cell {
                pid,
                state: Mutex::new(state),
            }));
            // The parent's cell is left as it is, never freed here.
            match self
                .current
                .compare_exchange(current, mine, Ordering::AcqRel, Ordering::Acquire)
            {
                // SAFETY: just installed; freed only in `Drop`.
                Ok(_) => return unsafe { &*mine },
                Err(_) => {
                    // Another thread of this child installed one first.
                    // SAFETY: `mine` was never shared.
                    drop(unsafe { Box::from_raw(mine) });
                }
            }
        }
    }

    /// This process's connection, opened within `deadline` if this process
    /// has none yet. Call without the GIL.
    pub(crate) fn conn(
        &self,
        url: &str,
        admin: bool,
        deadline: Duration,
    ) -> Result<Arc<Conn>, Failure> {
        let mut state = self.cell().state();
        match &*state {
            State::Open(conn) => Ok(conn.clone()),
            State::Closed => Err(Failure::Closed),
            State::Unopened => {
                let conn = Arc::new(Conn::open(url, admin, deadline)?);
                *state = State::Open(conn.clone());
                Ok(conn)
            }
        }
    }

    /// This process's connection, if it is open.
    pub(crate) fn opened(&self) -> Option<Arc<Conn>> {
        match &*self.cell().state() {
            State::Open(conn) => Some(conn.clone()),
            _ => None,
        }
    }

    /// Whether `close()` was called.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Closes this process's connection; returns it, for the caller to drop
    /// (the last call still using it closes it).
    pub(crate) fn close(&self) -> Option<Arc<Conn>> {
        self.closed.store(true, Ordering::Release);
        match std::mem::replace(&mut *self.cell().state(), State::Closed) {
            State::Open(conn) => Some(conn),
            _ => None,
        }
    }
}

impl Drop for PerProcess {
    fn drop(&mut self) {
        let current = *self.current.get_mut();
        // SAFETY: the cell is live (see `cell`), and nothing else uses it now.
        if unsafe { &*current }.pid == std::process::id() {
            // SAFETY: installed by this process, from `Box::into_raw`.
            drop(unsafe { Box::from_raw(current) });
        }
        // A parent's cell in a forked child is left alone.
    }
}
