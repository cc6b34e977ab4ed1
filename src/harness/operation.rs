//! [`Operation`]: one thing that happens to an engine under test (a message on a
//! channel, well-formed or not, or a move of the virtual clock), and how it is
//! turned into bytes.
//!
//! The fuzz targets get operations from `arbitrary` (feature `arbitrary`), the
//! property tests from `quickcheck` (in the test files); both replay them through
//! the [`Driver`](super::Driver).

use super::quota_ops::{AccountPublish, Context, LeaseNew, Report};
use super::{KEYS, PLATFORMS, TYPES};
use crate::protocol::{Channels, DEFAULT_MAX_PAYLOAD};
use serde_json::{Map, Value};

/// One thing that happens to the engine.
///
/// Its `arbitrary::Arbitrary` (feature `arbitrary`) weighs the kinds, from one
/// byte: 5 in 8 a well-formed message on its channel, 1 in 8 any payload on any
/// channel, 2 in 8 a move of the clock, and 1 in 256 a SHUTDOWN (after which the
/// engine does nothing more). Every other type here derives it.
#[derive(Clone, Debug, PartialEq)]
pub enum Operation {
    /// A well-formed message on the channel it belongs to.
    Send(Message),
    /// A payload, well-formed or not, on any channel.
    SendTo {
        /// Where it arrives.
        channel: Channel,
        /// What arrives.
        payload: Payload,
    },
    /// The virtual clock moves.
    Clock(Clock),
}

/// A channel a payload can arrive on.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    /// Where workers ask ([`Channels::request`]).
    Request,
    /// Where admins speak ([`Channels::announce`]).
    Announce,
    /// A channel the engine does not serve.
    Elsewhere,
}

impl Channel {
    /// The channel's name under `channels`.
    pub fn name<'a>(&self, channels: &'a Channels) -> &'a str {
        match self {
            Channel::Request => &channels.request,
            Channel::Announce => &channels.announce,
            Channel::Elsewhere => "elsewhere",
        }
    }
}

/// A requester id as Augur's clients (a number) or ours (a string) send it, or
/// one that is no address (a negative number).
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requester {
    /// A JSON number.
    Number(u32),
    /// The string `worker-{n}`.
    Text(u8),
    /// A negative JSON number.
    Negative(u8),
}

impl Requester {
    pub(super) fn to_json(self) -> Value {
        match self {
            Requester::Number(n) => Value::from(n),
            Requester::Text(n) => Value::from(format!("worker-{n}")),
            Requester::Negative(n) => Value::from(-i64::from(n) - 1),
        }
    }
}

/// An admin's question (on the announce channel).
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminKind {
    /// ACK.
    Ack,
    /// LIST_PLATFORMS.
    ListPlatforms,
    /// LIST_KEYS.
    ListKeys,
    /// LIST_INVALID_KEYS.
    ListInvalidKeys,
    /// STATUS.
    Status,
}

/// A well-formed message. `key` and `platform` pick from [`KEYS`] and
/// [`PLATFORMS`] ([`pick`]: the last one about half of the time, so that some
/// platforms run out of fresh keys).
///
/// Its `arbitrary::Arbitrary` (feature `arbitrary`) weighs the kinds, out of
/// 32: NEW 6, EXPIRE 4, INVALIDATE 2, PUBLISH 4, UNPUBLISH 2, the admin's
/// questions 3 (Augur's messages, 21 in all), and the quota extension's NEW
/// with `lease` 4, REPORT 4, PUBLISH with `account`/`limit` 3.
#[derive(Clone, Debug, PartialEq)]
pub enum Message {
    /// NEW.
    New {
        /// Which platform.
        platform: u8,
        /// Who asks (no `requester_id` when `None`).
        requester: Option<Requester>,
        /// The `request_id`, if any.
        request_id: Option<u16>,
        /// `hold_ms`, in quarters of a second.
        hold: Option<u8>,
    },
    /// EXPIRE.
    Expire {
        /// Which key.
        key: u8,
        /// Which platform.
        platform: u8,
        /// Who reports it.
        requester: Option<Requester>,
        /// `refresh_time`: this many seconds after now (before it if negative).
        refresh_in: i8,
        /// Whether `refresh_time` has a fraction of a second.
        fractional: bool,
    },
    /// INVALIDATE.
    Invalidate {
        /// Which key.
        key: u8,
        /// Which platform.
        platform: u8,
        /// Who reports it.
        requester: Option<Requester>,
    },
    /// PUBLISH.
    Publish {
        /// Which key.
        key: u8,
        /// Which platform.
        platform: u8,
    },
    /// UNPUBLISH.
    Unpublish {
        /// Which key.
        key: u8,
        /// Which platform.
        platform: u8,
    },
    /// ACK, LIST_*, STATUS.
    Admin {
        /// Which question.
        kind: AdminKind,
        /// Who asks.
        requester: Requester,
        /// The `request_id`, if any.
        request_id: Option<u16>,
        /// The platform LIST_KEYS and LIST_INVALID_KEYS ask about.
        platform: u8,
    },
    /// SHUTDOWN (left out of `arbitrary`, which makes it rare: see
    /// [`Operation`]).
    Shutdown,
    /// (quota) NEW with `lease`.
    Lease(LeaseNew),
    /// (quota) REPORT.
    Report(Report),
    /// (quota) PUBLISH with `account` and `limit`.
    PublishAccount(AccountPublish),
}

#[cfg(feature = "arbitrary")]
impl<'a> arbitrary::Arbitrary<'a> for Message {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        let (key, platform) = (u.arbitrary()?, u.arbitrary()?);
        Ok(match u8::arbitrary(u)? % 32 {
            0..=5 => Message::New {
                platform,
                requester: u.arbitrary()?,
                request_id: u.arbitrary()?,
                hold: u.arbitrary()?,
            },
            6..=9 => Message::Expire {
                key,
                platform,
                requester: u.arbitrary()?,
                refresh_in: u.arbitrary()?,
                fractional: u.arbitrary()?,
            },
            10 | 11 => Message::Invalidate {
                key,
                platform,
                requester: u.arbitrary()?,
            },
            12..=15 => Message::Publish { key, platform },
            16 | 17 => Message::Unpublish { key, platform },
            18..=20 => Message::Admin {
                kind: u.arbitrary()?,
                requester: u.arbitrary()?,
                request_id: u.arbitrary()?,
                platform,
            },
            21..=24 => Message::Lease(u.arbitrary()?),
            25..=28 => Message::Report(u.arbitrary()?),
            _ => Message::PublishAccount(u.arbitrary()?),
        })
    }
}

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

/// A move of the virtual clock.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clock {
    /// Forward by milliseconds, firing no timer on the way.
    Millis(u16),
    /// Forward by seconds, firing no timer on the way.
    Seconds(u8),
    /// Forward by minutes, firing no timer on the way.
    Minutes(u8),
    /// Back by milliseconds (a wall clock stepped back).
    Back(u16),
    /// To the engine's next timeout, and fire it ([`Driver::step`](super::Driver::step)).
    Step,
    /// Fire the timer now (`handle_timeout` at the current time).
    Tick,
}

#[cfg(feature = "arbitrary")]
impl<'a> arbitrary::Arbitrary<'a> for Operation {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(match u8::arbitrary(u)? {
            255 => Operation::Send(Message::Shutdown),
            0..=159 => Operation::Send(u.arbitrary()?),
            160..=191 => Operation::SendTo {
                channel: u.arbitrary()?,
                payload: u.arbitrary()?,
            },
            _ => Operation::Clock(u.arbitrary()?),
        })
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

/// One of `choices`: the last one about half of the time, so that some
/// platforms run out of fresh keys.
pub fn pick<'a>(choices: &[&'a str], i: u8) -> &'a str {
    let n = choices.len();
    choices[(usize::from(i) % (2 * n)).min(n - 1)]
}

impl Message {
    /// The channel this message belongs to.
    pub fn channel(&self) -> Channel {
        match self {
            Message::New { .. }
            | Message::Expire { .. }
            | Message::Invalidate { .. }
            | Message::Lease(_)
            | Message::Report(_) => Channel::Request,
            _ => Channel::Announce,
        }
    }

    /// The message as a JSON object in `cx` (EXPIRE's refresh time and
    /// REPORT's times count from its time; a REPORT names its leases).
    pub fn to_object(&self, cx: &Context<'_>) -> Map<String, Value> {
        let now_millis = cx.now_millis;
        let mut m = Map::new();
        let mut put = |f: Field, v: Value| {
            m.insert(f.name().into(), v);
        };
        let kind = match self {
            Message::New {
                platform,
                requester,
                request_id,
                hold,
            } => {
                put(Field::KeyPlatform, pick(&PLATFORMS, *platform).into());
                if let Some(r) = requester {
                    put(Field::RequesterId, r.to_json());
                }
                if let Some(id) = request_id {
                    put(Field::RequestId, (*id).into());
                }
                if let Some(h) = hold {
                    put(Field::HoldMs, (u64::from(*h) * 250).into());
                }
                "NEW"
            }
            Message::Expire {
                key,
                platform,
                requester,
                refresh_in,
                fractional,
            } => {
                put(Field::KeyStr, pick(&KEYS, *key).into());
                put(Field::KeyPlatform, pick(&PLATFORMS, *platform).into());
                if let Some(r) = requester {
                    put(Field::RequesterId, r.to_json());
                }
                let secs = (now_millis / 1000) as i64 + i64::from(*refresh_in);
                let at = match fractional {
                    true => Value::from(secs as f64 + 0.25),
                    false => Value::from(secs),
                };
                put(Field::RefreshTime, at);
                "EXPIRE"
            }
            Message::Invalidate {
                key,
                platform,
                requester,
            } => {
                put(Field::KeyStr, pick(&KEYS, *key).into());
                put(Field::KeyPlatform, pick(&PLATFORMS, *platform).into());
                if let Some(r) = requester {
                    put(Field::RequesterId, r.to_json());
                }
                "INVALIDATE"
            }
            Message::Publish { key, platform } | Message::Unpublish { key, platform } => {
                put(Field::KeyStr, pick(&KEYS, *key).into());
                put(Field::KeyPlatform, pick(&PLATFORMS, *platform).into());
                match self {
                    Message::Publish { .. } => "PUBLISH",
                    _ => "UNPUBLISH",
                }
            }
            Message::Admin {
                kind,
                requester,
                request_id,
                platform,
            } => {
                put(Field::RequesterId, requester.to_json());
                if let Some(id) = request_id {
                    put(Field::RequestId, (*id).into());
                }
                match kind {
                    AdminKind::Ack => "ACK",
                    AdminKind::ListPlatforms => "LIST_PLATFORMS",
                    AdminKind::Status => "STATUS",
                    AdminKind::ListKeys | AdminKind::ListInvalidKeys => {
                        put(Field::KeyPlatform, pick(&PLATFORMS, *platform).into());
                        match kind {
                            AdminKind::ListKeys => "LIST_KEYS",
                            _ => "LIST_INVALID_KEYS",
                        }
                    }
                }
            }
            Message::Shutdown => "SHUTDOWN",
            Message::Lease(l) => l.fill(&mut put),
            Message::Report(r) => r.fill(cx, &mut put),
            Message::PublishAccount(p) => p.fill(&mut put),
        };
        put(Field::Type, kind.into());
        m
    }

    /// The message's bytes in `cx`.
    pub fn encode(&self, cx: &Context<'_>) -> Vec<u8> {
        to_bytes(&self.to_object(cx))
    }
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

fn to_bytes(v: &Map<String, Value>) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}
