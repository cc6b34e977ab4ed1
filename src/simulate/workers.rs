//! The workers, as Augur's behave: ask for a key (NEW), call the API with it
//! until a 403, a 401 or the floor, report it (EXPIRE, INVALIDATE) and ask again.

use super::api::{Response, ceil_to_second};
use super::config::{PLATFORM, millis};
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

/// How a worker reports the key it gives up.
enum Giving {
    Expire { reset: u64 },
    Invalidate,
}

impl Simulation {
    /// Sends a worker's message and returns the engine's answer to it.
    fn send(&mut self, now: u64, worker: usize, request: Request) -> (Option<Reply>, bool) {
        let reply_channel = matches!(request, Request::New { .. })
            .then(|| self.channels.request_reply(&(worker as u64).into()));
        let channel = self.channels.request.clone();
        self.engine
            .handle(Timestamp::from_millis(now), &channel, &request.encode());
        self.drain_engine(now, reply_channel.as_deref())
    }

    /// A worker without a key asks for one.
    pub(super) fn ask(&mut self, now: u64, worker: usize) {
        let request = Request::New {
            platform: PLATFORM.to_string(),
            reply: ReplyTo::new(worker as u64),
            hold_ms: None,
        };
        match self.send(now, worker, request).0 {
            Some(Reply::Key(text)) => match self.key_index.get(&text).copied() {
                Some(key) => {
                    self.keys_handed_out += 1;
                    if self.keys[key].invalidated {
                        self.invalid_handouts += 1;
                    }
                    self.join(now, worker, key);
                }
                None => {
                    self.error_replies += 1;
                    self.push(now + millis(ERROR_RETRY), Action::Ask { worker });
                }
            },
            Some(Reply::Wait(secs)) => {
                self.wait_replies += 1;
                let at = now.saturating_add(secs.max(1).saturating_mul(1000));
                self.push(at, Action::Ask { worker });
            }
            _ => {
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
        self.plan(key, now);
    }

    /// A worker gives its key up: reports it and asks again after Augur's pause.
    fn give_up(&mut self, now: u64, worker: usize, key: usize, giving: Giving) {
        let text = self.key_text[key].clone();
        let requester_id = Some((worker as u64).into());
        let request = match giving {
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
            let api_key = &self.api.keys[key];
            let window_end = match api_key.reset.filter(|&reset| reset > first) {
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
        let at = if !api_key.valid {
            first
        } else {
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
            match self.api.call(key, now) {
                Response::Served { remaining, reset } => {
                    self.calls_served += 1;
                    if remaining < self.floor {
                        self.give_up(now, worker, key, Giving::Expire { reset });
                    } else {
                        self.keys[key]
                            .holders
                            .queue
                            .push_back((now + self.interval, worker));
                    }
                }
                Response::RateLimited { reset } => {
                    self.rate_limited += 1;
                    self.give_up(now, worker, key, Giving::Expire { reset });
                }
                Response::Unauthorized => {
                    self.unauthorized += 1;
                    self.give_up(now, worker, key, Giving::Invalidate);
                }
            }
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
