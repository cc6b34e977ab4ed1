//! [`Forecast`]: the calls a platform has left, how fast they are spent lately
//! (its burn rate) and when they run out.

use super::{BURN_WINDOW, PlatformQuota, Quotas};
use crate::time::Timestamp;

/// The forecast of one platform, for STATUS.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Forecast {
    /// The known remaining calls (accounts with a view), if any is known.
    pub remaining: Option<u64>,
    /// Calls lent in leases outstanding.
    pub leased: u64,
    /// Calls spent per hour lately, if any were seen.
    pub burn_per_hour: Option<u64>,
    /// When the known remaining calls run out at that rate.
    pub dry_at: Option<Timestamp>,
}

impl PlatformQuota {
    pub(super) fn record_burn(&mut self, now: Timestamp, calls: u64) {
        if calls == 0 {
            return;
        }
        self.burn.push_back((now, calls));
        self.trim_burn(now);
    }

    fn trim_burn(&mut self, now: Timestamp) {
        let from = Timestamp::from_millis(
            now.as_millis()
                .saturating_sub(BURN_WINDOW.as_millis() as u64),
        );
        while self.burn.front().is_some_and(|(t, _)| *t < from) {
            self.burn.pop_front();
        }
    }
}

impl Quotas {
    /// The known remaining calls, calls lent, burn rate and dry time of
    /// `platform` at `now`.
    pub fn forecast(&mut self, now: Timestamp, platform: &str) -> Forecast {
        let Some(p) = self.platforms.get_mut(platform) else {
            return Forecast::default();
        };
        p.trim_burn(now);
        let mut remaining = None;
        let mut leased = 0u64;
        for state in p.accounts.values() {
            leased = leased.saturating_add(state.leased);
            if let Some(r) = state.view.as_ref().and_then(|v| v.remaining_now(now)) {
                let left = r.saturating_sub(state.leased);
                remaining = Some(remaining.unwrap_or(0u64).saturating_add(left));
            }
        }
        let burnt: u64 = p.burn.iter().map(|(_, c)| *c).sum();
        let since = p.burn_since;
        let burn_per_hour = p.burn.front().map(|(first, _)| {
            let from = since.unwrap_or(*first).min(*first);
            let span = now
                .as_millis()
                .saturating_sub(from.as_millis())
                .clamp(60_000, BURN_WINDOW.as_millis() as u64);
            burnt.saturating_mul(3_600_000) / span
        });
        let dry_at = match (remaining, burn_per_hour) {
            (Some(r), Some(rate)) if rate > 0 => {
                let ms = u128::from(r) * 3_600_000 / u128::from(rate);
                Some(Timestamp::from_millis(
                    now.as_millis()
                        .saturating_add(u64::try_from(ms).unwrap_or(u64::MAX)),
                ))
            }
            _ => None,
        };
        Forecast {
            remaining,
            leased,
            burn_per_hour,
            dry_at,
        }
    }
}
