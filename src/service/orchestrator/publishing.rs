//! Publishing the engine's replies: a bounded outbox drained by a task that
//! pipelines the publishes on the broker connection.
//!
//! With a lease, a reply is published only while the term may still answer
//! (its lease is valid): a reply that waited past that, in a loaded or paused
//! process, is dropped, because the next holder may already be answering its
//! request, and Augur's client would read a second reply as the answer to its
//! next request.

use super::super::Bus;
use crate::engine::Transmit;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

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
    /// Starts the task that publishes on `bus`, while `valid_until` (the
    /// term's lease; `None`: no lease) has not passed.
    pub(super) fn start(bus: Arc<dyn Bus>, valid_until: watch::Receiver<Option<Instant>>) -> Self {
        let (tx, rx) = mpsc::channel::<Transmit>(OUTBOX);
        Self {
            tx,
            publisher: tokio::spawn(publish_loop(bus, rx, valid_until)),
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
async fn publish_loop(
    bus: Arc<dyn Bus>,
    mut rx: mpsc::Receiver<Transmit>,
    valid_until: watch::Receiver<Option<Instant>>,
) {
    let mut batch = Vec::with_capacity(PUBLISH_BATCH);
    while rx.recv_many(&mut batch, PUBLISH_BATCH).await > 0 {
        let until = *valid_until.borrow();
        if until.is_some_and(|until| Instant::now() >= until) {
            tracing::warn!(
                replies = batch.len(),
                "replies not sent: the lease ended before they could be published; the next holder answers their requests"
            );
            batch.clear();
            continue;
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use keyman_transport::MemoryBus;
    use std::time::Duration;

    /// What an outbox whose term may answer until `valid_until` publishes of
    /// one reply, once it has finished.
    async fn published(valid_until: Option<Instant>) -> Option<Vec<u8>> {
        let bus = MemoryBus::new();
        let mut sub = bus
            .subscribe(&["reply-1".to_owned()])
            .await
            .expect("subscribe");
        let (_validity, rx) = watch::channel(valid_until);
        let outbox = Outbox::start(Arc::new(bus), rx);
        outbox
            .send(Transmit {
                channel: "reply-1".into(),
                payload: b"{\"key\":\"k\"}".to_vec(),
            })
            .await
            .expect("queued");
        outbox.finish(Duration::from_secs(5)).await;
        match sub.try_next() {
            Some(keyman_transport::BusEvent::Message(m)) => Some(m.payload),
            _ => None,
        }
    }

    #[tokio::test]
    async fn replies_go_out_without_a_lease_and_while_it_is_valid() {
        assert!(published(None).await.is_some());
        let later = Instant::now() + Duration::from_secs(60);
        assert!(published(Some(later)).await.is_some());
    }

    #[tokio::test]
    async fn a_reply_that_waited_past_the_lease_is_not_sent() {
        assert_eq!(published(Some(Instant::now())).await, None);
    }
}
