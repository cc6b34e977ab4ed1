//! keyman's NATS transport: [`NatsBus`] moves bytes over NATS core pub/sub,
//! with native request/reply.
//!
//! Channel ids are NATS subjects, byte for byte (so `*` and `>` in a channel id
//! are wildcards). One connection per bus carries everything. The NATS client
//! reconnects and subscribes again by itself; [`NatsBus`] turns its connection
//! events into [`BusEvent::Disconnected`](keyman_transport::BusEvent) and
//! [`BusEvent::Reconnected`](keyman_transport::BusEvent) on every live
//! subscription. `Reconnected` is sent only after a round trip through the
//! server has shown that the subscriptions are in place again.
//!
//! # Publishing while disconnected
//!
//! The NATS client buffers outgoing messages while it reconnects. To keep a
//! caller from waiting on that, [`Bus::publish`] fails at once with
//! [`BusError::Disconnected`] while the client knows it is disconnected, and
//! otherwise waits until the message is written to the server's connection,
//! at most [`NatsOptions::operation_timeout`]. A publish that fails with
//! [`BusError::Timeout`] because the connection broke meanwhile stays in the
//! client's buffer and may still be delivered after the reconnection.

#![warn(missing_docs)]

use async_nats::client::{FlushErrorKind, PublishErrorKind, RequestErrorKind};
use async_nats::connection::State;
use async_nats::{ConnectErrorKind, Event, ServerAddr};
use async_trait::async_trait;
use futures_util::StreamExt;
use futures_util::stream::SelectAll;
use keyman_transport::adapter::{bounded, spawn_subscription, subscribe_channels};
use keyman_transport::{
    Backoff, Bus, BusError, DEFAULT_QUEUE_CAPACITY, Delivery, Lease, Message, StateStore,
    Subscription, SubscriptionSender,
};
use std::str::FromStr;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Settings of a [`NatsBus`]; [`NatsOptions::default`] suits most uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsOptions {
    /// The longest a connection attempt, a publish or a subscribe may take
    /// before it fails with [`BusError::Timeout`]. Default 3 s.
    pub operation_timeout: Duration,
    /// The waits between reconnection attempts. Default 50 ms doubling up to 1 s.
    pub reconnect: Backoff,
    /// How many events a subscription queues for a slow reader before it drops
    /// messages and reports the gap (see
    /// [`SubscriptionSender`]). Default 4096.
    pub queue_capacity: usize,
    /// How often the client pings the server; after two unanswered pings it
    /// treats the connection as lost and reconnects. Default 15 s.
    pub health_check_interval: Duration,
    /// The client name the server shows for this connection, if any.
    pub client_name: Option<String>,
}

impl Default for NatsOptions {
    fn default() -> Self {
        Self {
            operation_timeout: Duration::from_secs(3),
            reconnect: Backoff::default(),
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            health_check_interval: Duration::from_secs(15),
            client_name: None,
        }
    }
}

/// A [`Bus`] over NATS core pub/sub. Cloning it is cheap and shares the connection.
#[derive(Clone)]
pub struct NatsBus {
    shared: Arc<BusShared>,
}

struct BusShared {
    client: async_nats::Client,
    options: NatsOptions,
    /// `host:port` of the first server, for messages; never the password.
    server: String,
    /// The state of the connection as the subscriptions should see it.
    link: watch::Receiver<LinkStatus>,
}

/// What subscriptions are told about the connection.
#[derive(Debug, Clone, Default)]
struct LinkStatus {
    /// Whether the connection is up and every subscription is in place.
    up: bool,
    /// How often the connection was lost so far.
    losses: u64,
    /// Why it was lost the last time.
    reason: String,
    /// How often the client dropped messages for a slow subscription.
    overflows: u64,
}

impl std::fmt::Debug for NatsBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBus")
            .field("server", &self.shared.server)
            .field("options", &self.shared.options)
            .finish_non_exhaustive()
    }
}

impl NatsBus {
    /// Connects to a NATS server, such as `nats://user:password@host:4222`
    /// (`tls://` for TLS; several servers separated by commas).
    ///
    /// Fails with [`BusError::Config`] for a bad URL or refused credentials,
    /// with [`BusError::Disconnected`] if the server cannot be reached, and with
    /// [`BusError::Timeout`] if it does not answer within the operation timeout.
    /// Error messages name the server, never the password.
    pub async fn connect(url: &str, options: NatsOptions) -> Result<Self, BusError> {
        let servers = parse_servers(url)?;
        let server = servers
            .first()
            .map(|addr| format!("{}:{}", addr.host(), addr.port()))
            .unwrap_or_default();
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let backoff = options.reconnect;
        let mut connect_options = async_nats::ConnectOptions::new()
            .connection_timeout(options.operation_timeout)
            .request_timeout(None)
            .ping_interval(options.health_check_interval)
            .reconnect_delay_callback(move |attempts| {
                backoff.delay(u32::try_from(attempts).unwrap_or(u32::MAX))
            })
            .event_callback(move |event| {
                // Fails only when the bus is gone, and then nobody listens.
                let _ = events_tx.send(event);
                async {}
            });
        if let Some(credentials) = servers.iter().find_map(url_credentials) {
            connect_options = match credentials {
                Credentials::UserPassword(user, password) => {
                    connect_options.user_and_password(user, password)
                }
                Credentials::Token(token) => connect_options.token(token),
            };
        }
        if let Some(name) = &options.client_name {
            connect_options = connect_options.name(name);
        }
        let connecting = connect_options.connect(servers);
        let client = match tokio::time::timeout(options.operation_timeout, connecting).await {
            Ok(Ok(client)) => client,
            Ok(Err(err)) => return Err(connect_error(&err, &server, options.operation_timeout)),
            Err(_) => return Err(BusError::Timeout(options.operation_timeout)),
        };
        let (link_tx, link) = watch::channel(LinkStatus {
            up: true,
            ..LinkStatus::default()
        });
        let shared = Arc::new(BusShared {
            client,
            options,
            server,
            link,
        });
        tokio::spawn(watch_connection(
            Arc::downgrade(&shared),
            events_rx,
            link_tx,
        ));
        Ok(Self { shared })
    }

    /// The options it was connected with.
    pub fn options(&self) -> &NatsOptions {
        &self.shared.options
    }

    /// `host:port` of the (first) server it talks to.
    pub fn server(&self) -> &str {
        &self.shared.server
    }

    /// A [`StateStore`] in entry `key` of the JetStream key-value bucket
    /// `bucket` (its stream `KV_{bucket}` is created on first use, keeping one
    /// value per key; the server must run with JetStream). Values are limited
    /// by the server's largest message (1 MiB by default). It speaks the
    /// JetStream API directly, so it works with servers from 2.9 on.
    pub fn state_store(&self, bucket: impl Into<String>, key: impl Into<String>) -> NatsStore {
        NatsStore {
            bus: self.clone(),
            bucket: bucket.into(),
            key: key.into(),
            ready: Arc::new(tokio::sync::OnceCell::new()),
        }
    }
}

impl NatsBus {
    /// A [`Lease`] in entry `key` of the JetStream key-value bucket `bucket`
    /// (the same stream layout as [`NatsBus::state_store`]).
    ///
    /// The entry holds the holder and when its lease expires, in wall-clock
    /// milliseconds: **the orchestrators' clocks must agree to within a
    /// fraction of the time to live** (well under half of it), or a standby
    /// whose clock runs ahead may take the lease while its holder still
    /// serves. Writes are conditional on the entry's last sequence, so of two
    /// orchestrators that read the same entry only one can write it.
    pub fn lease(&self, bucket: impl Into<String>, key: impl Into<String>) -> NatsLease {
        NatsLease {
            entry: self.state_store(bucket, key),
        }
    }
}

/// A [`Lease`] in one entry of a NATS JetStream key-value bucket: the value
/// is `{"holder": .., "expires_ms": ..}`, written with the header
/// `Nats-Expected-Last-Subject-Sequence` so that JetStream refuses a write
/// when someone else wrote in between. Expiry is by the wall clock; see
/// [`NatsBus::lease`]. Made by [`NatsBus::lease`].
#[derive(Clone)]
pub struct NatsLease {
    entry: NatsStore,
}

impl std::fmt::Debug for NatsLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsLease")
            .field("server", &self.entry.bus.server())
            .field("bucket", &self.entry.bucket)
            .field("key", &self.entry.key)
            .finish()
    }
}

/// What a lease entry says.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LeaseEntry {
    /// The sequence of the entry's last message, 0 if it has none.
    seq: u64,
    /// The holder and when its lease expires (wall-clock ms), if the entry names one.
    held: Option<(String, u64)>,
}

/// The wall clock in milliseconds since the Unix epoch.
fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Reads a lease value; `None` for anything that is not one (treated as free).
fn parse_lease_value(bytes: &[u8]) -> Option<(String, u64)> {
    let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let holder = value.get("holder")?.as_str()?;
    let expires_ms = value.get("expires_ms")?.as_u64()?;
    (!holder.is_empty()).then(|| (holder.to_owned(), expires_ms))
}

impl NatsLease {
    /// The entry's last message.
    async fn read(&self) -> Result<LeaseEntry, BusError> {
        let entry = &self.entry;
        entry.ensure_stream().await?;
        let body = serde_json::to_vec(&serde_json::json!({ "last_by_subj": entry.subject() }))
            .unwrap_or_default();
        let subject = format!("$JS.API.STREAM.MSG.GET.{}", entry.stream());
        let Some(answer) = entry.api(&subject, &body, &[NO_MESSAGE_FOUND]).await? else {
            return Ok(LeaseEntry { seq: 0, held: None });
        };
        let seq = answer
            .pointer("/message/seq")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| BusError::Broker("a JetStream message without a sequence".into()))?;
        let data = answer
            .pointer("/message/data")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("");
        let held = decode_base64(data).and_then(|bytes| parse_lease_value(&bytes));
        Ok(LeaseEntry { seq, held })
    }

    /// Writes the entry if its last message is still `seq`; `false` if someone
    /// wrote it meanwhile.
    async fn write(&self, seq: u64, holder: &str, expires_ms: u64) -> Result<bool, BusError> {
        let body = serde_json::to_vec(&serde_json::json!({
            "holder": holder,
            "expires_ms": expires_ms,
        }))
        .unwrap_or_default();
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Expected-Last-Subject-Sequence", seq.to_string());
        let written = self
            .entry
            .api_with_headers(
                &self.entry.subject(),
                Some(headers),
                &body,
                &[WRONG_LAST_SEQUENCE],
            )
            .await?;
        Ok(written.is_some())
    }
}

#[async_trait]
impl Lease for NatsLease {
    async fn try_acquire(&self, holder: &str, ttl: Duration) -> Result<bool, BusError> {
        let entry = self.read().await?;
        let now = wall_clock_ms();
        if let Some((current, expires_ms)) = &entry.held
            && current != holder
            && *expires_ms > now
        {
            return Ok(false);
        }
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        self.write(entry.seq, holder, now.saturating_add(ttl_ms))
            .await
    }

    async fn release(&self, holder: &str) -> Result<(), BusError> {
        let entry = self.read().await?;
        if entry
            .held
            .as_ref()
            .is_some_and(|(current, _)| current == holder)
        {
            // Refused only if someone wrote meanwhile: then it is not ours any more.
            self.write(entry.seq, "", 0).await?;
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!(
            "NATS key-value {}/{} on {}",
            self.entry.bucket,
            self.entry.key,
            self.entry.bus.server()
        )
    }
}

/// A [`StateStore`] in one entry of a NATS JetStream key-value bucket. Made by
/// [`NatsBus::state_store`].
#[derive(Clone)]
pub struct NatsStore {
    bus: NatsBus,
    bucket: String,
    key: String,
    ready: Arc<tokio::sync::OnceCell<()>>,
}

impl std::fmt::Debug for NatsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsStore")
            .field("server", &self.bus.server())
            .field("bucket", &self.bucket)
            .field("key", &self.key)
            .finish()
    }
}

/// JetStream's error code for "wrong last sequence": someone else wrote the
/// subject since it was read.
const WRONG_LAST_SEQUENCE: u64 = 10071;
/// JetStream's error code for "stream name already in use".
const STREAM_NAME_IN_USE: u64 = 10058;
/// JetStream's error code for "subjects overlap with an existing stream": what
/// the slower of two clients creating the same stream at once may get.
const SUBJECTS_OVERLAP: u64 = 10065;
/// JetStream's error code for "no message found".
const NO_MESSAGE_FOUND: u64 = 10037;

impl NatsStore {
    fn stream(&self) -> String {
        format!("KV_{}", self.bucket)
    }

    fn subject(&self) -> String {
        format!("$KV.{}.{}", self.bucket, self.key)
    }

    /// A JetStream API call: the JSON answer, or its `error` as a [`BusError`]
    /// unless its code is one of `tolerated` (then `None`).
    async fn api(
        &self,
        subject: &str,
        body: &[u8],
        tolerated: &[u64],
    ) -> Result<Option<serde_json::Value>, BusError> {
        self.api_with_headers(subject, None, body, tolerated).await
    }

    /// [`api`](Self::api) with message headers.
    async fn api_with_headers(
        &self,
        subject: &str,
        headers: Option<async_nats::HeaderMap>,
        body: &[u8],
        tolerated: &[u64],
    ) -> Result<Option<serde_json::Value>, BusError> {
        let timeout = self.bus.options().operation_timeout;
        let answer = self
            .bus
            .shared
            .request(subject, headers, body, timeout)
            .await
            .map_err(|e| match e {
                BusError::NoResponders(_) => BusError::Broker(format!(
                    "JetStream is not enabled on the NATS server at {}",
                    self.bus.server()
                )),
                other => other,
            })?;
        let value: serde_json::Value = serde_json::from_slice(&answer)
            .map_err(|e| BusError::Broker(format!("unreadable JetStream answer: {e}")))?;
        match value.get("error") {
            None => Ok(Some(value)),
            Some(err)
                if err
                    .get("err_code")
                    .and_then(serde_json::Value::as_u64)
                    .is_some_and(|code| tolerated.contains(&code)) =>
            {
                Ok(None)
            }
            Some(err) => Err(BusError::Broker(format!(
                "JetStream on {}: {}",
                self.bus.server(),
                err.get("description")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or("an error without description")
            ))),
        }
    }

    async fn ensure_stream(&self) -> Result<(), BusError> {
        self.ready
            .get_or_try_init(|| async {
                let config = serde_json::json!({
                    "name": self.stream(),
                    "subjects": [format!("$KV.{}.>", self.bucket)],
                    "max_msgs_per_subject": 1,
                    "discard": "new",
                    "storage": "file",
                    "num_replicas": 1,
                    "allow_rollup_hdrs": true,
                    "deny_delete": true,
                    "allow_direct": true,
                });
                let body = serde_json::to_vec(&config).unwrap_or_default();
                let subject = format!("$JS.API.STREAM.CREATE.{}", self.stream());
                self.api(&subject, &body, &[STREAM_NAME_IN_USE, SUBJECTS_OVERLAP])
                    .await
                    .map(drop)
            })
            .await
            .map(drop)
    }
}

#[async_trait]
impl StateStore for NatsStore {
    async fn load(&self) -> Result<Option<Vec<u8>>, BusError> {
        self.ensure_stream().await?;
        let body = serde_json::to_vec(&serde_json::json!({ "last_by_subj": self.subject() }))
            .unwrap_or_default();
        let subject = format!("$JS.API.STREAM.MSG.GET.{}", self.stream());
        let Some(answer) = self.api(&subject, &body, &[NO_MESSAGE_FOUND]).await? else {
            return Ok(None);
        };
        let data = answer
            .pointer("/message/data")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("");
        decode_base64(data)
            .map(Some)
            .ok_or_else(|| BusError::Broker("a stored value that is not base64".into()))
    }

    async fn save(&self, state: &[u8]) -> Result<(), BusError> {
        self.ensure_stream().await?;
        // Publishing on the key's subject with a request waits for JetStream's ack.
        self.api(&self.subject(), state, &[]).await.map(drop)
    }

    fn describe(&self) -> String {
        format!(
            "NATS key-value {}/{} on {}",
            self.bucket,
            self.key,
            self.bus.server()
        )
    }
}

/// Decodes standard base64 (with or without padding); `None` if it is not.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let bytes: Vec<u8> = text.bytes().filter(|&c| c != b'=').collect();
    if bytes.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= value(c)? << (18 - 6 * i);
        }
        let n = chunk.len() - 1;
        out.extend_from_slice(&acc.to_be_bytes()[1..1 + n]);
    }
    Some(out)
}

#[cfg(test)]
mod base64_tests {
    use super::{decode_base64, parse_lease_value};

    #[test]
    fn reads_lease_values_and_treats_anything_else_as_free() {
        assert_eq!(
            parse_lease_value(br#"{"holder": "a-1", "expires_ms": 42}"#),
            Some(("a-1".to_owned(), 42))
        );
        assert_eq!(
            parse_lease_value(br#"{"holder": "", "expires_ms": 0}"#),
            None
        );
        assert_eq!(
            parse_lease_value(br#"{"holder": 7, "expires_ms": 1}"#),
            None
        );
        assert_eq!(parse_lease_value(b"not json"), None);
    }

    #[test]
    fn decodes_standard_base64() {
        assert_eq!(decode_base64("").unwrap(), b"");
        assert_eq!(decode_base64("Zg==").unwrap(), b"f");
        assert_eq!(decode_base64("Zm8=").unwrap(), b"fo");
        assert_eq!(decode_base64("Zm9v").unwrap(), b"foo");
        assert_eq!(decode_base64("Zm9vYmFy").unwrap(), b"foobar");
        assert_eq!(
            decode_base64("eyJhIjpbMSwyXX0=").unwrap(),
            br#"{"a":[1,2]}"#
        );
        assert!(decode_base64("Zm9v!").is_none());
        assert!(decode_base64("Z").is_none());
    }
}

/// Parses a comma-separated list of server URLs.
fn parse_servers(url: &str) -> Result<Vec<ServerAddr>, BusError> {
    let servers = url
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| {
            ServerAddr::from_str(part)
                .map_err(|err| BusError::Config(format!("bad NATS URL: {err}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if servers.is_empty() {
        return Err(BusError::Config("no NATS server URL given".to_owned()));
    }
    Ok(servers)
}

/// Credentials written into a server URL.
enum Credentials {
    /// `nats://user:password@host`.
    UserPassword(String, String),
    /// `nats://token@host`.
    Token(String),
}

/// The credentials in a server URL, which the NATS client does not pick up by itself.
fn url_credentials(addr: &ServerAddr) -> Option<Credentials> {
    let user = percent_decode(addr.username()?);
    Some(match addr.password() {
        Some(password) => Credentials::UserPassword(user, percent_decode(password)),
        None => Credentials::Token(user),
    })
}

/// Decodes the `%XX` escapes of a URL part; leaves malformed escapes as they are.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let escaped = (bytes[index] == b'%')
            .then(|| bytes.get(index + 1..index + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                decoded.push(byte);
                index += 3;
            }
            None => {
                decoded.push(bytes[index]);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

fn connect_error(err: &async_nats::ConnectError, server: &str, timeout: Duration) -> BusError {
    match err.kind() {
        ConnectErrorKind::ServerParse => BusError::Config(format!("bad NATS URL: {err}")),
        ConnectErrorKind::Authentication | ConnectErrorKind::AuthorizationViolation => {
            BusError::Config(format!(
                "the NATS server at {server} refused the credentials: {err}"
            ))
        }
        ConnectErrorKind::Tls => BusError::Config(format!(
            "TLS with the NATS server at {server} failed: {err}"
        )),
        ConnectErrorKind::TimedOut => BusError::Timeout(timeout),
        ConnectErrorKind::Dns | ConnectErrorKind::Io | ConnectErrorKind::MaxReconnects => {
            BusError::Disconnected(format!("NATS server at {server}: {err}"))
        }
    }
}

impl BusShared {
    /// Fails unless the client is connected now.
    fn ensure_connected(&self) -> Result<(), BusError> {
        match self.client.connection_state() {
            State::Connected => Ok(()),
            State::Pending | State::Disconnected => Err(BusError::Disconnected(format!(
                "not connected to the NATS server at {}",
                self.server
            ))),
        }
    }

    fn lost(&self, what: &str, err: impl std::fmt::Display) -> BusError {
        BusError::Disconnected(format!(
            "{what} to the NATS server at {}: {err}",
            self.server
        ))
    }

    async fn flush(&self) -> Result<(), BusError> {
        self.client.flush().await.map_err(|err| match err.kind() {
            FlushErrorKind::SendError | FlushErrorKind::FlushError => self.lost("flush", &err),
        })
    }

    async fn publish(&self, channel: &str, payload: &[u8]) -> Result<(), BusError> {
        self.client
            .publish(channel.to_owned(), payload.to_vec().into())
            .await
            .map_err(|err| match err.kind() {
                PublishErrorKind::InvalidSubject => {
                    BusError::Config(format!("{channel:?} is not a valid NATS subject"))
                }
                PublishErrorKind::MaxPayloadExceeded => BusError::Broker(format!(
                    "a payload of {} bytes exceeds the limit of the NATS server at {}: {err}",
                    payload.len(),
                    self.server
                )),
                PublishErrorKind::Send => self.lost("publish", &err),
            })?;
        self.flush().await
    }

    /// A NATS request with optional headers; see [`Bus::request`].
    async fn request(
        &self,
        channel: &str,
        headers: Option<async_nats::HeaderMap>,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, BusError> {
        self.ensure_connected()?;
        let mut request = async_nats::Request::new()
            .payload(payload.to_vec().into())
            .timeout(Some(timeout));
        if let Some(headers) = headers {
            request = request.headers(headers);
        }
        let asking = self.client.send_request(channel.to_owned(), request);
        let answer = match tokio::time::timeout(timeout, asking).await {
            Ok(answer) => answer,
            Err(_) => return Err(BusError::Timeout(timeout)),
        };
        match answer {
            Ok(message) => Ok(message.payload.to_vec()),
            Err(err) => Err(match err.kind() {
                RequestErrorKind::NoResponders => BusError::NoResponders(channel.to_owned()),
                RequestErrorKind::TimedOut => BusError::Timeout(timeout),
                RequestErrorKind::InvalidSubject => {
                    BusError::Config(format!("{channel:?} is not a valid NATS subject"))
                }
                RequestErrorKind::MaxPayloadExceeded => BusError::Broker(format!(
                    "a payload of {} bytes exceeds the limit of the NATS server at {}: {err}",
                    payload.len(),
                    self.server
                )),
                RequestErrorKind::Other => self.lost("request", &err),
            }),
        }
    }

    /// Subscribes the client to each channel and makes sure the server has seen it.
    async fn open_subscription(
        &self,
        channels: &[String],
    ) -> Result<SelectAll<async_nats::Subscriber>, BusError> {
        let mut subscribers = SelectAll::new();
        for channel in channels {
            let subscriber = self
                .client
                .subscribe(channel.clone())
                .await
                .map_err(|err| {
                    BusError::Config(format!("cannot subscribe to {channel:?}: {err}"))
                })?;
            subscribers.push(subscriber);
        }
        self.round_trip().await?;
        Ok(subscribers)
    }

    /// Sends a message to itself through the server. When it comes back, the
    /// server has handled everything this client sent before it.
    async fn round_trip(&self) -> Result<(), BusError> {
        let inbox = self.client.new_inbox();
        let mut probe = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(|err| self.lost("subscribe", err))?;
        self.client
            .publish(inbox, Vec::new().into())
            .await
            .map_err(|err| self.lost("publish", err))?;
        self.flush().await?;
        match probe.next().await {
            Some(_) => Ok(()),
            None => Err(BusError::Disconnected(format!(
                "the connection to the NATS server at {} closed",
                self.server
            ))),
        }
    }
}

/// Turns the client's connection events into the [`LinkStatus`] the
/// subscriptions watch. Ends when the bus and its subscriptions are gone.
async fn watch_connection(
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
                    if bounded(shared.options.operation_timeout, shared.round_trip())
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
                    tokio::time::sleep(shared.options.reconnect.delay(attempt)).await;
                }
            }
            Event::SlowConsumer(_) => {
                tracing::warn!("NATS client dropped messages for a slow subscription");
                link.send_modify(|status| status.overflows += 1);
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

#[async_trait]
impl Bus for NatsBus {
    /// Publishes and waits until the message is written to the server's
    /// connection; see the crate documentation for what happens while disconnected.
    async fn publish(&self, channel: &str, payload: &[u8]) -> Result<(), BusError> {
        self.shared.ensure_connected()?;
        let timeout = self.shared.options.operation_timeout;
        bounded(timeout, self.shared.publish(channel, payload)).await
    }

    /// Subscribes to each channel and waits for a round trip through the
    /// server, so the subscription is live when this returns. Messages carry
    /// the NATS reply subject as `reply_to`.
    async fn subscribe(&self, channels: &[String]) -> Result<Subscription, BusError> {
        let unique = subscribe_channels(channels)?;
        self.shared.ensure_connected()?;
        let link = self.shared.link.clone();
        let timeout = self.shared.options.operation_timeout;
        let subscribers = bounded(timeout, self.shared.open_subscription(&unique)).await?;
        Ok(spawn_subscription(
            self.shared.options.queue_capacity,
            |sender| feed_subscription(subscribers, link, sender),
        ))
    }

    /// A NATS request: fails fast with [`BusError::NoResponders`] when nobody
    /// is subscribed to `channel`, and with [`BusError::Timeout`] when nobody
    /// answers within `timeout`.
    async fn request(
        &self,
        channel: &str,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, BusError> {
        self.shared.request(channel, None, payload, timeout).await
    }

    fn supports_request(&self) -> bool {
        true
    }
}

/// Feeds one subscription until it is dropped: forwards messages and reports
/// changes of the connection.
async fn feed_subscription(
    mut subscribers: SelectAll<async_nats::Subscriber>,
    mut link: watch::Receiver<LinkStatus>,
    sender: SubscriptionSender,
) {
    let mut seen = link.borrow_and_update().clone();
    loop {
        tokio::select! {
            () = sender.closed() => return,
            message = subscribers.next() => {
                let Some(message) = message else {
                    // The client is closed for good.
                    sender.send_disconnected("the NATS connection was closed");
                    return;
                };
                let message = Message {
                    channel: message.subject.as_str().to_owned(),
                    payload: message.payload.to_vec(),
                    reply_to: message.reply.map(|reply| reply.as_str().to_owned()),
                };
                if sender.send_message(message) == Delivery::Closed {
                    return;
                }
            }
            changed = link.changed() => {
                if changed.is_err() {
                    sender.send_disconnected("the NATS connection was closed");
                    return;
                }
                let now = link.borrow_and_update().clone();
                if report_link_change(&sender, &seen, &now) == Delivery::Closed {
                    return;
                }
                seen = now;
            }
        }
    }
}

/// Tells a subscription what changed between two states of the connection.
fn report_link_change(
    sender: &SubscriptionSender,
    before: &LinkStatus,
    now: &LinkStatus,
) -> Delivery {
    let mut delivery = Delivery::Accepted;
    if now.losses > before.losses {
        delivery = sender.send_disconnected(now.reason.clone());
    }
    if now.overflows > before.overflows {
        delivery = sender.send_disconnected(
            "the NATS client dropped messages because a subscription fell behind",
        );
        if now.up {
            delivery = sender.send_reconnected();
        }
    }
    if now.up && (!before.up || now.losses > before.losses) {
        delivery = sender.send_reconnected();
    }
    delivery
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_escapes_in_credentials_are_decoded() {
        assert_eq!(percent_decode("p%40ss%3Aword"), "p@ss:word");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        let addr = ServerAddr::from_str("nats://al%20ice:p%40ss@127.0.0.1:4222").expect("url");
        match url_credentials(&addr) {
            Some(Credentials::UserPassword(user, password)) => {
                assert_eq!((user.as_str(), password.as_str()), ("al ice", "p@ss"));
            }
            _ => panic!("expected a user and a password"),
        }
        let addr = ServerAddr::from_str("nats://t0ken@127.0.0.1").expect("url");
        assert!(
            matches!(url_credentials(&addr), Some(Credentials::Token(token)) if token == "t0ken")
        );
        let addr = ServerAddr::from_str("nats://127.0.0.1").expect("url");
        assert!(url_credentials(&addr).is_none());
    }
}
