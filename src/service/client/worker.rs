//! [`KeyClient`]: a worker's client of a remote orchestrator.

use super::{Inner, error_reply, unexpected};
use crate::protocol::{Reply, ReplyMessage, Request};
use crate::ratelimit::{LeaseTerms, LeasedKey, RateLimit};
use crate::service::observe::LeaseWire;
use crate::service::rpc::Expect;
use crate::service::{Bus, ClientConfig, KeyError, KeySource, Next, require_non_empty};
use crate::time::Timestamp;
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

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
        let until = crate::service::deadline_after(deadline);
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

    /// Sends `msg` (made with request id `id`) on the request channel and
    /// waits until `until` for its reply; a timeout says `deadline`.
    async fn call(
        &self,
        msg: &Request,
        id: u64,
        expect: Expect,
        until: Instant,
        deadline: Duration,
    ) -> Result<Reply, KeyError> {
        let channel = &self.inner.config.channels.request;
        self.inner
            .rpc
            .call(channel, msg.encode(), id, expect, until)
            .await
            .map(|ReplyMessage { reply, .. }| reply)
            .map_err(|e| match e {
                KeyError::Timeout(_) => KeyError::Timeout(deadline),
                other => other,
            })
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
        let until = crate::service::deadline_after(deadline);
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
            match self.call(&msg, id, Expect::Key, until, deadline).await? {
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
                    let wake = crate::service::deadline_after(Duration::from_secs(secs.max(1)));
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

    async fn send_final_report(&self, report: Request, until: Instant) -> Result<(), KeyError> {
        if !self.extended() {
            return Ok(());
        }
        let Request::Report {
            key,
            platform,
            observation,
            lease,
            reply: _,
        } = report
        else {
            return self.send_report(report, until).await;
        };
        let inner = &self.inner;
        let id = inner.rpc.next_id();
        let report = Request::Report {
            key,
            platform: platform.clone(),
            observation,
            lease,
            reply: Some(inner.reply_to(id)),
        };
        let deadline = until.saturating_duration_since(Instant::now());
        match self
            .call(&report, id, Expect::Taken, until, deadline)
            .await?
        {
            Reply::Ok => Ok(()),
            Reply::Error { code, message } => Err(error_reply(code, message, &platform)),
            other => Err(unexpected(&other)),
        }
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
        crate::service::observe::observe_lease(self, leased, status, seen, deadline).await
    }

    async fn observe_lease_within(
        &self,
        leased: &mut LeasedKey,
        status: u16,
        seen: &RateLimit,
        deadline: Duration,
    ) -> Result<Next, KeyError> {
        crate::service::observe::observe_lease(self, leased, status, seen, deadline).await
    }

    async fn release(&self, leased: LeasedKey) -> Result<(), KeyError> {
        crate::service::observe::release(self, leased, self.inner.config.deadline).await
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
