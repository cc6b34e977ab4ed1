//! [`RedisOptions`]: the settings of a [`RedisBus`](crate::RedisBus).

use keyman_transport::ConnectionOptions;
use std::time::Duration;

/// Settings of a [`RedisBus`](crate::RedisBus); [`RedisOptions::default`] suits most uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisOptions {
    /// Timeouts, reconnection and the subscription queue. When a
    /// subscription's queue is full, the task that feeds it stops reading its
    /// connection and leaves what comes meanwhile to Redis's output buffer for
    /// the subscriber (up to Redis's `client-output-buffer-limit pubsub`).
    pub connection: ConnectionOptions,
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
            connection: ConnectionOptions::default(),
            health_check_interval: Some(Duration::from_secs(15)),
        }
    }
}
