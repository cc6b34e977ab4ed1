//! What is known of an account's quota: [`Account`], what a report says
//! ([`Observation`], [`Source`]), the platform's clock ([`Skew`]), the current
//! window ([`QuotaView`]) and one account's state ([`AccountQuota`]).

use super::{MAX_SKEW, MEASURABLE_SKEW};
use crate::mask::Masked;
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Two reset times closer than this are the same window (reset headers are
/// whole seconds, and the skew estimate moves a little between reports).
const SAME_WINDOW_MS: u64 = 2_000;

/// Whose quota a key spends: its own, or that of a named account (PUBLISH's
/// `account`). `Debug` masks the key.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Account {
    /// A key that is its own account.
    Key(String),
    /// An account named by PUBLISH; its keys share one quota.
    Named(String),
}

impl fmt::Debug for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Account::Key(k) => write!(f, "Key({})", Masked(k)),
            Account::Named(n) => write!(f, "Named({n:?})"),
        }
    }
}

/// Where a [`QuotaView`] was learnt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Source {
    /// A worker's REPORT of the platform's rate-limit headers.
    Report,
    /// A probe of the platform's rate-limit endpoint (reported like a REPORT).
    Probe,
    /// The pool's own accounting of the calls it lent.
    Leases,
    /// PUBLISH's `limit`, until a report says otherwise.
    Hint,
}

/// What the platform said about a key's quota: the rate-limit headers of one
/// response. Times are the platform's clock.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observation {
    /// Calls left in the window (`x-ratelimit-remaining`).
    pub remaining: Option<u64>,
    /// Calls per window (`x-ratelimit-limit`).
    pub limit: Option<u64>,
    /// When the window resets (`x-ratelimit-reset`), on the platform's clock.
    pub reset: Option<Timestamp>,
    /// Which quota (`x-ratelimit-resource`: `core`, `search`, `graphql`, …).
    pub resource: Option<String>,
    /// The response's `Date`, on the platform's clock.
    pub server_date: Option<Timestamp>,
}

/// The difference between a platform's clock and ours, learnt from the `Date`
/// of its responses: smoothed, and bounded by [`MAX_SKEW`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skew {
    /// The platform's clock minus ours, in milliseconds.
    pub offset_ms: i64,
    /// How many dates it was learnt from.
    pub samples: u32,
}

impl Skew {
    /// Takes in one `Date` (whole seconds: its middle is used) received at `now`.
    pub fn observe(&mut self, server_date: Timestamp, now: Timestamp) {
        let max = MAX_SKEW.as_millis() as i64;
        let date = i128::from(server_date.as_millis()) + 500;
        let sample = (date - i128::from(now.as_millis())).clamp(-(max as i128), max as i128) as i64;
        if self.samples == 0 {
            self.offset_ms = sample;
        } else {
            self.offset_ms += (sample - self.offset_ms) / 4;
        }
        self.offset_ms = self.offset_ms.clamp(-max, max);
        self.samples = self.samples.saturating_add(1);
    }

    /// This skew within [`MAX_SKEW`] (a saved one is read through it).
    pub fn bounded(self) -> Skew {
        let max = MAX_SKEW.as_millis() as i64;
        Skew {
            offset_ms: self.offset_ms.clamp(-max, max),
            samples: self.samples,
        }
    }

    /// A platform time on our clock.
    pub fn to_local(&self, platform_time: Timestamp) -> Timestamp {
        shift(platform_time, -self.offset_ms)
    }

    /// A reset time of the platform on our clock. With a skew of
    /// [`MEASURABLE_SKEW`] or more, erring late: a `Date` is rounded down to
    /// the second, so a skew learnt from dates may be off by up to half a
    /// second either way, and the reset is then taken that much later; a
    /// window is then never counted reset before the platform resets it.
    ///
    /// Under it, the reset is taken as the platform says it: the clocks agree
    /// as far as whole-second dates can tell, and a worker's EXPIRE gives the
    /// same reset as read. A reset taken up to a second later than the
    /// worker's would move the key's refresh (when a probe or report finds
    /// the window spent) past the time the waiting workers were told for it:
    /// they would come back before it, find it still rate limited and be
    /// handed whatever other key is fresh, all at once.
    pub fn reset_to_local(&self, platform_reset: Timestamp) -> Timestamp {
        if self.samples == 0 || self.offset_ms.unsigned_abs() < MEASURABLE_SKEW.as_millis() as u64 {
            return platform_reset;
        }
        self.to_local(platform_reset)
            .saturating_add(std::time::Duration::from_millis(500))
    }

    /// One of our times on the platform's clock.
    pub fn to_platform(&self, local: Timestamp) -> Timestamp {
        shift(local, self.offset_ms)
    }
}

/// How reset time `a` compares with `b`: times closer than [`SAME_WINDOW_MS`]
/// are the same window.
pub(super) fn window_order(a: Timestamp, b: Timestamp) -> std::cmp::Ordering {
    let (a, b) = (a.as_millis(), b.as_millis());
    if a.saturating_add(SAME_WINDOW_MS) < b {
        std::cmp::Ordering::Less
    } else if a > b.saturating_add(SAME_WINDOW_MS) {
        std::cmp::Ordering::Greater
    } else {
        std::cmp::Ordering::Equal
    }
}

fn shift(t: Timestamp, ms: i64) -> Timestamp {
    if ms >= 0 {
        Timestamp::from_millis(t.as_millis().saturating_add(ms.unsigned_abs()))
    } else {
        Timestamp::from_millis(t.as_millis().saturating_sub(ms.unsigned_abs()))
    }
}

/// What is known of one account's quota window. Times are ours (converted with
/// the account's [`Skew`]). Saved with the state (fields unknown or 0 are left
/// out of the saved form).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaView {
    /// Calls per window, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// Calls left when it was observed.
    pub remaining: u64,
    /// When the window resets, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset: Option<Timestamp>,
    /// The reset time as the platform said it (its clock): the window's name.
    /// Kept when the window has ended and `reset` is `None`, for the next
    /// window's reports are known by a later one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_header: Option<Timestamp>,
    /// When it was observed.
    pub observed_at: Timestamp,
    /// From what.
    pub source: Source,
    /// Calls counted against it since: leases ended after the observation.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub spent: u64,
    /// The latest `Date` of a report of this window, on the platform's clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_date: Option<Timestamp>,
    /// The latest time calls were counted in `spent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spent_at: Option<Timestamp>,
    /// The resource the reports are about (the first one said).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
}

impl QuotaView {
    /// The calls left at `now`: the observed remaining less the calls counted
    /// since, back to the limit once the reset time has come (`None` then if the
    /// limit is unknown).
    pub fn remaining_now(&self, now: Timestamp) -> Option<u64> {
        match self.reset {
            Some(reset) if now >= reset => self.limit,
            _ => Some(self.remaining.saturating_sub(self.spent)),
        }
    }

    /// Whether the window has reset by `now`.
    pub fn has_reset(&self, now: Timestamp) -> bool {
        self.reset.is_some_and(|r| now >= r)
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One account's state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountQuota {
    /// The current window, if anything is known.
    pub view: Option<QuotaView>,
    /// The platform's clock skew, as this account's reports show it.
    pub skew: Skew,
    /// Leases outstanding.
    pub leases: usize,
    /// Calls lent in the leases outstanding.
    pub leased: u64,
}

impl AccountQuota {
    /// Starts the next window once the reset time has come: the limit, with
    /// nothing counted yet and its reset unknown; forgets the view when the
    /// limit is unknown.
    pub fn roll(&mut self, now: Timestamp) {
        let Some(view) = &mut self.view else {
            return;
        };
        let Some(reset) = view.reset.filter(|r| now >= *r) else {
            return;
        };
        match view.limit {
            Some(limit) => {
                view.remaining = limit;
                view.spent = 0;
                view.spent_at = None;
                view.observed_at = reset;
                view.source = Source::Leases;
                // The header stays: it names the window that ended, so that
                // late reports of it are known for what they are.
                view.reset = None;
            }
            None => self.view = None,
        }
    }
}
