//! keyman's Redis transport: [`RedisBus`] moves bytes over Redis pub/sub
//! (`PUBLISH` / `SUBSCRIBE`).
//!
//! Publishing goes over one connection per bus, opened on first use and opened
//! again after it fails; every publish is bounded by
//! [`RedisOptions::operation_timeout`]. Every [`Bus::subscribe`] gets a pub/sub
//! connection of its own, driven by a background task that notices a lost
//! connection, reports [`BusEvent::Disconnected`](keyman_transport::BusEvent),
//! reconnects with capped exponential backoff, subscribes again, and reports
//! [`BusEvent::Reconnected`](keyman_transport::BusEvent). The task ends when the
//! [`Subscription`] is dropped, which closes its connection.
//!
//! Redis pub/sub keeps nothing: a message published while a subscriber is
//! disconnected is lost for it. Pub/sub channels are global, so the database
//! number of the URL does not matter to them.
//!
//! `rediss://` (TLS) URLs need the crate feature `tls`, which is off by default
//! because it builds a TLS stack (rustls with ring).

#![warn(missing_docs)]

use async_trait::async_trait;
use futures_util::StreamExt;
use keyman_transport::adapter::{bounded, spawn_subscription, subscribe_channels};
use keyman_transport::{
    Backoff, Bus, BusError, DEFAULT_QUEUE_CAPACITY, Delivery, Lease, Message, StateStore,
    Subscription, SubscriptionSender,
};
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use redis::{AsyncConnectionConfig, ErrorKind, RedisError};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Settings of a [`RedisBus`]; [`RedisOptions::default`] suits most uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisOptions {
    /// The longest a publish, a subscribe or a connection attempt may take
    /// before it fails with [`BusError::Timeout`]. Default 3 s.
    pub operation_timeout: Duration,
    /// The waits between reconnection attempts of a subscription. Default 50 ms
    /// doubling up to 1 s.
    pub reconnect: Backoff,
    /// How many events a subscription queues for a slow reader before it drops
    /// messages and reports the gap (see
    /// [`SubscriptionSender`]). Default 4096.
    pub queue_capacity: usize,
    /// How often an idle subscription connection is checked with `PING`, so a
    /// connection that died silently is noticed; `None` never checks. Default 15 s.
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

/// A [`Bus`] over Redis pub/sub. Cloning it is cheap and shares the publishing
/// connection.
#[derive(Clone)]
pub struct RedisBus {
    shared: Arc<BusShared>,
}

struct BusShared {
    client: redis::Client,
    options: RedisOptions,
    /// `host:port` of the server, for messages; never the password.
    server: String,
    /// The publishing connection with its number, or `None` until the next publish opens one.
    publisher: tokio::sync::Mutex<Option<(u64, MultiplexedConnection)>>,
    next_connection: AtomicU64,
}

impl std::fmt::Debug for RedisBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBus")
            .field("server", &self.shared.server)
            .field("options", &self.shared.options)
            .finish_non_exhaustive()
    }
}

impl RedisBus {
    /// Connects to the server of a `redis://` or `rediss://` URL, such as
    /// `redis://user:password@host:6379/2`, and checks that it answers.
    ///
    /// Fails with [`BusError::Config`] for a bad URL or refused credentials,
    /// with [`BusError::Disconnected`] if the server cannot be reached, and with
    /// [`BusError::Timeout`] if it does not answer within the operation timeout.
    /// Error messages name the server, never the password.
    pub async fn connect(url: &str, options: RedisOptions) -> Result<Self, BusError> {
        let client = open_client(url)?;
        let options_timeout = options.operation_timeout;
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
        bounded(options_timeout, bus.shared.check_connection()).await?;
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

    /// A [`StateStore`] in the Redis key `key`, in the database of the URL,
    /// over this bus's connection.
    pub fn state_store(&self, key: impl Into<String>) -> RedisStore {
        RedisStore {
            shared: self.shared.clone(),
            key: key.into(),
        }
    }

    /// A [`Lease`] in the Redis key `key` (in the database of the URL), over
    /// this bus's connection. It uses the server's own key expiry, so the
    /// clocks of the orchestrators need not agree.
    pub fn lease(&self, key: impl Into<String>) -> RedisLease {
        RedisLease {
            shared: self.shared.clone(),
            key: key.into(),
        }
    }
}

/// Takes the lease in `KEYS[1]` for holder `ARGV[1]` for `ARGV[2]` milliseconds,
/// or renews it if that holder has it: 1 if the holder has it now, else 0.
const ACQUIRE_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
elseif redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
else
  return 0
end
";

/// Deletes the lease in `KEYS[1]` if holder `ARGV[1]` has it.
const RELEASE_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
else
  return 0
end
";

/// A [`Lease`] in one Redis key that holds the holder's name and expires
/// with the lease (`SET NX PX`, renewed with `PEXPIRE`, both inside a Lua
/// script so that checking and writing are one step). Made by
/// [`RedisBus::lease`].
#[derive(Clone)]
pub struct RedisLease {
    shared: Arc<BusShared>,
    key: String,
}

impl std::fmt::Debug for RedisLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLease")
            .field("server", &self.shared.server)
            .field("key", &self.key)
            .finish()
    }
}

#[async_trait]
impl Lease for RedisLease {
    async fn try_acquire(&self, holder: &str, ttl: Duration) -> Result<bool, BusError> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(ACQUIRE_SCRIPT)
            .arg(1)
            .arg(&self.key)
            .arg(holder)
            .arg(ttl_ms);
        let held: i64 = self.shared.command(cmd).await?;
        Ok(held == 1)
    }

    async fn release(&self, holder: &str) -> Result<(), BusError> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(RELEASE_SCRIPT).arg(1).arg(&self.key).arg(holder);
        self.shared.command::<i64>(cmd).await.map(drop)
    }

    fn describe(&self) -> String {
        format!("redis key {} on {}", self.key, self.shared.server)
    }
}

/// A [`StateStore`] in one Redis key (`GET` / `SET`), in the database the URL
/// names. Made by [`RedisBus::state_store`].
#[derive(Clone)]
pub struct RedisStore {
    shared: Arc<BusShared>,
    key: String,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("server", &self.shared.server)
            .field("key", &self.key)
            .finish()
    }
}

#[async_trait]
impl StateStore for RedisStore {
    async fn load(&self) -> Result<Option<Vec<u8>>, BusError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(&self.key);
        self.shared.command::<Option<Vec<u8>>>(cmd).await
    }

    async fn save(&self, state: &[u8]) -> Result<(), BusError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(&self.key).arg(state);
        self.shared.command::<()>(cmd).await
    }

    fn describe(&self) -> String {
        format!("redis key {} on {}", self.key, self.shared.server)
    }
}

/// Checks the URL and makes a client for it, without connecting.
fn open_client(url: &str) -> Result<redis::Client, BusError> {
    let scheme = url.split_once("://").map(|(scheme, _)| scheme);
    match scheme {
        Some("redis") => {}
        Some("rediss") if cfg!(feature = "tls") => {}
        Some("rediss") => {
            return Err(BusError::Config(
                "rediss:// URLs need the `tls` feature of keyman-redis".to_owned(),
            ));
        }
        _ => {
            return Err(BusError::Config(
                "a Redis URL starts with redis:// or rediss://".to_owned(),
            ));
        }
    }
    #[cfg(feature = "tls")]
    install_crypto_provider();
    redis::Client::open(url).map_err(|err| BusError::Config(format!("bad Redis URL: {err}")))
}

/// Makes ring the process-wide TLS crypto provider unless one is chosen already.
#[cfg(feature = "tls")]
fn install_crypto_provider() {
    // Fails only when a provider is installed already, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl BusShared {
    fn connection_config(&self) -> AsyncConnectionConfig {
        AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.options.operation_timeout))
            .set_response_timeout(Some(self.options.operation_timeout))
    }

    /// Runs a command on the publishing connection, within the operation timeout.
    async fn command<T: redis::FromRedisValue>(&self, cmd: redis::Cmd) -> Result<T, BusError> {
        bounded(self.options.operation_timeout, async {
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

    /// Opens a pub/sub connection and subscribes it to `channels`.
    async fn open_subscription(
        &self,
        channels: &[String],
    ) -> Result<(PubSubSink, PubSubStream), BusError> {
        let pubsub = self
            .client
            .get_async_pubsub()
            .await
            .map_err(|err| self.bus_error(&err))?;
        let (mut sink, stream) = pubsub.split();
        sink.subscribe(channels)
            .await
            .map_err(|err| self.bus_error(&err))?;
        Ok((sink, stream))
    }

    /// Translates an error of the Redis client.
    fn bus_error(&self, err: &RedisError) -> BusError {
        let server = &self.server;
        match err.kind() {
            ErrorKind::InvalidClientConfig => {
                BusError::Config(format!("bad Redis configuration: {err}"))
            }
            _ if matches!(err.code(), Some("NOAUTH" | "WRONGPASS")) => BusError::Config(format!(
                "the Redis server at {server} refused the credentials: {err}"
            )),
            ErrorKind::AuthenticationFailed => BusError::Config(format!(
                "the Redis server at {server} refused the credentials: {err}"
            )),
            _ if err.is_timeout() => BusError::Timeout(self.options.operation_timeout),
            _ if err.is_io_error()
                || err.is_connection_dropped()
                || err.is_connection_refusal()
                || err.is_unrecoverable_error() =>
            {
                BusError::Disconnected(format!("Redis server at {server}: {err}"))
            }
            _ => BusError::Broker(format!("Redis server at {server}: {err}")),
        }
    }
}

#[async_trait]
impl Bus for RedisBus {
    /// Publishes with `PUBLISH`. Fails with [`BusError::Disconnected`] when the
    /// server cannot be reached and with [`BusError::Timeout`] when it does not
    /// answer within the operation timeout; the next publish reconnects.
    async fn publish(&self, channel: &str, payload: &[u8]) -> Result<(), BusError> {
        let timeout = self.shared.options.operation_timeout;
        let result = bounded(timeout, self.shared.publish(channel, payload)).await;
        if let Err(BusError::Timeout(_)) = result {
            // A connection that does not answer is of no further use.
            self.shared.forget_publisher(None).await;
        }
        result
    }

    /// Opens a pub/sub connection, subscribes it and waits for the server's
    /// confirmation, so the subscription is live when this returns.
    async fn subscribe(&self, channels: &[String]) -> Result<Subscription, BusError> {
        let unique = subscribe_channels(channels)?;
        let timeout = self.shared.options.operation_timeout;
        let (sink, stream) = bounded(timeout, self.shared.open_subscription(&unique)).await?;
        let bus = Arc::clone(&self.shared);
        Ok(spawn_subscription(
            self.shared.options.queue_capacity,
            |sender| feed_subscription(bus, unique, sink, stream, sender),
        ))
    }
}

/// Feeds one subscription until it is dropped: forwards messages, and after a
/// lost connection reconnects, subscribes again and reports both.
async fn feed_subscription(
    bus: Arc<BusShared>,
    channels: Vec<String>,
    mut sink: PubSubSink,
    mut stream: PubSubStream,
    sender: SubscriptionSender,
) {
    loop {
        let Some(reason) = forward_messages(&bus, &mut sink, &mut stream, &sender).await else {
            return;
        };
        tracing::warn!(server = %bus.server, %reason, "Redis subscription lost its connection");
        if sender.send_disconnected(reason) == Delivery::Closed {
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
                bus.open_subscription(&channels),
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
        if sender.send_reconnected() == Delivery::Closed {
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
                if sender.send_message(message) == Delivery::Closed {
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
