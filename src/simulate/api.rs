//! The simulated rate-limited API, GitHub-style: a quota per key per window, a
//! window that opens with the first call after the previous one reset and
//! resets at a whole second, 403 over quota, 401 for a bad key. It checks every
//! call it serves against the quota itself.

/// Rounds a time in milliseconds up to a whole second.
pub(super) fn ceil_to_second(ms: u64) -> u64 {
    ms.div_ceil(1000).saturating_mul(1000)
}

/// What the simulated API answers one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Response {
    /// 2xx, with the calls remaining in the window and the window's reset time.
    Served { remaining: u64, reset: u64 },
    /// 403: over quota until `reset`.
    RateLimited { reset: u64 },
    /// 401: the key is bad.
    Unauthorized,
}

/// One key as the API sees it.
#[derive(Debug, Clone)]
pub(super) struct ApiKey {
    pub(super) valid: bool,
    /// The reset time of the current window, if one was opened.
    pub(super) reset: Option<u64>,
    /// Calls served in the current window.
    pub(super) used: u64,
}

/// The simulated rate-limited API.
#[derive(Debug)]
pub(super) struct Api {
    pub(super) keys: Vec<ApiKey>,
    pub(super) quota: u64,
    pub(super) window_ms: u64,
    pub(super) over_quota_successes: u64,
    pub(super) invalid_key_successes: u64,
}

impl Api {
    /// The window a call at `at` falls in, opened (GitHub-style, at the first call
    /// after the previous window's reset) if needed.
    fn window_at(&mut self, key: usize, at: u64) -> &mut ApiKey {
        let window_ms = self.window_ms;
        let k = &mut self.keys[key];
        if k.reset.is_none_or(|reset| at >= reset) {
            k.reset = Some(ceil_to_second(at.saturating_add(window_ms)));
            k.used = 0;
        }
        k
    }

    /// One call with `key` at `at`.
    pub(super) fn call(&mut self, key: usize, at: u64) -> Response {
        if !self.keys[key].valid {
            return Response::Unauthorized;
        }
        let quota = self.quota;
        let k = self.window_at(key, at);
        let reset = k.reset.unwrap_or(at);
        if k.used >= quota {
            return Response::RateLimited { reset };
        }
        k.used += 1;
        Response::Served {
            remaining: quota - k.used,
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
        let k = self.window_at(key, first);
        debug_assert!(k.reset.is_some_and(|reset| last < reset));
        let before = k.used;
        k.used = k.used.saturating_add(count);
        let over = k.used.saturating_sub(quota.max(before));
        self.over_quota_successes += over;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_counts_calls_over_quota_and_answers_403_then_resets() {
        let mut api = Api {
            keys: vec![ApiKey {
                valid: true,
                reset: None,
                used: 0,
            }],
            quota: 3,
            window_ms: 3_600_000,
            over_quota_successes: 0,
            invalid_key_successes: 0,
        };
        assert_eq!(
            api.call(0, 500),
            Response::Served {
                remaining: 2,
                reset: 3_601_000
            }
        );
        api.serve_batch(0, 600, 700, 2);
        assert_eq!(api.over_quota_successes, 0);
        assert_eq!(api.call(0, 800), Response::RateLimited { reset: 3_601_000 });
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
}
