//! Publishing the engine's replies: a bounded outbox drained by a task that
//! pipelines the publishes on the broker connection.

use super::super::Bus;
use crate::engine::Transmit;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How many replies may wait to be published before the orchestrator stops
/// reading new requests (back-pressure, bounded memory).
const OUTBOX: usize = 4096;

/// The most replies published at once (pipelined on the broker connection).
const PUBLISH_BATCH: usize = 64;

/// The bus is closed: a reply could not be queued.
#[derive(Debug)]
pub(super) struct Closed;

/// The replies of one serving term on their way to the bus.
pub(super) struct Outbox {
    tx: mpsc::Sender<Transmit>,
    publisher: JoinHandle<()>,
}

impl Outbox {
    /// Starts the task that publishes on `bus`.
    pub(super) fn start(bus: Arc<dyn Bus>) -> Self {
        let (tx, rx) = mpsc::channel::<Transmit>(OUTBOX);
        Self {
            tx,
            publisher: tokio::spawn(publish_loop(bus, rx)),
        }
    }

    /// Queues a reply, waiting while the outbox is full.
    pub(super) async fn send(&self, transmit: Transmit) -> Result<(), Closed> {
        self.tx.send(transmit).await.map_err(|_| Closed)
    }

    /// Publishes every reply already queued, then returns; gives up after
    /// `limit` (the broker does not take them), stops publishing and logs how
    /// many replies were not sent.
    pub(super) async fn finish(self, limit: std::time::Duration) {
        let Self { tx, mut publisher } = self;
        // Replies the publisher has not taken yet (it may be stuck on a batch, too).
        let waiting = tx.max_capacity() - tx.capacity();
        drop(tx);
        if tokio::time::timeout(limit, &mut publisher).await.is_err() {
            publisher.abort();
            tracing::warn!(
                waiting,
                "could not publish the last replies within {limit:?}; their requesters ask again"
            );
        }
    }
}

/// Publishes the engine's replies: whatever has queued up is sent together, so
/// the broker connection is pipelined instead of waiting a round trip per reply.
/// Within a batch the publishes are issued in order.
async fn publish_loop(bus: Arc<dyn Bus>, mut rx: mpsc::Receiver<Transmit>) {
    let mut batch = Vec::with_capacity(PUBLISH_BATCH);
    while rx.recv_many(&mut batch, PUBLISH_BATCH).await > 0 {
        let sends = batch.iter().map(|tx| bus.publish(&tx.channel, &tx.payload));
        let results = futures_util::future::join_all(sends).await;
        for (tx, result) in batch.iter().zip(results) {
            if let Err(e) = result {
                // The requester waits with a deadline and asks again; nothing else to do.
                // The channel names the requester: text from outside.
                let channel = crate::service::log::Escaped(&tx.channel);
                tracing::warn!(%channel, error = %e, "could not publish a reply");
            }
        }
        batch.clear();
    }
}
