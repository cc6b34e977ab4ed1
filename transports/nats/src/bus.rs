//! [`NatsBus`]: connecting, publishing, requests and subscribing over NATS core.

use crate::NatsOptions;
use crate::chunk;
use crate::link::{LinkStatus, feed_subscription, watch_connection};
use crate::url::{Credentials, parse_servers, url_credentials};
use async_nats::ConnectErrorKind;
use async_nats::client::{FlushErrorKind, PublishErrorKind, RequestErrorKind};
use async_nats::connection::State;
use async_trait::async_trait;
use futures_util::StreamExt;
use futures_util::stream::SelectAll;
use keyman_transport::adapter::{ResendTimer, bounded, spawn_subscription, subscribe_channels};
use keyman_transport::{
    Bus, BusError, BusEvent, Delivery, ErrorDetail, Subscription, SubscriptionSender,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// A [`Bus`] over NATS core pub/sub: one client connection, which its clones
/// share for publishing, subscriptions and requests.
#[derive(Clone)]
pub struct NatsBus {
    pub(crate) shared: Arc<BusShared>,
}

/// What the clones of one [`NatsBus`] share.
pub(crate) struct BusShared {
    /// `host:port` of the first server, for messages; never the password.
    pub(crate) server: String,
    /// The state of the connection as the subscriptions should see it.
    pub(crate) link: watch::Receiver<LinkStatus>,
    pub(crate) client: async_nats::Client,
    pub(crate) options: NatsOptions,
}

impl std::fmt::Debug for NatsBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let link = self.shared.link.borrow();
        f.debug_struct("NatsBus")
            .field("server", &self.shared.server)
            .field("up", &link.up)
            .field("losses", &link.losses)
            .field("options", &self.shared.options)
            .finish_non_exhaustive()
    }
}

impl NatsBus {
    /// Connects to a NATS server, such as `nats://user:password@host:4222`
    /// (`tls://` for TLS; several servers separated by commas).
    ///
    /// A bad URL, refused credentials or a failed TLS handshake are
    /// [`BusError::Config`]; no server reachable is [`BusError::Disconnected`];
    /// no answer within [`ConnectionOptions::operation_timeout`](keyman_transport::ConnectionOptions::operation_timeout) is
    /// [`BusError::Timeout`]. Messages name the first server, never a password
    /// or token.
    pub async fn connect(url: &str, options: NatsOptions) -> Result<Self, BusError> {
        let servers = parse_servers(url)?;
        let server = servers
            .first()
            .map(|addr| format!("{}:{}", addr.host(), addr.port()))
            .unwrap_or_default();
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let backoff = options.connection.reconnect;
        let mut connect_options = async_nats::ConnectOptions::new()
            .connection_timeout(options.connection.operation_timeout)
            .request_timeout(None)
            .subscription_capacity(options.client_buffer.max(1))
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
        let client =
            match tokio::time::timeout(options.connection.operation_timeout, connecting).await {
                Ok(Ok(client)) => client,
                Ok(Err(err)) => {
                    return Err(connect_error(
                        err,
                        &server,
                        options.connection.operation_timeout,
                    ));
                }
                Err(_) => return Err(BusError::Timeout(options.connection.operation_timeout)),
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
}

/// Translates a failed connection: a bad URL, refused credentials or a failed
/// TLS handshake are the configuration's fault, the rest the network's.
fn connect_error(err: async_nats::ConnectError, server: &str, timeout: Duration) -> BusError {
    match err.kind() {
        ConnectErrorKind::ServerParse => BusError::Config(ErrorDetail::with_source(
            format!("bad NATS URL: {err}"),
            err,
        )),
        ConnectErrorKind::Authentication | ConnectErrorKind::AuthorizationViolation => {
            BusError::Config(ErrorDetail::with_source(
                format!("the NATS server at {server} refused the credentials: {err}"),
                err,
            ))
        }
        ConnectErrorKind::Tls => BusError::Config(ErrorDetail::with_source(
            format!("TLS with the NATS server at {server} failed: {err}"),
            err,
        )),
        ConnectErrorKind::TimedOut => BusError::Timeout(timeout),
        ConnectErrorKind::Dns | ConnectErrorKind::Io | ConnectErrorKind::MaxReconnects => {
            BusError::Disconnected(ErrorDetail::with_source(
                format!("NATS server at {server}: {err}"),
                err,
            ))
        }
    }
}

/// A channel that is not a NATS subject: the caller's mistake, with the client's error as the source.
fn invalid_subject(channel: &str, err: impl std::error::Error + Send + Sync + 'static) -> BusError {
    BusError::Config(ErrorDetail::with_source(
        format!("{channel:?} is not a valid NATS subject"),
        err,
    ))
}

impl BusShared {
    /// Fails unless the client is connected now.
    fn ensure_connected(&self) -> Result<(), BusError> {
        match self.client.connection_state() {
            State::Connected => Ok(()),
            State::Pending | State::Disconnected => Err(BusError::Disconnected(
                format!("not connected to the NATS server at {}", self.server).into(),
            )),
        }
    }

    /// A failed `what` that means the connection is gone; keeps `err` as the source.
    fn lost(&self, what: &str, err: impl std::error::Error + Send + Sync + 'static) -> BusError {
        BusError::Disconnected(ErrorDetail::with_source(
            format!("{what} to the NATS server at {}: {err}", self.server),
            err,
        ))
    }

    /// A payload larger than the server takes; keeps `err` as the source.
    fn too_large(
        &self,
        size: usize,
        err: impl std::error::Error + Send + Sync + 'static,
    ) -> BusError {
        BusError::Broker(ErrorDetail::with_source(
            format!(
                "a payload of {size} bytes exceeds the limit of the NATS server at {}: {err}",
                self.server
            ),
            err,
        ))
    }

    async fn flush(&self) -> Result<(), BusError> {
        self.client.flush().await.map_err(|err| match err.kind() {
            FlushErrorKind::SendError | FlushErrorKind::FlushError => self.lost("flush", err),
        })
    }

    /// Publishes (in chunks if the payload is larger than the server takes,
    /// see [`crate::chunk`]) and flushes.
    async fn publish(
        &self,
        channel: &str,
        reply: Option<&str>,
        payload: &[u8],
    ) -> Result<(), BusError> {
        let server_max = self.client.server_info().max_payload;
        let translate = |err: async_nats::PublishError| match err.kind() {
            PublishErrorKind::InvalidSubject => invalid_subject(channel, err),
            PublishErrorKind::MaxPayloadExceeded => self.too_large(payload.len(), err),
            PublishErrorKind::Send => self.lost("publish", err),
        };
        if !chunk::needs_split(payload.len(), server_max) {
            let payload = payload.to_vec().into();
            match reply {
                None => self.client.publish(channel.to_owned(), payload).await,
                Some(reply) => {
                    self.client
                        .publish_with_reply(channel.to_owned(), reply.to_owned(), payload)
                        .await
                }
            }
            .map_err(translate)?;
            return self.flush().await;
        }
        if payload.len() > self.options.max_message {
            return Err(BusError::Broker(
                format!(
                    "a payload of {} bytes exceeds the {} bytes a NatsBus puts together again",
                    payload.len(),
                    self.options.max_message
                )
                .into(),
            ));
        }
        let inbox = self.client.new_inbox();
        let id = inbox.rsplit('.').next().unwrap_or("chunked");
        let chunks = chunk::split(
            id,
            bytes::Bytes::copy_from_slice(payload),
            chunk::chunk_size(server_max),
        );
        for (headers, part) in chunks {
            match reply {
                None => {
                    self.client
                        .publish_with_headers(channel.to_owned(), headers, part)
                        .await
                }
                Some(reply) => {
                    self.client
                        .publish_with_reply_and_headers(
                            channel.to_owned(),
                            reply.to_owned(),
                            headers,
                            part,
                        )
                        .await
                }
            }
            .map_err(translate)?;
        }
        self.flush().await
    }

    /// A request whose reply may come in chunks: the reply is read on an inbox
    /// of its own; see [`Bus::request`].
    async fn chunked_request(
        &self,
        channel: &str,
        payload: &[u8],
        timeout: Duration,
        resend_every: Duration,
    ) -> Result<Vec<u8>, BusError> {
        self.ensure_connected()?;
        let deadline = tokio::time::Instant::now() + timeout;
        let inbox = self.client.new_inbox();
        let mut replies = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(|err| self.lost("subscribe", err))?;
        let asking = async {
            self.publish(channel, Some(&inbox), payload).await?;
            let mut assembler = chunk::Assembler::new(self.options.max_message);
            // Every send has the same inbox: an answer to any of them counts.
            let mut resend = ResendTimer::new(resend_every, timeout);
            loop {
                let message = tokio::select! {
                    message = replies.next() => message,
                    () = resend.tick() => {
                        self.publish(channel, Some(&inbox), payload).await?;
                        continue;
                    }
                };
                let Some(message) = message else { break };
                if message.status == Some(async_nats::StatusCode::NO_RESPONDERS) {
                    return Err(BusError::NoResponders(channel.to_owned()));
                }
                match assembler.accept(&message.subject, message.headers.as_ref(), message.payload)
                {
                    chunk::Assembled::Whole(reply) => return Ok(reply.to_vec()),
                    chunk::Assembled::Pending => {}
                    chunk::Assembled::Dropped(reason) => {
                        tracing::warn!(%reason, "dropped part of a reply");
                    }
                }
            }
            Err(BusError::Disconnected(
                format!(
                    "the connection to the NATS server at {} closed",
                    self.server
                )
                .into(),
            ))
        };
        match tokio::time::timeout_at(deadline, asking).await {
            Ok(answer) => answer,
            Err(_) => Err(BusError::Timeout(timeout)),
        }
    }

    /// A NATS request with optional headers; see [`Bus::request`].
    pub(crate) async fn request(
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
                RequestErrorKind::InvalidSubject => invalid_subject(channel, err),
                RequestErrorKind::MaxPayloadExceeded => self.too_large(payload.len(), err),
                RequestErrorKind::Other => self.lost("request", err),
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
                    BusError::Config(ErrorDetail::with_source(
                        format!("cannot subscribe to {channel:?}: {err}"),
                        err,
                    ))
                })?;
            subscribers.push(subscriber);
        }
        self.round_trip().await?;
        Ok(subscribers)
    }

    /// Sends a message to itself through the server. When it comes back, the
    /// server has handled everything this client sent before it.
    pub(crate) async fn round_trip(&self) -> Result<(), BusError> {
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
            None => Err(BusError::Disconnected(
                format!(
                    "the connection to the NATS server at {} closed",
                    self.server
                )
                .into(),
            )),
        }
    }
}

#[async_trait]
impl Bus for NatsBus {
    /// Publishes and waits until the message is written to the server's
    /// connection; see the crate documentation for what happens while disconnected.
    async fn publish(&self, channel: &str, payload: &[u8]) -> Result<(), BusError> {
        self.shared.ensure_connected()?;
        let timeout = self.shared.options.connection.operation_timeout;
        bounded(timeout, self.shared.publish(channel, None, payload)).await
    }

    /// Subscribes to each channel and waits for a round trip through the
    /// server, so the subscription is live when this returns. Messages carry
    /// the NATS reply subject as `reply_to`.
    async fn subscribe(&self, channels: &[String]) -> Result<Subscription, BusError> {
        let unique = subscribe_channels(channels)?;
        self.shared.ensure_connected()?;
        let link = self.shared.link.clone();
        let max_message = self.shared.options.max_message;
        let timeout = self.shared.options.connection.operation_timeout;
        let subscribers = bounded(timeout, self.shared.open_subscription(&unique)).await?;
        Ok(spawn_subscription(
            self.shared.options.connection.queue_capacity,
            |sender| feed_subscription(subscribers, link, sender, max_message),
        ))
    }

    /// NATS wildcards match whole tokens only, and a reply subject such as
    /// `worker-oath-request-4711` is one token: no wildcard matches
    /// `worker-oath-request-*`. So this subscribes the full wildcard `>` (one
    /// subscription, hence one order of arrival) and drops here what is
    /// neither a listed channel nor starts with a prefix. The cost: every
    /// message of the account (JetStream and KV traffic included) reaches this
    /// client and is dropped on arrival. After a lost connection the client
    /// subscribes `>` again itself.
    async fn subscribe_checked_prefixes(
        &self,
        channels: Vec<String>,
        prefixes: Vec<String>,
    ) -> Result<Subscription, BusError> {
        self.shared.ensure_connected()?;
        let link = self.shared.link.clone();
        let capacity = self.shared.options.connection.queue_capacity;
        let timeout = self.shared.options.connection.operation_timeout;
        let everything = [">".to_owned()];
        let subscribers = bounded(timeout, self.shared.open_subscription(&everything)).await?;
        let max_message = self.shared.options.max_message;
        let all = spawn_subscription(capacity, |sender| {
            feed_subscription(subscribers, link, sender, max_message)
        });
        Ok(spawn_subscription(capacity, |sender| {
            keep_matching(all, channels, prefixes, sender)
        }))
    }

    /// A NATS request: fails fast with [`BusError::NoResponders`] when nobody
    /// is subscribed to `channel`, and with [`BusError::Timeout`] when nobody
    /// answers within `timeout`.
    async fn request_resending(
        &self,
        channel: &str,
        payload: &[u8],
        timeout: Duration,
        resend_every: Duration,
    ) -> Result<Vec<u8>, BusError> {
        self.shared
            .chunked_request(channel, payload, timeout, resend_every)
            .await
    }

    fn supports_request(&self) -> bool {
        true
    }
}

/// Forwards the events of `all` whose message is on one of `channels` or on a
/// subject that starts with one of `prefixes` (and every connection event) to
/// `sender`, until either side is gone.
async fn keep_matching(
    mut all: Subscription,
    channels: Vec<String>,
    prefixes: Vec<String>,
    sender: SubscriptionSender,
) {
    loop {
        let event = tokio::select! {
            () = sender.closed() => return,
            event = all.next() => event,
        };
        let delivery = match event {
            None => {
                sender
                    .send_disconnected("the NATS connection was closed")
                    .await;
                return;
            }
            Some(BusEvent::Message(message)) => {
                let wanted = channels.contains(&message.channel)
                    || prefixes
                        .iter()
                        .any(|prefix| message.channel.starts_with(prefix.as_str()));
                if !wanted {
                    continue;
                }
                sender.send_message(message).await
            }
            Some(BusEvent::Disconnected { reason }) => sender.send_disconnected(reason).await,
            Some(BusEvent::Reconnected) => sender.send_reconnected().await,
        };
        if delivery == Delivery::Closed {
            return;
        }
    }
}
