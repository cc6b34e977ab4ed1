//! The one invariant checker: the pool's consistency, and the engine's promises
//! after every input (checked by the [`Driver`](super::Driver), and so by the
//! fuzz targets and the property tests that replay operations through it).
//!
//! After a message: the pool is consistent; a rejected message changed no key;
//! one message is handled or rejected; nothing happens after SHUTDOWN; at most
//! one direct reply, and only on `{channel}-{requester_id}` for a message with a
//! usable `requester_id`, echoing its `request_id`; a key handed out is fresh
//! (never invalid, never expired before its refresh time); a `wait` hint is the
//! refresh time of an expired key (the earliest, or a later one when waits are
//! staggered) rounded up to a whole second and never 0; no event
//! shows a key; held requests are answered where they asked, with what the pool
//! holds. After a timer tick: it answers held requests only.

use super::KEYS;
use super::driver::Outputs;
use crate::engine::{Engine, Event, Stats, Transmit};
use crate::pool::{KeyPool, KeyState};
use crate::protocol::{
    Channels, DEFAULT_MAX_PAYLOAD, ErrorCode, Id, Reply, Request, decode_request,
};
use crate::time::Timestamp;
use rand_core::Rng;
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::fmt;

/// A broken invariant: what was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation(pub String);

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Violation {}

/// `Err` with the text of `what` unless `ok`.
fn ensure(ok: bool, what: impl FnOnce() -> String) -> Result<(), Violation> {
    match ok {
        true => Ok(()),
        false => Err(Violation(what())),
    }
}

/// The pool's own consistency check ([`KeyPool::check_consistency`]).
pub fn check_pool(pool: &KeyPool) -> Result<(), Violation> {
    pool.check_consistency()
        .map_err(|e| Violation(format!("pool inconsistent: {e}")))
}

/// No event shows a whole key of [`KEYS`] (long enough that no other text
/// contains one by accident).
pub fn check_events(events: &[Event]) -> Result<(), Violation> {
    for ev in events {
        let text = format!("{ev:?}");
        let shown = KEYS.iter().any(|k| text.contains(k));
        ensure(!shown, || "an event shows a whole key".into())?;
    }
    Ok(())
}

/// What a check can see of the pool without changing it: the platforms, the
/// state of every key it knows of on each, the invalid keys and the next refresh
/// time of each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The platforms, in the pool's order.
    pub platforms: Vec<String>,
    /// The state of each key on each platform, platform by platform.
    pub states: Vec<Option<KeyState>>,
    /// The invalid keys of each platform.
    pub invalid: Vec<Option<Vec<String>>>,
    /// The next refresh time of each platform.
    pub next_refresh: Vec<Option<Timestamp>>,
}

impl Snapshot {
    /// The pool at `now`, looking at `keys`.
    pub fn of<'a>(pool: &KeyPool, keys: impl IntoIterator<Item = &'a str>, now: Timestamp) -> Self {
        let keys: Vec<&str> = keys.into_iter().collect();
        let platforms: Vec<String> = pool.platforms().map(str::to_string).collect();
        Snapshot {
            states: platforms
                .iter()
                .flat_map(|p| keys.iter().map(move |k| pool.state(p, k, now)))
                .collect(),
            invalid: platforms.iter().map(|p| pool.invalid_keys(p)).collect(),
            next_refresh: platforms.iter().map(|p| pool.next_refresh_of(p)).collect(),
            platforms,
        }
    }
}

/// A NEW the engine holds, as the checker saw it sent.
#[derive(Debug, Clone)]
struct HeldNew {
    dest: String,
    platform: String,
    request_id: Option<Id>,
}

/// What the checker saw before an input.
#[derive(Debug)]
pub struct Before {
    shutdown: bool,
    held: usize,
    snapshot: Snapshot,
    stats: Stats,
}

/// The invariant checker of one engine: the keys it has seen, and the held
/// requests it follows to their answers.
#[derive(Debug, Clone)]
pub struct Checker {
    channels: Channels,
    keys: BTreeSet<String>,
    held: Vec<HeldNew>,
}

impl Checker {
    /// A checker of an engine that serves `channels` and holds nothing yet.
    pub fn new(channels: Channels) -> Self {
        Checker {
            channels,
            keys: KEYS.iter().map(|k| k.to_string()).collect(),
            held: Vec::new(),
        }
    }

    /// How many held requests the checker follows.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Looks at the engine before an input at `now` (`payload`: the message's
    /// bytes, whose `key_str` the checker then follows too).
    pub fn before<R: Rng>(
        &mut self,
        engine: &Engine<R>,
        now: Timestamp,
        payload: Option<&[u8]>,
    ) -> Before {
        if let Some(Value::String(k)) = payload
            .and_then(parse)
            .as_ref()
            .and_then(|m| m.get("key_str"))
        {
            self.keys.insert(k.clone());
        }
        Before {
            shutdown: engine.is_shutdown(),
            held: engine.held(),
            snapshot: self.snapshot(engine.pool(), now),
            stats: engine.stats(),
        }
    }

    fn snapshot(&self, pool: &KeyPool, now: Timestamp) -> Snapshot {
        Snapshot::of(pool, self.keys.iter().map(String::as_str), now)
    }

    /// Checks what the engine did with a message `payload` on `channel` at `now`.
    pub fn after_message<R: Rng>(
        &mut self,
        engine: &mut Engine<R>,
        before: Before,
        now: Timestamp,
        channel: &str,
        payload: &[u8],
        out: &Outputs,
    ) -> Result<(), Violation> {
        let stats = before.stats;
        let after = engine.stats();
        check_pool(engine.pool())?;
        if before.shutdown {
            ensure(stats == after, || "input after SHUTDOWN was handled".into())?;
            ensure(out.transmits.is_empty(), || "a reply after SHUTDOWN".into())?;
            return ensure(out.events.is_empty(), || "an event after SHUTDOWN".into());
        }
        ensure(
            after.handled + after.rejected == stats.handled + stats.rejected + 1,
            || {
                format!(
                    "stats went from {stats:?} to {after:?}: one message must be handled or rejected"
                )
            },
        )?;
        if after.rejected > stats.rejected {
            let mut unchanged = self.snapshot(engine.pool(), now);
            if before.held > 0 {
                // Serving held requests refreshes due keys, which no state shows.
                unchanged
                    .next_refresh
                    .clone_from(&before.snapshot.next_refresh);
            }
            ensure(before.snapshot == unchanged, || {
                "a rejected message changed the pool".into()
            })?;
        }
        check_events(&out.events)?;

        // Replies to held requests come after the reply to this message, if any.
        let newly_held =
            usize::try_from(after.holds_total - stats.holds_total).unwrap_or(usize::MAX);
        let released = (before.held + newly_held)
            .checked_sub(engine.held())
            .ok_or_else(|| Violation("held requests appeared from nowhere".into()))?;
        let direct = out
            .transmits
            .len()
            .checked_sub(released)
            .ok_or_else(|| Violation("released held requests were not answered".into()))?;
        ensure(direct <= 1, || {
            format!("{} replies to one message", out.transmits.len())
        })?;
        for tx in &out.transmits[direct..] {
            self.check_held_reply(engine.pool(), now, tx)?;
        }

        let parsed = parse(payload);
        let served = channel == self.channels.request || channel == self.channels.announce;
        let requester = parsed.as_ref().and_then(|m| id_of(m.get("requester_id")));
        let new = match decode_request(payload, DEFAULT_MAX_PAYLOAD) {
            Ok(Request::New {
                platform, reply, ..
            }) if channel == self.channels.request => Some((platform, reply)),
            _ => None,
        };
        if newly_held > 0 {
            ensure(direct == 0, || "a held request was answered at once".into())?;
            match (&new, &requester) {
                (Some((platform, reply)), Some(id)) if newly_held == 1 => {
                    self.held.push(HeldNew {
                        dest: format!("{channel}-{id}"),
                        platform: platform.clone(),
                        request_id: reply.request_id.clone(),
                    });
                }
                _ => return Err(Violation("held something that is not one NEW".into())),
            }
        }
        ensure(self.held.len() == engine.held(), || {
            "held requests lost".into()
        })?;
        let Some(tx) = out.transmits.first().filter(|_| direct == 1) else {
            return Ok(());
        };
        let Some(id) = requester.filter(|_| served) else {
            return Err(Violation(format!(
                "a reply on {} to a message without a reply address",
                tx.channel
            )));
        };
        ensure(tx.channel == format!("{channel}-{id}"), || {
            format!("a reply on {}", tx.channel)
        })?;
        let reply = Reply::decode(&tx.payload, usize::MAX)
            .map_err(|e| Violation(format!("the engine sent an undecodable reply: {e}")))?;
        let asked = parsed.as_ref().and_then(|m| id_of(m.get("request_id")));
        ensure(reply.request_id == asked, || {
            format!("reply echoes request_id {:?}", reply.request_id)
        })?;
        match new {
            Some((platform, _)) => check_new_reply(engine, now, &platform, &reply.reply),
            None => Ok(()),
        }
    }

    /// Checks what a timer tick at `now` did: due keys refresh, and held requests
    /// whose key came or whose hold ended are answered, and nothing else.
    pub fn after_timeout<R: Rng>(
        &mut self,
        engine: &Engine<R>,
        before: Before,
        now: Timestamp,
        out: &Outputs,
    ) -> Result<(), Violation> {
        check_pool(engine.pool())?;
        ensure(out.transmits.len() + engine.held() == before.held, || {
            "a timer tick answers held requests only".into()
        })?;
        for tx in &out.transmits {
            self.check_held_reply(engine.pool(), now, tx)?;
        }
        check_events(&out.events)?;
        ensure(self.held.len() == engine.held(), || {
            "held requests lost".into()
        })
    }

    /// A reply to a held NEW (answered now that a key is fresh, its hold ended,
    /// its platform ran out of keys, or SHUTDOWN came) goes where the NEW asked,
    /// and matches the platform's state.
    fn check_held_reply(
        &mut self,
        pool: &KeyPool,
        now: Timestamp,
        tx: &Transmit,
    ) -> Result<(), Violation> {
        let msg = Reply::decode(&tx.payload, usize::MAX)
            .map_err(|e| Violation(format!("the engine sent an undecodable reply: {e}")))?;
        let keys = &self.keys;
        let fits = |h: &HeldNew| {
            h.dest == tx.channel
                && h.request_id == msg.request_id
                && match &msg.reply {
                    Reply::Key(k) => pool.state(&h.platform, k, now) == Some(KeyState::Fresh),
                    Reply::Wait(n) => {
                        let want = pool
                            .next_refresh_of(&h.platform)
                            .filter(|t| *t > now)
                            .map_or(1, |t| (t.as_millis() - now.as_millis()).div_ceil(1000));
                        *n == want
                    }
                    Reply::Error {
                        code: ErrorCode::NoKeys,
                        ..
                    } => {
                        pool.next_refresh_of(&h.platform).is_none()
                            && !keys
                                .iter()
                                .any(|k| pool.state(&h.platform, k, now) == Some(KeyState::Fresh))
                    }
                    _ => false,
                }
        };
        match self.held.iter().position(fits) {
            Some(i) => {
                self.held.remove(i);
                Ok(())
            }
            None => Err(Violation(format!(
                "a reply that answers no held request: {:?}",
                msg.reply
            ))),
        }
    }
}

/// A reply to NEW on `platform` matches the platform's state at `now`: a key
/// handed out is fresh, a wait counts whole seconds to the refresh of an
/// expired key (the earliest, or a later one when waits are staggered), an
/// error names the real cause.
pub fn check_new_reply<R: Rng>(
    engine: &mut Engine<R>,
    now: Timestamp,
    platform: &str,
    reply: &Reply,
) -> Result<(), Violation> {
    let known = engine.pool().has_platform(platform);
    let next_refresh = engine.pool().next_refresh_of(platform);
    // The NEW refreshed the platform at `now`: counting refreshes nothing more.
    let counts = engine.counts(now, platform).unwrap_or_default();
    match reply {
        Reply::Key(k) => {
            let state = engine.pool().state(platform, k, now);
            ensure(state == Some(KeyState::Fresh), || {
                format!("handed out a key in state {state:?}")
            })
        }
        Reply::Wait(n) => {
            ensure(counts.fresh == 0 && counts.expired > 0, || {
                format!("wait {n} with {counts:?}")
            })?;
            let until = next_refresh
                .ok_or_else(|| Violation(format!("wait {n} without an expired key")))?
                .as_millis();
            let now_ms = now.as_millis();
            ensure(until > now_ms, || "wait for a refresh that is due".into())?;
            ensure(*n >= 1, || "wait 0".into())?;
            // The earliest refresh, or (staggered) that of another expired key.
            let mut refreshes = engine.pool().expired_keys(platform).map(|(t, _)| t);
            ensure(
                refreshes
                    .any(|t| t > now && t.as_millis().saturating_sub(now_ms).div_ceil(1000) == *n),
                || format!("wait {n} at {now_ms} names no refresh (the earliest at {until})"),
            )
        }
        Reply::Error {
            code: ErrorCode::NoKeys,
            ..
        } => ensure(known && counts.fresh == 0 && counts.expired == 0, || {
            format!("no_keys with {counts:?}")
        }),
        Reply::Error {
            code: ErrorCode::UnknownPlatform,
            ..
        } => ensure(!known, || "unknown_platform for a known platform".into()),
        other => Err(Violation(format!("unexpected reply to NEW: {other:?}"))),
    }
}

/// The payload as a JSON object, if it is one the engine reads.
fn parse(payload: &[u8]) -> Option<Map<String, Value>> {
    match serde_json::from_slice(payload) {
        Ok(Value::Object(m)) if payload.len() <= DEFAULT_MAX_PAYLOAD => Some(m),
        _ => None,
    }
}

/// A `requester_id` or `request_id` as the engine reads it.
/// An id as the protocol reads it: a string or a whole number.
fn id_of(v: Option<&Value>) -> Option<Id> {
    match v? {
        Value::Number(n) if n.is_u64() || n.is_i64() => Some(Id::Number(n.clone())),
        Value::String(s) => Some(Id::Text(s.clone())),
        _ => None,
    }
}
