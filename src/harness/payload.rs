//! [`Payload`]: what arrives on a channel when it is not a well-formed
//! message: one with a field of another type or removed ([`Field`],
//! [`Val`]), its bytes mutated ([`Mutation`]), padded past the limit, an
//! object of protocol fields, or any bytes.

use super::operation::{Message, pick};
use super::quota_ops::Context;
use super::{KEYS, PLATFORMS, TYPES};
use crate::protocol::DEFAULT_MAX_PAYLOAD;
use serde_json::{Map, Value};

/// A payload: a message, a broken message, or anything.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq)]
pub enum Payload {
    /// A well-formed message.
    Message(Message),
    /// A message with one field set to another value (removed when `None`).
    Retyped {
        /// The message.
        message: Message,
        /// The field.
        field: Field,
        /// Its new value.
        value: Option<Val>,
    },
    /// A message's bytes, mutated.
    Mutated {
        /// The message.
        message: Message,
        /// How its bytes change.
        mutation: Mutation,
    },
    /// A message padded with spaces past the payload limit.
    Oversized(Message),
    /// A JSON object of protocol fields with values of any type (up to 7 of
    /// them from `arbitrary`).
    Object(#[cfg_attr(feature = "arbitrary", arbitrary(with = few_fields))] Vec<(Field, Val)>),
    /// Any bytes (up to 63 from `arbitrary`).
    Raw(#[cfg_attr(feature = "arbitrary", arbitrary(with = short_bytes))] Vec<u8>),
}

/// A field of the protocol (or a stray one).
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Field {
    Type,
    KeyStr,
    KeyPlatform,
    RequesterId,
    RequestId,
    RefreshTime,
    HoldMs,
    Extra,
    Lease,
    Account,
    Limit,
    Remaining,
    Reset,
    ServerDate,
    Resource,
    LeaseId,
    Used,
    Done,
}

impl Field {
    /// Every field, in the order of the enum.
    pub const ALL: [Field; 18] = [
        Field::Type,
        Field::KeyStr,
        Field::KeyPlatform,
        Field::RequesterId,
        Field::RequestId,
        Field::RefreshTime,
        Field::HoldMs,
        Field::Extra,
        Field::Lease,
        Field::Account,
        Field::Limit,
        Field::Remaining,
        Field::Reset,
        Field::ServerDate,
        Field::Resource,
        Field::LeaseId,
        Field::Used,
        Field::Done,
    ];

    /// The field's name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Field::Type => "type",
            Field::KeyStr => "key_str",
            Field::KeyPlatform => "key_platform",
            Field::RequesterId => "requester_id",
            Field::RequestId => "request_id",
            Field::RefreshTime => "refresh_time",
            Field::HoldMs => "hold_ms",
            Field::Extra => "extra",
            Field::Lease => "lease",
            Field::Account => "account",
            Field::Limit => "limit",
            Field::Remaining => "remaining",
            Field::Reset => "reset",
            Field::ServerDate => "server_date",
            Field::Resource => "resource",
            Field::LeaseId => "lease_id",
            Field::Used => "used",
            Field::Done => "done",
        }
    }
}

/// A JSON value of some type, biased toward what the protocol's fields hold.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq)]
pub enum Val {
    /// `null`.
    Null,
    /// A boolean.
    Bool(bool),
    /// Any integer.
    Int(i64),
    /// A small integer.
    Small(u8),
    /// A number with a fraction (the integer divided by 7).
    Float(i32),
    /// An integer near `u64::MAX` (it minus the byte).
    Huge(u8),
    /// Any string (up to 15 bytes from `arbitrary`).
    Text(#[cfg_attr(feature = "arbitrary", arbitrary(with = short_text))] String),
    /// A key of [`KEYS`] ([`pick`]); a platform name outside `key_str`, since
    /// keys travel in `key_str` only and no other field is masked.
    Key(u8),
    /// A platform of [`PLATFORMS`] ([`pick`]).
    Platform(u8),
    /// A message type of [`TYPES`] (modulo their number).
    Type(u8),
    /// An array.
    Array,
    /// An empty object.
    Object,
}

impl Val {
    fn to_json(&self, field: Field) -> Value {
        match self {
            Val::Null => Value::Null,
            Val::Bool(b) => Value::Bool(*b),
            Val::Int(i) => Value::from(*i),
            Val::Small(i) => Value::from(*i),
            Val::Float(f) => Value::from(f64::from(*f) / 7.0),
            Val::Huge(v) => Value::from(u64::MAX - u64::from(*v)),
            Val::Text(s) => Value::from(s.as_str()),
            Val::Key(i) if field == Field::KeyStr => Value::from(pick(&KEYS, *i)),
            Val::Key(i) | Val::Platform(i) => Value::from(pick(&PLATFORMS, *i)),
            Val::Type(i) => Value::from(TYPES[usize::from(*i) % TYPES.len()]),
            Val::Array => Value::from(vec![1, 2]),
            Val::Object => Value::Object(Map::new()),
        }
    }
}

/// A change to a message's bytes, at `at / 256` of its length.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mutation {
    /// Flips the bits of `mask` in one byte.
    Flip {
        /// Where.
        at: u8,
        /// Which bits.
        mask: u8,
    },
    /// Removes one byte.
    Remove {
        /// Where.
        at: u8,
    },
    /// Inserts one byte.
    Insert {
        /// Where.
        at: u8,
        /// What.
        byte: u8,
    },
    /// Cuts the tail off.
    Truncate {
        /// Where.
        at: u8,
    },
}

impl Mutation {
    fn apply(self, mut bytes: Vec<u8>) -> Vec<u8> {
        let at = |a: u8| usize::from(a) * bytes.len() / 256;
        match self {
            Mutation::Flip { at: a, mask } => {
                let i = at(a);
                if let Some(b) = bytes.get_mut(i) {
                    *b ^= mask;
                }
            }
            Mutation::Remove { at: a } => {
                let i = at(a);
                if i < bytes.len() {
                    bytes.remove(i);
                }
            }
            Mutation::Insert { at: a, byte } => {
                let i = at(a);
                bytes.insert(i, byte);
            }
            Mutation::Truncate { at: a } => {
                let i = at(a);
                bytes.truncate(i);
            }
        }
        bytes
    }
}

/// Up to 63 bytes.
#[cfg(feature = "arbitrary")]
fn short_bytes(u: &mut arbitrary::Unstructured<'_>) -> arbitrary::Result<Vec<u8>> {
    let n = usize::from(u.int_in_range(0..=63u8)?);
    Ok(u.bytes(n.min(u.len()))?.to_vec())
}

/// Up to 15 bytes, as text (invalid UTF-8 replaced).
#[cfg(feature = "arbitrary")]
fn short_text(u: &mut arbitrary::Unstructured<'_>) -> arbitrary::Result<String> {
    let n = usize::from(u.int_in_range(0..=15u8)?);
    Ok(String::from_utf8_lossy(u.bytes(n.min(u.len()))?).into_owned())
}

/// Up to 7 fields.
#[cfg(feature = "arbitrary")]
fn few_fields(u: &mut arbitrary::Unstructured<'_>) -> arbitrary::Result<Vec<(Field, Val)>> {
    let n = u.int_in_range(0..=7u8)?;
    (0..n).map(|_| u.arbitrary()).collect()
}

impl Payload {
    /// The payload's bytes in `cx`.
    pub fn encode(&self, cx: &Context<'_>) -> Vec<u8> {
        match self {
            Payload::Message(m) => m.encode(cx),
            Payload::Retyped {
                message,
                field,
                value,
            } => {
                let mut m = message.to_object(cx);
                match value {
                    Some(v) => m.insert(field.name().into(), v.to_json(*field)),
                    None => m.remove(field.name()),
                };
                to_bytes(&m)
            }
            Payload::Mutated { message, mutation } => mutation.apply(message.encode(cx)),
            Payload::Oversized(message) => {
                let mut bytes = message.encode(cx);
                bytes.resize(DEFAULT_MAX_PAYLOAD + 1, b' ');
                bytes
            }
            Payload::Object(fields) => {
                let m: Map<String, Value> = fields
                    .iter()
                    .map(|(f, v)| (f.name().to_string(), v.to_json(*f)))
                    .collect();
                to_bytes(&m)
            }
            Payload::Raw(bytes) => bytes.clone(),
        }
    }
}

pub(super) fn to_bytes(v: &Map<String, Value>) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}
