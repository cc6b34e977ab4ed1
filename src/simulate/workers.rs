//! The workers: ask for a key (NEW), call the API with it, give it up (EXPIRE,
//! INVALIDATE) and ask again. When to give a key up is the client behaviour
//! ([`ClientBehaviour`]): as Augur's workers do (at a 403, a 401 or the floor),
//! or as keyman-aware workers do (by the verdict of the rate-limit headers, and
//! before the key's holders together would spend it).

use super::api::{Response, ceil_to_second};
use super::config::{AUGUR_WAIT_EXTRA, ClientBehaviour, Orchestrator, PLATFORM, millis};
use super::holders::Holders;
use super::run::{Action, Simulation};
use crate::protocol::{Reply, ReplyTo, Request};
use crate::time::Timestamp;
use std::time::Duration;

/// How long an Augur worker sleeps between reporting a key (EXPIRE or
/// INVALIDATE) and asking for the next (NEW).
pub const REASK_DELAY: Duration = Duration::from_millis(100);

/// How long an Augur worker sleeps after an answer with neither a key nor a wait
/// hint (an error) before asking again.
pub const ERROR_RETRY: Duration = Duration::from_secs(20);

/// How long a keyman-aware worker asks the engine to hold its NEW (`hold_ms`)
/// when no key can lend calls.
pub const HOLD: Duration = Duration::from_secs(60);

/// How much work a keyman-aware worker asks a lease for: the calls it makes in
/// this long.
pub const LEASE_SPAN: Duration = Duration::from_secs(60);

/// One key as the simulation's workers see it.
#[derive(Debug, Default, Clone)]
pub(super) struct KeySide {
    pub(super) holders: Holders,
    /// Bumped whenever the key's next event is planned again; older events are stale.
    pub(super) plan: u64,
    /// When the engine invalidated the key, if it did.
    pub(super) invalidated: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WorkerState {
    /// Without a key since the given time.
    Waiting { since: u64 },
    /// Holding a key (and listed among its holders).
    Holding,
}

/// What a keyman-aware worker remembers of the previous answer it had with its
/// key: the remaining count and the reset time (the platform's), as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Seen {
    pub(super) remaining: u64,
    pub(super) reset: Timestamp,
}

/// How a worker gives its key up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Giving {
    /// EXPIRE until `reset`, and ask again after [`REASK_DELAY`].
    Expire { reset: u64 },
    /// INVALIDATE, and ask again after [`REASK_DELAY`].
    Invalidate,
    /// Return the lease (REPORT) once the last call is done, then ask for the
    /// next at once (or do what the worker stored with the lease).
    Return,
}

/// A lease a keyman-aware worker holds: its id, the calls it may still make
/// and the calls made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct LeaseHeld {
    pub(super) id: u64,
    pub(super) left: u64,
    pub(super) used: u64,
}

impl Simulation {
    /// Sends a worker's message and returns the engine's answer to it.
    pub(super) fn send(
        &mut self,
        now: u64,
        worker: usize,
        request: Request,
    ) -> (Option<Reply>, bool) {
        let reply_channel = matches!(request, Request::New { .. } | Request::Lease { .. })
            .then(|| self.channels.request_reply(&(worker as u64).into()));
        let channel = self.channels.request.clone();
        self.engine
            .handle(Timestamp::from_millis(now), &channel, &request.encode());
        self.drain_engine(now, reply_channel.as_deref())
    }

    /// A worker without a key asks for one: a NEW as Augur's workers send
    /// it, or, from a keyman-aware worker, a NEW with `lease` and `hold_ms`
    /// (an answer that comes later is delivered to it then).
    pub(super) fn ask(&mut self, now: u64, worker: usize) {
        let reply = ReplyTo::new(worker as u64);
        let platform = PLATFORM.to_string();
        let request = match self.clients {
            ClientBehaviour::Augur => Request::New {
                platform,
                reply,
                hold_ms: None,
            },
            ClientBehaviour::Keyman => Request::Lease {
                platform,
                reply,
                hold_ms: Some(millis(HOLD)),
                lease: self.lease_size,
            },
        };
        match self.send(now, worker, request).0 {
            Some(reply) => self.on_reply(now, worker, reply),
            // Held by the engine: the answer comes when a key is free.
            None if self.clients == ClientBehaviour::Keyman => {}
            None => {
                self.error_replies += 1;
                self.push(now + millis(ERROR_RETRY), Action::Ask { worker });
            }
        }
    }

    /// What a worker does with the answer to its NEW.
    pub(super) fn on_reply(&mut self, now: u64, worker: usize, reply: Reply) {
        let (text, lease) = match reply {
            Reply::Key(text) => (text, None),
            Reply::Lease {
                key,
                calls,
                lease_id,
                ..
            } => {
                self.leases_granted += 1;
                let lease = LeaseHeld {
                    id: lease_id,
                    left: calls,
                    used: 0,
                };
                (key, Some(lease))
            }
            Reply::Wait(secs) => {
                self.wait_replies += 1;
                let secs = match self.orchestrator {
                    Orchestrator::Keyman => secs,
                    Orchestrator::Augur => secs.saturating_add(AUGUR_WAIT_EXTRA.as_secs()),
                };
                let at = now.saturating_add(secs.max(1).saturating_mul(1000));
                self.push(at, Action::Ask { worker });
                return;
            }
            _ => {
                self.error_replies += 1;
                self.push(now + millis(ERROR_RETRY), Action::Ask { worker });
                return;
            }
        };
        match self.key_index.get(&text).copied() {
            Some(key) => {
                self.keys_handed_out += 1;
                if self.keys[key].invalidated {
                    self.invalid_handouts += 1;
                }
                self.join(now, worker, key);
                self.leases[worker] = lease;
            }
            None => {
                self.error_replies += 1;
                self.push(now + millis(ERROR_RETRY), Action::Ask { worker });
            }
        }
    }

    fn join(&mut self, now: u64, worker: usize, key: usize) {
        self.settle(key, now);
        self.keys[key].holders.join(now, worker);
        if let WorkerState::Waiting { since } = self.workers[worker] {
            self.waiting_total += now - since;
            self.count_waiting(now);
            self.workers_waiting -= 1;
        }
        self.workers[worker] = WorkerState::Holding;
        self.seen[worker] = None;
        self.plan(key, now);
    }

    /// A worker gives its key up: reports it and asks again after Augur's
    /// pause; or, returning a lease, makes its last call, then (when that call
    /// is done, a call interval later) reports and asks for the next lease.
    pub(super) fn give_up(&mut self, now: u64, worker: usize, key: usize, giving: Giving) {
        if let Giving::Return = giving {
            self.returns += 1;
            let order = self.returns;
            self.push(
                now.saturating_add(self.interval),
                Action::ReturnLease { order, worker },
            );
            return;
        }
        self.leases[worker] = None;
        let text = self.key_text[key].clone();
        let requester_id = Some((worker as u64).into());
        let request = match giving {
            Giving::Return => return,
            Giving::Expire { reset } => {
                self.expire_reports += 1;
                Request::Expire {
                    key: text,
                    platform: PLATFORM.to_string(),
                    refresh_time: Timestamp::from_millis(reset),
                    requester_id,
                }
            }
            Giving::Invalidate => {
                self.invalidate_reports += 1;
                Request::Invalidate {
                    key: text,
                    platform: PLATFORM.to_string(),
                    requester_id,
                }
            }
        };
        if self.send(now, worker, request).1 {
            self.keys[key].invalidated = true;
        }
        self.workers[worker] = WorkerState::Waiting { since: now };
        self.count_waiting(now);
        self.workers_waiting += 1;
        self.push(now + millis(REASK_DELAY), Action::Ask { worker });
    }

    /// Serves, in batches, every call the holders of `key` make before `until`.
    /// The planner guarantees these calls change nothing (each is a 2xx with the
    /// remaining count at or over the floor); the API checks the quota itself.
    pub(super) fn settle(&mut self, key: usize, until: u64) {
        let interval = self.interval;
        loop {
            let holders = &self.keys[key].holders;
            let Some(first) = holders.first_call().filter(|&at| at < until) else {
                return;
            };
            let window_end = match self.api.window_of(key).reset.filter(|&reset| reset > first) {
                Some(reset) => reset,
                None => ceil_to_second(first.saturating_add(self.api.window_ms)),
            };
            let limit = until.min(window_end);
            let count = holders.calls_before(limit, interval);
            let last = holders.call_time(count - 1, interval);
            self.api.serve_batch(key, first, last, count);
            self.calls_served += count;
            self.keys[key].holders.advance(count, interval);
        }
    }

    /// Plans the next event of `key`: the next call with a consequence, or its
    /// window's reset, whichever comes first (nothing if it is past the end).
    fn plan(&mut self, key: usize, now: u64) {
        self.keys[key].plan += 1;
        let plan = self.keys[key].plan;
        let holders = &self.keys[key].holders;
        let Some(first) = holders.first_call() else {
            return;
        };
        let api_key = &self.api.keys[key];
        let at = if !api_key.valid || !self.batching {
            first
        } else {
            let api_key = self.api.window_of(key);
            let quota_left = if self.batching {
                self.api.quota.saturating_sub(self.floor)
            } else {
                0
            };
            let (uneventful, window_end) = match api_key.reset.filter(|&reset| reset > first) {
                Some(reset) => (quota_left.saturating_sub(api_key.used), reset),
                None => (
                    quota_left,
                    ceil_to_second(first.saturating_add(self.api.window_ms)),
                ),
            };
            if uneventful < holders.calls_before(window_end, self.interval) {
                holders.call_time(uneventful, self.interval)
            } else {
                window_end
            }
        };
        if at < self.end {
            self.push(at.max(now), Action::KeyDue { key, plan });
        }
    }

    /// The next call with a consequence on `key` is due (or its window resets):
    /// settle what came before, make the calls due now one by one, plan again.
    pub(super) fn key_due(&mut self, now: u64, key: usize) {
        self.settle(key, now);
        while let Some(&(at, worker)) = self.keys[key].holders.queue.front() {
            if at != now {
                break;
            }
            self.keys[key].holders.queue.pop_front();
            let response = self.api.call(key, now);
            match response {
                Response::Served { remaining, .. } => {
                    self.calls_served += 1;
                    if remaining < self.floor {
                        self.calls_below_floor += 1;
                    }
                }
                Response::RateLimited { outside, reset } => {
                    self.rate_limited += 1;
                    if outside {
                        self.forbidden_outside += 1;
                    } else {
                        self.forbidden_own += 1;
                        if self.ran_out[key] != Some(reset) {
                            self.ran_out[key] = Some(reset);
                            // The holders still queued and this worker.
                            let holders = self.keys[key].holders.len() + 1;
                            self.holders_at_run_out.push(holders);
                        }
                    }
                }
                Response::SecondaryLimited { .. } => {
                    self.rate_limited += 1;
                    self.forbidden_own += 1;
                    self.secondary_limited += 1;
                }
                Response::Unauthorized => self.unauthorized += 1,
            }
            let giving = match self.clients {
                ClientBehaviour::Augur => self.augur_next(now, &response),
                ClientBehaviour::Keyman if self.leases[worker].is_some() => {
                    self.lease_next(now, worker, key, &response)
                }
                ClientBehaviour::Keyman => self.keyman_next(now, worker, key, &response),
            };
            match giving {
                Some(giving) => self.give_up(now, worker, key, giving),
                None => self.keys[key]
                    .holders
                    .queue
                    .push_back((now + self.interval, worker)),
            }
        }
        self.plan(key, now);
    }

    /// What an Augur worker does after `response`: give the key up at a 403
    /// (until the reset the header says, read as it is, or after `Retry-After`
    /// for a secondary limit), at a 401, or when the remaining count falls under
    /// the floor; else carry on.
    fn augur_next(&self, now: u64, response: &Response) -> Option<Giving> {
        let reset_as_read = |reset: u64| {
            let seen = self.read_headers(response, now);
            seen.reset.map_or(reset, Timestamp::as_millis)
        };
        match *response {
            Response::Served { remaining, reset } if remaining < self.floor => {
                Some(Giving::Expire {
                    reset: reset_as_read(reset),
                })
            }
            Response::Served { .. } => None,
            Response::RateLimited { reset, .. } => Some(Giving::Expire {
                reset: reset_as_read(reset),
            }),
            Response::SecondaryLimited { .. } => {
                let seen = self.read_headers(response, now);
                let after = seen
                    .retry_after
                    .unwrap_or(crate::ratelimit::DEFAULT_BACKOFF);
                Some(Giving::Expire {
                    reset: now.saturating_add(millis(after)),
                })
            }
            Response::Unauthorized => Some(Giving::Invalidate),
        }
    }

    /// One call of the donor with their own key, outside keyman.
    pub(super) fn donor_call(&mut self, now: u64, key: usize) {
        self.settle(key, now);
        self.donor_calls_made += 1;
        match self.api.outside_call(key, now) {
            Response::Served { .. } => self.donor_calls_served += 1,
            _ => self.donor_forbidden += 1,
        }
        self.plan(key, now);
    }

    /// Adds the waiting workers' time up to `now`, before their number changes.
    pub(super) fn count_waiting(&mut self, now: u64) {
        let span = now.saturating_sub(self.waiting_counted_to);
        self.waiting_area += u128::from(self.workers_waiting) * u128::from(span);
        self.waiting_counted_to = self.waiting_counted_to.max(now);
    }
}
