//! What an [`Engine`](super::Engine) gives out besides its state: payloads to
//! publish and events to log.

use crate::probe::Provider;
use crate::protocol::DecodeError;
use crate::time::Timestamp;
use std::time::Duration;

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
    /// The platform's clock is behind ours by at least `lag`, as an EXPIRE
    /// whose reset had already passed by our clock shows (see
    /// [`Engine::expire`](super::Engine::expire)): the platform's later
    /// EXPIREs are moved `lag` later. Given when the lag applied grows.
    ClockLag {
        /// The platform.
        platform: String,
        /// How far behind ours its clock is taken to be.
        lag: Duration,
    },
    /// What a probe of a key found (or that it found nothing); `key` is masked.
    Probe {
        /// Who was asked.
        provider: Provider,
        /// The masked key.
        key: String,
        /// What came of it.
        what: ProbeEvent,
    },
}

/// What came of a probe, in an [`Event::Probe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeEvent {
    /// A key a worker said is invalid is valid, the platform says: it is
    /// handed out again.
    Confirmed,
    /// The platform answered 401: the key is invalid on every platform it is
    /// probed for.
    Revoked,
    /// The token expires at `expires_at`, within the warning time.
    Expiring {
        /// When, on the platform's clock.
        expires_at: Timestamp,
    },
    /// The platform throttled the probe (403/429); the key and its provider
    /// are asked again later.
    Throttled {
        /// The platform's `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
    /// The probe got no useful answer (network error, timeout, 5xx); it is
    /// tried again after a backoff.
    Failed,
    /// A withheld key's probe did not answer within the longest withholding:
    /// a new key is handed out unconfirmed (`invalidated` false), a key a
    /// worker said is invalid is invalid (`invalidated` true).
    Unconfirmed {
        /// Whether the key was made invalid.
        invalidated: bool,
    },
}

impl ProbeEvent {
    /// The level at which an [`Event::Probe`] of this kind is logged.
    pub fn level(&self) -> Level {
        match self {
            ProbeEvent::Failed => Level::Debug,
            ProbeEvent::Confirmed => Level::Info,
            ProbeEvent::Revoked
            | ProbeEvent::Expiring { .. }
            | ProbeEvent::Throttled { .. }
            | ProbeEvent::Unconfirmed { .. } => Level::Warn,
        }
    }
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
    /// Withheld (not handed out) until `until` while a probe of it is
    /// pending: a new key until the platform says it is valid, a key a worker
    /// said is invalid until the platform confirms it.
    Withheld {
        /// Until when at first; moved on while the probe is pending.
        until: Timestamp,
    },
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
            Event::ClockLag { .. } => Level::Warn,
            Event::Probe { what, .. } => what.level(),
        }
    }
}

impl KeyEvent {
    /// The level at which an [`Event::Key`] of this kind is logged.
    pub fn level(&self) -> Level {
        match self {
            KeyEvent::Published | KeyEvent::Revived | KeyEvent::Unpublished => Level::Info,
            KeyEvent::Expired { .. } | KeyEvent::Withheld { .. } => Level::Debug,
            KeyEvent::Invalidated => Level::Warn,
        }
    }
}
