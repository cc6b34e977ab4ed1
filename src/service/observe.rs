//! What a worker does after a response of the API ([`Next`]), and the one body
//! of [`KeySource::observe`] that every source shares: judge the response at
//! the source's [`now`](KeySource::now), then keep the key, or report it and
//! get another.

use super::{KeyError, KeySource, require_non_empty};
use crate::mask::Masked;
use crate::protocol::Request;
use crate::ratelimit::{LeasedKey, RateLimit, Step, Verdict};
use crate::time::Timestamp;
use async_trait::async_trait;
use std::time::Duration;
use tokio::time::Instant;

/// What a worker does after a response, as [`KeySource::observe`] decided.
///
/// More cases may come, so a `match` needs a wildcard arm. Its `Debug` output
/// masks the key.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Next {
    /// Keep using the key: the response said nothing against it.
    Keep,
    /// The old key was reported rate limited until `refresh_at` (on the
    /// source's clock); use `key` from now on.
    Expired {
        /// The key to use instead.
        key: String,
        /// When the old key may be used again.
        refresh_at: Timestamp,
        /// Whether the old key hit a secondary limit (too many calls at once
        /// or too fast) rather than the spent quota of its window.
        secondary: bool,
    },
    /// The old key was reported invalid (HTTP 401); use `key` from now on.
    Invalidated {
        /// The key to use instead.
        key: String,
    },
    /// The lease was used up (or about to end) and returned, and a new one
    /// taken: use `key` from now on (it may be the same key).
    Renewed {
        /// The key of the new lease.
        key: String,
    },
}

impl Next {
    /// The key that replaces the old one, or `None` to keep it.
    pub fn new_key(&self) -> Option<&str> {
        match self {
            Next::Keep => None,
            Next::Expired { key, .. } | Next::Invalidated { key } | Next::Renewed { key } => {
                Some(key)
            }
        }
    }

    /// The key to use for the next call: the new one, or `current` when the
    /// old one is kept.
    pub fn into_key(self, current: String) -> String {
        match self {
            Next::Keep => current,
            Next::Expired { key, .. } | Next::Invalidated { key } | Next::Renewed { key } => key,
        }
    }
}

impl std::fmt::Debug for Next {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Next::Keep => f.write_str("Keep"),
            Next::Expired {
                key,
                refresh_at,
                secondary,
            } => f
                .debug_struct("Expired")
                .field("key", &Masked(key))
                .field("refresh_at", refresh_at)
                .field("secondary", secondary)
                .finish(),
            Next::Invalidated { key } => f
                .debug_struct("Invalidated")
                .field("key", &Masked(key))
                .finish(),
            Next::Renewed { key } => f
                .debug_struct("Renewed")
                .field("key", &Masked(key))
                .finish(),
        }
    }
}

/// What [`KeySource::observe`] reports about a key once the response is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Report {
    /// Rate limited until `refresh_at` (on the source's clock).
    Expire {
        /// When the key may be used again.
        refresh_at: Timestamp,
        /// Whether it hit a secondary limit.
        secondary: bool,
    },
    /// Invalid (HTTP 401).
    Invalidate,
}

impl Report {
    /// Checks the platform and key, and judges a response with `status` and
    /// the headers `seen` at `now` ([`RateLimit::verdict`]): `None` to keep the
    /// key.
    pub(crate) fn judge(
        platform: &str,
        key: &str,
        status: u16,
        seen: &RateLimit,
        now: Timestamp,
    ) -> Result<Option<Report>, KeyError> {
        let verdict = seen.verdict(status, now);
        require_non_empty("platform", platform)?;
        require_non_empty("key", key)?;
        Ok(match verdict {
            Verdict::Continue => None,
            Verdict::Expire {
                refresh_at,
                secondary,
            } => Some(Report::Expire {
                refresh_at,
                secondary,
            }),
            Verdict::Invalidate => Some(Report::Invalidate),
        })
    }

    /// What the worker does once the old key was reported and `key` handed
    /// out instead.
    pub(crate) fn next(self, key: String) -> Next {
        match self {
            Report::Expire {
                refresh_at,
                secondary,
            } => Next::Expired {
                key,
                refresh_at,
                secondary,
            },
            Report::Invalidate => Next::Invalidated { key },
        }
    }
}

/// [`KeySource::observe`] (`deadline` `None`: the source's own deadline) and
/// [`KeySource::observe_within`]: judges the response at `source.now()`, then
/// nothing, or EXPIRE / INVALIDATE and another key through the source's own
/// calls (so a deadline that passes is [`KeyError::Timeout`]`(deadline)`).
pub(crate) async fn observe<S: KeySource + ?Sized>(
    source: &S,
    platform: &str,
    key: &str,
    status: u16,
    seen: &RateLimit,
    deadline: Option<Duration>,
) -> Result<Next, KeyError> {
    let Some(report) = Report::judge(platform, key, status, seen, source.now())? else {
        return Ok(Next::Keep);
    };
    let new_key = match (report, deadline) {
        (Report::Expire { refresh_at, .. }, Some(d)) => {
            source.expire_within(platform, key, refresh_at, d).await?
        }
        (Report::Expire { refresh_at, .. }, None) => {
            source.expire(platform, key, refresh_at).await?
        }
        (Report::Invalidate, Some(d)) => source.invalidate_within(platform, key, d).await?,
        (Report::Invalidate, None) => source.invalidate(platform, key).await?,
    };
    Ok(report.next(new_key))
}

/// What a source that speaks the quota extension sends for a leased key
/// (REPORT, EXPIRE and INVALIDATE without asking for another key), so that
/// [`observe_lease`] is written once for the remote client and the embedded
/// pool.
#[async_trait]
pub(crate) trait LeaseWire: KeySource {
    /// Sends `report` (a REPORT, no answer awaited) before `until`; a source
    /// whose orchestrator does not speak the extension sends nothing.
    async fn send_report(&self, report: Request, until: Instant) -> Result<(), KeyError>;
    /// Sends `report` (the REPORT that ends a lease) and waits, until
    /// `until`, for the orchestrator to say it has taken it in: once it
    /// returns, the calls are back for others to lease. A source that handles
    /// reports in place just sends it.
    async fn send_final_report(&self, report: Request, until: Instant) -> Result<(), KeyError> {
        self.send_report(report, until).await
    }
    /// Reports `key` rate limited until `refresh_at`, without asking for another.
    async fn mark_expired(
        &self,
        platform: &str,
        key: &str,
        refresh_at: Timestamp,
        until: Instant,
    ) -> Result<(), KeyError>;
    /// Reports `key` invalid, without asking for another.
    async fn mark_invalid(&self, platform: &str, key: &str, until: Instant)
    -> Result<(), KeyError>;
}

/// [`KeySource::observe_lease`] of the sources that speak the quota
/// extension: counts the call on `leased` and acts on
/// [`LeasedKey::after_response`] at `source.now()`: nothing; or the lease
/// returned (REPORT with `done`), the key reported expired or invalid where the
/// platform said so, and a new lease taken into `leased`, all within
/// `deadline` ([`KeyError::Timeout`]`(deadline)` after it). After an error the
/// lease may have been returned already: take a new one rather than go on.
pub(crate) async fn observe_lease<S: LeaseWire + ?Sized>(
    source: &S,
    leased: &mut LeasedKey,
    status: u16,
    seen: &RateLimit,
    deadline: Duration,
) -> Result<Next, KeyError> {
    require_non_empty("platform", leased.platform())?;
    require_non_empty("key", leased.key())?;
    let step = leased.after_response(status, seen, source.now());
    if step == Step::Keep {
        return Ok(Next::Keep);
    }
    let until = super::deadline_after(deadline);
    let timeout = |e| match e {
        KeyError::Timeout(_) => KeyError::Timeout(deadline),
        other => other,
    };
    let (platform, key) = (leased.platform().to_string(), leased.key().to_string());
    if let Some(report) = leased.report(true) {
        source.send_report(report, until).await.map_err(timeout)?;
    }
    match step {
        Step::Expire { refresh_at, .. } => source
            .mark_expired(&platform, &key, refresh_at, until)
            .await
            .map_err(timeout)?,
        Step::Invalidate => source
            .mark_invalid(&platform, &key, until)
            .await
            .map_err(timeout)?,
        Step::Keep | Step::Renew => {}
    }
    let left = until.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(KeyError::Timeout(deadline));
    }
    let next = source
        .lease_within(&platform, leased.wanted(), left)
        .await
        .map_err(timeout)?;
    let new_key = next.key().to_string();
    *leased = next;
    Ok(match step {
        Step::Expire {
            refresh_at,
            secondary,
        } => Next::Expired {
            key: new_key,
            refresh_at,
            secondary,
        },
        Step::Invalidate => Next::Invalidated { key: new_key },
        Step::Keep | Step::Renew => Next::Renewed { key: new_key },
    })
}

/// [`KeySource::release`] of the sources that speak the quota extension: the
/// REPORT that returns the lease's unused calls, if it has a lease.
pub(crate) async fn release<S: LeaseWire + ?Sized>(
    source: &S,
    leased: LeasedKey,
    deadline: Duration,
) -> Result<(), KeyError> {
    if leased.lease().is_none() {
        return Ok(());
    }
    match leased.report(true) {
        Some(report) => {
            let until = super::deadline_after(deadline);
            source.send_final_report(report, until).await
        }
        None => Ok(()),
    }
}
