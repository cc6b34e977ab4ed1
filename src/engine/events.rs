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
    /// Rate limited until `refresh_at`.
    Expired {
        /// When the key is fresh again (after the EXPIRE cap).
        refresh_at: Timestamp,
    },
    /// Permanently invalid.
    Invalidated,
}

/// How much an [`Event`] matters to an operator: the level at which the service
/// logs it, the same wherever it is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Routine and frequent (a key rate limited).
    Debug,
    /// A change an operator wants to see (a key published, SHUTDOWN).
    Info,
    /// Something is wrong with a client or a key (bad input, a revoked key).
    Warn,
}

impl Event {
    /// The level at which this event is logged.
    pub fn level(&self) -> Level {
        match self {
            Event::Rejected { .. }
            | Event::UnknownChannel { .. }
            | Event::UnknownPlatform { .. } => Level::Warn,
            Event::Key { what, .. } => what.level(),
            Event::Shutdown => Level::Info,
        }
    }
}

impl KeyEvent {
    /// The level at which an [`Event::Key`] of this kind is logged.
    pub fn level(&self) -> Level {
        match self {
            KeyEvent::Published | KeyEvent::Revived | KeyEvent::Unpublished => Level::Info,
            KeyEvent::Expired { .. } => Level::Debug,
            KeyEvent::Invalidated => Level::Warn,
        }
    }
}
