//! One pub/sub connection of a subscription, read at keyman's pace.
//!
//! The connection is keyman's own (TCP, or TLS for `rediss://`): it reads
//! the socket only when asked for the next value, so while the subscription's
//! queue is full nothing is read, the kernel's socket buffer fills, and the
//! rest waits in Redis's output buffer for this client. The replies are
//! parsed by the Redis client library's own parser
//! ([`redis::parse_redis_value_async`]), one value at a time, into a buffer
//! of a few KiB.
//!
//! It speaks RESP2 (pub/sub's own mode on every Redis version): `AUTH` with
//! the URL's user and password, then `SUBSCRIBE` and `PSUBSCRIBE` in one
//! write, so channels and patterns share the connection and arrive in the
//! order the server handled them.

use super::stream::{Io, connect};
use crate::bus::BusShared;
use futures_util::stream::{self, BoxStream, StreamExt};
use keyman_transport::{BusError, Message};
use redis::{RedisError, RedisResult, ServerError, Value};
use std::collections::VecDeque;
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};

/// What one subscription listens to: channels (`SUBSCRIBE`) and glob patterns
/// (`PSUBSCRIBE`), on one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Topics {
    /// The channels, each once.
    pub(crate) channels: Vec<String>,
    /// The patterns, each once; often none.
    pub(crate) patterns: Vec<String>,
}

/// A value the server sent on a subscription connection, sorted.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// A message on a subscribed channel or on one a pattern matches.
    Message(Message),
    /// A confirmation of `SUBSCRIBE` or `PSUBSCRIBE`.
    Subscribed,
    /// The answer to `PING`, or another value that asks for nothing.
    Other,
    /// An error reply.
    Error(ServerError),
}

/// A subscribed connection: the values the server sends, read one at a time,
/// and the writing half for `PING`.
pub(crate) struct SubscriberConnection {
    values: BoxStream<'static, RedisResult<Value>>,
    writer: WriteHalf<Box<dyn Io>>,
    /// Messages that came in between the confirmations; handed out first.
    early: VecDeque<Message>,
}

impl SubscriberConnection {
    /// Connects, authenticates with the URL's credentials, subscribes to
    /// `topics` and waits for every confirmation, so the subscription is live
    /// when this returns. Not bounded in time: the caller bounds it.
    pub(crate) async fn open(bus: &BusShared, topics: &Topics) -> Result<Self, BusError> {
        let (reader, writer) = tokio::io::split(connect(bus).await?);
        let mut connection = Self {
            values: values(reader),
            writer,
            early: VecDeque::new(),
        };
        connection.authenticate(bus).await?;
        let mut subscribe = Vec::new();
        if !topics.channels.is_empty() {
            subscribe.extend(
                redis::cmd("SUBSCRIBE")
                    .arg(&topics.channels)
                    .get_packed_command(),
            );
        }
        if !topics.patterns.is_empty() {
            subscribe.extend(
                redis::cmd("PSUBSCRIBE")
                    .arg(&topics.patterns)
                    .get_packed_command(),
            );
        }
        connection.write(bus, &subscribe).await?;
        let mut unconfirmed = topics.channels.len() + topics.patterns.len();
        while unconfirmed > 0 {
            match connection.next_value(bus).await? {
                Incoming::Subscribed => unconfirmed -= 1,
                Incoming::Message(message) => connection.early.push_back(message),
                Incoming::Error(err) => return Err(bus.bus_error(&err.into())),
                Incoming::Other => {}
            }
        }
        Ok(connection)
    }

    /// The next value from the server; reads the socket only if no whole
    /// value is buffered. Cancel-safe: a value that is partly read stays
    /// buffered for the next call.
    pub(crate) async fn receive(&mut self) -> RedisResult<Incoming> {
        if let Some(message) = self.early.pop_front() {
            return Ok(Incoming::Message(message));
        }
        match self.values.next().await {
            Some(value) => value.map(sort),
            None => Err(closed()),
        }
    }

    /// Sends `PING`; its answer comes back as [`Incoming::Other`].
    pub(crate) async fn ping(&mut self) -> std::io::Result<()> {
        let ping = redis::cmd("PING").get_packed_command();
        self.writer.write_all(&ping).await?;
        self.writer.flush().await
    }

    /// `AUTH [user] password` if the URL has a password. A server without
    /// users (before Redis 6) is asked again without the user name.
    async fn authenticate(&mut self, bus: &BusShared) -> Result<(), BusError> {
        let settings = bus.client.get_connection_info().redis_settings();
        let Some(password) = settings.password() else {
            return Ok(());
        };
        let mut username = settings.username();
        loop {
            let mut auth = redis::cmd("AUTH");
            if let Some(username) = username {
                auth.arg(username);
            }
            auth.arg(password);
            self.write(bus, &auth.get_packed_command()).await?;
            match self.next_value(bus).await? {
                Incoming::Error(err)
                    if username.is_some()
                        && err
                            .details()
                            .is_some_and(|d| d.contains("wrong number of arguments")) =>
                {
                    username = None;
                }
                Incoming::Error(err) => {
                    return Err(BusError::Config(
                        format!(
                            "the Redis server at {} refused the credentials: {} {}",
                            bus.server,
                            err.code(),
                            err.details().unwrap_or_default()
                        )
                        .into(),
                    ));
                }
                _ => return Ok(()),
            }
        }
    }

    async fn write(&mut self, bus: &BusShared, bytes: &[u8]) -> Result<(), BusError> {
        let written = async {
            self.writer.write_all(bytes).await?;
            self.writer.flush().await
        };
        written.await.map_err(|err| bus.bus_error(&err.into()))
    }

    async fn next_value(&mut self, bus: &BusShared) -> Result<Incoming, BusError> {
        self.receive().await.map_err(|err| bus.bus_error(&err))
    }
}

/// The values the server sends on `reader`, parsed one at a time as they are
/// asked for; the stream ends after the first error (such as the end of the
/// connection).
fn values(reader: ReadHalf<Box<dyn Io>>) -> BoxStream<'static, RedisResult<Value>> {
    stream::unfold(Some((reader, Default::default())), |state| async move {
        let (mut reader, mut decoder) = state?;
        match redis::parse_redis_value_async(&mut decoder, &mut reader).await {
            Ok(value) => Some((Ok(value), Some((reader, decoder)))),
            Err(err) => Some((Err(err), None)),
        }
    })
    .boxed()
}

/// The error of a connection the server has closed.
fn closed() -> RedisError {
    std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        "the server closed the connection",
    )
    .into()
}

/// Sorts a value of a subscribed RESP2 connection: messages are arrays
/// `message, channel, payload` and `pmessage, pattern, channel, payload`;
/// confirmations `subscribe` / `psubscribe, name, count`.
fn sort(value: Value) -> Incoming {
    let items = match value {
        Value::Array(items) => items,
        Value::ServerError(err) => return Incoming::Error(err),
        _ => return Incoming::Other,
    };
    let mut items = items.into_iter();
    let kind = match items.next() {
        Some(Value::BulkString(kind)) => kind,
        _ => return Incoming::Other,
    };
    match kind.as_slice() {
        b"message" => message(items.next(), items.next()),
        b"pmessage" => {
            let _pattern = items.next();
            message(items.next(), items.next())
        }
        b"subscribe" | b"psubscribe" => Incoming::Subscribed,
        _ => Incoming::Other,
    }
}

fn message(channel: Option<Value>, payload: Option<Value>) -> Incoming {
    match (channel, payload) {
        (Some(Value::BulkString(channel)), Some(Value::BulkString(payload))) => {
            Incoming::Message(Message {
                channel: String::from_utf8(channel)
                    .unwrap_or_else(|err| String::from_utf8_lossy(err.as_bytes()).into_owned()),
                payload,
                reply_to: None,
            })
        }
        _ => Incoming::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn messages_confirmations_and_pongs_are_told_apart() {
        let message = Value::Array(vec![bulk("message"), bulk("c"), bulk("payload")]);
        assert!(matches!(
            sort(message),
            Incoming::Message(Message { channel, payload, reply_to: None })
                if channel == "c" && payload == b"payload"
        ));
        let pmessage = Value::Array(vec![bulk("pmessage"), bulk("c-*"), bulk("c-1"), bulk("p")]);
        assert!(matches!(
            sort(pmessage),
            Incoming::Message(Message { channel, payload, .. }) if channel == "c-1" && payload == b"p"
        ));
        let confirmation = Value::Array(vec![bulk("psubscribe"), bulk("c-*"), Value::Int(2)]);
        assert!(matches!(sort(confirmation), Incoming::Subscribed));
        let pong = Value::Array(vec![bulk("pong"), bulk("")]);
        assert!(matches!(sort(pong), Incoming::Other));
        let short = Value::Array(vec![bulk("message"), bulk("c")]);
        assert!(matches!(sort(short), Incoming::Other));
    }

    #[test]
    fn a_channel_name_that_is_not_utf8_is_kept_readable() {
        let message = Value::Array(vec![
            bulk("message"),
            Value::BulkString(vec![b'a', 0xff]),
            bulk("p"),
        ]);
        assert!(matches!(
            sort(message),
            Incoming::Message(Message { channel, .. }) if channel == "a\u{fffd}"
        ));
    }
}
