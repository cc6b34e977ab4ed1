//! The quota extension's messages as the harness sends them: NEW with
//! `lease` ([`LeaseNew`]), REPORT ([`Report`], about a lease that is live,
//! stale or made up) and PUBLISH with `account` and `limit`
//! ([`AccountPublish`]), and the [`Context`] their bytes depend on.

use super::operation::{Field, Requester, pick};
use super::{KEYS, PLATFORMS};
use serde_json::Value;

/// The named accounts PUBLISH puts keys in ([`pick`]: the last one, the
/// key's own account, about half of the time).
pub const ACCOUNTS: [&str; 3] = ["alice", "bob", ""];

/// The resources a REPORT names.
pub const RESOURCES: [&str; 2] = ["core", "search"];

/// A lease the engine has lent and not yet ended, as a REPORT can name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveLease {
    /// Its id.
    pub id: u64,
    /// Its platform.
    pub platform: String,
    /// Its key.
    pub key: String,
}

/// What a message's bytes depend on besides the message: the time, and the
/// leases the engine has lent (so that a REPORT can name a live one).
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    /// The virtual time, Unix epoch milliseconds.
    pub now_millis: u64,
    /// The leases outstanding, by id.
    pub live: &'a [LiveLease],
    /// The id of the last lease lent (0: none yet).
    pub last_id: u64,
}

impl Context<'_> {
    /// At `now_millis`, with no lease lent.
    pub fn at(now_millis: u64) -> Context<'static> {
        Context {
            now_millis,
            live: &[],
            last_id: 0,
        }
    }

    fn now_secs(&self) -> i64 {
        i64::try_from(self.now_millis / 1000).unwrap_or(i64::MAX)
    }
}

/// NEW with `lease`.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq)]
pub struct LeaseNew {
    /// Which platform.
    pub platform: u8,
    /// Who asks.
    pub requester: Option<Requester>,
    /// The `request_id`, if any.
    pub request_id: Option<u16>,
    /// `hold_ms`, in quarters of a second.
    pub hold: Option<u8>,
    /// `lease`: the calls wanted (0 is refused with `bad_request`).
    pub want: u8,
}

/// Which lease a REPORT is about.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseRef {
    /// The n-th outstanding lease (modulo their number; a made-up id when
    /// there is none), with its own key and platform unless `other_key`.
    Live {
        /// Which one.
        n: u8,
        /// Whether the REPORT names the message's key and platform instead.
        other_key: bool,
    },
    /// The n-th latest id lent that is no longer outstanding (a made-up one
    /// when there is none).
    Stale(u8),
    /// An id never lent: this many after the last one.
    MadeUp(u16),
}

/// REPORT.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// Which key (unless the lease's).
    pub key: u8,
    /// Which platform (unless the lease's).
    pub platform: u8,
    /// The lease it is about: `lease_id`.
    pub lease: Option<LeaseRef>,
    /// `remaining`.
    pub remaining: Option<u8>,
    /// `limit` (modulo 1 000).
    pub limit: Option<u16>,
    /// `reset`: this many seconds after the platform's now (before it if
    /// negative: a window that has ended).
    pub reset_in: Option<i16>,
    /// `server_date`: the platform's clock this many tens of seconds off
    /// ours (beyond the believed bound of 5 minutes too).
    pub skew: Option<i8>,
    /// `resource`, of [`RESOURCES`].
    pub resource: Option<u8>,
    /// `used`.
    pub used: Option<u8>,
    /// `done`.
    pub done: bool,
    /// `requester_id`: with a `request_id`, the REPORT is answered.
    pub requester: Option<Requester>,
    /// `request_id`.
    pub request_id: Option<u16>,
}

/// PUBLISH with `account` and `limit` (without either it is a plain PUBLISH).
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq)]
pub struct AccountPublish {
    /// Which key.
    pub key: u8,
    /// Which platform.
    pub platform: u8,
    /// `account`, of [`ACCOUNTS`] (left out for the empty one).
    pub account: Option<u8>,
    /// `limit` (modulo 1 000).
    pub limit: Option<u16>,
}

type Put<'m> = dyn FnMut(Field, Value) + 'm;

impl LeaseNew {
    pub(super) fn fill(&self, put: &mut Put<'_>) -> &'static str {
        put(Field::KeyPlatform, pick(&PLATFORMS, self.platform).into());
        if let Some(r) = self.requester {
            put(Field::RequesterId, r.to_json());
        }
        if let Some(id) = self.request_id {
            put(Field::RequestId, id.into());
        }
        if let Some(h) = self.hold {
            put(Field::HoldMs, (u64::from(h) * 250).into());
        }
        put(Field::Lease, self.want.into());
        "NEW"
    }
}

impl Report {
    pub(super) fn fill(&self, cx: &Context<'_>, put: &mut Put<'_>) -> &'static str {
        let mut key = pick(&KEYS, self.key).to_string();
        let mut platform = pick(&PLATFORMS, self.platform).to_string();
        let now = cx.now_secs();
        if let Some(lease) = self.lease {
            let id = match lease {
                LeaseRef::Live { n, other_key } => match cx.live {
                    [] => cx.last_id.saturating_add(1),
                    live => {
                        let l = &live[usize::from(n) % live.len()];
                        if !other_key {
                            key.clone_from(&l.key);
                            platform.clone_from(&l.platform);
                        }
                        l.id
                    }
                },
                LeaseRef::Stale(n) => (1..=cx.last_id)
                    .rev()
                    .filter(|id| cx.live.iter().all(|l| l.id != *id))
                    .nth(usize::from(n))
                    .unwrap_or(cx.last_id.saturating_add(7)),
                LeaseRef::MadeUp(n) => cx.last_id.saturating_add(1 + u64::from(n)),
            };
            put(Field::LeaseId, id.into());
        }
        put(Field::KeyStr, key.into());
        put(Field::KeyPlatform, platform.into());
        let skew = self.skew.map_or(0, |s| i64::from(s) * 10);
        if let Some(s) = self.skew {
            put(Field::ServerDate, secs(now + i64::from(s) * 10));
        }
        if let Some(r) = self.remaining {
            put(Field::Remaining, r.into());
        }
        if let Some(l) = self.limit {
            put(Field::Limit, (l % 1000).into());
        }
        if let Some(r) = self.reset_in {
            put(Field::Reset, secs(now + skew + i64::from(r)));
        }
        if let Some(r) = self.resource {
            put(
                Field::Resource,
                RESOURCES[usize::from(r) % RESOURCES.len()].into(),
            );
        }
        if let Some(u) = self.used {
            put(Field::Used, u.into());
        }
        if self.done {
            put(Field::Done, true.into());
        }
        if let Some(r) = self.requester {
            put(Field::RequesterId, r.to_json());
        }
        if let Some(id) = self.request_id {
            put(Field::RequestId, id.into());
        }
        "REPORT"
    }
}

impl AccountPublish {
    pub(super) fn fill(&self, put: &mut Put<'_>) -> &'static str {
        put(Field::KeyStr, pick(&KEYS, self.key).into());
        put(Field::KeyPlatform, pick(&PLATFORMS, self.platform).into());
        if let Some(a) = self.account.map(|a| pick(&ACCOUNTS, a))
            && !a.is_empty()
        {
            put(Field::Account, a.into());
        }
        if let Some(l) = self.limit {
            put(Field::Limit, (l % 1000).into());
        }
        "PUBLISH"
    }
}

/// Unix epoch seconds, never negative.
fn secs(s: i64) -> Value {
    Value::from(s.max(0))
}
