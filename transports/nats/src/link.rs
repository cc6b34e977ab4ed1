//! The state of the connection as subscriptions see it: the client's
//! connection events turned into [`LinkStatus`], and the task that feeds a
//! subscription and reports changes of it.

use crate::bus::BusShared;
use crate::chunk::{Assembled, Assembler};
use async_nats::Event;
use futures_util::StreamExt;
use futures_util::stream::SelectAll;
use keyman_transport::adapter::bounded;
use keyman_transport::{Delivery, Message, SubscriptionSender};
use std::sync::Weak;
use tokio::sync::{mpsc, watch};

/// What subscriptions are told about the connection.
#[derive(Debug, Clone, Default)]
pub(crate) struct LinkStatus {
    /// Whether the connection is up and every subscription is in place.
    pub(crate) up: bool,
    /// How often the connection was lost so far.
    pub(crate) losses: u64,
    /// Why it was lost the last time.
    pub(crate) reason: String,
    /// How often the client dropped messages for a slow subscription.
    pub(crate) overflows: u64,
}

/// Turns the client's connection events into the [`LinkStatus`] the
/// subscriptions watch. Ends when the bus and its subscriptions are gone.
pub(crate) async fn watch_connection(
    bus: Weak<BusShared>,
    mut events: mpsc::UnboundedReceiver<Event>,
    link: watch::Sender<LinkStatus>,
) {
    while let Some(event) = events.recv().await {
        match event {
            Event::Disconnected => {
                let server = bus
                    .upgrade()
                    .map(|bus| bus.server.clone())
                    .unwrap_or_default();
                tracing::warn!(%server, "NATS connection lost");
                link.send_modify(|status| {
                    status.up = false;
                    status.losses += 1;
                    status.reason = format!("connection to the NATS server at {server} lost");
                });
            }
            Event::Connected => {
                if link.borrow().up {
                    // The first connection, reported late.
                    continue;
                }
                // The client has queued the subscriptions again; report the
                // connection back once the server has them.
                let mut attempt: u32 = 0;
                loop {
                    let Some(shared) = bus.upgrade() else {
                        return;
                    };
                    if bounded(
                        shared.options.connection.operation_timeout,
                        shared.round_trip(),
                    )
                    .await
                    .is_ok()
                    {
                        tracing::info!(server = %shared.server, "NATS connection back");
                        link.send_modify(|status| status.up = true);
                        break;
                    }
                    if !events.is_empty() {
                        // Lost again meanwhile: handle that first.
                        break;
                    }
                    attempt = attempt.saturating_add(1);
                    tokio::time::sleep(shared.options.connection.reconnect.delay(attempt)).await;
                }
            }
            Event::SlowConsumer(sid) => {
                // One event per message the client dropped: count them, log a few.
                link.send_modify(|status| status.overflows += 1);
                let overflows = link.borrow().overflows;
                if overflows.is_power_of_two() {
                    tracing::warn!(
                        subscription = sid,
                        dropped = overflows,
                        "the NATS client dropped messages for a slow subscription (its buffer was full)"
                    );
                }
            }
            Event::Closed => {
                link.send_modify(|status| {
                    status.up = false;
                    status.losses += 1;
                    status.reason = "the NATS connection was closed".to_owned();
                });
            }
            other => tracing::info!(event = %other, "NATS client event"),
        }
    }
}

/// Feeds one subscription until it is dropped: forwards messages and reports
/// changes of the connection.
pub(crate) async fn feed_subscription(
    mut subscribers: SelectAll<async_nats::Subscriber>,
    mut link: watch::Receiver<LinkStatus>,
    sender: SubscriptionSender,
    max_message: usize,
) {
    let mut seen = link.borrow_and_update().clone();
    let mut assembler = Assembler::new(max_message);
    loop {
        tokio::select! {
            () = sender.closed() => return,
            message = subscribers.next() => {
                let Some(message) = message else {
                    // The client is closed for good.
                    sender.send_disconnected("the NATS connection was closed").await;
                    return;
                };
                let payload = match assembler.accept(&message.subject, message.headers.as_ref(), message.payload) {
                    Assembled::Whole(payload) => payload,
                    Assembled::Pending => continue,
                    Assembled::Dropped(reason) => {
                        tracing::warn!(%reason, "dropped a chunked message");
                        continue;
                    }
                };
                let message = Message {
                    channel: message.subject.as_str().to_owned(),
                    payload: payload.to_vec(),
                    reply_to: message.reply.map(|reply| reply.as_str().to_owned()),
                };
                if sender.send_message(message).await == Delivery::Closed {
                    return;
                }
            }
            changed = link.changed() => {
                if changed.is_err() {
                    sender.send_disconnected("the NATS connection was closed").await;
                    return;
                }
                let now = link.borrow_and_update().clone();
                if report_link_change(&sender, &seen, &now).await == Delivery::Closed {
                    return;
                }
                seen = now;
            }
        }
    }
}

/// Tells a subscription what changed between two states of the connection.
async fn report_link_change(
    sender: &SubscriptionSender,
    before: &LinkStatus,
    now: &LinkStatus,
) -> Delivery {
    let mut delivery = Delivery::Accepted;
    if now.losses > before.losses {
        delivery = sender.send_disconnected(now.reason.clone()).await;
    }
    if now.overflows > before.overflows {
        let dropped = now.overflows - before.overflows;
        delivery = sender
            .send_disconnected(format!(
                "the NATS client dropped {dropped} messages because its buffer for a subscription was full"
            ))
            .await;
        if now.up {
            delivery = sender.send_reconnected().await;
        }
    }
    if now.up && (!before.up || now.losses > before.losses) {
        delivery = sender.send_reconnected().await;
    }
    delivery
}
