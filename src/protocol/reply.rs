//! The orchestrator's answers and their JSON shapes.

use super::Id;
use super::decode::DecodeError;
use super::messages::{object, to_bytes};
use crate::mask::truncate;
use serde_json::{Map, Value};

/// Why the orchestrator could not serve a request (ext `code` of an error reply).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// No key was ever published for the platform.
    UnknownPlatform,
    /// The platform has no fresh and no expired key.
    NoKeys,
    /// The request was malformed.
    BadRequest,
    /// A field of the request is longer than its limit (`too_large`, ext); see
    /// the [limits](crate::protocol#limits).
    TooLarge,
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
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Other(s) => s,
        }
    }

    pub(super) fn parse(s: &str) -> ErrorCode {
        match s {
            "unknown_platform" => ErrorCode::UnknownPlatform,
            "no_keys" => ErrorCode::NoKeys,
            "bad_request" => ErrorCode::BadRequest,
            "too_large" => ErrorCode::TooLarge,
            other => ErrorCode::Other(truncate(other, 40)),
        }
    }
}

/// Key counts of one platform in a [`Reply::Status`] (ext).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
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
    // -- quota forecast (extension); absent on the wire when unknown --
    /// The known remaining calls of the platform's accounts, less the calls
    /// lent in leases; `None` when nothing is known.
    pub remaining: Option<u64>,
    /// Calls lent in leases outstanding; `None` when none are.
    pub leased: Option<u64>,
    /// Calls spent per hour lately; `None` when none were seen.
    pub burn_per_hour: Option<u64>,
    /// When the known remaining calls run out at that rate, in Unix epoch
    /// seconds.
    pub dry_at: Option<u64>,
    // -- probes (ext); absent on the wire when unknown --
    /// How many of the platform's keys are tokens that expire within the
    /// warning time, as the platform told a probe; `None` when none.
    pub tokens_expiring: Option<u64>,
    /// The earliest expiry of a token of the platform that a probe learnt, in
    /// Unix epoch seconds.
    pub token_expires_at: Option<u64>,
    // -- clocks (ext); absent on the wire when nothing was learnt --
    /// How far behind ours the platform's clock is taken to be, in
    /// milliseconds, as EXPIREs of keys refused after their reset showed it;
    /// its EXPIREs are moved that much later.
    pub clock_lag_ms: Option<u64>,
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
    /// (ext, quota) `{"key": "...", "calls": m, "lease_id": id, "lease_until":
    /// t}`: a key lent for `calls` calls until `lease_until` (Unix epoch seconds).
    /// A client that reads only `key` sees a key.
    Lease {
        /// The key.
        key: String,
        /// Calls the worker may make with it (≥ 1).
        calls: u64,
        /// The lease, for REPORT's `lease_id`.
        lease_id: u64,
        /// When the lease ends and counts as fully used (Unix epoch seconds).
        lease_until: u64,
    },
    /// (ext, quota) `{"ok": true}`: a REPORT that asked for an answer was taken in.
    Ok,
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
                        let forecast = [
                            ("remaining", p.remaining),
                            ("leased", p.leased),
                            ("burn_per_hour", p.burn_per_hour),
                            ("dry_at", p.dry_at),
                            ("tokens_expiring", p.tokens_expiring),
                            ("token_expires_at", p.token_expires_at),
                            ("clock_lag_ms", p.clock_lag_ms),
                        ];
                        for (field, v) in forecast {
                            if let Some(v) = v {
                                o.insert(field.into(), v.into());
                            }
                        }
                        Value::Object(o)
                    })
                    .collect();
                object(vec![("platforms", Value::Array(items))], None)
            }
            Reply::Lease {
                key,
                calls,
                lease_id,
                lease_until,
            } => object(
                vec![
                    ("key", s(key)),
                    ("calls", Value::from(*calls)),
                    ("lease_id", Value::from(*lease_id)),
                    ("lease_until", Value::from(*lease_until)),
                ],
                None,
            ),
            Reply::Ok => object(vec![("ok", Value::Bool(true))], None),
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
        let lease = || -> Option<Reply> {
            let n = |f: &str| map.get(f).and_then(Value::as_u64);
            Some(Reply::Lease {
                key: map.get("key")?.as_str()?.to_string(),
                calls: n("calls")?,
                lease_id: n("lease_id")?,
                lease_until: n("lease_until")?,
            })
        };
        let reply = if let Some(r) = map.get("calls").and_then(|_| lease()) {
            r
        } else if let Some(k) = map.get("key") {
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
        } else if map.get("ok") == Some(&Value::Bool(true)) {
            Reply::Ok
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
                    remaining: p.get("remaining").and_then(Value::as_u64),
                    leased: p.get("leased").and_then(Value::as_u64),
                    burn_per_hour: p.get("burn_per_hour").and_then(Value::as_u64),
                    dry_at: p.get("dry_at").and_then(Value::as_u64),
                    tokens_expiring: p.get("tokens_expiring").and_then(Value::as_u64),
                    token_expires_at: p.get("token_expires_at").and_then(Value::as_u64),
                    clock_lag_ms: p.get("clock_lag_ms").and_then(Value::as_u64),
                });
            }
            Reply::Status(out)
        } else {
            return Err(DecodeError::UnexpectedReply("an object of unknown shape"));
        };
        Ok(ReplyMessage { reply, request_id })
    }
}
