//! [`NatsOptions`]: the settings of a [`NatsBus`](crate::NatsBus).

use keyman_transport::ConnectionOptions;
use std::time::Duration;

/// The default of `NatsOptions::client_buffer`.
const DEFAULT_CLIENT_BUFFER: usize = 1 << 21;

/// Settings of a [`NatsBus`](crate::NatsBus); [`NatsOptions::default`] suits most uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsOptions {
    /// Timeouts, reconnection and the subscription queue. When a
    /// subscription's queue is full, the task that feeds it waits; the NATS
    /// client goes on reading meanwhile, into its own buffer
    /// ([`client_buffer`](Self::client_buffer)).
    pub connection: ConnectionOptions,
    /// How many messages the NATS client buffers for each subscription while
    /// that task waits. The client keeps reading the connection (the server
    /// would cut a client that stops), so beyond this it drops messages and
    /// the subscription is told of the gap. Memory is taken only as messages
    /// wait. Default 2 097 152 (2²¹).
    pub client_buffer: usize,
    /// The largest message put together again from chunks. A payload larger
    /// than the server takes (its `max_payload`, 1 MiB by default) is sent in
    /// chunks that subscriptions and requests of a [`NatsBus`](crate::NatsBus)
    /// put together again; beyond this size they drop it. Default 64 MiB.
    pub max_message: usize,
    /// How often the client pings the server; after two unanswered pings it
    /// treats the connection as lost and reconnects. Default 15 s.
    pub health_check_interval: Duration,
    /// The client name the server shows for this connection, if any.
    pub client_name: Option<String>,
}

impl Default for NatsOptions {
    fn default() -> Self {
        Self {
            connection: ConnectionOptions::default(),
            client_buffer: DEFAULT_CLIENT_BUFFER,
            max_message: 64 * 1024 * 1024,
            health_check_interval: Duration::from_secs(15),
            client_name: None,
        }
    }
}
