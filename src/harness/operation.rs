//! [`Operation`]: one thing that happens to an engine under test (a message on a
//! channel, well-formed or not, or a move of the virtual clock), and how it is
//! turned into bytes.
//!
//! The fuzz targets get operations from `arbitrary` (feature `arbitrary`), the
//! property tests from `quickcheck` (in the test files); both replay them through
//! the [`Driver`](super::Driver).

use super::payload::to_bytes;
pub use super::payload::{Field, Mutation, Payload, Val};
use super::quota_ops::{AccountPublish, Context, LeaseNew, Report};
use super::{KEYS, PLATFORMS};
use crate::protocol::Channels;
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
