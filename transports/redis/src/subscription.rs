//! The task behind each subscription of a [`RedisBus`](crate::RedisBus): it
//! forwards messages, checks the connection with `PING`, and reconnects.
//!
//! While the subscription's queue is full the task waits for room and takes
//! nothing more from the connection. (The Redis client reads the socket in a
//! task of its own and keeps what it has read until this task takes it.) What
//! the client has not read yet Redis buffers for the subscriber, up to its
//! `client-output-buffer-limit pubsub` (by default `32mb 8mb 60`: 32 MB at
//! once, or 8 MB for 60 s); beyond it Redis closes the connection, this task
//! reports `Disconnected`, reconnects, reports `Reconnected`, and what was
//! published in between is lost for this subscriber. Operators who expect
//! bursts larger than that raise the limit, for example
//! `CONFIG SET client-output-buffer-limit "pubsub 256mb 128mb 60"`.

use crate::bus::BusShared;
use futures_util::StreamExt;
use keyman_transport::adapter::bounded;
use keyman_transport::{Delivery, Message, SubscriptionSender};
use redis::aio::{PubSubSink, PubSubStream};
use std::sync::Arc;
use std::time::Duration;

/// Feeds one subscription until it is dropped: forwards messages, and after a
/// lost connection reconnects, subscribes the channels and the glob `patterns`
/// (if any) again and reports both.
pub(crate) async fn feed_subscription(
    bus: Arc<BusShared>,
    channels: Vec<String>,
    patterns: Vec<String>,
    mut sink: PubSubSink,
    mut stream: PubSubStream,
    sender: SubscriptionSender,
) {
    loop {
        let Some(reason) = forward_messages(&bus, &mut sink, &mut stream, &sender).await else {
            return;
        };
        tracing::warn!(server = %bus.server, %reason, "Redis subscription lost its connection");
        if sender.send_disconnected(reason).await == Delivery::Closed {
            return;
        }
        let mut attempt: u32 = 0;
        (sink, stream) = loop {
            attempt = attempt.saturating_add(1);
            tokio::select! {
                () = sender.closed() => return,
                () = tokio::time::sleep(bus.options.reconnect.delay(attempt)) => {}
            }
            match bounded(
                bus.options.operation_timeout,
                bus.open_watching(&channels, &patterns),
            )
            .await
            {
                Ok(connection) => break connection,
                Err(err) => {
                    tracing::debug!(server = %bus.server, attempt, error = %err, "Redis subscription reconnect failed");
                }
            }
        };
        tracing::info!(server = %bus.server, attempt, "Redis subscription reconnected");
        if sender.send_reconnected().await == Delivery::Closed {
            return;
        }
    }
}

/// Forwards messages until the connection is lost (returns why) or the
/// subscription is dropped (returns `None`).
async fn forward_messages(
    bus: &BusShared,
    sink: &mut PubSubSink,
    stream: &mut PubSubStream,
    sender: &SubscriptionSender,
) -> Option<String> {
    let check_every = bus.options.health_check_interval;
    // Without checks the interval only exists to keep the `select!` simple.
    let mut health_check =
        tokio::time::interval(check_every.unwrap_or(Duration::from_secs(24 * 60 * 60)));
    health_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick completes at once.
    health_check.tick().await;
    loop {
        tokio::select! {
            () = sender.closed() => return None,
            message = stream.next() => {
                let Some(message) = message else {
                    return Some(format!("connection to the Redis server at {} closed", bus.server));
                };
                let message = Message {
                    channel: message.get_channel_name().to_owned(),
                    payload: message.get_payload_bytes().to_vec(),
                    reply_to: None,
                };
                if sender.send_message(message).await == Delivery::Closed {
                    return None;
                }
            }
            _ = health_check.tick(), if check_every.is_some() => {
                let ping = tokio::time::timeout(
                    bus.options.operation_timeout,
                    sink.ping::<redis::Value>(),
                )
                .await;
                match ping {
                    Ok(Ok(_)) => {}
                    Ok(Err(err)) => return Some(format!("PING to the Redis server at {} failed: {err}", bus.server)),
                    Err(_) => return Some(format!(
                        "the Redis server at {} did not answer PING within {:?}",
                        bus.server, bus.options.operation_timeout
                    )),
                }
            }
        }
    }
}
