//! The simulated rate-limited API, GitHub-style: a quota per account per
//! window (a key is its own account unless the scenario groups keys), a window
//! that opens with the first call after the previous one reset and resets at a
//! whole second, 403 over quota, 401 for a bad key, and optionally a secondary
//! limit on the calls of one account in flight (403 with `Retry-After`). Every
//! answer carries GitHub's rate-limit headers and a `Date`, in the platform's
//! clock, which may be skewed from ours. It checks every call it serves against
//! the quota itself.

use crate::probe::{ProbeFacts, ProbeOutcome, ResourceQuota};
use crate::ratelimit::format_http_date;
use crate::time::Timestamp;
use std::collections::VecDeque;

/// Rounds a time in milliseconds up to a whole second.
pub(super) fn ceil_to_second(ms: u64) -> u64 {
    ms.div_ceil(1000).saturating_mul(1000)
}

/// How long a client waits after a secondary-limit 403 (`Retry-After`).
pub(super) const SECONDARY_RETRY_SECS: u64 = 60;

/// What the simulated API answers one call. Times are on our clock, in
/// milliseconds; [`Api::headers`] says them in the platform's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Response {
    /// 2xx, with the calls remaining in the window and the window's reset time.
    Served { remaining: u64, reset: u64 },
    /// 403: over quota until `reset`. `outside` when the calls made outside the
    /// simulation's workers (the donor's) spent the quota: the workers' own calls
    /// in the window are fewer than the quota.
    RateLimited { reset: u64, outside: bool },
    /// 403 with `Retry-After`: too many calls of the account in flight.
    SecondaryLimited { remaining: u64, reset: u64 },
    /// 401: the key is bad.
    Unauthorized,
}

/// One key as the API sees it.
#[derive(Debug, Clone)]
pub(super) struct ApiKey {
    pub(super) valid: bool,
    /// The account whose quota the key spends.
    pub(super) account: usize,
}

/// One account's quota window.
#[derive(Debug, Clone, Default)]
pub(super) struct Window {
    /// The reset time of the current window, if one was opened.
    pub(super) reset: Option<u64>,
    /// Calls served in the current window.
    pub(super) used: u64,
    /// Of them, calls of the simulation's workers.
    pub(super) own: u64,
}

/// The simulated rate-limited API.
#[derive(Debug)]
pub(super) struct Api {
    pub(super) keys: Vec<ApiKey>,
    /// One window per account.
    pub(super) accounts: Vec<Window>,
    pub(super) quota: u64,
    pub(super) window_ms: u64,
    /// The secondary limit: calls of one account in flight at once.
    pub(super) max_concurrent: Option<u64>,
    /// How long a call is in flight.
    pub(super) flight_ms: u64,
    /// Start times of the workers' calls in flight, per account.
    pub(super) in_flight: Vec<VecDeque<u64>>,
    /// The platform's clock minus ours, in milliseconds (whole seconds).
    pub(super) skew_ms: i64,
    pub(super) over_quota_successes: u64,
    pub(super) invalid_key_successes: u64,
}

impl Api {
    /// An API for `keys` (validity, account) with `accounts` accounts.
    pub(super) fn new(keys: Vec<ApiKey>, accounts: usize, quota: u64, window_ms: u64) -> Self {
        Self {
            keys,
            accounts: vec![Window::default(); accounts],
            quota,
            window_ms,
            max_concurrent: None,
            flight_ms: 1000,
            in_flight: vec![VecDeque::new(); accounts],
            skew_ms: 0,
            over_quota_successes: 0,
            invalid_key_successes: 0,
        }
    }

    /// The window of `key`'s account, as it stands.
    pub(super) fn window_of(&self, key: usize) -> &Window {
        &self.accounts[self.keys[key].account]
    }

    /// The window a call at `at` falls in, opened (GitHub-style, at the first call
    /// after the previous window's reset) if needed.
    fn window_at(&mut self, key: usize, at: u64) -> &mut Window {
        let window_ms = self.window_ms;
        let w = &mut self.accounts[self.keys[key].account];
        if w.reset.is_none_or(|reset| at >= reset) {
            w.reset = Some(ceil_to_second(at.saturating_add(window_ms)));
            w.used = 0;
            w.own = 0;
        }
        w
    }

    /// Whether a worker's call with `key` at `at` breaks the secondary limit;
    /// if not, the call is in flight from now on.
    fn too_many_in_flight(&mut self, key: usize, at: u64) -> bool {
        let Some(max) = self.max_concurrent else {
            return false;
        };
        let flight = &mut self.in_flight[self.keys[key].account];
        while flight
            .front()
            .is_some_and(|&t| t.saturating_add(self.flight_ms) <= at)
        {
            flight.pop_front();
        }
        if flight.len() as u64 >= max {
            return true;
        }
        flight.push_back(at);
        false
    }

    /// One call of a worker with `key` at `at`.
    pub(super) fn call(&mut self, key: usize, at: u64) -> Response {
        self.call_as(key, at, true)
    }

    /// One call with `key` at `at` made outside the simulation's workers (by the
    /// key's donor): it spends the quota but is not in flight for the secondary
    /// limit.
    pub(super) fn outside_call(&mut self, key: usize, at: u64) -> Response {
        self.call_as(key, at, false)
    }

    fn call_as(&mut self, key: usize, at: u64, own: bool) -> Response {
        if !self.keys[key].valid {
            return Response::Unauthorized;
        }
        let quota = self.quota;
        let w = self.window_at(key, at);
        let reset = w.reset.unwrap_or(at);
        if w.used >= quota {
            return Response::RateLimited {
                reset,
                outside: own && w.own < quota,
            };
        }
        let remaining = quota - w.used;
        if own && self.too_many_in_flight(key, at) {
            return Response::SecondaryLimited { remaining, reset };
        }
        let w = self.window_at(key, at);
        w.used += 1;
        if own {
            w.own += 1;
        }
        Response::Served {
            remaining: remaining - 1,
            reset,
        }
    }

    /// Serves `count` calls with `key`, the first at `first` and the last at
    /// `last`, all of them successes in the caller's view. Counts every call that
    /// is over quota in its window, or made with a bad key.
    pub(super) fn serve_batch(&mut self, key: usize, first: u64, last: u64, count: u64) {
        if !self.keys[key].valid {
            self.invalid_key_successes += count;
            return;
        }
        let quota = self.quota;
        let w = self.window_at(key, first);
        debug_assert!(w.reset.is_some_and(|reset| last < reset));
        let before = w.used;
        w.used = w.used.saturating_add(count);
        w.own = w.own.saturating_add(count);
        let over = w.used.saturating_sub(quota.max(before));
        self.over_quota_successes += over;
    }

    /// What `GET /rate_limit` with `key` answers at `at`: 401 for a bad key,
    /// else the account's window (a window not opened yet, or ended, shows the
    /// whole quota and a reset a window ahead, as GitHub's does), on the
    /// platform's clock. Spends nothing.
    pub(super) fn probe(&self, key: usize, at: u64) -> ProbeOutcome {
        if !self.keys[key].valid {
            return ProbeOutcome::Unauthorized;
        }
        let w = self.window_of(key);
        let (remaining, reset) = match w.reset {
            Some(reset) if at < reset => (self.quota.saturating_sub(w.used), reset),
            _ => (
                self.quota,
                ceil_to_second(at.saturating_add(self.window_ms)),
            ),
        };
        ProbeOutcome::Valid(ProbeFacts {
            server_date: Some(Timestamp::from_secs(self.platform_secs(at))),
            resources: vec![ResourceQuota {
                resource: "core".into(),
                limit: Some(self.quota),
                remaining: Some(remaining),
                reset: Some(Timestamp::from_secs(self.platform_secs(reset))),
            }],
            account: None,
            expires_at: None,
        })
    }

    /// A time of our clock on the platform's, in whole seconds (rounded down).
    fn platform_secs(&self, ms: u64) -> u64 {
        let t = i128::from(ms) + i128::from(self.skew_ms);
        u64::try_from(t.max(0) / 1000).unwrap_or(u64::MAX)
    }

    /// The headers of `response` to a call at `at`, as GitHub sends them.
    pub(super) fn headers(&self, response: &Response, at: u64) -> Vec<(&'static str, String)> {
        let mut h = Vec::with_capacity(7);
        h.push((
            "date",
            format_http_date(Timestamp::from_secs(self.platform_secs(at))),
        ));
        let (remaining, reset) = match *response {
            Response::Served { remaining, reset } => (remaining, reset),
            Response::RateLimited { reset, .. } => (0, reset),
            Response::SecondaryLimited { remaining, reset } => {
                h.push(("retry-after", SECONDARY_RETRY_SECS.to_string()));
                (remaining, reset)
            }
            Response::Unauthorized => return h,
        };
        h.push(("x-ratelimit-limit", self.quota.to_string()));
        h.push(("x-ratelimit-remaining", remaining.to_string()));
        h.push((
            "x-ratelimit-used",
            self.quota.saturating_sub(remaining).to_string(),
        ));
        h.push(("x-ratelimit-reset", self.platform_secs(reset).to_string()));
        h.push(("x-ratelimit-resource", "core".to_string()));
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::RateLimit;
    use crate::time::Timestamp;

    fn one_key(quota: u64) -> Api {
        Api::new(
            vec![ApiKey {
                valid: true,
                account: 0,
            }],
            1,
            quota,
            3_600_000,
        )
    }

    #[test]
    fn the_api_counts_calls_over_quota_and_answers_403_then_resets() {
        let mut api = one_key(3);
        assert_eq!(
            api.call(0, 500),
            Response::Served {
                remaining: 2,
                reset: 3_601_000
            }
        );
        api.serve_batch(0, 600, 700, 2);
        assert_eq!(api.over_quota_successes, 0);
        assert_eq!(
            api.call(0, 800),
            Response::RateLimited {
                reset: 3_601_000,
                outside: false
            }
        );
        api.serve_batch(0, 900, 900, 1);
        assert_eq!(api.over_quota_successes, 1);
        assert_eq!(
            api.call(0, 3_601_000),
            Response::Served {
                remaining: 2,
                reset: 7_201_000
            }
        );
        api.keys[0].valid = false;
        assert_eq!(api.call(0, 3_602_000), Response::Unauthorized);
        api.serve_batch(0, 3_603_000, 3_603_000, 1);
        assert_eq!(api.invalid_key_successes, 1);
    }

    #[test]
    fn outside_calls_spend_the_quota_and_their_403s_are_told_apart() {
        let mut api = one_key(2);
        api.outside_call(0, 0);
        api.call(0, 10);
        assert_eq!(
            api.call(0, 20),
            Response::RateLimited {
                reset: 3_600_000,
                outside: true
            }
        );
        assert_eq!(
            api.outside_call(0, 30),
            Response::RateLimited {
                reset: 3_600_000,
                outside: false
            }
        );
    }

    #[test]
    fn a_secondary_limit_refuses_calls_over_the_concurrency() {
        let mut api = one_key(100);
        api.max_concurrent = Some(2);
        assert!(matches!(api.call(0, 0), Response::Served { .. }));
        assert!(matches!(api.call(0, 10), Response::Served { .. }));
        let refused = api.call(0, 20);
        assert_eq!(
            refused,
            Response::SecondaryLimited {
                remaining: 98,
                reset: 3_600_000
            }
        );
        let seen = RateLimit::from_headers(
            api.headers(&refused, 20)
                .iter()
                .map(|(n, v)| (*n, v.as_bytes())),
        );
        assert_eq!(seen.retry_after.map(|d| d.as_secs()), Some(60));
        // The first call is done a second later.
        assert!(matches!(api.call(0, 1000), Response::Served { .. }));
    }

    #[test]
    fn headers_carry_the_platform_clock() {
        let mut api = one_key(10);
        api.skew_ms = -30_000;
        let start = 1_767_225_600_000;
        let r = api.call(0, start);
        let seen = RateLimit::from_headers(
            api.headers(&r, start)
                .iter()
                .map(|(n, v)| (*n, v.as_bytes())),
        );
        assert_eq!(seen.remaining, Some(9));
        assert_eq!(seen.limit, Some(10));
        assert_eq!(seen.reset, Some(Timestamp::from_secs(1_767_229_200 - 30)));
        assert_eq!(seen.server_date, Some(Timestamp::from_secs(1_767_225_570)));
    }
}
