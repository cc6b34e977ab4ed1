//! [`LeasedKey`]: a key a worker uses, with the calls lent with it, and what the
//! worker does after each response so that it never makes more calls than it
//! was lent.
//!
//! An orchestrator that speaks the quota extension answers a NEW with `lease: n`
//! with a key and `calls: m` (at most `n`): the worker may make `m` calls with
//! the key before it must return the lease and take another. Calls lent are
//! counted against the key's account until the lease ends, so workers holding
//! leases never overdraw a key together, nor take it below its floor. An
//! orchestrator that does not (Augur's) answers with a key alone: the key then
//! has no lease, and the worker uses it until the platform refuses a call, as
//! before.
//!
//! [`LeasedKey::after_response`] is the worker's whole policy, pure like the
//! rest of the core: the service layer (`KeySource::observe_lease`) sends what
//! it says (a REPORT that returns the lease, an EXPIRE or INVALIDATE, a NEW for
//! the next lease).

use super::{RateLimit, Verdict};
use crate::mask::Masked;
use crate::protocol::Request;
use crate::quota::{LeaseReturn, Observation};
use crate::time::Timestamp;
use std::fmt;
use std::time::Duration;

/// A lease is returned and another taken this long before it ends, so that no
/// call is made with a lease that ended on the way to the platform.
pub const RENEW_MARGIN: Duration = Duration::from_secs(5);

/// The terms of a lease, as the orchestrator granted them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTerms {
    /// The lease's id (`lease_id`).
    pub id: u64,
    /// Calls lent (`calls`).
    pub calls: u64,
    /// When the lease ends and counts as fully used (`lease_until`), by the
    /// orchestrator's clock.
    pub until: Timestamp,
}

/// A key a worker uses, with the lease it came with (none when the
/// orchestrator lends no calls). `Debug` masks the key.
#[derive(Clone, PartialEq, Eq)]
pub struct LeasedKey {
    platform: String,
    key: String,
    wanted: u64,
    lease: Option<LeaseTerms>,
    used: u64,
    seen: Option<RateLimit>,
}

/// What a worker does after a response made with a [`LeasedKey`], as
/// [`LeasedKey::after_response`] decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Make the next call with the same key and lease.
    Keep,
    /// The lease is used up or about to end: return it (a REPORT with `done`)
    /// and take another (maybe of the same key).
    Renew,
    /// The key is rate limited: return the lease, report the key expired
    /// until `refresh_at` (the worker's clock) and take another lease.
    Expire {
        /// When the key may be used again.
        refresh_at: Timestamp,
        /// Whether it is a secondary limit rather than the window's quota.
        secondary: bool,
    },
    /// The platform rejected the key (HTTP 401): return the lease, report the
    /// key invalid and take another.
    Invalidate,
}

impl LeasedKey {
    /// `key` of `platform`, lent with `lease` (`None`: a plain key) to a
    /// worker that asked for `wanted` calls (and asks for as many again when it
    /// renews the lease).
    pub fn new(
        platform: impl Into<String>,
        key: impl Into<String>,
        wanted: u64,
        lease: Option<LeaseTerms>,
    ) -> Self {
        Self {
            platform: platform.into(),
            key: key.into(),
            wanted,
            lease,
            used: 0,
            seen: None,
        }
    }

    /// The key, for the next call.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The key, given up by the worker's handle.
    pub fn into_key(self) -> String {
        self.key
    }

    /// The platform it is a key of.
    pub fn platform(&self) -> &str {
        &self.platform
    }

    /// How many calls the worker asks for with each lease.
    pub fn wanted(&self) -> u64 {
        self.wanted
    }

    /// The lease, if the orchestrator lent calls with the key.
    pub fn lease(&self) -> Option<&LeaseTerms> {
        self.lease.as_ref()
    }

    /// Calls made with the lease so far (counted by
    /// [`after_response`](Self::after_response)).
    pub fn used(&self) -> u64 {
        self.used
    }

    /// Calls the lease still allows; `None` without a lease (no limit but the
    /// platform's).
    pub fn calls_left(&self) -> Option<u64> {
        self.lease.map(|l| l.calls.saturating_sub(self.used))
    }

    /// The rate-limit headers of the last response, if one was seen.
    pub fn last_seen(&self) -> Option<&RateLimit> {
        self.seen.as_ref()
    }

    /// Counts one call made with the key, whose response had `status` and the
    /// rate-limit headers `seen` and arrived at `now` (the worker's clock, the
    /// one the lease's end is compared with), and says what to do next:
    ///
    /// - the platform's verdict first ([`RateLimit::verdict`]): a 401
    ///   invalidates, a rate limit expires the key;
    /// - else, with a lease: [`Step::Renew`] once its calls are used up or it
    ///   ends within [`RENEW_MARGIN`];
    /// - else [`Step::Keep`].
    pub fn after_response(&mut self, status: u16, seen: &RateLimit, now: Timestamp) -> Step {
        self.used = self.used.saturating_add(1);
        self.seen = Some(seen.clone());
        match seen.verdict(status, now) {
            Verdict::Invalidate => Step::Invalidate,
            Verdict::Expire {
                refresh_at,
                secondary,
            } => Step::Expire {
                refresh_at,
                secondary,
            },
            Verdict::Continue => match self.lease {
                Some(l) if self.used >= l.calls => Step::Renew,
                Some(l) if now.saturating_add(RENEW_MARGIN) >= l.until => Step::Renew,
                _ => Step::Keep,
            },
        }
    }

    /// The REPORT that tells the orchestrator what the last response said and,
    /// with `done`, returns the lease (its unused calls go back to the
    /// account). `None` when there is nothing to say: no lease and no
    /// rate-limit headers seen.
    pub fn report(&self, done: bool) -> Option<Request> {
        let observation = self
            .seen
            .as_ref()
            .map(RateLimit::observation)
            .unwrap_or_default();
        let lease = self.lease.map(|l| LeaseReturn {
            lease_id: l.id,
            used: Some(self.used.min(l.calls)),
            done,
        });
        let said = observation.remaining.is_some()
            || observation.limit.is_some()
            || observation.server_date.is_some();
        if lease.is_none() && !said {
            return None;
        }
        Some(Request::Report {
            key: self.key.clone(),
            platform: self.platform.clone(),
            observation,
            lease,
            reply: None,
        })
    }
}

impl fmt::Debug for LeasedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeasedKey")
            .field("platform", &self.platform)
            .field("key", &Masked(&self.key))
            .field("wanted", &self.wanted)
            .field("lease", &self.lease)
            .field("used", &self.used)
            .finish()
    }
}

impl RateLimit {
    /// What these headers say about the key's quota, as a REPORT carries it
    /// ([`Observation`]): times stay on the platform's clock (the orchestrator
    /// converts them with the skew it learns from `server_date`).
    pub fn observation(&self) -> Observation {
        Observation {
            remaining: self.remaining,
            limit: self.limit,
            reset: self.reset,
            resource: self.resource.clone(),
            server_date: self.server_date,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = Timestamp::from_secs(1_767_225_000);

    fn leased(calls: u64, until: Timestamp) -> LeasedKey {
        LeasedKey::new(
            "github_rest",
            "ghp_secret_token_1",
            100,
            Some(LeaseTerms {
                id: 7,
                calls,
                until,
            }),
        )
    }

    fn headers(remaining: u64) -> RateLimit {
        RateLimit {
            limit: Some(5000),
            remaining: Some(remaining),
            reset: Some(Timestamp::from_secs(1_767_225_600)),
            resource: Some("core".into()),
            server_date: Some(NOW),
            ..RateLimit::default()
        }
    }

    #[test]
    fn a_lease_is_renewed_after_exactly_its_calls() {
        let mut k = leased(3, NOW.saturating_add(Duration::from_secs(600)));
        assert_eq!(k.after_response(200, &headers(100), NOW), Step::Keep);
        assert_eq!(k.after_response(200, &headers(99), NOW), Step::Keep);
        assert_eq!(k.calls_left(), Some(1));
        assert_eq!(k.after_response(200, &headers(98), NOW), Step::Renew);
        assert_eq!(k.calls_left(), Some(0));
    }

    #[test]
    fn a_lease_about_to_end_is_renewed_before_its_calls_are_used() {
        let until = NOW.saturating_add(Duration::from_secs(60));
        let mut k = leased(100, until);
        assert_eq!(k.after_response(200, &headers(100), NOW), Step::Keep);
        let late = Timestamp::from_secs(until.as_secs() - RENEW_MARGIN.as_secs());
        assert_eq!(k.after_response(200, &headers(99), late), Step::Renew);
    }

    #[test]
    fn the_platform_verdict_comes_first() {
        let mut k = leased(100, NOW.saturating_add(Duration::from_secs(600)));
        assert_eq!(
            k.after_response(401, &RateLimit::default(), NOW),
            Step::Invalidate
        );
        let mut k = leased(100, NOW.saturating_add(Duration::from_secs(600)));
        assert_eq!(
            k.after_response(403, &headers(0), NOW),
            Step::Expire {
                refresh_at: Timestamp::from_secs(1_767_225_600),
                secondary: false
            }
        );
    }

    #[test]
    fn a_plain_key_is_kept_until_the_platform_says_otherwise() {
        let mut k = LeasedKey::new("github_rest", "ghp_x", 100, None);
        for remaining in (1..50).rev() {
            assert_eq!(k.after_response(200, &headers(remaining), NOW), Step::Keep);
        }
        assert_eq!(k.calls_left(), None);
    }

    #[test]
    fn the_report_returns_the_lease_with_the_calls_used_and_the_headers() {
        let mut k = leased(10, NOW.saturating_add(Duration::from_secs(600)));
        k.after_response(200, &headers(4321), NOW);
        k.after_response(200, &headers(4320), NOW);
        let Some(Request::Report {
            observation, lease, ..
        }) = k.report(true)
        else {
            panic!("a leased key always has a report");
        };
        assert_eq!(observation.remaining, Some(4320));
        assert_eq!(observation.resource.as_deref(), Some("core"));
        assert_eq!(
            lease,
            Some(LeaseReturn {
                lease_id: 7,
                used: Some(2),
                done: true
            })
        );
    }

    #[test]
    fn a_plain_key_with_no_headers_has_nothing_to_report() {
        let mut k = LeasedKey::new("github_rest", "ghp_x", 100, None);
        assert!(k.report(false).is_none());
        k.after_response(200, &RateLimit::default(), NOW);
        assert!(k.report(false).is_none());
        k.after_response(200, &headers(10), NOW);
        assert!(k.report(false).is_some());
    }

    #[test]
    fn debug_masks_the_key() {
        let k = leased(1, NOW);
        assert!(!format!("{k:?}").contains("ghp_secret_token_1"));
    }
}
