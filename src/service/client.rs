//! [`KeyClient`] (workers) and [`KeyPublisher`] (admins): talk to an orchestrator
//! over any [`Bus`], ours or Augur's.

use super::KeyError;
use super::observe::LeaseWire;
use super::rpc::{Expect, Rpc, RpcConfig, unique_requester_id};
use super::{Bus, DEFAULT_DEADLINE, KeyAdmin, KeySource, Next, require_non_empty};
use crate::protocol::{
    Announce, Channels, ErrorCode, PlatformStatus, Reply, ReplyMessage, ReplyTo, Request,
};
use crate::ratelimit::{LeaseTerms, LeasedKey, RateLimit};
use crate::time::Timestamp;
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

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

/// A worker's client: asks the orchestrator for keys and reports rate-limited
/// and invalid ones.
///
/// `Clone + Send + Sync`: clones share one reply channel and one dispatcher, and
/// any number of calls may run at once. Each client has its own requester id
/// (not the process id alone), so any number of clients per process work. Every
/// call returns within its deadline with a key or a typed [`KeyError`]. Works
/// against Augur's orchestrator too, which echoes no `request_id`.
#[derive(Clone)]
pub struct KeyClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for KeyClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyClient")
            .field("requester_id", &self.inner.requester_id)
            .finish()
    }
}

impl KeyClient {
    /// Connects a client over `bus`; its reply channel is subscribed when this returns.
    pub async fn connect(bus: Arc<dyn Bus>, config: ClientConfig) -> Result<Self, KeyError> {
        Ok(Self {
            inner: Arc::new(Inner::start(bus, config, false).await?),
        })
    }

    /// The requester id this client's replies are addressed to.
    pub fn requester_id(&self) -> &str {
        &self.inner.requester_id
    }

    /// Sends an EXPIRE or INVALIDATE (`msg`, which has no reply), then asks for
    /// another key of `platform`, both within `deadline`.
    async fn report_and_request(
        &self,
        msg: Request,
        platform: &str,
        deadline: Duration,
    ) -> Result<String, KeyError> {
        let until = super::deadline_after(deadline);
        self.send_until(&msg, until, deadline).await?;
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(KeyError::Timeout(deadline));
        }
        self.request_within(platform, left)
            .await
            .map_err(|e| match e {
                KeyError::Timeout(_) => KeyError::Timeout(deadline),
                other => other,
            })
    }

    /// Publishes `msg` (which has no reply) on the request channel by `until`.
    async fn send_until(
        &self,
        msg: &Request,
        until: Instant,
        deadline: Duration,
    ) -> Result<(), KeyError> {
        let channel = &self.inner.config.channels.request;
        self.inner
            .publish_until(channel, &msg.encode(), until, deadline)
            .await
    }

    /// Whether the orchestrator is known to speak keyman's extensions (it
    /// echoed a `request_id`): only then are REPORTs sent, for Augur's
    /// orchestrator stops at a message type it does not know.
    fn extended(&self) -> bool {
        self.inner.rpc.echo_seen()
    }

    /// Asks for a key of `platform` (NEW; with `lease: n` when `lease` is
    /// given) until one comes or `deadline` passes, sleeping through
    /// `{"wait": n}` answers.
    async fn ask_for_key(
        &self,
        platform: &str,
        lease: Option<u64>,
        deadline: Duration,
    ) -> Result<LeasedKey, KeyError> {
        require_non_empty("platform", platform)?;
        let inner = &self.inner;
        let until = super::deadline_after(deadline);
        let wanted = lease.unwrap_or(0);
        loop {
            let id = inner.rpc.next_id();
            // Ask to be held while no key is fresh (ext; Augur's orchestrator ignores
            // it), leaving time for the final `{"wait": n}` to arrive before the deadline.
            let left = until.saturating_duration_since(Instant::now());
            let margin = (left / 10).min(Duration::from_millis(500));
            let hold_ms =
                u64::try_from(left.saturating_sub(margin).as_millis()).unwrap_or(u64::MAX);
            let hold_ms = (hold_ms > 0).then_some(hold_ms);
            let (platform_name, reply_to) = (platform.to_string(), inner.reply_to(id));
            let msg = match lease {
                Some(calls) => Request::Lease {
                    platform: platform_name,
                    reply: reply_to,
                    hold_ms,
                    lease: calls.max(1),
                },
                None => Request::New {
                    platform: platform_name,
                    reply: reply_to,
                    hold_ms,
                },
            };
            let channel = &inner.config.channels.request;
            let ReplyMessage { reply, .. } = inner
                .rpc
                .call(channel, msg.encode(), id, Expect::Key, until)
                .await
                .map_err(|e| match e {
                    KeyError::Timeout(_) => KeyError::Timeout(deadline),
                    other => other,
                })?;
            match reply {
                Reply::Key(k) => return Ok(LeasedKey::new(platform, k, wanted, None)),
                Reply::Lease {
                    key,
                    calls,
                    lease_id,
                    lease_until,
                } => {
                    let terms = LeaseTerms {
                        id: lease_id,
                        calls,
                        until: Timestamp::from_secs(lease_until),
                    };
                    return Ok(LeasedKey::new(platform, key, wanted, Some(terms)));
                }
                Reply::NullKey => return Err(KeyError::NoKeys(platform.to_string())),
                Reply::Wait(secs) => {
                    let wake = super::deadline_after(Duration::from_secs(secs.max(1)));
                    if wake >= until {
                        tokio::time::sleep_until(until).await;
                        return Err(KeyError::Timeout(deadline));
                    }
                    tokio::time::sleep_until(wake).await;
                }
                Reply::Error { code, message } => {
                    return Err(error_reply(code, message, platform));
                }
                other => return Err(unexpected(&other)),
            }
        }
    }
}

#[async_trait]
impl LeaseWire for KeyClient {
    async fn send_report(&self, report: Request, until: Instant) -> Result<(), KeyError> {
        if !self.extended() {
            return Ok(());
        }
        let deadline = until.saturating_duration_since(Instant::now());
        self.send_until(&report, until, deadline).await
    }

    async fn mark_expired(
        &self,
        platform: &str,
        key: &str,
        refresh_at: Timestamp,
        until: Instant,
    ) -> Result<(), KeyError> {
        let msg = Request::Expire {
            key: key.to_string(),
            platform: platform.to_string(),
            refresh_time: refresh_at,
            requester_id: Some(self.inner.requester_id.clone().into()),
        };
        let deadline = until.saturating_duration_since(Instant::now());
        self.send_until(&msg, until, deadline).await
    }

    async fn mark_invalid(
        &self,
        platform: &str,
        key: &str,
        until: Instant,
    ) -> Result<(), KeyError> {
        let msg = Request::Invalidate {
            key: key.to_string(),
            platform: platform.to_string(),
            requester_id: Some(self.inner.requester_id.clone().into()),
        };
        let deadline = until.saturating_duration_since(Instant::now());
        self.send_until(&msg, until, deadline).await
    }
}

#[async_trait]
impl KeySource for KeyClient {
    async fn request(&self, platform: &str) -> Result<String, KeyError> {
        self.request_within(platform, self.inner.config.deadline)
            .await
    }

    async fn request_within(&self, platform: &str, deadline: Duration) -> Result<String, KeyError> {
        let leased = self.ask_for_key(platform, None, deadline).await?;
        Ok(leased.key().to_string())
    }

    /// NEW with `lease: calls` (ext): a key and the calls lent with it; a key
    /// without a lease from an orchestrator that lends none (Augur's ignores
    /// the field and answers with a key).
    async fn lease(&self, platform: &str, calls: u64) -> Result<LeasedKey, KeyError> {
        self.lease_within(platform, calls, self.inner.config.deadline)
            .await
    }

    async fn lease_within(
        &self,
        platform: &str,
        calls: u64,
        deadline: Duration,
    ) -> Result<LeasedKey, KeyError> {
        self.ask_for_key(platform, Some(calls), deadline).await
    }

    /// Sends REPORT (the lease returned, what the headers said) only to an
    /// orchestrator known to speak the extension; against Augur's it is
    /// EXPIRE or INVALIDATE and NEW, as [`observe`](KeySource::observe).
    async fn observe_lease(
        &self,
        leased: &mut LeasedKey,
        status: u16,
        seen: &RateLimit,
    ) -> Result<Next, KeyError> {
        let deadline = self.inner.config.deadline;
        super::observe::observe_lease(self, leased, status, seen, deadline).await
    }

    async fn observe_lease_within(
        &self,
        leased: &mut LeasedKey,
        status: u16,
        seen: &RateLimit,
        deadline: Duration,
    ) -> Result<Next, KeyError> {
        super::observe::observe_lease(self, leased, status, seen, deadline).await
    }

    async fn release(&self, leased: LeasedKey) -> Result<(), KeyError> {
        super::observe::release(self, leased, self.inner.config.deadline).await
    }

    async fn expire(
        &self,
        platform: &str,
        key: &str,
        reset: Timestamp,
    ) -> Result<String, KeyError> {
        self.expire_within(platform, key, reset, self.inner.config.deadline)
            .await
    }

    async fn invalidate(&self, platform: &str, key: &str) -> Result<String, KeyError> {
        self.invalidate_within(platform, key, self.inner.config.deadline)
            .await
    }

    /// Sends EXPIRE, then asks for another key, both within `deadline`.
    async fn expire_within(
        &self,
        platform: &str,
        key: &str,
        reset: Timestamp,
        deadline: Duration,
    ) -> Result<String, KeyError> {
        require_non_empty("platform", platform)?;
        require_non_empty("key", key)?;
        let msg = Request::Expire {
            key: key.to_string(),
            platform: platform.to_string(),
            refresh_time: reset,
            requester_id: Some(self.inner.requester_id.clone().into()),
        };
        self.report_and_request(msg, platform, deadline).await
    }

    /// Sends INVALIDATE, then asks for another key, both within `deadline`.
    async fn invalidate_within(
        &self,
        platform: &str,
        key: &str,
        deadline: Duration,
    ) -> Result<String, KeyError> {
        require_non_empty("platform", platform)?;
        require_non_empty("key", key)?;
        let msg = Request::Invalidate {
            key: key.to_string(),
            platform: platform.to_string(),
            requester_id: Some(self.inner.requester_id.clone().into()),
        };
        self.report_and_request(msg, platform, deadline).await
    }
}

/// An admin's client: publishes and unpublishes keys, lists them, waits for the
/// orchestrator, shuts it down. `Clone + Send + Sync`, like [`KeyClient`].
#[derive(Clone)]
pub struct KeyPublisher {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for KeyPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPublisher")
            .field("requester_id", &self.inner.requester_id)
            .finish()
    }
}

impl KeyPublisher {
    /// Connects a publisher over `bus`; its reply channel is subscribed when this returns.
    pub async fn connect(bus: Arc<dyn Bus>, config: ClientConfig) -> Result<Self, KeyError> {
        Ok(Self {
            inner: Arc::new(Inner::start(bus, config, true).await?),
        })
    }

    /// The requester id this publisher's replies are addressed to.
    pub fn requester_id(&self) -> &str {
        &self.inner.requester_id
    }

    async fn announce(&self, msg: Announce) -> Result<(), KeyError> {
        let channel = &self.inner.config.channels.announce;
        self.inner.publish(channel, &msg.encode()).await
    }

    async fn ask(
        &self,
        make: impl Fn(ReplyTo) -> Announce,
        expect: Expect,
        deadline: Duration,
    ) -> Result<Reply, KeyError> {
        let inner = &self.inner;
        let id = inner.rpc.next_id();
        let msg = make(inner.reply_to(id));
        let until = super::deadline_after(deadline);
        let channel = &inner.config.channels.announce;
        let m = inner
            .rpc
            .call(channel, msg.encode(), id, expect, until)
            .await?;
        Ok(m.reply)
    }

    async fn list(&self, platform: Option<&str>, invalid: bool) -> Result<Vec<String>, KeyError> {
        let deadline = self.inner.config.deadline;
        let reply = self
            .ask(
                |reply| match (platform, invalid) {
                    (None, _) => Announce::ListPlatforms { reply },
                    (Some(p), false) => Announce::ListKeys {
                        platform: p.to_string(),
                        reply,
                    },
                    (Some(p), true) => Announce::ListInvalidKeys {
                        platform: p.to_string(),
                        reply,
                    },
                },
                Expect::List,
                deadline,
            )
            .await?;
        match reply {
            Reply::List(items) => Ok(items),
            Reply::ListError(status) => match (platform, status.strip_prefix("unknown platform: "))
            {
                (Some(p), Some(_)) => Err(KeyError::UnknownPlatform(p.to_string())),
                _ => Err(KeyError::Orchestrator(status)),
            },
            Reply::Error { code, message } => {
                Err(error_reply(code, message, platform.unwrap_or("")))
            }
            other => Err(unexpected(&other)),
        }
    }

    /// Waits until the orchestrator answers an ACK within `deadline`, asking
    /// again every resend interval (so it also waits for an orchestrator that is
    /// still starting, like Augur's `wait(republish=True)`).
    pub async fn ping_within(&self, deadline: Duration) -> Result<(), KeyError> {
        let until = super::deadline_after(deadline);
        let step = self.inner.config.resend_interval;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(KeyError::Timeout(deadline));
            }
            match self
                .ask(|reply| Announce::Ack { reply }, Expect::Ack, left.min(step))
                .await
            {
                Ok(Reply::Ack) => return Ok(()),
                Ok(other) => return Err(unexpected(&other)),
                Err(KeyError::Timeout(_)) => continue,
                Err(KeyError::NoOrchestrator(_) | KeyError::Disconnected(_))
                    if super::deadline_after(step) < until =>
                {
                    tokio::time::sleep(step).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[async_trait]
impl KeyAdmin for KeyPublisher {
    async fn publish(&self, platform: &str, key: &str) -> Result<(), KeyError> {
        require_non_empty("platform", platform)?;
        require_non_empty("key", key)?;
        self.announce(Announce::Publish {
            key: key.to_string(),
            platform: platform.to_string(),
        })
        .await
    }

    async fn publish_account(
        &self,
        platform: &str,
        key: &str,
        account: Option<&str>,
        limit: Option<u64>,
    ) -> Result<(), KeyError> {
        require_non_empty("platform", platform)?;
        require_non_empty("key", key)?;
        if account.is_some_and(str::is_empty) {
            return Err(KeyError::InvalidArgument(
                "account must not be empty".to_string(),
            ));
        }
        self.announce(Announce::PublishWithQuota {
            key: key.to_string(),
            platform: platform.to_string(),
            account: account.map(str::to_string),
            limit,
        })
        .await
    }

    async fn unpublish(&self, platform: &str, key: &str) -> Result<(), KeyError> {
        require_non_empty("platform", platform)?;
        require_non_empty("key", key)?;
        self.announce(Announce::Unpublish {
            key: key.to_string(),
            platform: platform.to_string(),
        })
        .await
    }

    async fn ping(&self) -> Result<(), KeyError> {
        self.ping_within(self.inner.config.deadline).await
    }

    async fn platforms(&self) -> Result<Vec<String>, KeyError> {
        self.list(None, false).await
    }

    async fn keys(&self, platform: &str) -> Result<Vec<String>, KeyError> {
        require_non_empty("platform", platform)?;
        self.list(Some(platform), false).await
    }

    async fn invalid_keys(&self, platform: &str) -> Result<Vec<String>, KeyError> {
        require_non_empty("platform", platform)?;
        self.list(Some(platform), true).await
    }

    async fn status(&self) -> Result<Vec<PlatformStatus>, KeyError> {
        let deadline = self.inner.config.deadline;
        match self
            .ask(|reply| Announce::Status { reply }, Expect::Status, deadline)
            .await?
        {
            Reply::Status(s) => Ok(s),
            other => Err(unexpected(&other)),
        }
    }

    async fn shutdown(&self) -> Result<(), KeyError> {
        self.announce(Announce::Shutdown).await
    }
}
