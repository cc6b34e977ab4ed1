//! Bytes to typed messages: every payload becomes a message or a typed error,
//! never a panic.

use super::limits::max_len;
use super::{Announce, Id, ReplyTo, Request};
use crate::mask::truncate;
use crate::quota::{LeaseReturn, Observation};
use crate::time::Timestamp;
use serde_json::{Map, Value};

/// How much of an unknown message type is kept for logs: enough for any real
/// type name, too little to reveal a key sent in its place.
pub(super) const MAX_TYPE_SHOWN: usize = 20;

/// The default largest payload accepted, in bytes.
pub const DEFAULT_MAX_PAYLOAD: usize = 64 * 1024;

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
    /// A field is longer than its limit (see the [limits](crate::protocol#limits)).
    #[error("field `{field}` of {len} bytes exceeds the limit of {max} bytes")]
    TooLong {
        /// The field.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The message is valid, but applying it would pass a configured cap
    /// ([`EngineConfig::max_platforms`](crate::EngineConfig::max_platforms),
    /// [`EngineConfig::max_keys_per_platform`](crate::EngineConfig::max_keys_per_platform)).
    #[error("the limit of {max} {limit} is reached")]
    LimitReached {
        /// What is counted: `platforms` or `keys per platform`.
        limit: &'static str,
        /// The cap.
        max: usize,
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

impl DecodeError {
    /// Whether the message was refused for its size (a payload, a field),
    /// answered with [`ErrorCode::TooLarge`](super::ErrorCode::TooLarge).
    pub fn is_too_large(&self) -> bool {
        matches!(
            self,
            DecodeError::TooLarge { .. } | DecodeError::TooLong { .. }
        )
    }
}

/// `Err(TooLong)` when `text` of `field` is longer than the field's limit.
pub(super) fn check_len(field: &'static str, text: &str) -> Result<(), DecodeError> {
    match max_len(field) {
        Some(max) if text.len() > max => Err(DecodeError::TooLong {
            field,
            len: text.len(),
            max,
        }),
        _ => Ok(()),
    }
}

impl From<DecodeError> for Rejected {
    fn from(error: DecodeError) -> Self {
        Rejected { error, reply: None }
    }
}

pub(super) fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

pub(super) fn parse_object(bytes: &[u8], max: usize) -> Result<Map<String, Value>, DecodeError> {
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

pub(super) struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    pub(super) fn kind(&self) -> Result<&str, DecodeError> {
        self.0
            .get("type")
            .and_then(Value::as_str)
            .ok_or(DecodeError::MissingType)
    }

    /// A non-empty string field.
    pub(super) fn text(&self, field: &'static str) -> Result<String, DecodeError> {
        match self.0.get(field) {
            None | Some(Value::Null) => Err(DecodeError::MissingField(field)),
            Some(Value::String(s)) if s.is_empty() => Err(DecodeError::Invalid {
                field,
                reason: "must not be empty",
            }),
            Some(Value::String(s)) => {
                check_len(field, s)?;
                Ok(s.clone())
            }
            Some(_) => Err(DecodeError::WrongType {
                field,
                expected: "a string",
            }),
        }
    }

    /// An id field (a whole number or a string), within [`MAX_ID_LEN`](super::MAX_ID_LEN).
    pub(super) fn id(&self, field: &'static str) -> Result<Option<Id>, DecodeError> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => {
                let id = Id::from_value(v).ok_or(DecodeError::WrongType {
                    field,
                    expected: "a whole number or a string",
                })?;
                if let Id::Text(s) = &id {
                    check_len(field, s)?;
                }
                Ok(Some(id))
            }
        }
    }

    /// The reply address. A `requester_id` that is missing, malformed or too
    /// long leaves no channel to answer on; a `request_id` that is too long is
    /// refused with the address (without it), so that the sender can be told.
    pub(super) fn reply_to(&self) -> Result<ReplyTo, Rejected> {
        let requester_id = self
            .id("requester_id")?
            .ok_or(DecodeError::MissingField("requester_id"))?;
        let request_id = match self.id("request_id") {
            Ok(id) => id,
            Err(error @ DecodeError::TooLong { .. }) => {
                return Err(Rejected {
                    error,
                    reply: Some(ReplyTo::new(requester_id)),
                });
            }
            // A malformed request_id is dropped rather than failing the request:
            // the reply is still useful to a client that matches on order.
            Err(_) => None,
        };
        Ok(ReplyTo {
            requester_id,
            request_id,
        })
    }

    pub(super) fn refresh_time(&self) -> Result<Timestamp, DecodeError> {
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

// -- quota extension --
impl Fields<'_> {
    /// An optional non-negative integer field.
    pub(super) fn count(&self, field: &'static str) -> Result<Option<u64>, DecodeError> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or(DecodeError::WrongType {
                field,
                expected: "a non-negative integer",
            }),
        }
    }

    /// An optional time in Unix epoch seconds, kept in whole seconds (rounded
    /// down: HTTP dates and reset headers are whole seconds).
    pub(super) fn whole_secs(&self, field: &'static str) -> Result<Option<Timestamp>, DecodeError> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => match n.as_u64() {
                Some(secs) => Ok(Some(Timestamp::from_secs(secs))),
                None => match n.as_f64() {
                    Some(f) if f.is_finite() && f >= 0.0 => {
                        Ok(Some(Timestamp::from_secs(f.floor() as u64)))
                    }
                    _ => Err(DecodeError::Invalid {
                        field,
                        reason: "must be a non-negative Unix epoch in seconds",
                    }),
                },
            },
            Some(_) => Err(DecodeError::WrongType {
                field,
                expected: "a number (Unix epoch seconds)",
            }),
        }
    }

    /// An optional non-empty string field.
    pub(super) fn optional_text(&self, field: &'static str) -> Result<Option<String>, DecodeError> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => self.text(field).map(Some),
        }
    }

    /// NEW's `lease`: an integer ≥ 1, if present.
    pub(super) fn lease(&self) -> Result<Option<u64>, DecodeError> {
        match self.count("lease")? {
            Some(0) => Err(DecodeError::Invalid {
                field: "lease",
                reason: "must be at least 1",
            }),
            other => Ok(other),
        }
    }

    /// A REPORT's reply address: only when it asks for an answer (`request_id`).
    fn report_reply(&self) -> Option<ReplyTo> {
        self.reply_to().ok().filter(|r| r.request_id.is_some())
    }

    fn report(&self) -> Result<Request, DecodeError> {
        let observation = Observation {
            remaining: self.count("remaining")?,
            limit: self.count("limit")?,
            reset: self.whole_secs("reset")?,
            resource: self.optional_text("resource")?,
            server_date: self.whole_secs("server_date")?,
        };
        let done = match self.0.get("done") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(DecodeError::WrongType {
                    field: "done",
                    expected: "a boolean",
                });
            }
        };
        let used = self.count("used")?;
        let lease = self.count("lease_id")?.map(|lease_id| LeaseReturn {
            lease_id,
            used,
            done,
        });
        Ok(Request::Report {
            key: self.text("key_str")?,
            platform: self.text("key_platform")?,
            observation,
            lease,
            reply: self.report_reply(),
        })
    }
}

/// Runs `body` and, if it fails, attaches the reply address when one is readable.
pub(super) fn with_reply<T>(
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
            let key = f.text("key_str")?;
            let platform = f.text("key_platform")?;
            let account = f.optional_text("account")?;
            let limit = f.count("limit")?;
            Ok(if account.is_none() && limit.is_none() {
                Announce::Publish { key, platform }
            } else {
                Announce::PublishWithQuota {
                    key,
                    platform,
                    account,
                    limit,
                }
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
                let platform = f.text("key_platform")?;
                let hold_ms = f.0.get("hold_ms").and_then(Value::as_u64);
                Ok(match f.lease()? {
                    None => Request::New {
                        platform,
                        reply,
                        hold_ms,
                    },
                    Some(lease) => Request::Lease {
                        platform,
                        reply,
                        hold_ms,
                        lease,
                    },
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
        "REPORT" => {
            let reply = f.report_reply().is_some();
            with_reply(&f, reply, || f.report())
        }
        other => Err(DecodeError::UnknownType(truncate(other, MAX_TYPE_SHOWN)).into()),
    }
}
