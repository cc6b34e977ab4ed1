//! The wire protocol of Augur's key orchestrator, as typed messages.
//!
//! Requests are JSON objects with a `"type"` field, published on one of two
//! channels (see [`Channels`]). Replies go to `"{channel}-{requester_id}"`.
//! [`decode_announce`] and [`decode_request`] turn any bytes into a typed message
//! or a typed [`DecodeError`], never a panic; the `encode` methods produce the
//! JSON shapes Augur's Python code reads. Our extensions (`request_id`, `error`
//! and `code`, the `STATUS` message) are optional fields and types that Augur's
//! code neither sends nor reads.
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
