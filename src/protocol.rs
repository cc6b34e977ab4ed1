//! The wire protocol of Augur's key orchestrator, as typed messages.
//!
//! Requests are JSON objects with a `"type"` field, published on one of two
//! channels (see [`Channels`]). Replies go to `"{channel}-{requester_id}"`.
//! [`decode_announce`] and [`decode_request`] turn any bytes into a typed message
//! or a typed [`DecodeError`], never a panic; the `encode` methods produce the
//! JSON shapes Augur's Python code reads. Our extensions (`request_id`, `error`
//! and `code`, the `STATUS` message) are optional fields and types that Augur's
//! code neither sends nor reads.

use crate::mask::truncate;
use crate::time::Timestamp;
use serde_json::{Map, Number, Value};
use std::fmt;

/// Augur's default id of the admin channel.
pub const DEFAULT_ANNOUNCE: &str = "augur-oauth-announce";
/// Augur's default id of the worker channel.
pub const DEFAULT_REQUEST: &str = "worker-oath-request";
/// How much of an unknown message type is kept for logs: enough for any real
/// type name, too little to reveal a key sent in its place.
const MAX_TYPE_SHOWN: usize = 20;

/// The default largest payload accepted, in bytes.
pub const DEFAULT_MAX_PAYLOAD: usize = 64 * 1024;

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
/// process id); ours send a string. Displayed as written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Id {
    /// A JSON number, displayed in its decimal digits.
    Number(Number),
    /// A JSON string, displayed as is.
    Text(String),
}

impl Id {
    fn from_value(v: &Value) -> Option<Id> {
        match v {
            Value::Number(n) => Some(Id::Number(n.clone())),
            Value::String(s) => Some(Id::Text(s.clone())),
            _ => None,
        }
    }

    fn to_value(&self) -> Value {
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

/// A message on the ANNOUNCE channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Announce {
    /// Add `key` to `platform`'s fresh keys (creating the platform). No reply.
    Publish {
        /// The key.
        key: String,
        /// The platform.
        platform: String,
    },
    /// Remove `key` from `platform`. No reply.
    Unpublish {
        /// The key.
        key: String,
        /// The platform.
        platform: String,
    },
    /// Ask for an (empty) acknowledgement: the orchestrator is up and has handled
    /// everything published before.
    Ack {
        /// Where to answer.
        reply: ReplyTo,
    },
    /// Ask for the platform names.
    ListPlatforms {
        /// Where to answer.
        reply: ReplyTo,
    },
    /// Ask for the fresh and expired keys of a platform.
    ListKeys {
        /// The platform.
        platform: String,
        /// Where to answer.
        reply: ReplyTo,
    },
    /// Ask for the invalid keys of a platform.
    ListInvalidKeys {
        /// The platform.
        platform: String,
        /// Where to answer.
        reply: ReplyTo,
    },
    /// (ext) Ask for the number of keys in each state, per platform.
    Status {
        /// Where to answer.
        reply: ReplyTo,
    },
    /// Handle everything received before, then stop. No reply.
    Shutdown,
}

/// A message on the REQUEST channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Ask for a key of `platform`.
    New {
        /// The platform.
        platform: String,
        /// Where to answer.
        reply: ReplyTo,
        /// (ext) How long, in milliseconds, the orchestrator may hold the request
        /// when no key is fresh, answering as soon as one is (published or
        /// refreshed) instead of sending `{"wait": n}` at once. Our clients send
        /// it; Augur's do not, and Augur's orchestrator ignores it.
        hold_ms: Option<u64>,
    },
    /// Report `key` as rate limited until `refresh_time`. No reply.
    Expire {
        /// The key.
        key: String,
        /// The platform.
        platform: String,
        /// When the API said the quota resets.
        refresh_time: Timestamp,
        /// Who reported it, if said.
        requester_id: Option<Id>,
    },
    /// Report `key` as permanently invalid (HTTP 401). No reply.
    Invalidate {
        /// The key.
        key: String,
        /// The platform.
        platform: String,
        /// Who reported it, if said.
        requester_id: Option<Id>,
    },
}

/// Why bytes are not a valid message. The text never contains a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The payload is larger than the configured limit.
    #[error("payload of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The payload is not JSON (or not UTF-8).
    #[error("not valid JSON: {0}")]
    Json(String),
    /// The payload is JSON, but not an object.
    #[error("expected a JSON object, got {0}")]
    NotAnObject(&'static str),
    /// The object has no `"type"` string.
    #[error("missing or non-string field `type`")]
    MissingType,
    /// The type is not one this channel knows.
    #[error("unknown message type {0:?} on this channel")]
    UnknownType(String),
    /// A required field is absent.
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    /// A field has the wrong JSON type.
    #[error("field `{field}` must be {expected}")]
    WrongType {
        /// The field.
        field: &'static str,
        /// What it must be.
        expected: &'static str,
    },
    /// A field has the right type but an unusable value.
    #[error("field `{field}` is invalid: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        reason: &'static str,
    },
    /// A reply is of no shape this protocol has.
    #[error("unexpected reply shape: {0}")]
    UnexpectedReply(&'static str),
}

/// A message that could not be decoded, and where its sender waits for an
/// answer if that much could be read (so it can be told, instead of waiting).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// What is wrong.
    pub error: DecodeError,
    /// The sender's reply address, when the message type expects a reply and its
    /// `requester_id` was readable.
    pub reply: Option<ReplyTo>,
}

impl From<DecodeError> for Rejected {
    fn from(error: DecodeError) -> Self {
        Rejected { error, reply: None }
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn parse_object(bytes: &[u8], max: usize) -> Result<Map<String, Value>, DecodeError> {
    if bytes.len() > max {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            max,
        });
    }
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| DecodeError::Json(e.to_string()))?;
    match value {
        Value::Object(map) => Ok(map),
        other => Err(DecodeError::NotAnObject(json_kind(&other))),
    }
}

struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    fn kind(&self) -> Result<&str, DecodeError> {
        self.0
            .get("type")
            .and_then(Value::as_str)
            .ok_or(DecodeError::MissingType)
    }

    /// A non-empty string field.
    fn text(&self, field: &'static str) -> Result<String, DecodeError> {
        match self.0.get(field) {
            None | Some(Value::Null) => Err(DecodeError::MissingField(field)),
            Some(Value::String(s)) if s.is_empty() => Err(DecodeError::Invalid {
                field,
                reason: "must not be empty",
            }),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(DecodeError::WrongType {
                field,
                expected: "a string",
            }),
        }
    }

    fn id(&self, field: &'static str) -> Result<Option<Id>, DecodeError> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => Id::from_value(v).map(Some).ok_or(DecodeError::WrongType {
                field,
                expected: "a number or a string",
            }),
        }
    }

    fn reply_to(&self) -> Result<ReplyTo, DecodeError> {
        let requester_id = self
            .id("requester_id")?
            .ok_or(DecodeError::MissingField("requester_id"))?;
        // A malformed request_id is dropped rather than failing the request:
        // the reply is still useful to a client that matches on order.
        let request_id = self.id("request_id").ok().flatten();
        Ok(ReplyTo {
            requester_id,
            request_id,
        })
    }

    fn refresh_time(&self) -> Result<Timestamp, DecodeError> {
        const FIELD: &str = "refresh_time";
        let n = match self.0.get(FIELD) {
            None | Some(Value::Null) => return Err(DecodeError::MissingField(FIELD)),
            Some(Value::Number(n)) => n,
            Some(_) => {
                return Err(DecodeError::WrongType {
                    field: FIELD,
                    expected: "a number (Unix epoch seconds)",
                });
            }
        };
        if let Some(secs) = n.as_u64() {
            return Ok(Timestamp::from_secs(secs));
        }
        match n.as_f64() {
            Some(f) if f.is_finite() && f >= 0.0 => {
                // Saturating float-to-int conversion; fractional seconds are kept.
                Ok(Timestamp::from_millis((f * 1000.0).ceil() as u64))
            }
            _ => Err(DecodeError::Invalid {
                field: FIELD,
                reason: "must be a non-negative Unix epoch in seconds",
            }),
        }
    }
}

/// Runs `body` and, if it fails, attaches the reply address when one is readable.
fn with_reply<T>(
    f: &Fields<'_>,
    expects_reply: bool,
    body: impl FnOnce() -> Result<T, DecodeError>,
) -> Result<T, Rejected> {
    body().map_err(|error| Rejected {
        reply: if expects_reply {
            f.reply_to().ok()
        } else {
            None
        },
        error,
    })
}

/// Decodes a payload received on the ANNOUNCE channel.
pub fn decode_announce(bytes: &[u8], max_payload: usize) -> Result<Announce, Rejected> {
    let map = parse_object(bytes, max_payload)?;
    let f = Fields(&map);
    let kind = f.kind()?;
    let msg = match kind {
        "PUBLISH" => with_reply(&f, false, || {
            Ok(Announce::Publish {
                key: f.text("key_str")?,
                platform: f.text("key_platform")?,
            })
        })?,
        "UNPUBLISH" => with_reply(&f, false, || {
            Ok(Announce::Unpublish {
                key: f.text("key_str")?,
                platform: f.text("key_platform")?,
            })
        })?,
        "ACK" => Announce::Ack {
            reply: f.reply_to()?,
        },
        "LIST_PLATFORMS" => Announce::ListPlatforms {
            reply: f.reply_to()?,
        },
        "LIST_KEYS" => {
            let reply = f.reply_to()?;
            with_reply(&f, true, || {
                Ok(Announce::ListKeys {
                    platform: f.text("key_platform")?,
                    reply,
                })
            })?
        }
        "LIST_INVALID_KEYS" => {
            let reply = f.reply_to()?;
            with_reply(&f, true, || {
                Ok(Announce::ListInvalidKeys {
                    platform: f.text("key_platform")?,
                    reply,
                })
            })?
        }
        "STATUS" => Announce::Status {
            reply: f.reply_to()?,
        },
        "SHUTDOWN" => Announce::Shutdown,
        other => return Err(DecodeError::UnknownType(truncate(other, MAX_TYPE_SHOWN)).into()),
    };
    Ok(msg)
}

/// Decodes a payload received on the REQUEST channel.
pub fn decode_request(bytes: &[u8], max_payload: usize) -> Result<Request, Rejected> {
    let map = parse_object(bytes, max_payload)?;
    let f = Fields(&map);
    let kind = f.kind()?;
    match kind {
        "NEW" => {
            let reply = f.reply_to()?;
            with_reply(&f, true, || {
                Ok(Request::New {
                    platform: f.text("key_platform")?,
                    reply,
                    hold_ms: f.0.get("hold_ms").and_then(Value::as_u64),
                })
            })
        }
        "EXPIRE" => with_reply(&f, false, || {
            Ok(Request::Expire {
                key: f.text("key_str")?,
                platform: f.text("key_platform")?,
                refresh_time: f.refresh_time()?,
                requester_id: f.id("requester_id").ok().flatten(),
            })
        }),
        "INVALIDATE" => with_reply(&f, false, || {
            Ok(Request::Invalidate {
                key: f.text("key_str")?,
                platform: f.text("key_platform")?,
                requester_id: f.id("requester_id").ok().flatten(),
            })
        }),
        other => Err(DecodeError::UnknownType(truncate(other, MAX_TYPE_SHOWN)).into()),
    }
}

fn object(pairs: Vec<(&str, Value)>, reply: Option<&ReplyTo>) -> Map<String, Value> {
    let mut m: Map<String, Value> = pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    if let Some(reply) = reply {
        m.insert("requester_id".into(), reply.requester_id.to_value());
        if let Some(rid) = &reply.request_id {
            m.insert("request_id".into(), rid.to_value());
        }
    }
    m
}

fn to_bytes(v: &Value) -> Vec<u8> {
    // Serializing a `Value` cannot fail: its map keys are strings.
    serde_json::to_vec(v).unwrap_or_default()
}

impl Announce {
    /// The JSON bytes of this message, as Augur's `KeyPublisher` sends it (plus
    /// `request_id` when set).
    pub fn encode(&self) -> Vec<u8> {
        let s = |x: &str| Value::String(x.to_string());
        let m = match self {
            Announce::Publish { key, platform } => object(
                vec![
                    ("type", s("PUBLISH")),
                    ("key_str", s(key)),
                    ("key_platform", s(platform)),
                ],
                None,
            ),
            Announce::Unpublish { key, platform } => object(
                vec![
                    ("type", s("UNPUBLISH")),
                    ("key_str", s(key)),
                    ("key_platform", s(platform)),
                ],
                None,
            ),
            Announce::Ack { reply } => object(vec![("type", s("ACK"))], Some(reply)),
            Announce::ListPlatforms { reply } => {
                object(vec![("type", s("LIST_PLATFORMS"))], Some(reply))
            }
            Announce::ListKeys { platform, reply } => object(
                vec![("type", s("LIST_KEYS")), ("key_platform", s(platform))],
                Some(reply),
            ),
            Announce::ListInvalidKeys { platform, reply } => object(
                vec![
                    ("type", s("LIST_INVALID_KEYS")),
                    ("key_platform", s(platform)),
                ],
                Some(reply),
            ),
            Announce::Status { reply } => object(vec![("type", s("STATUS"))], Some(reply)),
            Announce::Shutdown => object(vec![("type", s("SHUTDOWN"))], None),
        };
        to_bytes(&Value::Object(m))
    }

    /// The reply address, for the messages that get an answer.
    pub fn reply_to(&self) -> Option<&ReplyTo> {
        match self {
            Announce::Ack { reply }
            | Announce::ListPlatforms { reply }
            | Announce::ListKeys { reply, .. }
            | Announce::ListInvalidKeys { reply, .. }
            | Announce::Status { reply } => Some(reply),
            _ => None,
        }
    }
}

impl Request {
    /// The JSON bytes of this message, as Augur's `KeyClient` sends it (plus
    /// `request_id` when set).
    pub fn encode(&self) -> Vec<u8> {
        let s = |x: &str| Value::String(x.to_string());
        let requester = |id: &Option<Id>| id.as_ref().map(|i| ReplyTo::new(i.clone()));
        let m = match self {
            Request::New {
                platform,
                reply,
                hold_ms,
            } => {
                let mut fields = vec![("type", s("NEW")), ("key_platform", s(platform))];
                if let Some(ms) = hold_ms {
                    fields.push(("hold_ms", Value::from(*ms)));
                }
                object(fields, Some(reply))
            }
            Request::Expire {
                key,
                platform,
                refresh_time,
                requester_id,
            } => {
                let secs = refresh_time.as_millis().div_ceil(1000);
                object(
                    vec![
                        ("type", s("EXPIRE")),
                        ("key_str", s(key)),
                        ("key_platform", s(platform)),
                        ("refresh_time", Value::Number(secs.into())),
                    ],
                    requester(requester_id).as_ref(),
                )
            }
            Request::Invalidate {
                key,
                platform,
                requester_id,
            } => object(
                vec![
                    ("type", s("INVALIDATE")),
                    ("key_str", s(key)),
                    ("key_platform", s(platform)),
                ],
                requester(requester_id).as_ref(),
            ),
        };
        to_bytes(&Value::Object(m))
    }
}

/// Why the orchestrator could not serve a request (ext `code` of an error reply).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// No key was ever published for the platform.
    UnknownPlatform,
    /// The platform has no fresh and no expired key.
    NoKeys,
    /// The request was malformed.
    BadRequest,
    /// A code this version does not know.
    Other(String),
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            ErrorCode::UnknownPlatform => "unknown_platform",
            ErrorCode::NoKeys => "no_keys",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Other(s) => s,
        }
    }

    fn parse(s: &str) -> ErrorCode {
        match s {
            "unknown_platform" => ErrorCode::UnknownPlatform,
            "no_keys" => ErrorCode::NoKeys,
            "bad_request" => ErrorCode::BadRequest,
            other => ErrorCode::Other(truncate(other, 40)),
        }
    }
}

/// Key counts of one platform in a [`Reply::Status`] (ext).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformStatus {
    /// The platform.
    pub platform: String,
    /// Fresh keys.
    pub fresh: u64,
    /// Expired keys.
    pub expired: u64,
    /// Invalid keys.
    pub invalid: u64,
    /// The earliest refresh time, in Unix epoch seconds (rounded up).
    pub next_refresh: Option<u64>,
}

/// An answer of the orchestrator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `{"key": "..."}`: a fresh key.
    Key(String),
    /// `{"key": null}`: what Augur's orchestrator sends when it has no key.
    NullKey,
    /// `{"wait": n}`: no fresh key; ask again in `n` seconds.
    Wait(u64),
    /// `{"error": "...", "code": "..."}` (ext).
    Error {
        /// What went wrong, by type.
        code: ErrorCode,
        /// For people.
        message: String,
    },
    /// The acknowledgement of ACK: an empty payload.
    Ack,
    /// A JSON array of strings: platforms or keys.
    List(Vec<String>),
    /// `{"status": "..."}`: a list request failed.
    ListError(String),
    /// (ext) Key counts per platform.
    Status(Vec<PlatformStatus>),
}

/// A decoded reply with the `request_id` it echoes, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyMessage {
    /// The answer.
    pub reply: Reply,
    /// The echoed `request_id` (ext); `None` from Augur's orchestrator.
    pub request_id: Option<Id>,
}

impl Reply {
    /// The bytes of this reply. Without `request_id` they are exactly Augur's
    /// shapes (`{"key": ...}`, `{"wait": n}`, an empty ACK, bare arrays); with one
    /// (only our clients send it), every reply is an object that echoes it.
    pub fn encode(&self, request_id: Option<&Id>) -> Vec<u8> {
        let s = |x: &str| Value::String(x.to_string());
        let list = |v: &[String]| Value::Array(v.iter().map(|x| s(x)).collect());
        let mut m = match self {
            Reply::Key(k) => object(vec![("key", s(k))], None),
            Reply::NullKey => object(vec![("key", Value::Null)], None),
            Reply::Wait(n) => object(vec![("wait", Value::Number((*n).into()))], None),
            Reply::Error { code, message } => object(
                vec![("error", s(message)), ("code", s(code.as_str()))],
                None,
            ),
            Reply::Ack => match request_id {
                None => return Vec::new(),
                Some(_) => object(vec![("ack", Value::Bool(true))], None),
            },
            Reply::List(items) => match request_id {
                None => return to_bytes(&list(items)),
                Some(_) => object(vec![("list", list(items))], None),
            },
            Reply::ListError(msg) => object(vec![("status", s(msg))], None),
            Reply::Status(platforms) => {
                let items = platforms
                    .iter()
                    .map(|p| {
                        let mut o = Map::new();
                        o.insert("platform".into(), s(&p.platform));
                        o.insert("fresh".into(), p.fresh.into());
                        o.insert("expired".into(), p.expired.into());
                        o.insert("invalid".into(), p.invalid.into());
                        o.insert(
                            "next_refresh".into(),
                            p.next_refresh.map_or(Value::Null, Value::from),
                        );
                        Value::Object(o)
                    })
                    .collect();
                object(vec![("platforms", Value::Array(items))], None)
            }
        };
        if let Some(rid) = request_id {
            m.insert("request_id".into(), rid.to_value());
        }
        to_bytes(&Value::Object(m))
    }

    /// Decodes a reply, from our orchestrator or Augur's. An empty payload (or the
    /// JSON string `""`) is an ACK, as Augur's `KeyPublisher.wait()` reads it.
    pub fn decode(bytes: &[u8], max_payload: usize) -> Result<ReplyMessage, DecodeError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(ReplyMessage {
                reply: Reply::Ack,
                request_id: None,
            });
        }
        if bytes.len() > max_payload {
            return Err(DecodeError::TooLarge {
                len: bytes.len(),
                max: max_payload,
            });
        }
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| DecodeError::Json(e.to_string()))?;
        let strings = |v: &Value| -> Result<Vec<String>, DecodeError> {
            let arr = v
                .as_array()
                .ok_or(DecodeError::UnexpectedReply("a list that is not an array"))?;
            arr.iter()
                .map(|x| {
                    x.as_str()
                        .map(str::to_string)
                        .ok_or(DecodeError::UnexpectedReply(
                            "a list item that is not a string",
                        ))
                })
                .collect()
        };
        let map = match value {
            Value::String(s) if s.is_empty() => {
                return Ok(ReplyMessage {
                    reply: Reply::Ack,
                    request_id: None,
                });
            }
            Value::Array(_) => {
                return Ok(ReplyMessage {
                    reply: Reply::List(strings(&value)?),
                    request_id: None,
                });
            }
            Value::Object(m) => m,
            _ => return Err(DecodeError::UnexpectedReply("neither an object nor a list")),
        };
        let request_id = map.get("request_id").and_then(Id::from_value);
        let reply = if let Some(k) = map.get("key") {
            match k {
                Value::String(s) => Reply::Key(s.clone()),
                Value::Null => Reply::NullKey,
                _ => return Err(DecodeError::UnexpectedReply("a key that is not a string")),
            }
        } else if let Some(w) = map.get("wait") {
            let secs = w
                .as_u64()
                .or_else(|| {
                    w.as_f64()
                        .filter(|f| f.is_finite() && *f >= 0.0)
                        .map(|f| f.ceil() as u64)
                })
                .ok_or(DecodeError::UnexpectedReply("a wait that is not a number"))?;
            Reply::Wait(secs)
        } else if let Some(e) = map.get("error") {
            Reply::Error {
                code: map
                    .get("code")
                    .and_then(Value::as_str)
                    .map_or(ErrorCode::Other(String::new()), ErrorCode::parse),
                message: e.as_str().map_or_else(|| e.to_string(), str::to_string),
            }
        } else if let Some(st) = map.get("status") {
            Reply::ListError(st.as_str().map_or_else(|| st.to_string(), str::to_string))
        } else if map.contains_key("ack") {
            Reply::Ack
        } else if let Some(l) = map.get("list") {
            Reply::List(strings(l)?)
        } else if let Some(Value::Array(ps)) = map.get("platforms") {
            let mut out = Vec::with_capacity(ps.len());
            for p in ps {
                let num = |f: &str| p.get(f).and_then(Value::as_u64).unwrap_or(0);
                out.push(PlatformStatus {
                    platform: p
                        .get("platform")
                        .and_then(Value::as_str)
                        .ok_or(DecodeError::UnexpectedReply("a status without platform"))?
                        .to_string(),
                    fresh: num("fresh"),
                    expired: num("expired"),
                    invalid: num("invalid"),
                    next_refresh: p.get("next_refresh").and_then(Value::as_u64),
                });
            }
            Reply::Status(out)
        } else {
            return Err(DecodeError::UnexpectedReply("an object of unknown shape"));
        };
        Ok(ReplyMessage { reply, request_id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = DEFAULT_MAX_PAYLOAD;

    #[test]
    fn decodes_augur_python_bytes() {
        // json.dumps style: ", " and ": " separators, requester_id as a number.
        let new = br#"{"key_platform": "github_rest", "type": "NEW", "requester_id": 4711}"#;
        assert_eq!(
            decode_request(new, MAX).unwrap(),
            Request::New {
                platform: "github_rest".into(),
                reply: ReplyTo::new(4711u64),
                hold_ms: None,
            }
        );
        let exp = br#"{"type": "EXPIRE", "key_str": "k", "key_platform": "p", "refresh_time": 1700000000, "requester_id": 1}"#;
        match decode_request(exp, MAX).unwrap() {
            Request::Expire { refresh_time, .. } => {
                assert_eq!(refresh_time, Timestamp::from_secs(1_700_000_000))
            }
            other => panic!("{other:?}"),
        }
        let pubm = br#"{"type": "PUBLISH", "key_str": "k", "key_platform": "p"}"#;
        assert_eq!(
            decode_announce(pubm, MAX).unwrap(),
            Announce::Publish {
                key: "k".into(),
                platform: "p".into()
            }
        );
        assert_eq!(
            decode_announce(br#"{"type": "SHUTDOWN"}"#, MAX).unwrap(),
            Announce::Shutdown
        );
    }

    #[test]
    fn reply_channels_are_formatted_as_written() {
        let c = Channels::default();
        assert_eq!(
            c.request_reply(&Id::from(4711u64)),
            "worker-oath-request-4711"
        );
        assert_eq!(
            c.announce_reply(&Id::from("abc-1")),
            "augur-oauth-announce-abc-1"
        );
    }

    #[test]
    fn float_refresh_times_are_accepted_and_bad_ones_rejected() {
        let f = br#"{"type":"EXPIRE","key_str":"k","key_platform":"p","refresh_time":10.5}"#;
        match decode_request(f, MAX).unwrap() {
            Request::Expire { refresh_time, .. } => {
                assert_eq!(refresh_time, Timestamp::from_millis(10_500))
            }
            other => panic!("{other:?}"),
        }
        for bad in [
            &br#"{"type":"EXPIRE","key_str":"k","key_platform":"p","refresh_time":"soon"}"#[..],
            br#"{"type":"EXPIRE","key_str":"k","key_platform":"p","refresh_time":-1}"#,
            br#"{"type":"EXPIRE","key_str":"k","key_platform":"p"}"#,
        ] {
            assert!(decode_request(bad, MAX).is_err());
        }
    }

    #[test]
    fn errors_are_typed_and_carry_the_reply_address_when_readable() {
        assert_eq!(
            decode_request(b"42", MAX).unwrap_err().error,
            DecodeError::NotAnObject("a number")
        );
        assert!(matches!(
            decode_request(b"{nope", MAX).unwrap_err().error,
            DecodeError::Json(_)
        ));
        assert_eq!(
            decode_request(br#"{"type":"NEW","key_platform":"p"}"#, MAX)
                .unwrap_err()
                .error,
            DecodeError::MissingField("requester_id")
        );
        let r = decode_request(br#"{"type":"NEW","requester_id":"x"}"#, MAX).unwrap_err();
        assert_eq!(r.error, DecodeError::MissingField("key_platform"));
        assert_eq!(r.reply, Some(ReplyTo::new("x")));
        assert!(matches!(
            decode_request(br#"{"type":"PUBLISH","requester_id":1}"#, MAX)
                .unwrap_err()
                .error,
            DecodeError::UnknownType(_)
        ));
        assert_eq!(
            decode_announce(br#"{"type":"ACK"}"#, MAX)
                .unwrap_err()
                .error,
            DecodeError::MissingField("requester_id")
        );
        assert!(matches!(
            decode_announce(&vec![b' '; MAX + 1], MAX)
                .unwrap_err()
                .error,
            DecodeError::TooLarge { .. }
        ));
        assert_eq!(
            decode_announce(
                br#"{"type":"PUBLISH","key_str":"","key_platform":"p"}"#,
                MAX
            )
            .unwrap_err()
            .error,
            DecodeError::Invalid {
                field: "key_str",
                reason: "must not be empty"
            }
        );
    }

    #[test]
    fn messages_round_trip_through_encode_and_decode() {
        let reply = ReplyTo::new("c-1").with_request_id(7u64);
        let announces = vec![
            Announce::Publish {
                key: "k".into(),
                platform: "p".into(),
            },
            Announce::Unpublish {
                key: "k".into(),
                platform: "p".into(),
            },
            Announce::Ack {
                reply: reply.clone(),
            },
            Announce::ListPlatforms {
                reply: reply.clone(),
            },
            Announce::ListKeys {
                platform: "p".into(),
                reply: reply.clone(),
            },
            Announce::ListInvalidKeys {
                platform: "p".into(),
                reply: reply.clone(),
            },
            Announce::Status {
                reply: reply.clone(),
            },
            Announce::Shutdown,
        ];
        for a in announces {
            assert_eq!(decode_announce(&a.encode(), MAX).unwrap(), a);
        }
        let requests = vec![
            Request::New {
                platform: "p".into(),
                reply: reply.clone(),
                hold_ms: None,
            },
            Request::New {
                platform: "p".into(),
                reply: reply.clone(),
                hold_ms: Some(1500),
            },
            Request::Expire {
                key: "k".into(),
                platform: "p".into(),
                refresh_time: Timestamp::from_secs(99),
                requester_id: Some(Id::from("c-1")),
            },
            Request::Invalidate {
                key: "k".into(),
                platform: "p".into(),
                requester_id: None,
            },
        ];
        for r in requests {
            assert_eq!(decode_request(&r.encode(), MAX).unwrap(), r);
        }
    }

    #[test]
    fn replies_have_augur_shapes_without_request_id() {
        assert_eq!(Reply::Key("k".into()).encode(None), br#"{"key":"k"}"#);
        assert_eq!(Reply::Wait(3).encode(None), br#"{"wait":3}"#);
        assert_eq!(Reply::Ack.encode(None), b"");
        assert_eq!(
            Reply::List(vec!["a".into(), "b".into()]).encode(None),
            br#"["a","b"]"#
        );
        assert_eq!(
            Reply::ListError("unknown platform: x".into()).encode(None),
            br#"{"status":"unknown platform: x"}"#
        );
    }

    #[test]
    fn replies_round_trip_with_request_id() {
        let rid = Id::from(12u64);
        for r in [
            Reply::Key("k".into()),
            Reply::NullKey,
            Reply::Wait(4),
            Reply::Error {
                code: ErrorCode::NoKeys,
                message: "none".into(),
            },
            Reply::Ack,
            Reply::List(vec!["x".into()]),
            Reply::ListError("bad".into()),
            Reply::Status(vec![PlatformStatus {
                platform: "p".into(),
                fresh: 1,
                expired: 2,
                invalid: 3,
                next_refresh: Some(10),
            }]),
        ] {
            let m = Reply::decode(&r.encode(Some(&rid)), MAX).unwrap();
            assert_eq!(m.reply, r);
            assert_eq!(m.request_id, Some(rid.clone()));
        }
        assert_eq!(Reply::decode(b"", MAX).unwrap().reply, Reply::Ack);
        assert_eq!(Reply::decode(br#""""#, MAX).unwrap().reply, Reply::Ack);
        assert_eq!(
            Reply::decode(br#"{"key": null}"#, MAX).unwrap().reply,
            Reply::NullKey
        );
        assert!(Reply::decode(br#"{"what": 1}"#, MAX).is_err());
        assert!(Reply::decode(b"7", MAX).is_err());
    }
}
