//! The task behind each subscription of a [`RedisBus`](crate::RedisBus): it
//! reads its connection, forwards messages, checks an idle connection with
//! `PING`, and reconnects.
//!
//! **Backpressure.** The task reads the next value from the socket only once
//! the previous message is in the subscription's queue. While the queue is
//! full it reads nothing: the kernel's socket buffer fills, and then Redis
//! keeps what is published for this subscriber in its output buffer, up to
//! its `client-output-buffer-limit pubsub` (by default `32mb 8mb 60`: 32 MB
//! at once, or 8 MB for 60 s). keyman holds at most the queue and a read
//! buffer of a few KiB, whatever the size of the burst.
//!
//! **Beyond the limit** Redis closes the connection. The task reads what
//! had reached the socket, then reports `Disconnected` with what it knows
//! (how many messages came on the connection, how long reading was held back,
//! and that the limit was most likely hit), reconnects, subscribes again,
//! logs the gap and reports `Reconnected`. What was published after the last
//! message received and before the new subscription is lost for this
//! subscriber; Redis tells no subscriber how many messages that was.
//!
//! # Modules
//!
//! - `connection`: one subscribed connection, read one value at a time.
//! - `stream`: TCP, or TLS for `rediss://`, under it.

mod connection;
mod stream;

pub(crate) use connection::{SubscriberConnection, Topics};

use crate::bus::BusShared;
use connection::Incoming;
use futures_util::FutureExt;
use keyman_transport::adapter::bounded;
use keyman_transport::{Delivery, SubscriptionSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How recently reading must have been held back for a closed connection to
/// be put down to Redis's output buffer limit: its soft limit counts 60 s by
/// default.
const LIMIT_WINDOW: Duration = Duration::from_secs(60);

/// What the task knows of one connection, for the log and the `Disconnected`
/// reason when the connection ends.
#[derive(Debug, Default)]
struct Reading {
    /// Messages received on it.
    received: u64,
    /// When the last of them was received.
    last_message: Option<Instant>,
    /// How long, in all, the task waited for room in the queue (reading nothing).
    held_back: Duration,
    /// When it last stopped waiting for room.
    last_held: Option<Instant>,
}

/// Feeds one subscription until it is dropped: forwards messages, and after a
/// lost connection reconnects, subscribes to `topics` again and reports both.
pub(crate) async fn feed(
    bus: Arc<BusShared>,
    topics: Topics,
    mut connection: SubscriberConnection,
    sender: SubscriptionSender,
) {
    loop {
        let mut reading = Reading::default();
        let Some(cause) = forward(&bus, &mut connection, &sender, &mut reading).await else {
            return;
        };
        drop(connection);
        let lost_at = Instant::now();
        let reason = lost_reason(&cause, &reading, lost_at);
        tracing::warn!(
            server = %bus.server,
            received = reading.received,
            held_back_ms = reading.held_back.as_millis() as u64,
            %reason,
            "Redis subscription lost its connection"
        );
        if sender.send_disconnected(reason).await == Delivery::Closed {
            return;
        }
        let mut attempt: u32 = 0;
        connection = loop {
            attempt = attempt.saturating_add(1);
            tokio::select! {
                () = sender.closed() => return,
                () = tokio::time::sleep(bus.options.connection.reconnect.delay(attempt)) => {}
            }
            match bounded(
                bus.options.connection.operation_timeout,
                SubscriberConnection::open(&bus, &topics),
            )
            .await
            {
                Ok(connection) => break connection,
                Err(err) => {
                    tracing::debug!(server = %bus.server, attempt, error = %err, "Redis subscription reconnect failed");
                }
            }
        };
        let gap = reading.last_message.unwrap_or(lost_at).elapsed();
        tracing::warn!(
            server = %bus.server,
            attempt,
            gap_ms = gap.as_millis() as u64,
            received_before = reading.received,
            "Redis subscription back; what was published on its channels after the last message it received ({gap:?} ago) until now was not received"
        );
        if sender.send_reconnected().await == Delivery::Closed {
            return;
        }
    }
}

/// Why a connection was lost, with what the task knows of the gap.
fn lost_reason(cause: &str, reading: &Reading, lost_at: Instant) -> String {
    let mut reason = cause.to_owned();
    let held_lately = reading
        .last_held
        .is_some_and(|held| lost_at.saturating_duration_since(held) <= LIMIT_WINDOW);
    if held_lately {
        reason.push_str(&format!(
            "; reading had been held back for {:?} in all because the subscriber's queue was full, \
             so the server most likely cut the subscriber off at its client-output-buffer-limit pubsub",
            reading.held_back
        ));
    }
    reason.push_str(&format!(
        "; {} messages were received on the connection, and what was published after the last of them \
         until the subscription is back is lost for this subscriber",
        reading.received
    ));
    reason
}

/// Forwards messages until the connection is lost (returns why) or the
/// subscription is dropped (returns `None`).
///
/// A value is read only once the message before it is queued. The connection
/// is checked with `PING` after `health_check_interval` without anything
/// received, and counts as lost if nothing at all comes within the operation
/// timeout after it; time spent waiting for room in the queue counts as
/// neither.
async fn forward(
    bus: &BusShared,
    connection: &mut SubscriberConnection,
    sender: &SubscriptionSender,
    reading: &mut Reading,
) -> Option<String> {
    let timeout = bus.options.connection.operation_timeout;
    let idle = bus.options.health_check_interval;
    // One timer, moved only when it fires: it then looks whether anything
    // came since it was set, which costs nothing per message.
    let check = tokio::time::sleep(idle.unwrap_or(Duration::from_secs(24 * 60 * 60)));
    tokio::pin!(check);
    let mut values: u64 = 0;
    let mut values_at_check: u64 = 0;
    let mut ping_sent = false;
    loop {
        // What is buffered or readable now is taken without the timers.
        let incoming = match connection.receive().now_or_never() {
            Some(incoming) => incoming,
            None => tokio::select! {
                biased;
                () = sender.closed() => return None,
                incoming = connection.receive() => incoming,
                () = &mut check, if idle.is_some() => {
                    if values != values_at_check {
                        ping_sent = false;
                    } else if ping_sent {
                        return Some(format!(
                            "the Redis server at {} did not answer PING within {timeout:?}",
                            bus.server
                        ));
                    } else {
                        match tokio::time::timeout(timeout, connection.ping()).await {
                            Ok(Ok(())) => ping_sent = true,
                            Ok(Err(err)) => {
                                return Some(format!("PING to the Redis server at {} failed: {err}", bus.server));
                            }
                            Err(_) => {
                                return Some(format!(
                                    "the Redis server at {} did not take PING within {timeout:?}",
                                    bus.server
                                ));
                            }
                        }
                    }
                    values_at_check = values;
                    let wait = if ping_sent { timeout } else { idle.unwrap_or(timeout) };
                    check.as_mut().reset(tokio::time::Instant::now() + wait);
                    continue;
                }
            },
        };
        values = values.wrapping_add(1);
        let message = match incoming {
            Ok(Incoming::Message(message)) => message,
            Ok(Incoming::Subscribed | Incoming::Other) => continue,
            Ok(Incoming::Error(err)) => {
                return Some(format!(
                    "the Redis server at {} sent an error on the subscription connection: {err}",
                    bus.server
                ));
            }
            Err(err) if err.is_connection_dropped() => {
                return Some(format!(
                    "the Redis server at {} closed the connection ({err})",
                    bus.server
                ));
            }
            Err(err) => {
                return Some(format!(
                    "connection to the Redis server at {} lost: {err}",
                    bus.server
                ));
            }
        };
        reading.received += 1;
        reading.last_message = Some(Instant::now());
        match sender.try_send_message(message) {
            Ok(Delivery::Accepted) => {}
            Ok(Delivery::Closed) => return None,
            Err(message) => {
                // The queue is full: read nothing until there is room.
                let waiting_since = Instant::now();
                if sender.send_message(message).await == Delivery::Closed {
                    return None;
                }
                let now = Instant::now();
                reading.held_back += now - waiting_since;
                reading.last_held = Some(now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_lost_while_held_back_is_put_down_to_the_buffer_limit() {
        let lost_at = Instant::now();
        let held = Reading {
            received: 1234,
            last_message: Some(lost_at),
            held_back: Duration::from_millis(1500),
            last_held: Some(lost_at),
        };
        let reason = lost_reason("connection lost", &held, lost_at);
        assert!(reason.starts_with("connection lost; "), "{reason}");
        assert!(
            reason.contains("client-output-buffer-limit pubsub"),
            "{reason}"
        );
        assert!(reason.contains("1.5s"), "{reason}");
        assert!(reason.contains("1234 messages"), "{reason}");

        let free = Reading {
            received: 7,
            ..Reading::default()
        };
        let reason = lost_reason("connection lost", &free, lost_at);
        assert!(!reason.contains("client-output-buffer-limit"), "{reason}");
        assert!(reason.contains("7 messages"), "{reason}");
    }
}
