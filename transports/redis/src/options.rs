//! [`RedisOptions`]: the settings of a [`RedisBus`](crate::RedisBus).

use keyman_transport::{Backoff, DEFAULT_QUEUE_CAPACITY};
#[cfg(doc)]
use keyman_transport::{BusError, SubscriptionSender};
use std::time::Duration;

/// Settings of a [`RedisBus`](crate::RedisBus); [`RedisOptions::default`] suits most uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisOptions {
    /// The longest a publish, a subscribe or a connection attempt may take
    /// before it fails with [`BusError::Timeout`]. Default 3 s.
    pub operation_timeout: Duration,
    /// The waits between reconnection attempts of a subscription. Default 50 ms
    /// doubling up to 1 s.
    pub reconnect: Backoff,
    /// How many events a subscription queues for a slow reader before the task
    /// that feeds it waits for room (see [`SubscriptionSender`]) and stops
    /// reading its connection, leaving what comes meanwhile to Redis's output
    /// buffer for the subscriber. Default 4096.
    pub queue_capacity: usize,
    /// After how long without anything received a subscription connection is
    /// checked with `PING`, so a connection that died silently is noticed (it
    /// counts as lost when nothing comes within the operation timeout after
    /// the `PING`; time spent waiting for room in the queue counts as
    /// neither). `None` never checks. Default 15 s.
    pub health_check_interval: Option<Duration>,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            operation_timeout: Duration::from_secs(3),
            reconnect: Backoff::default(),
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            health_check_interval: Some(Duration::from_secs(15)),
        }
    }
}
