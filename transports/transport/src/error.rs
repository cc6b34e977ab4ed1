//! [`BusError`]: what can go wrong in a transport, and [`ErrorDetail`], the
//! message and underlying error that some of its variants carry.

use std::error::Error;
use std::sync::Arc;
use std::time::Duration;

/// The errors of a transport: of a [`Bus`](crate::Bus), a
/// [`StateStore`](crate::StateStore) and a [`Lease`](crate::Lease).
///
/// A caller tells the causes apart by variant: [`BusError::Config`] is a
/// mistake in the URL, the options or an argument (trying again will not
/// help), [`BusError::Disconnected`] and [`BusError::Timeout`] are the broker
/// being unreachable or slow now (trying again later may). Variants that come
/// from another error keep it as their [`source`](Error::source).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BusError {
    /// The broker cannot be reached now (connection refused, lost, or not yet
    /// back). The detail says which server; its source is the client's error.
    #[error("disconnected from the broker: {0}")]
    Disconnected(#[source] ErrorDetail),
    /// The broker did not answer within the time allowed (the duration).
    #[error("the broker did not answer within {0:?}")]
    Timeout(Duration),
    /// A native request found nobody subscribed to answer it (NATS "no
    /// responders"); names the channel.
    #[error("no responder is subscribed to {0}")]
    NoResponders(String),
    /// The transport does not offer this operation (for example native
    /// request/reply on Redis); names the operation.
    #[error("this transport does not support {0}")]
    Unsupported(&'static str),
    /// The URL, the options or an argument given to the transport are wrong
    /// (a bad URL, refused credentials, an invalid channel name, no channel
    /// to subscribe to). Never a connection problem.
    #[error("bad transport configuration: {0}")]
    Config(#[source] ErrorDetail),
    /// The bus was closed by its owner.
    #[error("the bus is closed")]
    Closed,
    /// Any other failure reported by the broker or its client library (or, for
    /// a file store, the file system).
    #[error("broker error: {0}")]
    Broker(#[source] ErrorDetail),
}

/// What a [`BusError`] says: a message for people (naming the server, never
/// a password) and, when the failure came from another error, that error as
/// the [`source`](Error::source).
///
/// It displays as its message, which already contains the text of the
/// source. Two details are equal when their messages are; the source is not
/// compared. Made from a `String` or a `&str` with `.into()`, or with
/// [`ErrorDetail::with_source`]; it dereferences to the message.
#[derive(Clone)]
pub struct ErrorDetail {
    message: String,
    source: Option<Arc<dyn Error + Send + Sync + 'static>>,
}

impl ErrorDetail {
    /// A detail with a message and no source.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            source: None,
        }
    }

    /// A detail with a message and the error it comes from.
    pub fn with_source(
        message: impl Into<String>,
        source: impl Error + Send + Sync + 'static,
    ) -> Self {
        Self {
            message: message.into(),
            source: Some(Arc::new(source)),
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl std::fmt::Debug for ErrorDetail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut debug = f.debug_tuple("ErrorDetail");
        debug.field(&self.message);
        if let Some(source) = &self.source {
            debug.field(source);
        }
        debug.finish()
    }
}

impl std::fmt::Display for ErrorDetail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl Error for ErrorDetail {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source
            .as_deref()
            .map(|source| source as &(dyn Error + 'static))
    }
}

impl PartialEq for ErrorDetail {
    fn eq(&self, other: &Self) -> bool {
        self.message == other.message
    }
}

impl Eq for ErrorDetail {}

impl std::ops::Deref for ErrorDetail {
    type Target = str;

    fn deref(&self) -> &str {
        &self.message
    }
}

impl From<String> for ErrorDetail {
    fn from(message: String) -> Self {
        Self::new(message)
    }
}

impl From<&str> for ErrorDetail {
    fn from(message: &str) -> Self {
        Self::new(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_detail_displays_its_message_and_keeps_its_source() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let error = BusError::Disconnected(ErrorDetail::with_source("server at x: refused", io));
        assert_eq!(
            error.to_string(),
            "disconnected from the broker: server at x: refused"
        );
        let detail = error.source().expect("the detail");
        let io = detail.source().expect("the I/O error");
        assert_eq!(io.to_string(), "refused");
        assert_eq!(error, BusError::Disconnected("server at x: refused".into()));
        assert_eq!(
            BusError::Config("bad".into()).to_string(),
            "bad transport configuration: bad"
        );
    }
}
