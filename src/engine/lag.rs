//! A platform whose clock is behind ours, learnt from EXPIREs alone.
//!
//! A worker that reads the reset time of a 403 (Augur's do) and reports it
//! with EXPIRE gives a time on the platform's clock. When that clock is
//! behind ours, the key is refreshed by our clock before the platform resets
//! its window, every holder gets a 403 at once, and (Augur #3598) each of
//! them reports the same reset time again, now in our past: a tight loop of
//! 403s until the platform's clock reaches it. Workers that send no `Date`
//! give no other sign of the skew, and probes are off by default.
//!
//! Such an EXPIRE is the sign: the platform refused the key although its
//! reset time has passed by our clock, so the platform's clock is behind ours
//! by at least that much. The engine then keeps the key expired for as long
//! again (each such EXPIRE doubles how far past the reset the key waits,
//! from 1 s), and learns the lag of the platform: twice the largest such
//! gap, within [`MAX_SKEW`](crate::quota::MAX_SKEW). Later EXPIREs on the
//! platform are moved that much later when the lag is at least
//! [`MEASURABLE_SKEW`](crate::quota::MEASURABLE_SKEW), so the next windows
//! refresh after the platform's reset, erring late as the quota views do. A
//! lag not confirmed by another such EXPIRE for [`LAG_MEMORY`] is forgotten
//! (a platform's clock may be set right). An EXPIRE whose reset is further in
//! the past than `MAX_SKEW` teaches nothing and changes nothing, as before.

use crate::quota::{MAX_SKEW, MEASURABLE_SKEW};
use crate::time::Timestamp;
use std::collections::BTreeMap;
use std::time::Duration;

/// How long a learnt lag is kept without another EXPIRE that confirms it.
pub const LAG_MEMORY: Duration = Duration::from_secs(6 * 60 * 60);

/// The least a key refused after its reset time is kept expired.
const MIN_HOLD: Duration = Duration::from_secs(1);

/// What was learnt of one platform.
#[derive(Debug, Clone, Copy)]
struct Learnt {
    /// How far behind ours the platform's clock is taken to be.
    lag: Duration,
    /// When an EXPIRE last showed it.
    at: Timestamp,
}

/// The lag learnt per platform: the engine asks only for keys of the pool,
/// so there is at most one entry per platform of the pool.
#[derive(Debug, Default)]
pub(super) struct PlatformLags {
    learnt: BTreeMap<String, Learnt>,
}

impl PlatformLags {
    /// The refresh time an EXPIRE of `platform` with `refresh_at` takes at
    /// `now`: later by the platform's lag when one is known, or (a reset
    /// already passed by our clock, by less than [`MAX_SKEW`]) as far past
    /// `now` as it is behind it, at least [`MIN_HOLD`], and the lag learnt.
    ///
    /// Also returns the platform's lag when this EXPIRE made the lag applied
    /// to its EXPIREs grow (to [`MEASURABLE_SKEW`] or more), for the log.
    pub(super) fn refresh_at(
        &mut self,
        now: Timestamp,
        platform: &str,
        refresh_at: Timestamp,
    ) -> (Timestamp, Option<Duration>) {
        let applied = self.lag(now, platform).filter(|&l| l >= MEASURABLE_SKEW);
        if refresh_at > now {
            return (
                applied.map_or(refresh_at, |lag| refresh_at.saturating_add(lag)),
                None,
            );
        }
        let behind = now.saturating_since(refresh_at);
        if behind > MAX_SKEW {
            return (refresh_at, None);
        }
        let known = self.lag(now, platform).unwrap_or_default();
        let lag = behind.saturating_mul(2).min(MAX_SKEW).max(known);
        let entry = Learnt { lag, at: now };
        match self.learnt.get_mut(platform) {
            Some(learnt) => *learnt = entry,
            None => {
                self.learnt.insert(platform.to_owned(), entry);
            }
        }
        let grew = lag >= MEASURABLE_SKEW && applied.is_none_or(|old| lag > old);
        (
            now.saturating_add(behind.max(MIN_HOLD)),
            grew.then_some(lag),
        )
    }

    /// The lag of `platform` at `now`, if one was learnt within [`LAG_MEMORY`].
    pub(super) fn lag(&self, now: Timestamp, platform: &str) -> Option<Duration> {
        self.learnt
            .get(platform)
            .filter(|l| now.saturating_since(l.at) <= LAG_MEMORY)
            .map(|l| l.lag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 1_767_225_600;

    fn at(secs: f64) -> Timestamp {
        Timestamp::from_millis(T * 1000 + (secs * 1000.0) as u64)
    }

    #[test]
    fn a_reset_ahead_with_nothing_learnt_is_taken_as_it_is() {
        let mut lags = PlatformLags::default();
        assert_eq!(lags.refresh_at(at(0.0), "p", at(30.0)), (at(30.0), None));
        assert_eq!(lags.lag(at(0.0), "p"), None);
    }

    #[test]
    fn a_reset_already_passed_keeps_the_key_expired_as_long_again_and_teaches_the_lag() {
        let mut lags = PlatformLags::default();
        // Refused 0.2 s after its reset by our clock: held at least 1 s.
        // Not yet a lag to act on (0.4 s): nothing to report.
        assert_eq!(lags.refresh_at(at(0.2), "p", at(0.0)), (at(1.2), None));
        // Refused again 1.2 s after it: held 1.2 s more.
        let lag = Duration::from_millis(2400);
        assert_eq!(lags.refresh_at(at(1.2), "p", at(0.0)), (at(2.4), Some(lag)));
        assert_eq!(lags.lag(at(1.2), "p"), Some(Duration::from_millis(2400)));
        // The next window's EXPIRE is moved by the lag; another platform's is not.
        assert_eq!(
            lags.refresh_at(at(10.0), "p", at(3600.0)),
            (at(3602.4), None)
        );
        assert_eq!(
            lags.refresh_at(at(10.0), "q", at(3600.0)),
            (at(3600.0), None)
        );
        // A smaller gap later changes nothing to report.
        assert_eq!(lags.refresh_at(at(3601.0), "p", at(3600.5)).1, None);
    }

    #[test]
    fn a_lag_under_a_second_is_not_applied() {
        let mut lags = PlatformLags::default();
        lags.refresh_at(at(0.3), "p", at(0.0));
        assert_eq!(lags.lag(at(0.3), "p"), Some(Duration::from_millis(600)));
        assert_eq!(
            lags.refresh_at(at(1.0), "p", at(3600.0)),
            (at(3600.0), None)
        );
    }

    #[test]
    fn a_lag_is_the_largest_seen_and_is_forgotten_after_its_memory() {
        let mut lags = PlatformLags::default();
        lags.refresh_at(at(20.0), "p", at(0.0));
        lags.refresh_at(at(21.0), "p", at(20.0));
        assert_eq!(lags.lag(at(21.0), "p"), Some(Duration::from_secs(40)));
        let later = at(21.0).saturating_add(LAG_MEMORY + Duration::from_secs(1));
        assert_eq!(lags.lag(later, "p"), None);
        let reset = later.saturating_add(Duration::from_secs(60));
        assert_eq!(lags.refresh_at(later, "p", reset), (reset, None));
    }

    #[test]
    fn a_reset_further_back_than_any_believable_skew_teaches_nothing() {
        let mut lags = PlatformLags::default();
        let now = at(0.0);
        let long_ago = Timestamp::from_secs(T - 3600);
        assert_eq!(lags.refresh_at(now, "p", long_ago), (long_ago, None));
        assert_eq!(
            lags.refresh_at(now, "p", Timestamp::from_secs(0)),
            (Timestamp::from_secs(0), None)
        );
        assert_eq!(lags.lag(now, "p"), None);
    }

    #[test]
    fn the_lag_is_bounded() {
        let mut lags = PlatformLags::default();
        let now = at(0.0).saturating_add(MAX_SKEW);
        lags.refresh_at(now, "p", at(0.0));
        assert_eq!(lags.lag(now, "p"), Some(MAX_SKEW));
    }
}
