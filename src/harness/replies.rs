//! What a message asks for ([`Asked`]: an answer or none, where, and the
//! lease a REPORT ends), as the protocol decodes it, and what an answer to
//! NEW may be ([`check_new_reply`]): the checker's reading of the protocol.

use super::invariants::Violation;
use super::leases::{Ending, check_handed_out};
use crate::engine::Engine;
use crate::protocol::{
    Channels, DEFAULT_MAX_PAYLOAD, ErrorCode, Rejected, Reply, ReplyTo, Request, decode_announce,
    decode_request,
};
use crate::time::Timestamp;
use rand_core::Rng;

fn ensure(ok: bool, what: impl FnOnce() -> String) -> Result<(), Violation> {
    match ok {
        true => Ok(()),
        false => Err(Violation(what())),
    }
}

/// What a message asks for, as the protocol decodes it.
#[derive(Debug)]
pub(super) enum Expect {
    /// A key (NEW), with `lease` calls if asked.
    Key {
        platform: String,
        lease: Option<u64>,
        hold_ms: Option<u64>,
    },
    /// `{"ok": true}` (a REPORT with `request_id`).
    Ok,
    /// An error: the message is rejected and has a reply address.
    Error,
    /// The answer to an admin's question.
    Answer,
}

/// What a message asks for, where the answer goes, and the lease a REPORT
/// ends.
pub(super) struct Asked {
    pub(super) expects: Option<Expect>,
    pub(super) address: Option<ReplyTo>,
    pub(super) ending: Option<Ending>,
}

impl Asked {
    pub(super) fn of(channels: &Channels, channel: &str, payload: &[u8]) -> Asked {
        let nothing = Asked {
            expects: None,
            address: None,
            ending: None,
        };
        let rejected = |rej: Rejected| Asked {
            expects: rej.reply.is_some().then_some(Expect::Error),
            address: rej.reply,
            ending: None,
        };
        if channel == channels.request {
            match decode_request(payload, DEFAULT_MAX_PAYLOAD) {
                Ok(Request::New {
                    platform,
                    reply,
                    hold_ms,
                }) => Asked {
                    expects: Some(Expect::Key {
                        platform,
                        lease: None,
                        hold_ms,
                    }),
                    address: Some(reply),
                    ending: None,
                },
                Ok(Request::Lease {
                    platform,
                    reply,
                    lease,
                    hold_ms,
                }) => Asked {
                    expects: Some(Expect::Key {
                        platform,
                        lease: Some(lease),
                        hold_ms,
                    }),
                    address: Some(reply),
                    ending: None,
                },
                Ok(Request::Report {
                    key,
                    platform,
                    lease,
                    reply,
                    ..
                }) => Asked {
                    expects: reply.is_some().then_some(Expect::Ok),
                    address: reply,
                    ending: lease.filter(|l| l.done).map(|l| Ending {
                        id: l.lease_id,
                        key,
                        platform,
                    }),
                },
                Ok(_) => nothing,
                Err(rej) => rejected(rej),
            }
        } else if channel == channels.announce {
            match decode_announce(payload, DEFAULT_MAX_PAYLOAD) {
                Ok(msg) => Asked {
                    expects: msg.reply_to().map(|_| Expect::Answer),
                    address: msg.reply_to().cloned(),
                    ending: None,
                },
                Err(rej) => rejected(rej),
            }
        } else {
            nothing
        }
    }
}

/// A reply to NEW on `platform` matches the platform's state at `now`: a key
/// handed out is fresh and above its account's floor, a wait counts whole
/// seconds to the refresh of an expired key (the earliest, or a later one
/// when waits are staggered) or to the end of a lease of the platform
/// (`lease_ends`, their `lease_until`), an error names the real cause.
pub fn check_new_reply<R: Rng>(
    engine: &mut Engine<R>,
    now: Timestamp,
    platform: &str,
    reply: &Reply,
    lease_ends: &[u64],
) -> Result<(), Violation> {
    let known = engine.pool().has_platform(platform);
    // The NEW refreshed the platform at `now`: counting refreshes nothing more.
    let counts = engine.counts(now, platform).unwrap_or_default();
    match reply {
        Reply::Key(k) => check_handed_out(engine, now, platform, k),
        Reply::Wait(n) => {
            ensure(*n >= 1, || "wait 0".into())?;
            ensure(counts.fresh == 0 || engine.quotas().knows(platform), || {
                format!("wait {n} with {counts:?}")
            })?;
            let now_ms = now.as_millis();
            // The earliest refresh, or (staggered) that of another expired key.
            let names_refresh = engine
                .pool()
                .expired_keys(platform)
                .map(|(t, _)| t)
                .any(|t| t > now && t.as_millis().saturating_sub(now_ms).div_ceil(1000) == *n);
            // The end of a lease (`lease_until` is rounded down to a second).
            let names_lease_end = lease_ends.iter().any(|&until| {
                let w = until
                    .saturating_mul(1000)
                    .saturating_sub(now_ms)
                    .div_ceil(1000);
                *n == w.max(1) || *n == w + 1
            });
            ensure(names_refresh || names_lease_end, || {
                format!(
                    "wait {n} at {now_ms} names no refresh and no lease end (the earliest refresh at {:?})",
                    engine.pool().next_refresh_of(platform)
                )
            })
        }
        Reply::Error {
            code: ErrorCode::NoKeys,
            ..
        } => ensure(known && counts.fresh == 0 && counts.expired == 0, || {
            format!("no_keys with {counts:?}")
        }),
        Reply::Error {
            code: ErrorCode::UnknownPlatform,
            ..
        } => ensure(!known, || "unknown_platform for a known platform".into()),
        other => Err(Violation(format!("unexpected reply to NEW: {other:?}"))),
    }
}
