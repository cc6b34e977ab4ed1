//! [`KeyPublisher`]: an admin's client of a remote orchestrator.

use super::{Inner, error_reply, unexpected};
use crate::protocol::{Announce, PlatformStatus, Reply, ReplyTo};
use crate::service::rpc::Expect;
use crate::service::{Bus, ClientConfig, KeyAdmin, KeyError, require_non_empty};
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// An admin's client: publishes and unpublishes keys, lists them, waits for the
/// orchestrator, shuts it down. `Clone + Send + Sync`, like [`KeyClient`](crate::service::KeyClient).
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
        let until = crate::service::deadline_after(deadline);
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
        let until = crate::service::deadline_after(deadline);
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
                    if crate::service::deadline_after(step) < until =>
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
