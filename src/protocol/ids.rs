//! Who is who on the wire: the channel ids, requester and request ids.

use serde_json::{Number, Value};
use std::fmt;

/// Augur's default id of the admin channel.
pub const DEFAULT_ANNOUNCE: &str = "augur-oauth-announce";
/// Augur's default id of the worker channel.
pub const DEFAULT_REQUEST: &str = "worker-oath-request";

/// The ids of the two request channels. Operators may rename them; the defaults
/// are Augur's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channels {
    /// Where admins publish PUBLISH, UNPUBLISH, ACK, LIST_*, SHUTDOWN.
    pub announce: String,
    /// Where workers publish NEW, EXPIRE, INVALIDATE.
    pub request: String,
}

impl Default for Channels {
    fn default() -> Self {
        Self {
            announce: DEFAULT_ANNOUNCE.to_string(),
            request: DEFAULT_REQUEST.to_string(),
        }
    }
}

impl Channels {
    /// Where the orchestrator answers admin `requester`: `"{announce}-{id}"`.
    pub fn announce_reply(&self, requester: &Id) -> String {
        format!("{}-{}", self.announce, requester)
    }

    /// Where the orchestrator answers worker `requester`: `"{request}-{id}"`.
    pub fn request_reply(&self, requester: &Id) -> String {
        format!("{}-{}", self.request, requester)
    }
}

/// A `requester_id` or `request_id`: Augur's clients send a JSON number (their
/// process id); ours send a string. Displayed as written. A number must be a
/// whole number that fits 64 bits; others are refused.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Id {
    /// A JSON number, displayed in its decimal digits.
    Number(Number),
    /// A JSON string, displayed as is.
    Text(String),
}

impl Id {
    pub(super) fn from_value(v: &Value) -> Option<Id> {
        match v {
            // Only whole numbers: a float would be written back in other
            // digits than it came in (2444…0 as 2.444e48), so no reply channel
            // would match what its sender listens on.
            Value::Number(n) if n.is_u64() || n.is_i64() => Some(Id::Number(n.clone())),
            Value::String(s) => Some(Id::Text(s.clone())),
            _ => None,
        }
    }

    pub(super) fn to_value(&self) -> Value {
        match self {
            Id::Number(n) => Value::Number(n.clone()),
            Id::Text(s) => Value::String(s.clone()),
        }
    }
}

impl From<u64> for Id {
    fn from(n: u64) -> Self {
        Id::Number(n.into())
    }
}

impl From<&str> for Id {
    fn from(s: &str) -> Self {
        Id::Text(s.to_string())
    }
}

impl From<String> for Id {
    fn from(s: String) -> Self {
        Id::Text(s)
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Id::Number(n) => write!(f, "{n}"),
            Id::Text(s) => f.write_str(s),
        }
    }
}

/// Who asked, and how to tell this answer from others: `requester_id` and the
/// optional `request_id` (ext) that the reply echoes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyTo {
    /// Names the reply channel.
    pub requester_id: Id,
    /// Echoed in the reply (ext).
    pub request_id: Option<Id>,
}

impl ReplyTo {
    /// A reply address without a `request_id`, as Augur's clients send.
    pub fn new(requester_id: impl Into<Id>) -> Self {
        Self {
            requester_id: requester_id.into(),
            request_id: None,
        }
    }

    /// The same address with a `request_id` (ext).
    pub fn with_request_id(mut self, request_id: impl Into<Id>) -> Self {
        self.request_id = Some(request_id.into());
        self
    }
}
