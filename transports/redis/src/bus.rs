//! [`RedisBus`]: the publishing connection, commands on it, and subscribing.

use crate::RedisOptions;
use crate::subscription::{SubscriberConnection, Topics, feed};
use crate::url::open_client;
use async_trait::async_trait;
use keyman_transport::adapter::{bounded, spawn_subscription, subscribe_channels};
use keyman_transport::{Bus, BusError, ErrorDetail, Subscription};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ErrorKind, RedisError};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A [`Bus`] over Redis pub/sub. Cloning it is cheap and shares the publishing
/// connection.
#[derive(Clone)]
pub struct RedisBus {
    pub(crate) shared: Arc<BusShared>,
}

pub(crate) struct BusShared {
    pub(crate) client: redis::Client,
    pub(crate) options: RedisOptions,
    /// `host:port` of the server, for messages; never the password.
    pub(crate) server: String,
    /// The publishing connection with its number, or `None` until the next publish opens one.
    pub(crate) publisher: tokio::sync::Mutex<Option<(u64, MultiplexedConnection)>>,
    pub(crate) next_connection: AtomicU64,
}

impl std::fmt::Debug for RedisBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let publisher = match self.shared.publisher.try_lock() {
            Ok(guard) => Some(guard.as_ref().map(|(number, _)| *number)),
            Err(_) => None,
        };
        f.debug_struct("RedisBus")
            .field("server", &self.shared.server)
            .field("publishing_connection", &publisher)
            .field("options", &self.shared.options)
            .finish_non_exhaustive()
    }
}

impl RedisBus {
    /// Connects to the server of a `redis://` or `rediss://` URL, such as
    /// `redis://user:password@host:6379/2`, and checks that it answers.
    ///
    /// Errors: [`BusError::Config`] when the URL is bad or Redis refuses the
    /// credentials (`AUTH`), [`BusError::Disconnected`] when nothing answers at
    /// the address, [`BusError::Timeout`] past
    /// [`ConnectionOptions::operation_timeout`](keyman_transport::ConnectionOptions::operation_timeout). Each names `host:port`, never the
    /// password.
    pub async fn connect(url: &str, options: RedisOptions) -> Result<Self, BusError> {
        let client = open_client(url)?;
        let timeout = options.connection.operation_timeout;
        let server = client.get_connection_info().addr().to_string();
        let bus = Self {
            shared: Arc::new(BusShared {
                client,
                options,
                server,
                publisher: tokio::sync::Mutex::new(None),
                next_connection: AtomicU64::new(0),
            }),
        };
        bounded(timeout, bus.shared.check_connection()).await?;
        Ok(bus)
    }

    /// The options it was connected with.
    pub fn options(&self) -> &RedisOptions {
        &self.shared.options
    }

    /// `host:port` of the server it talks to.
    pub fn server(&self) -> &str {
        &self.shared.server
    }
}

impl BusShared {
    fn connection_config(&self) -> AsyncConnectionConfig {
        AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.options.connection.operation_timeout))
            .set_response_timeout(Some(self.options.connection.operation_timeout))
    }

    /// Runs a command on the publishing connection, within the operation timeout.
    pub(crate) async fn command<T: redis::FromRedisValue>(
        &self,
        cmd: redis::Cmd,
    ) -> Result<T, BusError> {
        bounded(self.options.connection.operation_timeout, async {
            let (number, mut connection) = self.publisher_connection().await?;
            match cmd.query_async::<T>(&mut connection).await {
                Ok(v) => Ok(v),
                Err(err) => {
                    let error = self.bus_error(&err);
                    if matches!(error, BusError::Disconnected(_) | BusError::Timeout(_)) {
                        self.forget_publisher(Some(number)).await;
                    }
                    Err(error)
                }
            }
        })
        .await
    }

    /// The publishing connection, opened if there is none.
    async fn publisher_connection(&self) -> Result<(u64, MultiplexedConnection), BusError> {
        let mut slot = self.publisher.lock().await;
        if let Some((number, connection)) = slot.as_ref() {
            return Ok((*number, connection.clone()));
        }
        let connection = self
            .client
            .get_multiplexed_async_connection_with_config(&self.connection_config())
            .await
            .map_err(|err| self.bus_error(&err))?;
        let number = self.next_connection.fetch_add(1, Ordering::Relaxed);
        *slot = Some((number, connection.clone()));
        Ok((number, connection))
    }

    /// Opens the publishing connection and checks that the server answers
    /// (and accepts the credentials) with `PING`.
    async fn check_connection(&self) -> Result<(), BusError> {
        let (_, mut connection) = self.publisher_connection().await?;
        redis::cmd("PING")
            .query_async::<redis::Value>(&mut connection)
            .await
            .map_err(|err| self.bus_error(&err))?;
        Ok(())
    }

    /// Drops publishing connection `number` (if it is still the current one) so
    /// that the next publish opens a new one.
    async fn forget_publisher(&self, number: Option<u64>) {
        let mut slot = self.publisher.lock().await;
        if slot
            .as_ref()
            .is_some_and(|(current, _)| number.is_none_or(|number| number == *current))
        {
            *slot = None;
        }
    }

    async fn publish(&self, channel: &str, payload: &[u8]) -> Result<(), BusError> {
        let (number, mut connection) = self.publisher_connection().await?;
        let result: Result<i64, RedisError> = redis::cmd("PUBLISH")
            .arg(channel)
            .arg(payload)
            .query_async(&mut connection)
            .await;
        match result {
            Ok(_receivers) => Ok(()),
            Err(err) => {
                let error = self.bus_error(&err);
                if matches!(error, BusError::Disconnected(_) | BusError::Timeout(_)) {
                    self.forget_publisher(Some(number)).await;
                }
                Err(error)
            }
        }
    }

    /// Opens a subscription connection for `topics` (within the operation
    /// timeout) and spawns the task that feeds the subscription from it.
    async fn subscribe(self: &Arc<Self>, topics: Topics) -> Result<Subscription, BusError> {
        let connection = bounded(
            self.options.connection.operation_timeout,
            SubscriberConnection::open(self, &topics),
        )
        .await?;
        let bus = Arc::clone(self);
        Ok(spawn_subscription(
            self.options.connection.queue_capacity,
            |sender| feed(bus, topics, connection, sender),
        ))
    }

    /// Translates an error of the Redis client.
    pub(crate) fn bus_error(&self, err: &RedisError) -> BusError {
        let server = &self.server;
        let detail = |message: String| ErrorDetail::with_source(message, err.clone());
        match err.kind() {
            ErrorKind::InvalidClientConfig => {
                BusError::Config(detail(format!("bad Redis configuration: {err}")))
            }
            _ if matches!(err.code(), Some("NOAUTH" | "WRONGPASS")) => BusError::Config(detail(
                format!("the Redis server at {server} refused the credentials: {err}"),
            )),
            ErrorKind::AuthenticationFailed => BusError::Config(detail(format!(
                "the Redis server at {server} refused the credentials: {err}"
            ))),
            _ if err.is_timeout() => BusError::Timeout(self.options.connection.operation_timeout),
            _ if err.is_io_error()
                || err.is_connection_dropped()
                || err.is_connection_refusal()
                || err.is_unrecoverable_error() =>
            {
                BusError::Disconnected(detail(format!("Redis server at {server}: {err}")))
            }
            _ => BusError::Broker(detail(format!("Redis server at {server}: {err}"))),
        }
    }
}

#[async_trait]
impl Bus for RedisBus {
    /// Publishes with `PUBLISH`. Fails with [`BusError::Disconnected`] when the
    /// server cannot be reached and with [`BusError::Timeout`] when it does not
    /// answer within the operation timeout; the next publish reconnects.
    async fn publish(&self, channel: &str, payload: &[u8]) -> Result<(), BusError> {
        let timeout = self.shared.options.connection.operation_timeout;
        let result = bounded(timeout, self.shared.publish(channel, payload)).await;
        if let Err(BusError::Timeout(_)) = result {
            // A connection that does not answer is of no further use.
            self.shared.forget_publisher(None).await;
        }
        result
    }

    /// Opens a pub/sub connection of its own, subscribes it and waits for the
    /// server's confirmation, so the subscription is live when this returns.
    /// While the subscription's queue is full nothing more is read from the
    /// connection, and Redis buffers what comes meanwhile (see the crate docs).
    async fn subscribe(&self, channels: &[String]) -> Result<Subscription, BusError> {
        let topics = Topics {
            channels: subscribe_channels(channels)?,
            patterns: Vec::new(),
        };
        self.shared.subscribe(topics).await
    }

    /// Subscribes the channels (`SUBSCRIBE`) and one glob pattern per prefix
    /// (`PSUBSCRIBE`, the prefix with `*`, `?`, `[`, `]` and `\` escaped) on
    /// one pub/sub connection, so that the server delivers both in the order
    /// it handled the publishes; after a lost connection both are subscribed
    /// again.
    async fn subscribe_checked_prefixes(
        &self,
        channels: Vec<String>,
        prefixes: Vec<String>,
    ) -> Result<Subscription, BusError> {
        let topics = Topics {
            channels,
            patterns: prefixes.iter().map(|p| prefix_pattern(p)).collect(),
        };
        self.shared.subscribe(topics).await
    }
}

/// The Redis glob pattern that matches the channels starting with `prefix`.
fn prefix_pattern(prefix: &str) -> String {
    let mut pattern = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('*');
    pattern
}

#[cfg(test)]
mod tests {
    use super::prefix_pattern;

    #[test]
    fn a_prefix_pattern_escapes_glob_characters() {
        assert_eq!(
            prefix_pattern("worker-oath-request-"),
            "worker-oath-request-*"
        );
        assert_eq!(prefix_pattern("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\*");
    }
}
