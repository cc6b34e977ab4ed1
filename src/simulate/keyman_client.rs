//! What a keyman-aware worker does with a key: with a lease (NEW with
//! `lease`), make the calls lent, stop at once when the headers say the key is
//! spent or limited, and end the lease with a REPORT of what the last response
//! said (remaining, limit, reset, resource, `Date`) and the calls made; the
//! engine then knows the key's quota. With a key that came without a lease (an
//! orchestrator without the quota extension, as Augur's, or leases switched
//! off), fall back to reading the headers alone: give the key up (EXPIRE with
//! the skew-corrected reset) before the holders together would spend it.

use super::api::Response;
use super::config::PLATFORM;
use super::run::Simulation;
use super::workers::{Giving, Seen, WorkerState};
use crate::protocol::Request;
use crate::quota::{LeaseReturn, Observation};
use crate::ratelimit::{RateLimit, Verdict};
use crate::time::Timestamp;

impl Simulation {
    /// What a keyman-aware worker holding a lease does after `response`: count
    /// the call, and end the lease (REPORT with `done`, once the call is done)
    /// when the headers' verdict says the key is spent, limited or bad (then
    /// EXPIRE or INVALIDATE it), when the calls lent are made, or when the
    /// remaining count would not last another round of the calls made on the
    /// key since its previous answer, above the floor (calls made outside
    /// keyman, by the key's donor, spent what keyman lent); then it asks for
    /// another lease.
    pub(super) fn lease_next(
        &mut self,
        now: u64,
        worker: usize,
        key: usize,
        response: &Response,
    ) -> Option<Giving> {
        let mut lease = self.leases[worker]?;
        if let Response::Served { .. } = response {
            lease.used += 1;
            lease.left = lease.left.saturating_sub(1);
        }
        self.leases[worker] = Some(lease);
        let seen = self.read_headers(response, now);
        let before = self.seen[worker].take();
        let then = match seen.verdict(status_of(response), Timestamp::from_millis(now)) {
            Verdict::Invalidate => Giving::Invalidate,
            Verdict::Expire { refresh_at, .. } => Giving::Expire {
                reset: refresh_at.as_millis(),
            },
            Verdict::Continue if lease.left == 0 => Giving::Return,
            Verdict::Continue => {
                let (Some(remaining), Some(reset)) = (seen.remaining, seen.reset) else {
                    return None;
                };
                // The calls made on the key since this worker's previous
                // answer (every holder's, and any made outside keyman).
                let round = match before {
                    Some(b) if b.reset == reset => b.remaining.saturating_sub(remaining),
                    _ => 0,
                };
                self.seen[worker] = Some(Seen { remaining, reset });
                // What keyman lent is there unless someone outside keyman spent
                // it: when another round would not fit above the floor, hand
                // the lease back (the REPORT tells keyman what is left).
                if round == 0 || remaining >= round.saturating_add(self.floor) {
                    return None;
                }
                Giving::Return
            }
        };
        // The lease ends when the answer is in, at the end of the call.
        self.returning[worker] = Some((key, seen, then));
        Some(Giving::Return)
    }

    /// A worker's last call with its lease is done (a call interval after it
    /// began, when its answer is in): it returns the lease (REPORT), then
    /// asks for the next at once, or first reports the key with EXPIRE or
    /// INVALIDATE and asks after the usual pause.
    pub(super) fn return_lease(&mut self, now: u64, worker: usize) {
        let Some((key, seen, then)) = self.returning[worker].take() else {
            return;
        };
        self.end_lease(now, worker, key, &seen);
        match then {
            Giving::Return => {
                self.workers[worker] = WorkerState::Waiting { since: now };
                self.count_waiting(now);
                self.workers_waiting += 1;
                self.ask(now, worker);
            }
            other => self.give_up(now, worker, key, other),
        }
    }

    /// Ends the lease of `worker` with a REPORT of what `seen` said and the
    /// calls it made.
    fn end_lease(&mut self, now: u64, worker: usize, key: usize, seen: &RateLimit) {
        let Some(lease) = self.leases[worker].take() else {
            return;
        };
        let report = Request::Report {
            key: self.key_text[key].clone(),
            platform: PLATFORM.to_string(),
            observation: Observation {
                remaining: seen.remaining,
                limit: seen.limit,
                reset: seen.reset,
                resource: seen.resource.clone(),
                server_date: seen.server_date,
            },
            lease: Some(LeaseReturn {
                lease_id: lease.id,
                used: Some(lease.used),
                done: true,
            }),
            reply: None,
        };
        self.reports_sent += 1;
        self.send(now, worker, report);
    }

    /// What a keyman-aware worker does after `response` with a key that came
    /// without a lease (an orchestrator without the quota extension, as
    /// Augur's): read its headers with [`RateLimit`], give the key up when the
    /// verdict says so, or when the remaining count would not last another
    /// round of the calls made on the key since the worker's previous answer
    /// (the calls of all its holders, its own included; on the first answer,
    /// the window's average burn per call interval) above the floor. It sends
    /// no REPORT: such an orchestrator does not know the message.
    pub(super) fn keyman_next(
        &mut self,
        now: u64,
        worker: usize,
        _key: usize,
        response: &Response,
    ) -> Option<Giving> {
        let seen = self.read_headers(response, now);
        let at = Timestamp::from_millis(now);
        let before = self.seen[worker].take();
        match seen.verdict(status_of(response), at) {
            Verdict::Invalidate => Some(Giving::Invalidate),
            Verdict::Expire { refresh_at, .. } => Some(Giving::Expire {
                reset: refresh_at.as_millis(),
            }),
            Verdict::Continue => {
                let (Some(remaining), Some(reset)) = (seen.remaining, seen.reset) else {
                    return None;
                };
                let round = match before {
                    Some(b) if b.reset == reset && b.remaining > remaining => {
                        b.remaining - remaining
                    }
                    // A first answer: the window's average burn so far, per
                    // call interval of this worker (the platform's window
                    // length is known: an hour on GitHub).
                    _ => {
                        let left = seen
                            .to_local(reset, at)
                            .as_millis()
                            .saturating_sub(now)
                            .min(self.api.window_ms);
                        let elapsed = (self.api.window_ms - left).max(1);
                        let used = seen.used.unwrap_or(0);
                        (u128::from(used) * u128::from(self.interval))
                            .div_ceil(u128::from(elapsed))
                            .clamp(1, u128::from(u64::MAX)) as u64
                    }
                };
                if remaining < round.saturating_add(self.floor) {
                    return Some(Giving::Expire {
                        reset: seen.to_local(reset, at).as_millis(),
                    });
                }
                self.seen[worker] = Some(Seen { remaining, reset });
                None
            }
        }
    }

    /// The rate-limit headers of `response`, read as a client reads them.
    pub(super) fn read_headers(&self, response: &Response, now: u64) -> RateLimit {
        let headers = self.api.headers(response, now);
        RateLimit::from_headers(headers.iter().map(|(n, v)| (*n, v.as_bytes())))
    }
}

/// The HTTP status of `response`.
pub(super) fn status_of(response: &Response) -> u16 {
    match response {
        Response::Served { .. } => 200,
        Response::RateLimited { .. } | Response::SecondaryLimited { .. } => 403,
        Response::Unauthorized => 401,
    }
}
