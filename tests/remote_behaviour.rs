//! The shared key-source behaviours, run against the remote `KeyClient` and
//! `KeyPublisher` talking to `keyman serve` over a real broker: the same tests
//! the embedded pool passes.

#![cfg(feature = "tokio")]

mod support;

use async_trait::async_trait;
use keyman::protocol::PlatformStatus;
use keyman::ratelimit::LeasedKey;
use keyman::service::{KeyAdmin, KeyClient, KeyPublisher, KeySource};
use keyman::{KeyError, Timestamp};
use std::sync::Arc;
use std::time::Duration;
use support::{Broker, Serve};

/// A broker and an orchestrator, stopped when the last handle goes.
struct Running {
    _serve: Serve,
    _broker: Broker,
}

struct Worker(KeyClient, #[allow(dead_code)] Arc<Running>);
struct Admin(KeyPublisher, #[allow(dead_code)] Arc<Running>);

#[async_trait]
impl KeySource for Worker {
    async fn request(&self, platform: &str) -> Result<String, KeyError> {
        self.0.request(platform).await
    }
    async fn request_within(&self, platform: &str, deadline: Duration) -> Result<String, KeyError> {
        self.0.request_within(platform, deadline).await
    }
    async fn expire(
        &self,
        platform: &str,
        key: &str,
        reset: Timestamp,
    ) -> Result<String, KeyError> {
        self.0.expire(platform, key, reset).await
    }
    async fn invalidate(&self, platform: &str, key: &str) -> Result<String, KeyError> {
        self.0.invalidate(platform, key).await
    }
    async fn expire_within(
        &self,
        platform: &str,
        key: &str,
        reset: Timestamp,
        deadline: Duration,
    ) -> Result<String, KeyError> {
        self.0.expire_within(platform, key, reset, deadline).await
    }
    async fn invalidate_within(
        &self,
        platform: &str,
        key: &str,
        deadline: Duration,
    ) -> Result<String, KeyError> {
        self.0.invalidate_within(platform, key, deadline).await
    }
    async fn observe(
        &self,
        platform: &str,
        key: &str,
        status: u16,
        seen: &keyman::ratelimit::RateLimit,
    ) -> Result<keyman::service::Next, KeyError> {
        self.0.observe(platform, key, status, seen).await
    }
    async fn lease(&self, platform: &str, calls: u64) -> Result<LeasedKey, KeyError> {
        self.0.lease(platform, calls).await
    }
    async fn lease_within(
        &self,
        platform: &str,
        calls: u64,
        deadline: Duration,
    ) -> Result<LeasedKey, KeyError> {
        self.0.lease_within(platform, calls, deadline).await
    }
    async fn observe_lease(
        &self,
        leased: &mut LeasedKey,
        status: u16,
        seen: &keyman::ratelimit::RateLimit,
    ) -> Result<keyman::service::Next, KeyError> {
        self.0.observe_lease(leased, status, seen).await
    }
    async fn observe_lease_within(
        &self,
        leased: &mut LeasedKey,
        status: u16,
        seen: &keyman::ratelimit::RateLimit,
        deadline: Duration,
    ) -> Result<keyman::service::Next, KeyError> {
        self.0
            .observe_lease_within(leased, status, seen, deadline)
            .await
    }
    async fn release(&self, leased: LeasedKey) -> Result<(), KeyError> {
        self.0.release(leased).await
    }
}

#[async_trait]
impl KeyAdmin for Admin {
    async fn publish(&self, platform: &str, key: &str) -> Result<(), KeyError> {
        self.0.publish(platform, key).await
    }
    async fn publish_account(
        &self,
        platform: &str,
        key: &str,
        account: Option<&str>,
        limit: Option<u64>,
    ) -> Result<(), KeyError> {
        self.0.publish_account(platform, key, account, limit).await
    }
    async fn unpublish(&self, platform: &str, key: &str) -> Result<(), KeyError> {
        self.0.unpublish(platform, key).await
    }
    async fn ping(&self) -> Result<(), KeyError> {
        self.0.ping().await
    }
    async fn platforms(&self) -> Result<Vec<String>, KeyError> {
        self.0.platforms().await
    }
    async fn keys(&self, platform: &str) -> Result<Vec<String>, KeyError> {
        self.0.keys(platform).await
    }
    async fn invalid_keys(&self, platform: &str) -> Result<Vec<String>, KeyError> {
        self.0.invalid_keys(platform).await
    }
    async fn status(&self) -> Result<Vec<PlatformStatus>, KeyError> {
        self.0.status().await
    }
    async fn shutdown(&self) -> Result<(), KeyError> {
        self.0.shutdown().await
    }
}

async fn setup_on(broker: Broker) -> (support::behaviour::Source, support::behaviour::Admin) {
    let serve = Serve::start(&broker);
    let bus = broker.bus().await;
    let config = support::client_config(Duration::from_secs(10));
    let admin = KeyPublisher::connect(bus.clone(), config.clone())
        .await
        .expect("publisher");
    admin.ping().await.expect("the orchestrator answers");
    let worker = KeyClient::connect(bus, config).await.expect("client");
    let running = Arc::new(Running {
        _serve: serve,
        _broker: broker,
    });
    (
        Arc::new(Worker(worker, running.clone())),
        Arc::new(Admin(admin, running)),
    )
}

#[cfg(feature = "redis")]
mod over_redis {
    use super::*;

    async fn setup() -> (support::behaviour::Source, support::behaviour::Admin) {
        setup_on(Broker::redis()).await
    }

    support::behaviour::behaviour_tests!(setup);
}

#[cfg(feature = "nats")]
mod over_nats {
    use super::*;

    async fn setup() -> (support::behaviour::Source, support::behaviour::Admin) {
        setup_on(Broker::nats()).await
    }

    support::behaviour::behaviour_tests!(setup);
}
