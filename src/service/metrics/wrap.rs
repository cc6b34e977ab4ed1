//! The bus and the store as the orchestrator sees them when it has metrics:
//! the bus times the replies it publishes, the store notes when the state
//! last landed. Everything else passes through unchanged.

use super::Metrics;
use crate::service::{Bus, BusError, Records, Saved, StateStore, StateWrite, Subscription};
use async_trait::async_trait;
use std::sync::Arc;

/// A [`Bus`] that tells [`Metrics`] when a reply has been published.
pub(crate) struct MeteredBus {
    pub(crate) inner: Arc<dyn Bus>,
    pub(crate) metrics: Metrics,
}

#[async_trait]
impl Bus for MeteredBus {
    async fn publish(&self, channel: &str, payload: &[u8]) -> Result<(), BusError> {
        let result = self.inner.publish(channel, payload).await;
        let arrived = self.metrics.tracking().published(channel);
        if let (Some(arrived), Ok(())) = (arrived, &result) {
            self.metrics.reply_published(arrived);
        }
        result
    }

    async fn subscribe(&self, channels: &[String]) -> Result<Subscription, BusError> {
        self.inner.subscribe(channels).await
    }

    async fn request(
        &self,
        channel: &str,
        payload: &[u8],
        timeout: std::time::Duration,
    ) -> Result<Vec<u8>, BusError> {
        self.inner.request(channel, payload, timeout).await
    }

    fn supports_request(&self) -> bool {
        self.inner.supports_request()
    }
}

/// A [`StateStore`] that tells [`Metrics`] when the state landed or was loaded.
pub(crate) struct MeteredStore {
    pub(crate) inner: Arc<dyn StateStore>,
    pub(crate) metrics: Metrics,
}

#[async_trait]
impl StateStore for MeteredStore {
    async fn load(&self, fence: Option<&str>) -> Result<Option<Records>, BusError> {
        let loaded = self.inner.load(fence).await;
        if loaded.is_ok() {
            self.metrics.saved();
        }
        loaded
    }

    async fn save(&self, write: &StateWrite, fence: Option<&str>) -> Result<Saved, BusError> {
        let saved = self.inner.save(write, fence).await;
        if matches!(saved, Ok(Saved::Written)) {
            self.metrics.saved();
        }
        saved
    }

    async fn set_aside(&self, stamp_ms: u64) -> Result<Option<String>, BusError> {
        self.inner.set_aside(stamp_ms).await
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}
