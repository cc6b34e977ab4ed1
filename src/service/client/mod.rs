//! [`KeyClient`] (workers, in `worker`) and [`KeyPublisher`] (admins, in
//! `publisher`): talk to an orchestrator over any [`Bus`], ours or Augur's.
//! This file holds what both share: their settings ([`ClientConfig`]), the
//! request/reply machinery around their reply channel, and how replies become
//! typed errors.

use super::KeyError;
use super::rpc::{Rpc, RpcConfig, unique_requester_id};
use super::{Bus, DEFAULT_DEADLINE};
use crate::protocol::{Channels, ErrorCode, Reply, ReplyTo};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

mod publisher;
mod worker;

pub use publisher::KeyPublisher;
pub use worker::KeyClient;

/// How a [`KeyClient`] or [`KeyPublisher`] behaves.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The channel ids (Augur's by default).
    pub channels: Channels,
    /// The deadline of each call.
    pub deadline: Duration,
    /// The requester id that names the reply channel; unique per client by default.
    pub requester_id: Option<String>,
    /// How often a call still waiting is sent again (only once the orchestrator
    /// is known to echo request ids, or after a reconnect).
    pub resend_interval: Duration,
    /// The largest reply accepted, in bytes; [`ClientConfig::DEFAULT_MAX_REPLY`]
    /// (64 MiB) by default. Replies have a bound of their own, far above the
    /// orchestrator's request limit ([`DEFAULT_MAX_PAYLOAD`](crate::protocol::DEFAULT_MAX_PAYLOAD), 64 KiB): a list of
    /// every key of a platform is about 45 bytes a key, 4.5 MB for 100 000 keys.
    pub max_reply: usize,
}

impl ClientConfig {
    /// The default of [`ClientConfig::max_reply`]: 64 MiB.
    pub const DEFAULT_MAX_REPLY: usize = 64 * 1024 * 1024;
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            channels: Channels::default(),
            deadline: DEFAULT_DEADLINE,
            requester_id: None,
            resend_interval: Duration::from_secs(1),
            max_reply: Self::DEFAULT_MAX_REPLY,
        }
    }
}

struct Inner {
    rpc: Rpc,
    config: ClientConfig,
    requester_id: String,
}

impl Inner {
    async fn start(
        bus: Arc<dyn Bus>,
        config: ClientConfig,
        announce: bool,
    ) -> Result<Inner, KeyError> {
        let requester_id = config
            .requester_id
            .clone()
            .unwrap_or_else(unique_requester_id);
        let rid = requester_id.clone().into();
        let reply_channel = if announce {
            config.channels.announce_reply(&rid)
        } else {
            config.channels.request_reply(&rid)
        };
        let rpc_config = RpcConfig {
            resend_interval: config.resend_interval,
            max_reply: config.max_reply,
        };
        let rpc = Rpc::start(bus, reply_channel, rpc_config).await?;
        Ok(Inner {
            rpc,
            config,
            requester_id,
        })
    }

    fn reply_to(&self, id: u64) -> ReplyTo {
        ReplyTo::new(self.requester_id.clone()).with_request_id(id)
    }

    async fn publish(&self, channel: &str, payload: &[u8]) -> Result<(), KeyError> {
        let deadline = self.config.deadline;
        self.publish_until(channel, payload, super::deadline_after(deadline), deadline)
            .await
    }

    /// Publishes `payload` on `channel` by `until`; `Timeout(deadline)` after it.
    async fn publish_until(
        &self,
        channel: &str,
        payload: &[u8],
        until: Instant,
        deadline: Duration,
    ) -> Result<(), KeyError> {
        match tokio::time::timeout_at(until, self.rpc.bus().publish(channel, payload)).await {
            Ok(r) => r.map_err(KeyError::from),
            Err(_) => Err(KeyError::Timeout(deadline)),
        }
    }
}

fn error_reply(code: ErrorCode, message: String, platform: &str) -> KeyError {
    match code {
        ErrorCode::UnknownPlatform => KeyError::UnknownPlatform(platform.to_string()),
        ErrorCode::NoKeys => KeyError::NoKeys(platform.to_string()),
        ErrorCode::BadRequest | ErrorCode::TooLarge => KeyError::Rejected(message),
        ErrorCode::Other(code) => KeyError::Protocol(format!("error {code}: {message}")),
    }
}

fn unexpected(reply: &Reply) -> KeyError {
    let shape = match reply {
        Reply::Key(_) | Reply::NullKey | Reply::Lease { .. } => "a key",
        Reply::Ok => "an acknowledgement of a report",
        Reply::Wait(_) => "a wait",
        Reply::Error { .. } => "an error",
        Reply::Ack => "an acknowledgement",
        Reply::List(_) | Reply::ListError(_) => "a list",
        Reply::Status(_) => "a status report",
    };
    KeyError::Protocol(format!("unexpected reply: {shape}"))
}
