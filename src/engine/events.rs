//! What an [`Engine`](super::Engine) gives out besides its state: payloads to
//! publish and events to log.

use crate::protocol::DecodeError;
use crate::time::Timestamp;

/// A payload to publish on a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to publish it.
    pub channel: String,
    /// What to publish.
    pub payload: Vec<u8>,
}

/// Something worth logging. No event text contains a whole key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A message was dropped (and, if its sender could be addressed, answered
    /// with an error).
    Rejected {
        /// The channel it came on.
        channel: String,
        /// Why.
        error: DecodeError,
    },
    /// A message came on a channel the engine does not serve.
    UnknownChannel {
        /// The channel.
        channel: String,
    },
    /// A key changed state, or a request could not be served; `key` is masked.
    Key {
        /// The platform.
        platform: String,
        /// The masked key.
        key: String,
        /// What happened.
        what: KeyEvent,
    },
    /// A NEW named a platform that no key was ever published to.
    UnknownPlatform {
        /// The platform.
        platform: String,
    },
    /// SHUTDOWN was received; the engine handles nothing more.
    Shutdown,
}

/// What happened to a key, in an [`Event::Key`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyEvent {
    /// Published as a new key.
    Published,
    /// Published while invalid: fresh again.
    Revived,
    /// Removed from its platform.
    Unpublished,
    /// Rate limited until the given time.
    Expired(Timestamp),
    /// Permanently invalid.
    Invalidated,
}
