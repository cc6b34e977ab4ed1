//! [`ConnectionOptions`]: the settings every broker connection has, whatever
//! the broker. Each adapter's options hold one, beside what is its own.

use crate::{Backoff, DEFAULT_QUEUE_CAPACITY};
#[cfg(doc)]
use crate::{BusError, SubscriptionSender};
use std::time::Duration;

/// Timeouts, reconnection and queueing of a broker connection;
/// [`ConnectionOptions::default`] suits most uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionOptions {
    /// The longest a connection attempt, a publish or a subscribe may take
    /// before it fails with [`BusError::Timeout`]. Default 3 s.
    pub operation_timeout: Duration,
    /// The waits between reconnection attempts. Default 50 ms doubling up to 1 s.
    pub reconnect: Backoff,
    /// How many events a subscription queues for a slow reader before the task
    /// that feeds it waits for room (see [`SubscriptionSender`]; what the
    /// broker does meanwhile is said by each adapter). Default 4096.
    pub queue_capacity: usize,
}

impl Default for ConnectionOptions {
    fn default() -> Self {
        Self {
            operation_timeout: Duration::from_secs(3),
            reconnect: Backoff::default(),
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
        }
    }
}
