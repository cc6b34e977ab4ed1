//! Blocking wrappers of [`KeyClient`](super::KeyClient) and
//! [`KeyPublisher`](super::KeyPublisher), for programs without an async runtime.
//!
//! Each wrapper owns a small tokio runtime (one worker thread) that runs the
//! connection; its methods may be called from any number of threads at once.
//! Do not call them from inside an async task: use the async clients there.

use super::KeyError;
use super::{ClientConfig, KeyAdmin, KeySource, Next};
use crate::protocol::PlatformStatus;
use crate::ratelimit::{LeasedKey, RateLimit};
use crate::time::Timestamp;
use std::sync::Arc;
use std::time::Duration;

fn runtime() -> Result<Arc<tokio::runtime::Runtime>, KeyError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("keyman-client")
        .enable_all()
        .build()
        .map(Arc::new)
        .map_err(|e| KeyError::Runtime(e.into()))
}

/// A blocking [`super::KeyClient`]. `Clone + Send + Sync`.
#[derive(Clone, Debug)]
pub struct KeyClient {
    rt: Arc<tokio::runtime::Runtime>,
    inner: super::KeyClient,
}

impl KeyClient {
    /// Connects to the broker at `url` (`redis://`, `rediss://` or `nats://`).
    pub fn connect(url: &str, config: ClientConfig) -> Result<Self, KeyError> {
        let rt = runtime()?;
        let inner = rt.block_on(async {
            let bus = super::connect_url(url).await?;
            super::KeyClient::connect(bus, config).await
        })?;
        Ok(Self { rt, inner })
    }

    /// The async client inside, for code that has a runtime after all.
    pub fn as_async(&self) -> &super::KeyClient {
        &self.inner
    }

    /// See [`KeySource::request`].
    pub fn request(&self, platform: &str) -> Result<String, KeyError> {
        self.rt.block_on(self.inner.request(platform))
    }

    /// See [`KeySource::request_within`].
    pub fn request_within(&self, platform: &str, deadline: Duration) -> Result<String, KeyError> {
        self.rt
            .block_on(self.inner.request_within(platform, deadline))
    }

    /// See [`KeySource::expire`].
    pub fn expire(&self, platform: &str, key: &str, reset: Timestamp) -> Result<String, KeyError> {
        self.rt.block_on(self.inner.expire(platform, key, reset))
    }

    /// See [`KeySource::invalidate`].
    pub fn invalidate(&self, platform: &str, key: &str) -> Result<String, KeyError> {
        self.rt.block_on(self.inner.invalidate(platform, key))
    }

    /// See [`KeySource::expire_within`].
    pub fn expire_within(
        &self,
        platform: &str,
        key: &str,
        reset: Timestamp,
        deadline: Duration,
    ) -> Result<String, KeyError> {
        self.rt
            .block_on(self.inner.expire_within(platform, key, reset, deadline))
    }

    /// See [`KeySource::invalidate_within`].
    pub fn invalidate_within(
        &self,
        platform: &str,
        key: &str,
        deadline: Duration,
    ) -> Result<String, KeyError> {
        self.rt
            .block_on(self.inner.invalidate_within(platform, key, deadline))
    }

    /// See [`KeySource::observe`].
    pub fn observe(
        &self,
        platform: &str,
        key: &str,
        status: u16,
        seen: &RateLimit,
    ) -> Result<Next, KeyError> {
        self.rt
            .block_on(self.inner.observe(platform, key, status, seen))
    }

    /// See [`KeySource::observe_within`].
    pub fn observe_within(
        &self,
        platform: &str,
        key: &str,
        status: u16,
        seen: &RateLimit,
        deadline: Duration,
    ) -> Result<Next, KeyError> {
        self.rt.block_on(
            self.inner
                .observe_within(platform, key, status, seen, deadline),
        )
    }

    /// See [`KeySource::lease`].
    pub fn lease(&self, platform: &str, calls: u64) -> Result<LeasedKey, KeyError> {
        self.rt.block_on(self.inner.lease(platform, calls))
    }

    /// See [`KeySource::lease_within`].
    pub fn lease_within(
        &self,
        platform: &str,
        calls: u64,
        deadline: Duration,
    ) -> Result<LeasedKey, KeyError> {
        self.rt
            .block_on(self.inner.lease_within(platform, calls, deadline))
    }

    /// See [`KeySource::observe_lease`].
    pub fn observe_lease(
        &self,
        leased: &mut LeasedKey,
        status: u16,
        seen: &RateLimit,
    ) -> Result<Next, KeyError> {
        self.rt
            .block_on(self.inner.observe_lease(leased, status, seen))
    }

    /// See [`KeySource::release`].
    pub fn release(&self, leased: LeasedKey) -> Result<(), KeyError> {
        self.rt.block_on(self.inner.release(leased))
    }
}

/// A blocking [`super::KeyPublisher`]. `Clone + Send + Sync`.
#[derive(Clone, Debug)]
pub struct KeyPublisher {
    rt: Arc<tokio::runtime::Runtime>,
    inner: super::KeyPublisher,
}

impl KeyPublisher {
    /// Connects to the broker at `url` (`redis://`, `rediss://` or `nats://`).
    pub fn connect(url: &str, config: ClientConfig) -> Result<Self, KeyError> {
        let rt = runtime()?;
        let inner = rt.block_on(async {
            let bus = super::connect_url(url).await?;
            super::KeyPublisher::connect(bus, config).await
        })?;
        Ok(Self { rt, inner })
    }

    /// The async publisher inside.
    pub fn as_async(&self) -> &super::KeyPublisher {
        &self.inner
    }

    /// See [`KeyAdmin::publish`].
    pub fn publish(&self, platform: &str, key: &str) -> Result<(), KeyError> {
        self.rt.block_on(self.inner.publish(platform, key))
    }

    /// See [`KeyAdmin::publish_account`].
    pub fn publish_account(
        &self,
        platform: &str,
        key: &str,
        account: Option<&str>,
        limit: Option<u64>,
    ) -> Result<(), KeyError> {
        self.rt
            .block_on(self.inner.publish_account(platform, key, account, limit))
    }

    /// See [`KeyAdmin::unpublish`].
    pub fn unpublish(&self, platform: &str, key: &str) -> Result<(), KeyError> {
        self.rt.block_on(self.inner.unpublish(platform, key))
    }

    /// See [`KeyAdmin::ping`].
    pub fn ping(&self) -> Result<(), KeyError> {
        self.rt.block_on(self.inner.ping())
    }

    /// See [`KeyAdmin::platforms`].
    pub fn platforms(&self) -> Result<Vec<String>, KeyError> {
        self.rt.block_on(self.inner.platforms())
    }

    /// See [`KeyAdmin::keys`].
    pub fn keys(&self, platform: &str) -> Result<Vec<String>, KeyError> {
        self.rt.block_on(self.inner.keys(platform))
    }

    /// See [`KeyAdmin::invalid_keys`].
    pub fn invalid_keys(&self, platform: &str) -> Result<Vec<String>, KeyError> {
        self.rt.block_on(self.inner.invalid_keys(platform))
    }

    /// See [`KeyAdmin::status`].
    pub fn status(&self) -> Result<Vec<PlatformStatus>, KeyError> {
        self.rt.block_on(self.inner.status())
    }

    /// See [`KeyAdmin::shutdown`].
    pub fn shutdown(&self) -> Result<(), KeyError> {
        self.rt.block_on(self.inner.shutdown())
    }
}
