//! The messages of the two request channels and their JSON encoding.

use super::{Id, ReplyTo};
use crate::quota::{LeaseReturn, Observation};
use crate::time::Timestamp;
use serde_json::{Map, Value};

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
    /// (ext, quota) PUBLISH with `account` and/or `limit`: add `key` as
    /// [`Publish`](Self::Publish) does, in the named account (its keys share one
    /// quota; without it the key is its own account), with `limit` calls per
    /// window as a hint until a report says otherwise. No reply. A PUBLISH
    /// without either field decodes as [`Publish`](Self::Publish).
    PublishWithQuota {
        /// The key.
        key: String,
        /// The platform.
        platform: String,
        /// The account whose quota the key shares.
        account: Option<String>,
        /// Calls per window, a hint.
        limit: Option<u64>,
    },
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
        /// refreshed) instead of sending `{"wait": n}` at once; a key that
        /// refreshes while keys are still rate limited takes about its share
        /// of the held requests, the rest wait for the next. Our clients send
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
    /// (ext, quota) NEW with `lease`: ask for a key of `platform` and up to
    /// `lease` calls with it. The answer is [`Reply::Lease`](super::Reply::Lease)
    /// (or a `wait` or an error, as for NEW). A NEW without `lease` decodes as
    /// [`New`](Self::New).
    Lease {
        /// The platform.
        platform: String,
        /// Where to answer.
        reply: ReplyTo,
        /// As NEW's (ext): a lease request that finds no key to lend is held
        /// for up to this long and answered with a lease when one can be
        /// granted.
        hold_ms: Option<u64>,
        /// The most calls wanted (≥ 1).
        lease: u64,
    },
    /// (ext, quota) REPORT: what the platform's last response said about `key`'s
    /// quota, and the end or use of a lease. Answered `{"ok": true}` only when it
    /// carries a `request_id` (and a `requester_id` to answer to).
    Report {
        /// The key.
        key: String,
        /// The platform.
        platform: String,
        /// The rate-limit headers (times in whole seconds).
        observation: Observation,
        /// The lease it reports on, if any.
        lease: Option<LeaseReturn>,
        /// Where to answer, when an answer is asked for.
        reply: Option<ReplyTo>,
    },
}

pub(super) fn object(pairs: Vec<(&str, Value)>, reply: Option<&ReplyTo>) -> Map<String, Value> {
    let mut m: Map<String, Value> = pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    if let Some(reply) = reply {
        m.insert("requester_id".into(), reply.requester_id.to_value());
        if let Some(rid) = &reply.request_id {
            m.insert("request_id".into(), rid.to_value());
        }
    }
    m
}

pub(super) fn to_bytes(v: &Value) -> Vec<u8> {
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
            Announce::PublishWithQuota {
                key,
                platform,
                account,
                limit,
            } => {
                let mut fields = vec![
                    ("type", s("PUBLISH")),
                    ("key_str", s(key)),
                    ("key_platform", s(platform)),
                ];
                if let Some(a) = account {
                    fields.push(("account", s(a)));
                }
                if let Some(l) = limit {
                    fields.push(("limit", Value::from(*l)));
                }
                object(fields, None)
            }
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
            Request::Lease {
                platform,
                reply,
                hold_ms,
                lease,
            } => {
                let mut fields = vec![("type", s("NEW")), ("key_platform", s(platform))];
                if let Some(ms) = hold_ms {
                    fields.push(("hold_ms", Value::from(*ms)));
                }
                fields.push(("lease", Value::from(*lease)));
                object(fields, Some(reply))
            }
            Request::Report {
                key,
                platform,
                observation: o,
                lease,
                reply,
            } => {
                let secs = |t: &Option<Timestamp>| t.map(|t| Value::from(t.as_secs()));
                let mut fields = vec![
                    ("type", s("REPORT")),
                    ("key_str", s(key)),
                    ("key_platform", s(platform)),
                ];
                let optional = [
                    ("remaining", o.remaining.map(Value::from)),
                    ("limit", o.limit.map(Value::from)),
                    ("reset", secs(&o.reset)),
                    ("resource", o.resource.as_deref().map(s)),
                    ("server_date", secs(&o.server_date)),
                    ("lease_id", lease.map(|l| Value::from(l.lease_id))),
                    ("used", lease.and_then(|l| l.used).map(Value::from)),
                    ("done", lease.map(|l| Value::Bool(l.done))),
                ];
                fields.extend(optional.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
                object(fields, reply.as_ref())
            }
        };
        to_bytes(&Value::Object(m))
    }
}
