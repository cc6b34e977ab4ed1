//! What an API's response says about its key's quota, and what the worker
//! holding the key should do next.
//!
//! [`RateLimit::from_headers`] reads, from any list of response headers (names
//! in any case):
//!
//! - GitHub's `x-ratelimit-limit`, `x-ratelimit-remaining`, `x-ratelimit-used`,
//!   `x-ratelimit-reset` (Unix seconds) and `x-ratelimit-resource`;
//! - GitLab's `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` (Unix
//!   seconds) or `RateLimit-ResetTime` (an HTTP date);
//! - `Retry-After` (seconds or an HTTP date), sent with GitHub's secondary
//!   limits and with 429s;
//! - `Date`, the platform's clock when it answered.
//!
//! [`RateLimit::verdict`] turns that and the status code into one of three
//! answers ([`Verdict`]): carry on, expire the key until a refresh time, or
//! invalidate it. Refresh times are converted to the worker's clock with the
//! `Date` header, so a local clock that runs ahead of the platform's does not
//! turn a reset into a tight loop of 403s. With the feature `http`,
//! [`RateLimit::from_header_map`] reads an `http::HeaderMap` (the header type
//! of `reqwest`, `hyper` and most Rust HTTP clients).
//!
//! Like the rest of the core this module does no I/O and reads no clock: the
//! time the response arrived is passed in.
//!
//! ```
//! use keyman::ratelimit::{RateLimit, Verdict};
//! use keyman::Timestamp;
//!
//! let now = Timestamp::from_secs(1_767_225_000);
//! let headers = [
//!     ("x-ratelimit-limit", "5000"),
//!     ("x-ratelimit-remaining", "0"),
//!     ("x-ratelimit-reset", "1767225600"),
//!     ("x-ratelimit-resource", "core"),
//!     ("date", "Wed, 31 Dec 2025 23:50:00 GMT"),
//! ];
//! let seen = RateLimit::from_headers(headers.iter().map(|(n, v)| (*n, v.as_bytes())));
//! assert_eq!(seen.remaining, Some(0));
//! assert_eq!(
//!     seen.verdict(403, now),
//!     Verdict::Expire { refresh_at: Timestamp::from_secs(1_767_225_600), secondary: false }
//! );
//! ```

mod http_date;
mod lease;

pub use http_date::{format_http_date, parse_http_date};
pub use lease::{LeaseTerms, LeasedKey, RENEW_MARGIN, Step};

use crate::time::Timestamp;
use std::time::Duration;

/// How long a key rests after a rate-limit answer that says nothing about when
/// to come back (GitHub: "wait at least one minute").
pub const DEFAULT_BACKOFF: Duration = Duration::from_secs(60);

/// The largest difference between the platform's clock and ours that is
/// corrected for; a `Date` header further off is taken as wrong and ignored.
pub const MAX_SKEW: Duration = Duration::from_secs(600);

/// What one response's headers said about the quota of the key that made it.
/// Every field is `None` when the response did not carry it (or carried
/// something unreadable).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateLimit {
    /// Calls allowed per window.
    pub limit: Option<u64>,
    /// Calls left in the current window.
    pub remaining: Option<u64>,
    /// Calls made in the current window (GitHub).
    pub used: Option<u64>,
    /// When the window resets, by the platform's clock.
    pub reset: Option<Timestamp>,
    /// Which of the platform's limits this is (GitHub: `core`, `graphql`,
    /// `search`, ...).
    pub resource: Option<String>,
    /// How long to wait before the next call (`Retry-After` in seconds).
    pub retry_after: Option<Duration>,
    /// When to call again (`Retry-After` as an HTTP date), by the platform's clock.
    pub retry_at: Option<Timestamp>,
    /// The platform's clock when it answered (`Date`).
    pub server_date: Option<Timestamp>,
}

/// What the worker holding a key should do after a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Keep using the key.
    Continue,
    /// The key is rate limited: report it expired until `refresh_at` (on the
    /// worker's clock) and use another.
    Expire {
        /// When the key may be used again, by the worker's clock.
        refresh_at: Timestamp,
        /// Whether this is a secondary limit (too many calls at once or too
        /// fast) rather than the spent quota of the window.
        secondary: bool,
    },
    /// The platform rejected the key itself (HTTP 401): report it invalid.
    Invalidate,
}

impl RateLimit {
    /// Reads the rate-limit headers from `(name, value)` pairs; names are
    /// matched without regard to case, unreadable values are ignored, and of a
    /// header given twice the last one counts.
    pub fn from_headers<'a, I>(headers: I) -> RateLimit
    where
        I: IntoIterator<Item = (&'a str, &'a [u8])>,
    {
        let mut seen = RateLimit::default();
        for (name, value) in headers {
            let Ok(value) = std::str::from_utf8(value) else {
                continue;
            };
            let value = value.trim();
            let number = || value.parse::<u64>().ok();
            match name.to_ascii_lowercase().as_str() {
                "x-ratelimit-limit" | "ratelimit-limit" => seen.limit = number().or(seen.limit),
                "x-ratelimit-remaining" | "ratelimit-remaining" => {
                    seen.remaining = number().or(seen.remaining)
                }
                "x-ratelimit-used" | "ratelimit-observed" => seen.used = number().or(seen.used),
                "x-ratelimit-reset" | "ratelimit-reset" => {
                    seen.reset = number().map(Timestamp::from_secs).or(seen.reset)
                }
                "ratelimit-resettime" if seen.reset.is_none() => {
                    seen.reset = parse_http_date(value);
                }
                "x-ratelimit-resource" if !value.is_empty() => {
                    seen.resource = Some(value.chars().take(64).collect())
                }
                "retry-after" => match number() {
                    Some(secs) => seen.retry_after = Some(Duration::from_secs(secs)),
                    None => seen.retry_at = parse_http_date(value).or(seen.retry_at),
                },
                "date" => seen.server_date = parse_http_date(value).or(seen.server_date),
                _ => {}
            }
        }
        seen
    }

    /// Reads the rate-limit headers of an `http::HeaderMap` (feature `http`).
    #[cfg(feature = "http")]
    pub fn from_header_map(headers: &http::HeaderMap) -> RateLimit {
        RateLimit::from_headers(headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes())))
    }

    /// Whether the response carried any quota information at all.
    pub fn is_known(&self) -> bool {
        self.limit.is_some() || self.remaining.is_some() || self.reset.is_some()
    }

    /// `instant` of the platform's clock on the worker's clock, given that the
    /// response arrived at `now`: shifted by the skew that the `Date` header
    /// shows, when it shows one within [`MAX_SKEW`]. `Date` is rounded down to
    /// the second and sent before the response travelled, so the shift errs
    /// late, never early: a key is not handed out before the platform resets it.
    pub fn to_local(&self, instant: Timestamp, now: Timestamp) -> Timestamp {
        let Some(date) = self.server_date else {
            return instant;
        };
        // Positive when our clock is ahead of the platform's.
        let skew = i128::from(now.as_millis()) - i128::from(date.as_millis());
        if skew.unsigned_abs() > MAX_SKEW.as_millis() {
            return instant;
        }
        let local = i128::from(instant.as_millis()) + skew;
        Timestamp::from_millis(u64::try_from(local.max(0)).unwrap_or(u64::MAX))
    }

    /// What to do after a response with this `status` that arrived at `now`:
    ///
    /// - 401: [`Verdict::Invalidate`].
    /// - 403 or 429 with `Retry-After`: expire until then (a secondary limit,
    ///   unless the window's quota is spent as well).
    /// - 403 or 429 with no calls remaining: expire until the window resets (or
    ///   for [`DEFAULT_BACKOFF`] if the reset time is unknown).
    /// - 429 with nothing else known: expire for [`DEFAULT_BACKOFF`].
    /// - 403 with calls remaining and no `Retry-After`: [`Verdict::Continue`]:
    ///   the key is fine, the resource is forbidden to it (GitHub answers
    ///   secondary limits with `Retry-After` or a spent quota).
    /// - any other status with no calls remaining and a reset time: expire
    ///   until the reset, before the next call is refused.
    /// - anything else: [`Verdict::Continue`].
    pub fn verdict(&self, status: u16, now: Timestamp) -> Verdict {
        let spent = self.remaining == Some(0);
        let until_reset = self.reset.map(|t| self.to_local(t, now));
        let retry = self
            .retry_after
            .map(|d| now.saturating_add(d))
            .or(self.retry_at.map(|t| self.to_local(t, now)));
        let expire = |refresh_at: Timestamp, secondary: bool| Verdict::Expire {
            refresh_at: refresh_at.max(now.saturating_add(Duration::from_secs(1))),
            secondary,
        };
        match status {
            401 => Verdict::Invalidate,
            403 | 429 => match (retry, spent, until_reset) {
                // Spent and told to retry: whichever is later.
                (Some(at), true, Some(reset)) => expire(at.max(reset), false),
                (Some(at), spent, _) => expire(at, !spent),
                (None, true, Some(at)) => expire(at, false),
                (None, true, None) => expire(now.saturating_add(DEFAULT_BACKOFF), false),
                (None, false, _) if status == 429 => {
                    expire(now.saturating_add(DEFAULT_BACKOFF), true)
                }
                (None, false, _) => Verdict::Continue,
            },
            _ => match (spent, until_reset) {
                (true, Some(at)) if at > now => expire(at, false),
                _ => Verdict::Continue,
            },
        }
    }
}

#[cfg(test)]
mod tests;
