//! The bus and the store as the orchestrator sees them when it has metrics:
//! the bus times the replies it publishes, the store notes when the state
//! last landed. Everything else passes through unchanged.

use super::Metrics;
use crate::service::{Bus, BusError, StateStore, Subscription};
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
    async fn load(&self) -> Result<Option<Vec<u8>>, BusError> {
        let loaded = self.inner.load().await;
        if loaded.is_ok() {
            self.metrics.saved();
        }
        loaded
    }

    async fn save(&self, state: &[u8]) -> Result<(), BusError> {
        let saved = self.inner.save(state).await;
        if saved.is_ok() {
            self.metrics.saved();
        }
        saved
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}
