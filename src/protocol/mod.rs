//! The wire protocol of Augur's key orchestrator, as typed messages.
//!
//! Requests are JSON objects with a `"type"` field, published on one of two
//! channels (see [`Channels`]). Replies go to `"{channel}-{requester_id}"`.
//! [`decode_announce`] and [`decode_request`] turn any bytes into a typed message
//! or a typed [`DecodeError`], never a panic; the `encode` methods produce the
//! JSON shapes Augur's Python code reads. Our extensions (`request_id`, `error`
//! and `code`, the `STATUS` message) are optional fields and types that Augur's
//! code neither sends nor reads.

mod decode;
mod ids;
mod messages;
mod reply;
#[cfg(test)]
mod tests;

pub use decode::{DEFAULT_MAX_PAYLOAD, DecodeError, Rejected, decode_announce, decode_request};
pub use ids::{Channels, DEFAULT_ANNOUNCE, DEFAULT_REQUEST, Id, ReplyTo};
pub use messages::{Announce, Request};
pub use reply::{ErrorCode, PlatformStatus, Reply, ReplyMessage};
