//! What a worker does after a response of the API ([`Next`]), and the one body
//! of [`KeySource::observe`] that every source shares: judge the response at
//! the source's [`now`](KeySource::now), then keep the key, or report it and
//! get another.

use super::{KeyError, KeySource, require_non_empty};
use crate::mask::Masked;
use crate::ratelimit::{RateLimit, Verdict};
use crate::time::Timestamp;
use std::time::Duration;

/// What a worker does after a response, as [`KeySource::observe`] decided.
///
/// More cases may come with the quota extension (leases renewed or returned),
/// so a `match` needs a wildcard arm. Its `Debug` output masks the key.
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
}

impl Next {
    /// The key that replaces the old one, or `None` to keep it.
    pub fn new_key(&self) -> Option<&str> {
        match self {
            Next::Keep => None,
            Next::Expired { key, .. } | Next::Invalidated { key } => Some(key),
        }
    }

    /// The key to use for the next call: the new one, or `current` when the
    /// old one is kept.
    pub fn into_key(self, current: String) -> String {
        match self {
            Next::Keep => current,
            Next::Expired { key, .. } | Next::Invalidated { key } => key,
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
