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

    /// Passed through, so that a standby with metrics still watches the
    /// requests and their replies while it stands by.
    async fn subscribe_checked_prefixes(
        &self,
        channels: Vec<String>,
        prefixes: Vec<String>,
    ) -> Result<Subscription, BusError> {
        self.inner
            .subscribe_checked_prefixes(channels, prefixes)
            .await
    }

    async fn request_resending(
        &self,
        channel: &str,
        payload: &[u8],
        timeout: std::time::Duration,
        resend_every: std::time::Duration,
    ) -> Result<Vec<u8>, BusError> {
        self.inner
            .request_resending(channel, payload, timeout, resend_every)
            .await
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::BusEvent;
    use keyman_transport::MemoryBus;

    #[tokio::test]
    async fn a_metered_bus_subscribes_to_prefixes_as_the_bus_it_wraps() {
        let inner: Arc<dyn Bus> = Arc::new(MemoryBus::new());
        let bus = MeteredBus {
            inner: inner.clone(),
            metrics: Metrics::new(),
        };
        let mut watching = bus
            .subscribe_with_prefixes(&["requests".to_string()], &["requests-".to_string()])
            .await
            .expect("a standby with metrics can watch replies");
        inner
            .publish("requests-7", b"a reply")
            .await
            .expect("publish");
        match watching.next().await {
            Some(BusEvent::Message(m)) => {
                assert_eq!(
                    (m.channel.as_str(), &m.payload[..]),
                    ("requests-7", &b"a reply"[..])
                );
            }
            other => panic!("expected the reply, got {other:?}"),
        }
    }
}
