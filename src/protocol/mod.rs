//! The wire protocol of Augur's key orchestrator, as typed messages.
//!
//! `{"wait": n}` keeps Augur's shape (whole seconds, at least 1), but not its
//! meaning "the earliest refresh plus 5 s": when many requests wait, each is
//! told the refresh of one rate-limited key, about an equal share of them per
//! key, earliest first, and a worker that asks again at that time gets that
//! key if it is fresh ([`EngineConfig::stagger_waits`](crate::EngineConfig::stagger_waits));
//! a lone waiter is told the earliest refresh.
//!
//! Requests are JSON objects with a `"type"` field, published on one of two
//! channels (see [`Channels`]). Replies go to `"{channel}-{requester_id}"`.
//! [`decode_announce`] and [`decode_request`] turn any bytes into a typed message
//! or a typed [`DecodeError`], never a panic; the `encode` methods produce the
//! JSON shapes Augur's Python code reads. Our extensions (`request_id`, `error`
//! and `code`, the `STATUS` message) are optional fields and types that Augur's
//! code neither sends nor reads.
//!
//! ## Quota extension
//!
//! Optional fields and one message type that let keyman's own clients tell the
//! orchestrator what the platform's rate-limit headers say, and borrow calls
//! instead of whole keys (the pure side is [`crate::quota`]). Augur's code never
//! sends them; a message without them decodes and is answered exactly as before.
//! Times are Unix epoch seconds, whole (a fraction is dropped).
//!
//! - **PUBLISH** may carry `account` (a non-empty string) and `limit` (an
//!   integer, calls per window). Keys of one account of one platform share one
//!   quota (all the personal access tokens of one GitHub user); without
//!   `account` a key is its own account. `limit` is a hint until a report says
//!   otherwise. Decoded as [`Announce::PublishWithQuota`]; no reply.
//!
//!   `{"type": "PUBLISH", "key_str": "ghp_…", "key_platform": "github_rest", "account": "alice", "limit": 5000}`
//! - **NEW** may carry `lease` (an integer ≥ 1: up to this many calls; 0 or
//!   another type is refused with `bad_request`). Decoded as [`Request::Lease`].
//!   The answer is [`Reply::Lease`]: `{"key": "ghp_…", "calls": m, "lease_id":
//!   id, "lease_until": t}` with `1 ≤ m ≤ lease`, never more than the account's
//!   remaining calls less its floor less the calls of its leases outstanding, at
//!   most `max_leases` (100 by default) leases outstanding per account; or
//!   `{"wait": n}` until a key refreshes or a lease ends; or the errors of NEW. A
//!   client that reads only `key` (Augur's) sees a key. When nothing is known of
//!   a key's quota, a lease is of 1 call (its REPORT teaches the rest). With
//!   `hold_ms`, a lease request that finds no key to lend is held like a NEW
//!   and answered with a lease as soon as one can be granted; lease requests
//!   released together share the calls the fresh keys can lend (each gets at
//!   most their sum ÷ the lease requests held).
//! - **REPORT** (request channel): `key_str`, `key_platform` (required), and
//!   what the last response said, each optional: `remaining`, `limit`,
//!   `reset` (`x-ratelimit-reset`), `resource` (`x-ratelimit-resource`; reports
//!   of another resource than the account's first are ignored), `server_date`
//!   (the response's `Date`: it gives the skew between the platform's clock and
//!   ours, smoothed and bounded to ±5 minutes, which converts `reset`); for a
//!   lease `lease_id`, `used` (calls made; all of them if absent) and `done`
//!   (`true`: the lease ends and its unused calls return; a lease never
//!   reported ends at `lease_until`, counted as fully used). Decoded as
//!   [`Request::Report`]. Answered [`Reply::Ok`], `{"ok": true}` (with the
//!   echoed `request_id`), only when it carries `request_id` and
//!   `requester_id`; otherwise not at all. A report older than what is known
//!   (an earlier `Date` than one already taken, an earlier window, a window
//!   that has ended) never raises the remaining count.
//!
//!   `{"type": "REPORT", "key_str": "ghp_…", "key_platform": "github_rest", "remaining": 4200, "limit": 5000, "reset": 1700003600, "resource": "core", "server_date": 1700000100, "lease_id": 7, "used": 90, "done": true}`
//! - **Floor** (configuration, [`QuotaConfig`](crate::quota::QuotaConfig)): per
//!   platform and per account; a key whose account has that many remaining
//!   calls or fewer is withheld until its reset like an expired key, and no
//!   lease takes it below. An EXPIRE of a key of a named account expires the
//!   account's other keys too.
//! - **STATUS** items add, when known: `remaining` (the known remaining calls
//!   less those lent), `leased` (calls lent in leases outstanding),
//!   `burn_per_hour` (calls spent per hour over the last ten minutes) and
//!   `dry_at` (when the known remaining calls run out at that rate); with
//!   probes `tokens_expiring` and `token_expires_at`; and `clock_lag_ms`
//!   (how far behind ours the platform's clock is taken to be, learnt from
//!   EXPIREs whose reset had passed). Fields unknown are absent; old clients
//!   ignore them.
//!
//! # Limits
//!
//! What one sender can make the orchestrator keep is bounded, by the length
//! limits of [`limits`] and by the caps of the
//! [`EngineConfig`](crate::EngineConfig) (`serve --max-platforms`,
//! `--max-keys-per-platform`):
//!
//! | what | limit | beyond it |
//! |---|---|---|
//! | a payload | 64 KiB ([`DEFAULT_MAX_PAYLOAD`], `--max-payload`) | dropped unread, logged |
//! | `requester_id` of NEW, ACK, LIST_*, STATUS | [`MAX_ID_LEN`] = 256 bytes | logged and dropped: no channel that long can be answered on (a NATS subject is at most 4 KiB) |
//! | `request_id` (ext) | [`MAX_ID_LEN`] = 256 bytes | answered `{"error": "...", "code": "too_large"}` (ext), without the id |
//! | `key_str` | [`MAX_KEY_LEN`] = 1 024 bytes | logged and dropped (PUBLISH, UNPUBLISH, EXPIRE, INVALIDATE have no reply) |
//! | `key_platform` | [`MAX_PLATFORM_LEN`] = 128 bytes | NEW, LIST_KEYS, LIST_INVALID_KEYS: answered `too_large` (LIST_*: `{"error": ..., "code": "too_large"}` like any malformed LIST_*); others logged and dropped |
//! | platforms | 1 000 ([`EngineConfig::max_platforms`](crate::EngineConfig::max_platforms)) | a PUBLISH that would add one more is logged and dropped ([`DecodeError::LimitReached`]) |
//! | keys per platform | 1 000 000 ([`EngineConfig::max_keys_per_platform`](crate::EngineConfig::max_keys_per_platform)) | a PUBLISH of one more key is logged and dropped |
//! | held NEWs (`hold_ms`, ext) | 10 000 ([`EngineConfig::max_held`](crate::EngineConfig::max_held)) | answered `{"wait": n}` at once |
//!
//! Keys and platforms already in the pool stay when it is over a cap (a state
//! saved with larger caps is loaded whole); only growth is refused. A re-sent
//! held NEW (same `requester_id` and `request_id`) is found in `O(1)`, and a
//! hold lasts its time however the wall clock is stepped: see
//! [`Engine`](crate::Engine).

//!
//! # Restarts with the state kept
//!
//! Augur restarts by starting the orchestrator, waiting for it with ACKs
//! (`KeyPublisher.wait(republish=True)`) and publishing every key of its
//! database again. On a state kept across the restart, that PUBLISH is the
//! same as any other:
//!
//! - an **expired** key stays expired until its refresh time (a publish does
//!   not cut a rate limit short);
//! - an **invalid** key is fresh again: only a PUBLISH brings an invalid key
//!   back, and Augur's restart is one (its database does not know which keys
//!   were revoked). A key still revoked is invalidated again by the first
//!   worker that gets a 401 with it;
//! - a key **no longer in Augur's database** is never published again and
//!   stays as it was kept, fresh ones handed out as before. Drop it for good
//!   with `keyman forget KEY` (UNPUBLISH on every platform, whatever the key's
//!   state; the key is never printed whole).

mod decode;
mod ids;
pub mod limits;
mod messages;
mod reply;
#[cfg(test)]
mod tests;

pub use decode::{DEFAULT_MAX_PAYLOAD, DecodeError, Rejected, decode_announce, decode_request};
pub use ids::{Channels, DEFAULT_ANNOUNCE, DEFAULT_REQUEST, Id, ReplyTo};
pub use limits::{MAX_ID_LEN, MAX_KEY_LEN, MAX_PLATFORM_LEN};
pub use messages::{Announce, Request};
pub use reply::{ErrorCode, PlatformStatus, Reply, ReplyMessage};
